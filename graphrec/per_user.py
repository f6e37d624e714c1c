"""Per-user test metrics, kept in the run folder so that runs can be compared later.

``graphrec train`` writes ``per_user.npz`` beside ``metrics.json``: a compressed NumPy archive
(``numpy.savez_compressed``, read back with ``np.load(allow_pickle=False)``, so loading runs no
code) holding

* ``users``: ``[U]`` int32, the dense ids of the evaluated test users, ascending;
* one ``[U]`` float32 column per ranking metric (``ndcg@20``, ``recall@10``, ...): each user's
  value, whose mean is the figure in ``metrics.json``;
* for rating models, ``rating_se`` and ``rating_ae`` (``[U]`` float32, each user's sum of
  squared and of absolute errors) and ``rating_n`` (``[U]`` int32, the user's test ratings),
  from which RMSE and MAE over any set of users follow;
* ``data_fingerprint`` (a hash of the interaction graph: counts, edges, ratings) and
  ``test_fingerprint`` (a hash of the test pairs), so that ``graphrec compare`` pairs only
  runs on the same data and the same test part.

About 4 bytes per user and metric before compression: 12 metrics of ml-100k's 943 users take
23 kB. This module needs numpy only (not torch), so that ``graphrec compare`` starts fast.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from typing import Any

import numpy as np

from graphrec.errors import GraphrecError

PER_USER_NAME = "per_user.npz"
FORMAT = "graphrec-per-user-1"
RATING_KEYS = ("rating_se", "rating_ae", "rating_n")


@dataclass
class PerUserMetrics:
    """Each evaluated user's metrics, as NumPy arrays.

    Args:
        users: ``[U]`` int64, the evaluated users (dense ids), ascending.
        values: ranking metric name -> ``[U]`` float64 values.
        errors: for rating models, ``{"se", "ae", "n"}`` -> ``[U]`` sums of squared and of
            absolute errors (float64) and the rating counts (int64); else ``None``.
        data_fingerprint: :func:`data_fingerprint` of the data set ("" when unknown).
        test_fingerprint: :func:`interactions_fingerprint` of the test part ("" when unknown).
    """

    users: np.ndarray
    values: dict[str, np.ndarray]
    errors: dict[str, np.ndarray] | None = None
    data_fingerprint: str = ""
    test_fingerprint: str = ""


def _digest(*tensors: Any) -> str:
    """A hash of torch tensors (``None`` skipped): dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            a = np.ascontiguousarray(t.detach().cpu().numpy())
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(graph) -> str:
    """A hash of an interaction graph: its user and item counts, its edges and ratings."""
    import torch

    from graphrec.schema import EDGE, ITEM, RATING, USER

    store = graph[EDGE]
    sizes = torch.tensor([int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)])
    return _digest(sizes, store.edge_index, store[RATING] if RATING in store else None)


def interactions_fingerprint(part) -> str:
    """A hash of a held-out part's (user, item) pairs."""
    return _digest(part.user, part.item)


def save_per_user(path: str | os.PathLike, per_user: PerUserMetrics) -> None:
    """Write ``per_user`` as a compressed ``.npz`` (see the module docstring), atomically."""
    from graphrec.utils import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "data_fingerprint": np.array(per_user.data_fingerprint),
        "test_fingerprint": np.array(per_user.test_fingerprint),
        "users": per_user.users.astype(np.int32),
    }
    for key, v in per_user.values.items():
        arrays[key] = v.astype(np.float32)
    if per_user.errors is not None:
        arrays["rating_se"] = per_user.errors["se"].astype(np.float32)
        arrays["rating_ae"] = per_user.errors["ae"].astype(np.float32)
        arrays["rating_n"] = per_user.errors["n"].astype(np.int32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_per_user(run: str | os.PathLike) -> PerUserMetrics:
    """The per-user metrics of run folder ``run`` (float64 values), without unpickling.

    One-line errors: a missing folder, a run that predates per-user metrics, a damaged file."""
    run = Path(run)
    if not run.is_dir():
        raise GraphrecError(f"{run}: no such run folder")
    path = run / PER_USER_NAME
    if not path.exists():
        raise GraphrecError(f"{run}: no {PER_USER_NAME}; the run predates per-user metrics "
                            "(or did not finish): rerun it with graphrec train")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise GraphrecError(f"{path}: not a per-user metrics file ({type(e).__name__})") from None
    if "format" not in data or str(data["format"]) != FORMAT or "users" not in data:
        raise GraphrecError(f"{path}: not a per-user metrics file")
    skip = {"format", "data_fingerprint", "test_fingerprint", "users", *RATING_KEYS}
    values = {k: v.astype(np.float64) for k, v in data.items() if k not in skip}
    errors = None
    if all(k in data for k in RATING_KEYS):
        errors = {"se": data["rating_se"].astype(np.float64),
                  "ae": data["rating_ae"].astype(np.float64),
                  "n": data["rating_n"].astype(np.int64)}
    return PerUserMetrics(data["users"].astype(np.int64), values, errors,
                          str(data["data_fingerprint"]), str(data["test_fingerprint"]))


__all__ = ["PER_USER_NAME", "PerUserMetrics", "data_fingerprint", "interactions_fingerprint",
           "save_per_user", "load_per_user"]
