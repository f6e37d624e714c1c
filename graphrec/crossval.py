"""k-fold cross-validation: ``graphrec train ... --folds K``.

The data are dealt into ``K`` disjoint per-user folds (:func:`graphrec.split.assign_parts`
with ``folds``: each user's interactions at random, ``floor(n / K)`` or ``ceil(n / K)`` per
fold), and fold ``f`` is the test part of run ``f``, so across the runs every interaction is
tested exactly once. Within a run, the validation part is drawn from the other folds as the
random split draws it (``valid_ratio`` of each user's remaining interactions), so early
stopping never sees the test fold.

The parent folder ``OUT`` holds one complete run folder per fold, ``OUT/fold-0`` ...
``OUT/fold-{K-1}`` (each with its ``config.json``, whose ``split.fold`` says which fold it
tests, so ``--resume OUT/fold-2`` or ``--config OUT/fold-2/config.json`` repeats that fold
alone), and

* ``metrics.json``: every metric's ``{"mean": ..., "std": ..., "folds": [...]}`` over the folds
  (``std`` the sample standard deviation, ``ddof = 1``);
* ``cv.json``: the fold count, the fold folders and the wall time of the whole run;
* ``config.json``: the resolved configuration, with ``split.fold`` null (every fold).

Cross-validation for recommenders as in e.g. Surprise's ``model_selection.KFold``; the folds
here are stratified by user, like graphrec's random split, so that every user is tested in
every fold (which is why ``K`` may not exceed the smallest user's interaction count).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.errors import GraphrecError
from graphrec.runfolder import RunFolder

if TYPE_CHECKING:
    from graphrec.config import RunConfig

log = logging.getLogger(__name__)

CV_NAME = "cv.json"


def fold_dir(out: Path, fold: int) -> Path:
    """The run folder of fold ``fold`` under parent ``out``."""
    return out / f"fold-{fold}"


def summarize(fold_metrics: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """``{metric: {"mean", "std", "folds"}}`` over the folds' flat metrics (metrics present in
    every fold; ``std`` with ``ddof = 1``, 0 for a single fold)."""
    keys = [k for k in fold_metrics[0] if all(k in m for m in fold_metrics)]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [float(m[key]) for m in fold_metrics]
        mean = math.fsum(values) / len(values)
        var = (math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
               if len(values) > 1 else 0.0)
        out[key] = {"mean": mean, "std": math.sqrt(var), "folds": values}
    return out


def is_parent(run: Path) -> bool:
    """Whether ``run`` is a k-fold parent folder (it holds ``cv.json``)."""
    return (run / CV_NAME).is_file()


def fold_runs(run: Path) -> list[Path]:
    """The fold folders of k-fold parent ``run``, in fold order (from its ``cv.json``)."""
    path = run / CV_NAME
    try:
        cv = json.loads(path.read_text())
        return [run / name for name in cv["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise GraphrecError(f"{path}: not a k-fold summary (damaged?)") from None


def run_folds(cfg: RunConfig, out: Path, mode: str,
              train: Callable[[RunConfig, Path], dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Train and evaluate ``cfg`` once per fold (``cfg.split.folds`` of them) with ``train``
    (:func:`graphrec.train.train`), each into its fold folder under ``out``; writes the
    parent's ``metrics.json``, ``cv.json`` and ``config.json`` and returns the summary.

    ``mode``: the run folders' mode, ``"new"`` or ``"overwrite"`` (see
    :class:`~graphrec.runfolder.RunFolder`)."""
    from graphrec.utils import atomic_write_json

    k = cfg.split.folds
    start = time.perf_counter()
    metrics: list[dict[str, float]] = []
    resolved: dict[str, Any] = {}
    with RunFolder(out, mode, "--out"):
        for fold in range(k):
            fold_cfg = copy.deepcopy(cfg)
            fold_cfg.split.fold = fold
            path = fold_dir(out, fold)
            fold_cfg.out = str(path)
            log.info("fold %d of %d -> %s", fold + 1, k, path)
            with RunFolder(path, mode, "--out"):
                metrics.append(train(fold_cfg, path))
            resolved = fold_cfg.to_dict()
        summary = summarize(metrics)
        resolved["split"]["fold"] = None
        resolved["out"] = str(out)
        atomic_write_json(out / "config.json", resolved)
        atomic_write_json(out / "metrics.json", summary)
        atomic_write_json(out / CV_NAME, {"folds": k, "runs": [fold_dir(out, f).name
                                                                for f in range(k)],
                                          "wall_seconds": time.perf_counter() - start})
    return summary


def summary_table(summary: dict[str, dict[str, Any]]) -> str:
    """The mean ± std of each metric, and its value in each fold."""
    from graphrec.cli import format_table

    keys = [k for k in summary if "@" in k or k in ("rmse", "mae", "fit_seconds")]
    folds = len(next(iter(summary.values()))["folds"]) if summary else 0
    rows = [[key, f"{s['mean']:.4f} ± {s['std']:.4f}"] + [float(v) for v in s["folds"]]
            for key, s in ((k, summary[k]) for k in keys)]
    return format_table(rows, ["metric", "mean ± std"] + [f"fold {f}" for f in range(folds)])


__all__ = ["CV_NAME", "fold_dir", "fold_runs", "is_parent", "run_folds", "summarize",
           "summary_table"]
