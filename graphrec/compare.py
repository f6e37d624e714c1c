"""``graphrec compare RUN_A RUN_B``: is one run better than the other, user by user?

Both runs' per-user test metrics (``per_user.npz``, written by ``graphrec train``; see
:mod:`graphrec.evaluation.per_user`) are paired by user, and for every metric the two runs
share:

* **A, B and A − B**: the metric of each run (ranking metrics: the mean over users, as in
  ``metrics.json``; RMSE and MAE over all test ratings) and their difference.
* **Paired t-test** on the per-user values ``a_u`` and ``b_u``: with ``d_u = a_u - b_u``,
  ``t = mean(d) / (sd(d) / sqrt(n))`` (``sd`` with ``n - 1``), two-sided p from Student's t
  with ``n - 1`` degrees of freedom (``scipy.stats.ttest_rel``).
* **Wilcoxon signed-rank test** on the same differences (``scipy.stats.wilcoxon``, zero
  differences dropped as Wilcoxon did, two-sided; exact for small samples, normal
  approximation otherwise), which does not assume normal differences: per-user ranking
  metrics are bounded and skewed, with many zeros.
* **Bootstrap 95% confidence interval of A − B**: users are resampled with replacement
  (``--resamples`` times, 10,000 by default, seed ``--seed``) and the metric difference
  recomputed on each resample; the interval is the 2.5th to 97.5th percentile (Efron and
  Tibshirani, *An Introduction to the Bootstrap*, 1993). Resamples are drawn as count
  matrices and reduced by one matrix product, in chunks of about 4M counts.

For RMSE and MAE the tests pair each user's mean squared (absolute) error, and the bootstrap
recomputes RMSE (MAE) over the resampled users' ratings.

Two k-fold parents (``graphrec train --folds K``) are compared fold by fold pooled: fold ``f``
of A must have the data and test part of fold ``f`` of B; each user's values are then
averaged over the folds (rating errors summed), so every user is one paired observation and
the folds' reuse of users does not inflate the sample. A parent against a single run is refused.

Refused with one line: a missing folder, a run without ``per_user.npz`` (one that predates
per-user metrics: rerun it), runs on different data (data fingerprints) or with different
test users or test parts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.cli import Parser, format_table, run
from graphrec.errors import GraphrecError

if TYPE_CHECKING:
    import numpy as np

# numpy and scipy are imported inside the functions, so that --help answers at once; torch
# is never needed (per_user.npz reads with numpy)

#: counts per bootstrap chunk (resamples x users): bounds the memory of the resampling
CHUNK = 1 << 22


def parser(prog: str = "python -m graphrec.compare") -> argparse.ArgumentParser:
    """The command's arguments."""
    p = Parser(prog=prog, description="Paired significance tests of two runs' per-user test "
                                      "metrics: paired t-test, Wilcoxon signed-rank, and a "
                                      "bootstrap 95% confidence interval of A - B. Two k-fold "
                                      "parents are compared with each user's values averaged "
                                      "over the folds.")
    p.add_argument("run_a", metavar="RUN_A", help="a run folder (or k-fold parent)")
    p.add_argument("run_b", metavar="RUN_B", help="another, on the same data and test part")
    p.add_argument("--resamples", type=int, default=10_000,
                   help="bootstrap resamples of the users (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="only these, e.g. ndcg@20 recall@20 rmse (default: every shared metric)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


# --------------------------------------------------------------------------------------------
# statistics


def paired_tests(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided p-values of the paired t-test and the Wilcoxon signed-rank test of ``a``
    against ``b`` (``[n]`` each). Identical samples give 1.0 for both (scipy gives NaN or
    refuses: no difference at all is no evidence of one)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2 or not np.any(d != 0):
        return 1.0, 1.0
    if np.all(d == d[0]):  # a constant non-zero difference: t is infinite
        t_p = 0.0
    else:
        t_p = float(stats.ttest_rel(a, b).pvalue)
    w_p = float(stats.wilcoxon(d).pvalue)
    return t_p, w_p


def bootstrap_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield ``[c, n]`` float64 count matrices, ``resamples`` rows in all: row ``r`` counts how
    often each of ``n`` units is drawn in resample ``r`` (``n`` draws with replacement).
    Deterministic given ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK // max(1, n))
    for start in range(0, resamples, chunk):
        c = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(c, n))
        flat = (np.arange(c)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)


def bootstrap_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, m]``: the column sums of ``columns [n, m]`` over each bootstrap resample
    of its rows."""
    import numpy as np

    return np.concatenate([w @ columns for w in bootstrap_weights(columns.shape[0], resamples,
                                                                  seed)])


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of ``values``."""
    import numpy as np

    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# runs


