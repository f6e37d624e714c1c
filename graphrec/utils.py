"""Small helpers shared across the pipeline: atomic writes, seeding, devices."""

from __future__ import annotations

import json
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a crash never leaves
    a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
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
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
