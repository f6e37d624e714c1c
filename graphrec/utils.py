"""Small helpers shared across the pipeline: atomic writes, seeding, devices."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from graphrec.errors import GraphrecError


def _umask_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (mkstemp's is 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s folder (created when missing); one-line errors for a folder
    that cannot be made or written, and for a target that is a folder."""
    if path.is_dir() and not path.is_symlink():
        raise GraphrecError(f"{path}: is a folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise GraphrecError(f"{path}: cannot write there ({e.strerror})") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves
    a half-written file behind, and a symbolic link at ``path`` is replaced, never followed."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise GraphrecError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None``, so that it is strict JSON (the
    standard has no NaN or Infinity; Python's ``json`` would write them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (non-finite numbers as ``null``), atomically."""
    text = json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file and a rename (a link at ``path`` is replaced,
    never followed)."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise GraphrecError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_artifact(path: str | os.PathLike, fmt: str, what: str, missing: str,
                  prefix: str = "") -> dict[str, Any]:
    """Read a dict written by :func:`atomic_torch_save` whose ``"format"`` is ``fmt``, with
    ``torch.load(weights_only=True)`` (no pickled code runs) onto the CPU. Every failure is a
    one-line :class:`GraphrecError`: ``prefix`` + the path + ``missing`` when there is no file,
    else "not a ``what``"."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GraphrecError(f"{prefix}{path}: {missing}") from None
    except Exception as e:  # unpickling errors come in many types
        raise GraphrecError(f"{prefix}{path}: not a {what} ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise GraphrecError(f"{prefix}{path}: not a {what}")
    return blob


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` are checked
    against this machine and this torch build (one-line errors)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise GraphrecError(f"--device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise GraphrecError(f"--device: {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise GraphrecError(f"--device {name}: {why} (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GraphrecError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                                "device(s) here")
    return device