def _pooled(run: Path) -> tuple[list[Any], Any]:
    """A run's per-user metrics; for a k-fold parent each user's values averaged over the
    folds (rating errors summed). Returns ``(per-fold PerUserMetrics, pooled)``."""
    import numpy as np

    from graphrec.crossval import fold_runs, is_parent
    from graphrec.per_user import PerUserMetrics, load_per_user

    if not run.is_dir():
        raise GraphrecError(f"{run}: no such run folder")
    folds = [load_per_user(r) for r in fold_runs(run)] if is_parent(run) else [load_per_user(run)]
    if len(folds) == 1:
        return folds, folds[0]
    ids, inverse = np.unique(np.concatenate([f.users for f in folds]), return_inverse=True)
    times = np.bincount(inverse, minlength=ids.size)

    def pool(parts: list[np.ndarray]) -> np.ndarray:
        return np.bincount(inverse, weights=np.concatenate(parts), minlength=ids.size)

    keys = [k for k in folds[0].values if all(k in f.values for f in folds)]
    values = {k: pool([f.values[k] for f in folds]) / times for k in keys}
    errors = None
    if all(f.errors is not None for f in folds):
        errors = {k: pool([f.errors[k] for f in folds]) for k in ("se", "ae", "n")}
        errors["n"] = errors["n"].astype(np.int64)
    return folds, PerUserMetrics(ids, values, errors)


