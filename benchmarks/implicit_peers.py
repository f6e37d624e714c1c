"""graphrec's ``ials`` and ``bpr`` side by side with the ``implicit`` library's
``AlternatingLeastSquares`` and ``BayesianPersonalizedRanking`` (implicit is a benchmark-only
peer, never a graphrec dependency).

Data: the LightGCN Gowalla pair (29,858 users, 40,981 items; ``SplitConfig("given")``). Every
model is fitted on the same training part, and evaluated by graphrec's own evaluator
(:func:`graphrec.evaluation.evaluator.evaluate`, full ranking, training items filtered):
implicit's factors are copied into a graphrec ``ials`` model of the same size and scored by the
same dot product, so the protocol is identical. Recall@20 and NDCG@20 of the test part.

Rows (``--sections``):

* ``als-defaults``: implicit ALS at its documented defaults (factors 100, regularization 0.01,
  alpha 1.0, 15 iterations, CG solver with 3 steps); graphrec ``ials`` at its own defaults
  (:class:`graphrec.models.ials.IALSConfig`); and graphrec ``ials`` at implicit's settings
  (dim 100, l2 0.01, alpha 0: implicit weighs an observed pair ``alpha * r``, graphrec
  ``1 + alpha * r``, so implicit's alpha 1 is graphrec's 0), the like-for-like speed ratio.
* ``bpr-defaults``: implicit BPR at its defaults (factors 100, lr 0.01, reg 0.01, 100
  iterations); graphrec ``bpr`` at its defaults (dim 64, the trainer's lr 1e-3, batch 2048,
  1 negative), a fixed ``--bpr-epochs`` (no early stopping: the figure is time per epoch).
* ``als-tuned`` / ``bpr-tuned``: a small grid for each, chosen by validation NDCG@20 on a 10%
  validation part carved from the training part (seed 0; never the test part), then the chosen
  setting refitted on the whole training part and tested. ALS: l2 in {5, 50} x observed-pair
  confidence in {6, 21} at 100 factors, 15 iterations, the same points for both libraries; BPR:
  implicit's lr in {0.01, 0.05} x reg in {0.01, 0.001}, graphrec's lr in {1e-3, 5e-3} at dim
  100 and ``--bpr-epochs``.

Time per iteration/epoch is the median after the first (the warm-up); total fit time is the
whole ``fit`` (graphrec ``bpr``: ``fit`` plus the trainer). Threads: ``--threads`` (2) for
both libraries (torch intra-op threads; implicit's ``num_threads``; BLAS single-threaded as
implicit asks). Peak RSS is the process's peak during the fit (the kernel's mark is reset
before each fit; it includes the data already loaded).

Usage::

    nice python benchmarks/implicit_peers.py                       # every section
    nice python benchmarks/implicit_peers.py --sections als-defaults bpr-defaults
    python benchmarks/implicit_peers.py --quick --out /tmp/peers  # synthetic, < 30 s
    python benchmarks/implicit_peers.py --ml100k-grid              # ials defaults grid

Appends each row to ``results/implicit_peers.jsonl`` as it is measured (a stopped run keeps its
rows) and rewrites ``results/implicit_peers.md`` from all its lines (the latest row of each
(section, library, model, setting)). Every row records the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's advice: it threads itself
os.environ.setdefault("MKL_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, git_commit, import_graphrec, load_avg, machine_info,
    maxrss_mib, reset_peak_rss)

JSONL_NAME, MD_NAME = "implicit_peers.jsonl", "implicit_peers.md"
K = 20
SECTIONS = ("als-defaults", "bpr-defaults", "als-tuned", "bpr-tuned")
IMPLICIT_ALS = {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
IMPLICIT_BPR = {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}
# the ALS grid in observed-pair confidence c and λ, shared by both libraries
ALS_GRID = [{"l2": l2, "conf": c} for l2 in (5.0, 50.0) for c in (6.0, 21.0)]
BPR_GRID_IMPLICIT = [{"learning_rate": lr, "regularization": reg}
                     for lr in (0.01, 0.05) for reg in (0.01, 0.001)]
BPR_GRID_GRAPHREC = [{"lr": lr} for lr in (1e-3, 5e-3)]
ML100K_L2, ML100K_ALPHA = (0.1, 1.0, 10.0, 50.0, 100.0, 200.0), (1.0, 5.0, 10.0, 20.0, 40.0)
QUICK = {"factors": 16, "als_iterations": 4, "bpr_iterations": 5, "bpr_epochs": 1,
         "grid": ALS_GRID[:2], "bpr_grid_implicit": BPR_GRID_IMPLICIT[:1],
         "bpr_grid_graphrec": BPR_GRID_GRAPHREC[:1]}


def log(msg: str) -> None:
    print(f"[implicit_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================================
# data and evaluation


def load_parts(args: argparse.Namespace, valid: bool) -> tuple[Any, Any]:
    """The Gowalla pair (``--quick``: a synthetic pair), split as given; with ``valid`` a 10%
    validation part carved from the training part (seed 0)."""
    from graphrec.data import build, read
    from graphrec.split import SplitConfig, split
    from spine import write_synthetic_pair

    if args.quick:
        folder = write_synthetic_pair(Path(args.work) / "synthetic")
    else:
        folder = Path(args.data) / "gowalla" if (Path(args.data) / "gowalla").exists() else Path(args.data)
    ds = build(read([folder / "train.txt", folder / "test.txt"]))
    cfg = SplitConfig("given", valid_ratio=0.1, seed=0) if valid else SplitConfig("given")
    return ds, split(ds.graph, cfg)


def user_items(ds: Any, parts: Any) -> Any:
    """The training part as a scipy CSR users x items matrix of ones (implicit's input)."""
    import numpy as np
    import scipy.sparse as sp

    from graphrec.schema import EDGE

    ei = parts.train[EDGE].edge_index.numpy()
    m = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])),
                      shape=(ds.num_users, ds.num_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def evaluate_factors(ds: Any, parts: Any, users: Any, items: Any, part: str) -> dict[str, float]:
    """Recall/NDCG@K of dot-product scores of given factors, by graphrec's evaluator: the factors
    go into a graphrec ``ials`` model of their width."""
    import numpy as np
    import torch

    from graphrec.models import build_model, model_config

    users, items = np.asarray(users, dtype=np.float32), np.asarray(items, dtype=np.float32)
    holder = build_model("ials", ds.num_users, ds.num_items,
                         model_config("ials", {"dim": users.shape[1]}))
    holder.user_factors = torch.from_numpy(users.copy())
    holder.item_factors = torch.from_numpy(items.copy())
    return evaluate_model(holder, parts, part)


def evaluate_model(model: Any, parts: Any, part: str) -> dict[str, float]:
    from graphrec.evaluation.evaluator import EvalConfig, evaluate

    with __import__("torch").no_grad():
        out = evaluate(model, parts, part, EvalConfig(ks=(K,), metrics=("recall", "ndcg"),
                                                      progress=False))
    return {f"recall@{K}": float(out[f"recall@{K}"]), f"ndcg@{K}": float(out[f"ndcg@{K}"])}


def timing(per_iteration: list[float], total: float) -> dict[str, Any]:
    """Median per iteration after the first (warm-up), and the whole fit."""
    rest = per_iteration[1:] or per_iteration
    return {"per_iteration_s": statistics.median(rest) if rest else None,
            "iterations": len(per_iteration), "fit_s": total}


# ============================================================================================
# the four fitters: each returns (metrics-ready factors or model, timing)


def _fit_timed(model: Any, ui: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Fit an implicit model, timing each iteration through its callback."""
    marks: list[float] = []
    start = time.perf_counter()
    last = [start]

    def tick(*_: Any) -> None:
        now = time.perf_counter()
        marks.append(now - last[0])
        last[0] = now

    model.fit(ui, show_progress=False, callback=tick)
    return model.user_factors, model.item_factors, timing(marks, time.perf_counter() - start)


def fit_implicit_als(ui: Any, params: dict[str, Any], threads: int) -> tuple[Any, Any, dict[str, Any]]:
    from implicit.cpu.als import AlternatingLeastSquares

    return _fit_timed(AlternatingLeastSquares(**params, num_threads=threads, random_state=0), ui)


def fit_implicit_bpr(ui: Any, params: dict[str, Any], threads: int) -> tuple[Any, Any, dict[str, Any]]:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    # user factors end in a column of ones, item factors in the item bias: the dot product
    # is implicit's own score
    return _fit_timed(BayesianPersonalizedRanking(**params, num_threads=threads, random_state=0), ui)


def fit_ials(ds: Any, parts: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from graphrec.models import build_model, model_config

    model = build_model("ials", ds.num_users, ds.num_items, model_config("ials", options))
    start = time.perf_counter()
    model.fit(parts.train)
    return model, timing(list(model.iteration_seconds), time.perf_counter() - start)


def fit_bpr(ds: Any, parts: Any, options: dict[str, Any], train: dict[str, Any],
            epochs: int) -> tuple[Any, dict[str, Any]]:
    from graphrec.config import model_train_defaults
    from graphrec.models import build_model, model_config
    from graphrec.split import Split
    from graphrec.trainer import HISTORY_NAME, TrainConfig, train_model

    model = build_model("bpr", ds.num_users, ds.num_items, model_config("bpr", options))
    cfg = TrainConfig(**{**model_train_defaults("bpr"), **train, "epochs": epochs,
                         "patience": 0, "progress": False, "seed": 0})
    no_valid = Split(parts.train, parts.test)  # fixed epochs: no validation inside the trainer
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model.fit(parts.train)
        train_model(model, no_valid, cfg, None, Path(tmp))
        total = time.perf_counter() - start
        lines = (Path(tmp) / HISTORY_NAME).read_text().splitlines()
    marks = [json.loads(line)["seconds"] for line in lines]
    return model, timing(marks, total)


# ============================================================================================
# sections


def record(args: argparse.Namespace, section: str, library: str, model: str, setting: str,
           params: dict[str, Any], metrics: dict[str, float], times: dict[str, Any],
           rss: float, **extra: Any) -> dict[str, Any]:
    row = {"section": section, "library": library, "model": model, "setting": setting,
           "params": params, "metrics": metrics, **times, "peak_rss_mib": round(rss, 1),
           "threads": args.threads, "data": "synthetic" if args.quick else "gowalla", **extra,
           **args.common, "load": load_avg()}
    log(f"{section} {library} {model} {setting}: {metrics} {times}")
    if args.sink is not None:  # row by row, so a stopped run keeps what it measured
        args.sink.mkdir(parents=True, exist_ok=True)
        with open(args.sink / JSONL_NAME, "a") as f:
            f.write(json.dumps(row) + "\n")
        lines = [json.loads(x) for x in (args.sink / JSONL_NAME).read_text().splitlines() if x]
        (args.sink / MD_NAME).write_text(markdown(lines))
    return row


def measured(fn: Any) -> tuple[Any, float]:
    """``fn()`` and the process's peak RSS while it ran."""
    reset_peak_rss()
    out = fn()
    return out, maxrss_mib()


def als_rows(args: argparse.Namespace, section: str, ds: Any, parts: Any, part: str,
             implicit_params: dict[str, Any], ials_options: dict[str, Any],
             setting: str, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One implicit ALS row and one graphrec ials row (``None`` options: skip that side)."""
    rows = []
    if implicit_params is not None:
        ui = user_items(ds, parts)
        (u, i, times), rss = measured(lambda: fit_implicit_als(ui, implicit_params, args.threads))
        rows.append(record(args, section, "implicit", "AlternatingLeastSquares", setting,
                           implicit_params, evaluate_factors(ds, parts, u, i, part), times, rss,
                           **(extra or {})))
    if ials_options is not None:
        (model, times), rss = measured(lambda: fit_ials(ds, parts, ials_options))
        rows.append(record(args, section, "graphrec", "ials", setting, ials_options,
                           evaluate_model(model, parts, part), times, rss, **(extra or {})))
    return rows


def ials_defaults() -> dict[str, Any]:
    import dataclasses

    from graphrec.models.ials import IALSConfig

    return dataclasses.asdict(IALSConfig())


def section_als_defaults(args: argparse.Namespace) -> list[dict[str, Any]]:
    ds, parts = load_parts(args, valid=False)
    its = QUICK["als_iterations"] if args.quick else IMPLICIT_ALS["iterations"]
    factors = QUICK["factors"] if args.quick else IMPLICIT_ALS["factors"]
    imp = {**IMPLICIT_ALS, "factors": factors, "iterations": its}
    own = {**ials_defaults(), "iterations": its}
    if args.quick:
        own["dim"] = factors
    same = {"dim": factors, "l2": imp["regularization"], "alpha": imp["alpha"] - 1.0,
            "iterations": its, "cg_steps": 3}
    rows = als_rows(args, "als-defaults", ds, parts, "test", imp, None, "implicit defaults")
    rows += als_rows(args, "als-defaults", ds, parts, "test", None, own, "graphrec defaults")
    rows += als_rows(args, "als-defaults", ds, parts, "test", None, same, "implicit's settings")
    return rows


def section_als_tuned(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The shared grid on validation for both libraries, then the best of each on test."""
    grid = QUICK["grid"] if args.quick else ALS_GRID
    factors = QUICK["factors"] if args.quick else IMPLICIT_ALS["factors"]
    its = QUICK["als_iterations"] if args.quick else IMPLICIT_ALS["iterations"]
    ds, vparts = load_parts(args, valid=True)
    best: dict[str, tuple[float, dict[str, Any], dict[str, Any]]] = {}
    rows = []
    for point in grid:
        imp = {**IMPLICIT_ALS, "factors": factors, "iterations": its,
               "regularization": point["l2"], "alpha": point["conf"]}
        own = {"dim": factors, "l2": point["l2"], "alpha": point["conf"] - 1.0,
               "iterations": its, "cg_steps": 3}
        got = als_rows(args, "als-tuned", ds, vparts, "valid", imp, own, "grid (valid)",
                       {"grid_point": point})
        rows += got
        for row, params in zip(got, (imp, own)):
            score = row["metrics"][f"ndcg@{K}"]
            if row["library"] not in best or score > best[row["library"]][0]:
                best[row["library"]] = (score, params, point)
    ds, parts = load_parts(args, valid=False)
    rows += als_rows(args, "als-tuned", ds, parts, "test", best["implicit"][1], None, "tuned",
                     {"grid_point": best["implicit"][2]})
    rows += als_rows(args, "als-tuned", ds, parts, "test", None, best["graphrec"][1], "tuned",
                     {"grid_point": best["graphrec"][2]})
    return rows


def bpr_rows(args: argparse.Namespace, section: str, ds: Any, parts: Any, part: str,
             implicit_params: dict[str, Any] | None, graphrec: tuple[dict, dict] | None,
             setting: str, epochs: int) -> list[dict[str, Any]]:
    rows = []
    if implicit_params is not None:
        ui = user_items(ds, parts)
        (u, i, times), rss = measured(lambda: fit_implicit_bpr(ui, implicit_params, args.threads))
        rows.append(record(args, section, "implicit", "BayesianPersonalizedRanking", setting,
                           implicit_params, evaluate_factors(ds, parts, u, i, part), times, rss))
    if graphrec is not None:
        options, train = graphrec
        (model, times), rss = measured(lambda: fit_bpr(ds, parts, options, train, epochs))
        rows.append(record(args, section, "graphrec", "bpr", setting,
                           {**options, **{f"train.{k}": v for k, v in train.items()},
                            "epochs": epochs}, evaluate_model(model, parts, part), times, rss))
    return rows


def section_bpr_defaults(args: argparse.Namespace) -> list[dict[str, Any]]:
    ds, parts = load_parts(args, valid=False)
    imp = dict(IMPLICIT_BPR)
    if args.quick:
        imp.update(factors=QUICK["factors"], iterations=QUICK["bpr_iterations"])
    options = {"dim": QUICK["factors"]} if args.quick else {}
    epochs = QUICK["bpr_epochs"] if args.quick else args.bpr_epochs
    return (bpr_rows(args, "bpr-defaults", ds, parts, "test", imp, None, "implicit defaults", 0)
            + bpr_rows(args, "bpr-defaults", ds, parts, "test", None, (options, {}),
                       "graphrec defaults", epochs))


def section_bpr_tuned(args: argparse.Namespace) -> list[dict[str, Any]]:
    imp_grid = QUICK["bpr_grid_implicit"] if args.quick else BPR_GRID_IMPLICIT
    own_grid = QUICK["bpr_grid_graphrec"] if args.quick else BPR_GRID_GRAPHREC
    base = dict(IMPLICIT_BPR)
    options = {"dim": QUICK["factors"]} if args.quick else {"dim": IMPLICIT_BPR["factors"]}
    if args.quick:
        base.update(factors=QUICK["factors"], iterations=QUICK["bpr_iterations"])
    epochs = QUICK["bpr_epochs"] if args.quick else args.bpr_epochs
    ds, vparts = load_parts(args, valid=True)
    rows, best_imp, best_own = [], None, None
    for point in imp_grid:
        got = bpr_rows(args, "bpr-tuned", ds, vparts, "valid", {**base, **point}, None,
                       "grid (valid)", 0)
        rows += got
        if best_imp is None or got[0]["metrics"][f"ndcg@{K}"] > best_imp[0]:
            best_imp = (got[0]["metrics"][f"ndcg@{K}"], {**base, **point})
    for point in own_grid:
        got = bpr_rows(args, "bpr-tuned", ds, vparts, "valid", None, (options, point),
                       "grid (valid)", epochs)
        rows += got
        if best_own is None or got[0]["metrics"][f"ndcg@{K}"] > best_own[0]:
            best_own = (got[0]["metrics"][f"ndcg@{K}"], point)
    ds, parts = load_parts(args, valid=False)
    rows += bpr_rows(args, "bpr-tuned", ds, parts, "test", best_imp[1], None, "tuned", 0)
    rows += bpr_rows(args, "bpr-tuned", ds, parts, "test", None, (options, best_own[1]), "tuned",
                     epochs)
    return rows


def ml100k_grid(args: argparse.Namespace) -> list[dict[str, Any]]:
    """How ``ials``'s defaults were chosen: ml-100k (every rating a positive, random 80/20 per
    user, seed 0), a 10% validation part of the training part, l2 x alpha at dim 64."""
    from graphrec.data import build, read
    from graphrec.data.synthetic import make_synthetic
    from graphrec.split import SplitConfig, split

    raw = make_synthetic() if args.quick else read(Path(args.data) / "ml-100k" / "u.data")
    ds = build(raw)
    parts = split(ds.graph, SplitConfig("random", valid_ratio=0.1, seed=0))
    rows = []
    for l2 in ML100K_L2[:2] if args.quick else ML100K_L2:
        for alpha in ML100K_ALPHA[:2] if args.quick else ML100K_ALPHA:
            opts = {"dim": 64, "l2": l2, "alpha": alpha}
            model, times = fit_ials(ds, parts, opts)
            rows.append(record(args, "ml100k-grid", "graphrec", "ials", "grid (valid)", opts,
                               evaluate_model(model, parts, "valid"), times, maxrss_mib(),
                               data_name="ml-100k"))
    return rows


# ============================================================================================
# results


def markdown(records: list[dict[str, Any]]) -> str:
    latest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        key = (r["section"], r["library"], r["model"], r["setting"],
               json.dumps(r.get("grid_point"), sort_keys=True) if r["setting"].startswith("grid")
               else json.dumps(r["params"], sort_keys=True) if r["section"] == "ml100k-grid" else "")
        latest[key] = r
    rows = list(latest.values())
    ctx = rows[-1] if rows else {}
    out = ["implicit peers: graphrec `ials` / `bpr` against the `implicit` library "
           f"({ctx.get('implicit_version', '?')}) on "
           f"{'synthetic data (--quick)' if ctx.get('data') == 'synthetic' else 'Gowalla (LightGCN split, given)'}"
           f"; {ctx.get('threads', '?')} threads each; {ctx.get('machine', {}).get('cpu', '?')}; "
           "Recall/NDCG@20 by graphrec's evaluator (full ranking, training items filtered); "
           "time per iteration/epoch is the median after the first; commit "
           f"{ctx.get('commit', '?')}.", ""]
    for section in SECTIONS + ("ml100k-grid",):
        part = [r for r in rows if r["section"] == section]
        if not part:
            continue
        out += [f"## {section}", "",
                "| library | model | setting | params | Recall@20 | NDCG@20 | s / iteration | "
                "iterations | fit s | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in part:
            per = r.get("per_iteration_s")
            out.append(f"| {r['library']} | {r['model']} | {r['setting']} | "
                       f"{json.dumps(r['params'], sort_keys=True)} | "
                       f"{r['metrics'][f'recall@{K}']:.4f} | {r['metrics'][f'ndcg@{K}']:.4f} | "
                       f"{per:.3f} | {r['iterations']} | {r['fit_s']:.1f} | {r['peak_rss_mib']:.0f} |"
                       if per is not None else f"| {r['library']} | {r['model']} | {r['setting']} "
                       f"| {json.dumps(r['params'])} | {r['metrics'][f'recall@{K}']:.4f} | "
                       f"{r['metrics'][f'ndcg@{K}']:.4f} | – | 0 | {r['fit_s']:.1f} | "
                       f"{r['peak_rss_mib']:.0f} |")
        test = [r for r in part if not r["setting"].startswith("grid")]
        imp = [r for r in test if r["library"] == "implicit"]
        own = [r for r in test if r["library"] == "graphrec"]
        if imp and own:
            out.append("")
            for o in own:
                i = imp[0]
                def ratio(m: str, o: dict = o, i: dict = i) -> float:
                    return o["metrics"][m] / max(i["metrics"][m], 1e-12)

                per = (f"{o['per_iteration_s'] / i['per_iteration_s']:.2f}x"
                       if o.get("per_iteration_s") and i.get("per_iteration_s") else "n/a")
                out.append(f"graphrec/implicit ({o['setting']} against {i['setting']}): "
                           f"Recall@20 {ratio(f'recall@{K}'):.2f}x, NDCG@20 "
                           f"{ratio(f'ndcg@{K}'):.2f}x, time per iteration {per}, fit time "
                           f"{o['fit_s'] / i['fit_s']:.2f}x.  ")
        out.append("")
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(os.environ.get("GRAPHREC_DATA") or DEFAULT_DATA),
                   help="folder holding gowalla/ (and ml-100k/)")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                   "--quick writes only with --out)")
    p.add_argument("--quick", action="store_true", help="synthetic data, tiny settings (< 30 s)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--ml100k-grid", action="store_true", help="only the ials defaults grid on ml-100k")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bpr-epochs", type=int, default=5, help="graphrec bpr's fixed epochs")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_graphrec(args.threads)
    import implicit

    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.work or tmp
        records: list[dict[str, Any]] = []
        args.common = {"machine": machine_info(), "commit": git_commit(),
                       "implicit_version": implicit.__version__,
                       "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        args.sink = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
        jobs = ([ml100k_grid] if args.ml100k_grid else
                [{"als-defaults": section_als_defaults, "bpr-defaults": section_bpr_defaults,
                  "als-tuned": section_als_tuned, "bpr-tuned": section_bpr_tuned}[s]
                 for s in args.sections])
        for job in jobs:
            records += job(args)
        if args.sink is None:
            print(markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
