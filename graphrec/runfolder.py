"""Run folders that cannot be clobbered: one writer at a time, no silent reuse, no links.

``graphrec train`` holds its run folder through :class:`RunFolder` for the whole run:

* **A lock.** ``RUN/.lock`` is locked with ``flock`` (released by the kernel when the process
  ends, however it ends, so a lock left by a killed run is never in the way) and holds the
  owner's PID, which a second writer's one-line error names.
* **No silent reuse.** A folder that already holds a run is refused unless the caller asks to
  ``overwrite`` it (its run files are removed first, so nothing of the old run is left beside
  the new one) or to ``resume`` it (the only way to continue a run).
* **No links.** A symbolic link among the folder's entries is an error: graphrec never writes
  through one (files are replaced atomically or opened with ``O_NOFOLLOW``).
* **Hygiene.** Temporary files of a save that was killed half-way are removed on entry.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType

from graphrec.errors import GraphrecError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: what a run writes; an ``overwrite`` removes exactly these (and saved indexes)
RUN_FILES = ("config.json", "metrics.json", "valid_metrics.json", "index_metrics.json",
             "pop_metrics.json", "model.pt", "trainer_state.pt", "history.jsonl", "curves.png",
             "per_user.npz", "cv.json")
MODES = ("new", "overwrite", "resume")


def _run_files(path: Path) -> list[Path]:
    """The run files present in ``path`` (saved indexes included)."""
    found = [path / name for name in RUN_FILES if (path / name).exists() or (path / name).is_symlink()]
    found += sorted(p for p in path.glob("index-*") if p.suffix in (".faiss", ".json"))
    return found


def _temp_files(path: Path) -> list[Path]:
    """Leftovers of atomic writes killed half-way: ``.NAME.<random suffix>.tmp``."""
    return sorted(p for p in path.glob(".*.tmp") if p.is_file() and not p.is_symlink())


class RunFolder:
    """Hold run folder ``path`` for a run (a context manager).

    Args:
        path: the folder (created when missing).
        mode: ``"new"`` (refuse a folder that holds a run), ``"overwrite"`` (remove its run files
            first) or ``"resume"`` (continue the run in it).
        option: the flag that named the folder, for the error messages.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "new", option: str = "--out") -> None:
        if mode not in MODES:
            raise GraphrecError(f"run folder: unknown mode {mode!r}")
        self.path, self.mode, self.option = Path(path), mode, option
        self._fd: int | None = None

    def __enter__(self) -> "RunFolder":
        path, option = self.path, self.option
        if path.is_symlink():
            raise GraphrecError(f"{option}: {path} is a symbolic link; name the folder itself")
        if path.exists() and not path.is_dir():
            raise GraphrecError(f"{option}: {path} exists and is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GraphrecError(f"{option}: cannot create {path} ({e.strerror})") from None
        self._lock()
        try:
            links = sorted(p.name for p in path.iterdir() if p.is_symlink())
            if links:
                raise GraphrecError(f"{option}: {path / links[0]} is a symbolic link; graphrec "
                                    "never writes through links (remove it)")
            stale = _temp_files(path)
            for tmp in stale:
                tmp.unlink()
            if stale:
                log.warning("%s: removed %d temporary file(s) of an interrupted save", path,
                            len(stale))
            present = _run_files(path)
            if self.mode == "new" and present:
                raise GraphrecError(f"{option}: {path} already holds a run ({present[0].name}); "
                                    "pass --overwrite to replace it or --resume to continue it")
            if self.mode == "resume" and not present:
                raise GraphrecError(f"--resume: {path} holds no run")
            if self.mode == "overwrite":
                for p in present:
                    p.unlink()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._unlock()

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise GraphrecError(f"{self.option}: {lock} is a symbolic link; remove it") from None
            raise GraphrecError(f"{self.option}: {self.path} is not writable ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise GraphrecError(f"{self.option}: {self.path} is in use by another graphrec run "
                                f"(pid {owner}); wait for it or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to ``path``, never through a symbolic link (``O_NOFOLLOW``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise GraphrecError(f"{path} is a symbolic link; graphrec never writes through links")
        raise GraphrecError(f"{path}: cannot write ({e.strerror})") from None
    with os.fdopen(fd, "a") as fh:
        fh.write(line if line.endswith("\n") else line + "\n")


__all__ = ["RunFolder", "RUN_FILES", "LOCK_NAME", "append_line"]