def _check_pair(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if a.data_fingerprint != b.data_fingerprint:
        raise GraphrecError(f"compare: {name_a} and {name_b} ran on different data (fingerprints "
                            f"{a.data_fingerprint} and {b.data_fingerprint})")
    if a.users.size != b.users.size or not bool((a.users == b.users).all()):
        raise GraphrecError(f"compare: {name_a} and {name_b} have different test users "
                            f"({a.users.size:,} and {b.users.size:,}); pair runs of the "
                            "same split")
    if a.test_fingerprint != b.test_fingerprint:
        raise GraphrecError(f"compare: {name_a} and {name_b} have different test parts (same "
                            "users, other held-out items: the split method, seed or ratio "
                            "differ)")


def compare_runs(run_a: str | Path, run_b: str | Path, resamples: int = 10_000, seed: int = 0,
                 metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per metric shared by the two runs: ``{"metric", "a", "b", "diff" (a - b),
    "ci_low", "ci_high", "t_p", "wilcoxon_p", "users"}`` (see the module docstring)."""
    import numpy as np

    from graphrec.crossval import is_parent

    run_a, run_b = Path(run_a), Path(run_b)
    if resamples < 100:
        raise GraphrecError(f"--resamples: must be at least 100, got {resamples}")
    for r in (run_a, run_b):
        if not r.is_dir():
            raise GraphrecError(f"{r}: no such run folder")
    if is_parent(run_a) != is_parent(run_b):
        parent, single = (run_a, run_b) if is_parent(run_a) else (run_b, run_a)
        raise GraphrecError(f"compare: {parent} is a k-fold parent and {single} a single run; "
                            "compare two parents, or two single runs (e.g. one fold of each)")
    folds_a, a = _pooled(run_a)
    folds_b, b = _pooled(run_b)
    if len(folds_a) != len(folds_b):
        raise GraphrecError(f"compare: {run_a} has {len(folds_a)} folds and {run_b} "
                            f"{len(folds_b)}")
    for f, (fa, fb) in enumerate(zip(folds_a, folds_b)):
        where = f" (fold {f})" if len(folds_a) > 1 else ""
        _check_pair(fa, fb, f"{run_a}{where}", f"{run_b}{where}")
    shared = [k for k in a.values if k in b.values]
    if a.errors is not None and b.errors is not None:
        shared += ["rmse", "mae"]
    if metrics:
        missing = [m for m in metrics if m not in shared]
        if missing:
            raise GraphrecError(f"--metrics: {missing[0]!r} is not in both runs; they share "
                                f"{', '.join(shared)}")
        shared = [m for m in shared if m in metrics]
    if not shared:
        raise GraphrecError(f"compare: {run_a} and {run_b} share no metric")
    n = a.users.size
    ranking = [k for k in shared if k not in ("rmse", "mae")]
    # one matrix of per-user columns, resampled together so every metric sees the same draws
    cols = [a.values[k] - b.values[k] for k in ranking]
    if "rmse" in shared or "mae" in shared:
        e_a, e_b = a.errors, b.errors
        cols += [e_a["se"], e_b["se"], e_a["ae"], e_b["ae"], e_a["n"].astype(np.float64)]
    sums = bootstrap_sums(np.stack(cols, 1), resamples, seed)  # [R, columns]
    rows = []
    for j, key in enumerate(ranking):
        va, vb = a.values[key], b.values[key]
        rows.append(_row(key, float(va.mean()), float(vb.mean()), sums[:, j] / n, va, vb, n))
    if "rmse" in shared or "mae" in shared:
        r = len(ranking)
        se_a, se_b, ae_a, ae_b, cnt = (sums[:, r + i] for i in range(5))
        cnt = np.maximum(cnt, 1)
        count = e_a["n"].astype(np.float64)
        per = np.maximum(count, 1)
        total = max(1.0, float(count.sum()))
        if "rmse" in shared:
            rows.append(_row("rmse", math.sqrt(float(e_a["se"].sum()) / total),
                             math.sqrt(float(e_b["se"].sum()) / total),
                             np.sqrt(se_a / cnt) - np.sqrt(se_b / cnt),
                             e_a["se"] / per, e_b["se"] / per, n))
        if "mae" in shared:
            rows.append(_row("mae", float(e_a["ae"].sum()) / total, float(e_b["ae"].sum()) / total,
                             (ae_a - ae_b) / cnt, e_a["ae"] / per, e_b["ae"] / per, n))
    return rows


def _row(key: str, a: float, b: float, boot: np.ndarray, va: np.ndarray, vb: np.ndarray,
         n: int) -> dict[str, Any]:
    lo, hi = percentile_ci(boot)
    t_p, w_p = paired_tests(va, vb)
    return {"metric": key, "a": a, "b": b, "diff": a - b, "ci_low": lo, "ci_high": hi,
            "t_p": t_p, "wilcoxon_p": w_p, "users": n}


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def rows_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a fixed-width table."""
    body = [[r["metric"], r["a"], r["b"], f"{r['diff']:+.4f}",
             f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]", _p(r["t_p"]), _p(r["wilcoxon_p"])]
            for r in rows]
    return format_table(body, ["metric", "A", "B", "A - B", "95% CI of A - B", "t-test p",
                               "Wilcoxon p"])


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.compare") -> int:
    """The command: compare two run folders and print the table (or JSON)."""
    args = parser(prog).parse_args(argv)
    rows = compare_runs(args.run_a, args.run_b, args.resamples, args.seed, args.metrics)
    if args.json:
        print(json.dumps({"a": args.run_a, "b": args.run_b, "resamples": args.resamples,
                          "seed": args.seed, "rows": rows}, indent=2))
        return 0
    print(f"A = {args.run_a}\nB = {args.run_b}\n{rows[0]['users']:,} paired test users; "
          f"bootstrap of {args.resamples:,} resamples (seed {args.seed})")
    print(rows_table(rows))
    return 0


__all__ = ["compare_runs", "paired_tests", "bootstrap_weights", "bootstrap_sums",
           "percentile_ci", "rows_table", "main", "parser"]


if __name__ == "__main__":
    sys.exit(run(main))
