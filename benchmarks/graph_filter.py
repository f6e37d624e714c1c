"""The graph-filter family benchmark: every training-free filter against GF-CF, in one run.

Parts (``--parts``, default all but ``defaults``):

* ``gowalla``: the LightGCN Gowalla split (29,858 users, 40,981 items; ``SplitConfig("given")``),
  the full ranking of every test user. One row per filter setting of :data:`GOWALLA` (each at
  its defaults, plus the paper settings and the speed variants): Recall@20, NDCG@20, fit
  seconds (operator, SVD, precomputation), evaluation seconds, wall = fit + evaluation, the
  operator's memory and the child's peak RSS. Each row is ``--runs`` child processes (default
  3 for rows whose first wall is under 60 s, else 1): median and min-max; the metrics must agree
  between runs. Targets: ``bspm`` >= the paper's 0.1920 / 0.1597; the fastest filter at or above
  GF-CF's published 0.1849 / 0.1518 within 10 s wall; moonshot: the best filter >= 0.1920 within
  20 s.
* ``ml100k``: ml-100k, all ratings positive, per-user random 80/20 (seed 0), every filter at its
  defaults beside ``lightgcn`` and ``bpr`` trained by ``python -m graphrec.train`` at theirs.
* ``operator``: the measured rule behind ``gram="auto"``: for catalogues of the ``n`` most
  popular Gowalla items (1,000 to 40,981), the seconds of a first hop (``r P`` from 1,024 sparse
  rows) and of a hop on a dense state (``x P``, 1,024 rows) with ``P`` dense, sparse and
  factored; and float32 against bfloat16 for the low-rank product ``[1024, k] @ [k, I]``.
* ``defaults``: the grids the defaults were chosen on, on validation parts (10% of each user's
  training interactions; never the test parts) of ml-100k and Gowalla: Recall/NDCG@20 per
  setting (:data:`GRIDS`).

Every measurement runs in a child process (this script re-invoked with ``--child KIND``) that
prints one JSON line; the parent waits for the 1-minute load average to drop below
``--max-load`` before each timed Gowalla child and records the load.

Usage::

    python benchmarks/graph_filter.py                     # gowalla, ml100k, operator; appends
                                                          # results/graph_filter.jsonl, rewrites .md
    python benchmarks/graph_filter.py --parts defaults    # the validation grids:
                                                          # results/graph_filter_defaults.{jsonl,md}
    python benchmarks/graph_filter.py --quick             # synthetic data, < 1 minute, no writes
    python benchmarks/graph_filter.py --data /path/to/data   # folder holding gowalla/, ml-100k/
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, git_commit, hwm_mib, import_graphrec, load_avg,
    machine_info, maxrss_mib, reset_peak_rss, stats, timed)
from spine import write_synthetic_pair  # noqa: E402

K = 20
BSPM_PAPER = (0.1920, 0.1597)  # BSPM-EM on Gowalla (Choi et al., SIGIR 2023)
GFCF_PAPER = (0.1849, 0.1518)  # GF-CF on Gowalla (Shen et al., CIKM 2021)
TURBO_PAPER = (0.1835, 0.1566)  # Turbo-CF on Gowalla (Park et al., SIGIR 2024)
LIGHTGCN_PAPER = (0.1830, 0.1554)  # LightGCN on Gowalla (He et al., SIGIR 2020)
FAST_WALL_S, MOONSHOT_WALL_S = 10.0, 20.0
CHILD_TIMEOUT_S = 1800

#: (label, model, options) of the Gowalla table; the first row is the reference GF-CF
GOWALLA: list[tuple[str, str, dict[str, Any]]] = [
    ("graph-filter (GF-CF, defaults)", "graph-filter", {}),
    ("graph-filter, float32 products", "graph-filter", {"dtype": "float32"}),
    ("graph-filter, Lanczos SVD", "graph-filter", {"svd": "lanczos"}),
    ("graph-filter, fast: prune 0.7, niter 2 (chosen on validation)", "graph-filter",
     {"prune": 0.7, "niter": 2}),
    ("bspm (defaults)", "bspm", {}),
    ("bspm, paper setting (exact)", "bspm", {"k": 448, "beta": 0.2, "sharpen_time": 2.5,
                                            "tail_degree": None}),
    ("bspm, tuned on Gowalla's validation part", "bspm", {"k": 640, "sharpen_time": 2.5,
                                                          "beta": 0.2}),
    ("bspm, tail_degree 1 (spectral)", "bspm", {"tail_degree": 1}),
    ("bspm, tail_degree 2", "bspm", {"tail_degree": 2}),
    ("turbo-cf (defaults)", "turbo-cf", {}),
    ("turbo-cf, paper setting", "turbo-cf", {"alpha": 0.6, "power": 0.7, "filter": 1}),
    ("turbo-cf filter 2, alpha 0.5, power 1 (polynomial for the ideal term)", "turbo-cf",
     {"alpha": 0.5, "power": 1.0, "filter": 2}),
    ("turbo-cf filter 3, alpha 0.5, power 1", "turbo-cf", {"alpha": 0.5, "power": 1.0, "filter": 3}),
    ("poly-filter [0, 1] (linear term alone)", "poly-filter", {}),
]
#: the ml-100k table: the filters at their defaults; lightgcn and bpr by the command line
ML100K_FILTERS = ("graph-filter", "bspm", "turbo-cf", "poly-filter")
ML100K_TRAINED = ("lightgcn", "bpr")
#: the validation grids of --parts defaults, per data set: (model, fixed options,
#: {option: values}); --quick runs ml-100k's on the synthetic data
GRIDS: dict[str, list[tuple[str, dict[str, Any], dict[str, list[Any]]]]] = {
    "ml-100k": [
        ("bspm", {}, {"sharpen_time": [1.0, 1.5, 2.0, 2.5, 3.0], "beta": [0.1, 0.2, 0.3]}),
        ("bspm", {}, {"k": [16, 32, 64, 128]}),
        ("turbo-cf", {}, {"alpha": [0.5, 0.6, 0.7], "power": [0.7, 1.0], "filter": [1, 2]}),
    ],
    "gowalla": [  # the exact process: about 2 minutes per setting
        ("graph-filter", {}, {"niter": [4, 2], "prune": [0.0, 0.5, 0.7]}),
        ("bspm", {}, {"sharpen_time": [2.0, 2.5, 3.0], "beta": [0.1, 0.2, 0.3]}),
        ("bspm", {}, {"k": [256, 640]}),
        ("turbo-cf", {}, {"alpha": [0.5, 0.6, 0.7], "power": [0.7, 1.0], "filter": [1]}),
    ],
}


# ============================================================================================
# Children: each runs in a fresh process and returns a JSON-able dict


def _versions() -> dict[str, str]:
    import platform

    import numpy
    import scipy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "scipy": scipy.__version__, "numpy": numpy.__version__}


def load(dataset: str, part: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """A data set and its split: Gowalla as given, ml-100k per user at random 80/20 (seed 0);
    ``part="valid"`` carves 10% of each user's training interactions for validation."""
    from graphrec.data import build, read
    from graphrec.data.synthetic import make_synthetic
    from graphrec.split import SplitConfig, split

    valid = 0.1 if part == "valid" else 0.0
    if dataset == "gowalla":
        folder = (write_synthetic_pair(Path(args.work) / "synthetic") if args.quick
                  else Path(args.data) / "gowalla")
        ds = build(read([folder / "train.txt", folder / "test.txt"]))
        return ds, split(ds.graph, SplitConfig("given", valid_ratio=valid))
    raw = make_synthetic() if args.quick else read(Path(args.data) / "ml-100k" / "u.data")
    ds = build(raw)
    return ds, split(ds.graph, SplitConfig("random", seed=0, valid_ratio=valid))


def fit_and_evaluate(name: str, options: dict[str, Any], ds: Any, sp: Any, part: str
                     ) -> dict[str, Any]:
    """Fit a filter, evaluate it (full ranking @20, training items excluded): metrics, seconds
    and memory."""
    from graphrec.evaluation.evaluator import EvalConfig, evaluate
    from graphrec.models import build_model, model_config

    gc.collect()
    reset = reset_peak_rss()
    model = build_model(name, ds.num_users, ds.num_items, model_config(name, options))
    _, t_fit = timed(lambda: model.fit(sp.train))
    out, t_eval = timed(lambda: evaluate(model, sp, part, EvalConfig(ks=(K,), progress=False)))
    graph = getattr(model, "graph", None)
    return {"metrics": {k: out[k] for k in (f"recall@{K}", f"ndcg@{K}", f"precision@{K}", "users")},
            "seconds": {"fit": t_fit, "evaluate": t_eval, "wall": t_fit + t_eval},
            "memory": {"peak_rss_mib": maxrss_mib(), "phase_peak_rss_mib": hwm_mib() if reset else None,
                       "operator_mib": graph.nbytes() / 2**20 if graph is not None else None},
            "operator": graph.mode if graph is not None else None,
            "config": dataclasses.asdict(model.cfg)}


def warm_up(args: argparse.Namespace) -> None:
    """Fit and evaluate each filter once on a tiny synthetic graph, so no timed run pays
    first-call costs (lazy imports, thread pools, kernel dispatch)."""
    from graphrec.data import build
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.split import SplitConfig, split

    ds = build(make_synthetic(SyntheticConfig(num_users=200, num_items=100)))
    sp = split(ds.graph, SplitConfig("random", seed=0))
    for name in ML100K_FILTERS:
        fit_and_evaluate(name, {"k": 16} if name in ("graph-filter", "bspm") else {}, ds, sp,
                         "test")


def child_filter(args: argparse.Namespace) -> dict[str, Any]:
    """One filter setting on one data set and part."""
    import_graphrec(args.threads)
    (ds, sp), t_load = timed(lambda: load(args.dataset, args.part, args))
    warm_up(args)
    res = fit_and_evaluate(args.model, json.loads(args.options), ds, sp, args.part)
    res["seconds"]["load_split"] = t_load
    res["info"] = {"users": ds.num_users, "items": ds.num_items,
                   "interactions": ds.num_interactions}
    res["versions"] = _versions()
    return res


def child_grid(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of one grid (``--model``, fixed ``--options``, ``--grid``) on one data
    set's validation part: metrics only."""
    import itertools

    import_graphrec(args.threads)
    ds, sp = load(args.dataset, "valid", args)
    grid = json.loads(args.grid)
    rows = []
    for values in itertools.product(*grid.values()):
        options = {**json.loads(args.options), **dict(zip(grid, values))}
        res = fit_and_evaluate(args.model, options, ds, sp, "valid")
        rows.append({"options": dict(zip(grid, values)), "metrics": res["metrics"],
                     "seconds": res["seconds"]})
    return {"rows": rows}


def child_operator(args: argparse.Namespace) -> dict[str, Any]:
    """Hop timings per form of P on catalogues of the n most popular items, and float32 vs
    bfloat16 low-rank products: medians of 3 after a warm-up."""
    import_graphrec(args.threads)
    import torch

    from graphrec.batches import History
    from graphrec.data.graph import edge_subgraph, user_sequences
    from graphrec.models.filters import ItemGraph, OperatorConfig, Rows
    from graphrec.schema import EDGE

    ds, sp = load("gowalla", "test", args)
    train = sp.train
    items = train[EDGE].edge_index[1]
    popular = torch.argsort(torch.bincount(items, minlength=ds.num_items), descending=True)
    sizes = [n for n in ((500, 1000) if args.quick else (1000, 2000, 4096, 8192, 16384, 40981))
             if n <= ds.num_items]
    rows_n = min(1024, ds.num_users)

    def median(fn: Callable[[], Any]) -> float:
        fn()
        return stats([timed(fn)[1] for _ in range(3)])["median"]

    out = []
    for n in sizes:
        keep = torch.zeros(ds.num_items, dtype=torch.bool)
        keep[popular[:n]] = True
        sub = edge_subgraph(train, keep[items])
        ptr, seq = user_sequences(sub)
        remap = torch.full((ds.num_items,), -1, dtype=torch.long)
        remap[popular[:n]] = torch.arange(n)
        seq = remap[seq]
        users = torch.argsort(ptr.diff(), descending=True)[:rows_n]  # rows with items
        rows = Rows(History.of(ptr, seq, users), n, torch.device("cpu"))
        x = torch.rand(rows_n, n)
        rec: dict[str, Any] = {"items": n, "edges": int(seq.numel())}
        for form in ("dense", "sparse", "factored"):
            if form == "dense" and 4 * n * n > 8 * 2**30:
                continue
            op = ItemGraph(ptr, seq, n, OperatorConfig(gram=form))
            rec[form] = {"first_hop_s": median(lambda op=op, rows=rows: op.hop_rows(rows)),
                         "hop_s": median(lambda op=op, x=x: op.hop(x)),
                         "operator_mib": op.nbytes() / 2**20}
        out.append(rec)
    from graphrec.models.filters import add_low_rank

    lowrank = []
    for k in (64, 256, 448):
        left, right = torch.rand(rows_n, k), torch.rand(k, ds.num_items)
        acc = torch.zeros(rows_n, ds.num_items)
        entry = {"k": k}
        for dt in ("float32", "bfloat16"):
            r = right.to(getattr(torch, dt))
            entry[dt] = median(lambda r=r, acc=acc, left=left: add_low_rank(acc, left, r))
        lowrank.append(entry)
    return {"hops": out, "lowrank": lowrank, "rows": rows_n,
            "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "filter": child_filter, "grid": child_grid, "operator": child_operator}


# ============================================================================================
# Parent side (standard library only, so its memory never leaks into a child's peak)


def _log(msg: str) -> None:
    print(f"graph_filter: {msg}", file=sys.stderr, flush=True)


def run_child(kind: str, args: argparse.Namespace, work: Path, **flags: str) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work),
           "--threads", str(args.threads)]
    cmd += ["--quick"] if args.quick else ["--data", str(args.data)]
    for key, value in flags.items():
        cmd += [f"--{key}", value]
    before = load_avg()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} {flags} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_avg_1m"] = [before, load_avg()]
    return res


def wait_for_quiet(args: argparse.Namespace) -> None:
    start = time.monotonic()
    while not args.quick and (load := load_avg()) is not None and load >= args.max_load:
        if time.monotonic() - start >= args.max_wait:
            _log(f"load average still {load:.2f} after {args.max_wait:.0f} s; timing anyway "
                 "(recorded)")
            return
        time.sleep(5)


def run_gowalla(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    records = []
    seen: set[str] = set()
    for label, model, options in GOWALLA:
        if args.rows and args.rows not in label:
            continue
        if args.quick and model in seen:  # --quick: each filter once (does it run, not figures)
            continue
        seen.add(model)
        children = []
        while True:
            wait_for_quiet(args)
            _log(f"gowalla: {label}, run {len(children) + 1} ...")
            children.append(run_child("filter", args, work, dataset="gowalla", part="test",
                                      model=model, options=json.dumps(options)))
            wanted = args.runs or (3 if children[0]["seconds"]["wall"] < 60 and not args.quick
                                   else 1)
            if len(children) >= wanted:
                break
        first = children[0]
        if any(c["metrics"] != first["metrics"] for c in children):
            raise RuntimeError(f"{label}: metrics differ between runs")
        sec = {s: {**stats([c["seconds"][s] for c in children]),
                   "runs": [c["seconds"][s] for c in children]} for s in first["seconds"]}
        records.append({"section": "gowalla", "label": label, "model": model, "options": options,
                        "config": first["config"], "operator": first["operator"],
                        "metrics": first["metrics"], "seconds": sec, "runs": len(children),
                        "memory": {"phase_peak_rss_mib": max(c["memory"]["phase_peak_rss_mib"] or 0
                                                             for c in children),
                                   "operator_mib": first["memory"]["operator_mib"]},
                        "load_avg_1m": [c["load_avg_1m"] for c in children],
                        "info": first["info"], "versions": first["versions"]})
    return records


def run_ml100k(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    records = []
    for model in ML100K_FILTERS[:2] if args.quick else ML100K_FILTERS:
        _log(f"ml-100k: {model} ...")
        res = run_child("filter", args, work, dataset="ml-100k", part="test", model=model,
                        options="{}")
        records.append({"section": "ml100k", "label": model, "model": model,
                        "metrics": res["metrics"], "seconds": res["seconds"],
                        "config": res["config"], "load_avg_1m": res["load_avg_1m"]})
    for model in () if args.quick else ML100K_TRAINED:  # --quick: no training runs
        _log(f"ml-100k: {model} (python -m graphrec.train, defaults) ...")
        out = work / f"run-{model}"
        data = (["--data", str(Path(args.data) / "ml-100k" / "u.data")] if not args.quick
                else ["--epochs", "2"])  # no --data: the built-in synthetic data set
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "graphrec.train", "--model", model, *data,
                               "--k", str(K), "--out", str(out), "--no-progress"],
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"{model}: graphrec.train failed:\n{proc.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        records.append({"section": "ml100k", "label": f"{model} (trained, its defaults)",
                        "model": model, "metrics": {k: metrics.get(k) for k in
                                                    (f"recall@{K}", f"ndcg@{K}", f"precision@{K}")},
                        "seconds": {"wall": time.monotonic() - start}})
    return records


def run_defaults(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    records = []
    datasets = ("ml-100k",) if args.quick else ("ml-100k", "gowalla")
    for dataset in [d for d in datasets if not args.grid_datasets
                    or d in args.grid_datasets.split(",")]:
        for model, fixed, grid in GRIDS[dataset]:
            if args.grid_models and model not in args.grid_models.split(","):
                continue
            _log(f"{dataset} validation: {model} grid {grid} ...")
            res = run_child("grid", args, work, dataset=dataset, model=model,
                            options=json.dumps(fixed), grid=json.dumps(grid))
            records += [{"section": "defaults", "dataset": dataset, "model": model,
                         "fixed": fixed, **row} for row in res["rows"]]
    return records


# --------------------------------------------------------------------------------------------
# Markdown


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _span(s: dict[str, float], digits: int = 1) -> str:
    if s["min"] == s["max"]:
        return f"{s['median']:.{digits}f}"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def gowalla_lines(recs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in recs:
        m, s = r["metrics"], r["seconds"]
        rows.append([r["label"], f"{m[f'recall@{K}']:.4f}", f"{m[f'ndcg@{K}']:.4f}",
                     _span(s["fit"]), _span(s["evaluate"]), f"**{_span(s['wall'])}**",
                     f"{r['memory']['operator_mib']:,.0f} ({r['operator']})",
                     f"{r['memory']['phase_peak_rss_mib']:,.0f}", str(r["runs"])])
    lines = _table(["filter", f"Recall@{K}", f"NDCG@{K}", "fit s", "evaluation s", "wall s",
                    "operator MiB (form)", "peak RSS MiB", "runs"], rows)
    ok = [r for r in recs if r["metrics"][f"recall@{K}"] >= GFCF_PAPER[0]
          and r["metrics"][f"ndcg@{K}"] >= GFCF_PAPER[1]]
    fastest = min(ok, key=lambda r: r["seconds"]["wall"]["median"]) if ok else None
    bspm = [r for r in recs if r["model"] == "bspm" and r["label"].startswith("bspm (defaults)")]
    best = max(recs, key=lambda r: r["metrics"][f"recall@{K}"])
    checks = []
    if bspm:
        m = bspm[0]["metrics"]
        hit = m[f"recall@{K}"] >= BSPM_PAPER[0] and m[f"ndcg@{K}"] >= BSPM_PAPER[1]
        checks.append(f"`bspm` at its defaults ≥ the paper's {BSPM_PAPER[0]} / {BSPM_PAPER[1]}: "
                      f"{'**yes**' if hit else '**no**'} ({m[f'recall@{K}']:.4f} / "
                      f"{m[f'ndcg@{K}']:.4f})")
    if fastest is not None:
        w = fastest["seconds"]["wall"]["median"]
        checks.append(f"fastest filter at or above GF-CF's published {GFCF_PAPER[0]} / "
                      f"{GFCF_PAPER[1]}: {fastest['label']}, {w:.1f} s wall: "
                      f"{'**within**' if w <= FAST_WALL_S else '**over**'} the {FAST_WALL_S:g} s target")
    w = best["seconds"]["wall"]["median"]
    hit = best["metrics"][f"recall@{K}"] >= BSPM_PAPER[0] and w <= MOONSHOT_WALL_S
    checks.append(f"moonshot (best filter ≥ {BSPM_PAPER[0]} Recall@20 within {MOONSHOT_WALL_S:g} s): "
                  f"best is {best['label']}, {best['metrics'][f'recall@{K}']:.4f} in {w:.1f} s: "
                  f"{'**yes**' if hit else '**no**'}")
    return lines + [""] + [f"- {c}" for c in checks]


def ml100k_lines(recs: list[dict[str, Any]]) -> list[str]:
    rows = [[r["label"], f"{r['metrics'][f'recall@{K}']:.4f}", f"{r['metrics'][f'ndcg@{K}']:.4f}",
             f"{r['metrics'][f'precision@{K}']:.4f}", f"{r['seconds']['wall']:.2f}"] for r in recs]
    return _table(["model", f"Recall@{K}", f"NDCG@{K}", f"Precision@{K}",
                   "wall s (fit + evaluation; trained: the whole command)"], rows)


def operator_lines(rec: dict[str, Any]) -> list[str]:
    rows = []
    for h in rec["hops"]:
        cells = [f"{h['items']:,}", f"{h['edges']:,}"]
        for form in ("dense", "sparse", "factored"):
            f = h.get(form)
            cells.append("–" if f is None else
                         f"{f['first_hop_s'] * 1e3:,.1f} / {f['hop_s'] * 1e3:,.1f} / "
                         f"{f['operator_mib']:,.0f}")
        rows.append(cells)
    lines = _table(["items", "training edges", "dense: first hop ms / hop ms / MiB",
                    "sparse", "factored"], rows)
    lines += ["", f"Low-rank product `[{rec['rows']}, k] @ [k, I]` added into float32 scores "
              f"(ms; native bfloat16: {rec['bf16_native']}):", ""]
    lines += _table(["k", "float32 ms", "bfloat16 ms", "speed-up"],
                    [[str(e["k"]), f"{e['float32'] * 1e3:.1f}", f"{e['bfloat16'] * 1e3:.1f}",
                      f"{e['float32'] / e['bfloat16']:.2f}x"] for e in rec["lowrank"]])
    return lines


def defaults_lines(recs: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for dataset in sorted({r["dataset"] for r in recs}):
        for model in sorted({r["model"] for r in recs if r["dataset"] == dataset}):
            rows = [r for r in recs if r["dataset"] == dataset and r["model"] == model]
            best = max(rows, key=lambda r: r["metrics"][f"ndcg@{K}"])
            lines += ["", f"**{dataset}, `{model}`** (validation part)", ""]
            lines += _table(["fixed", "setting", f"valid Recall@{K}", f"valid NDCG@{K}",
                             "wall s (informative)"],
                            [[json.dumps(r["fixed"]), json.dumps(r["options"]),
                              f"{r['metrics'][f'recall@{K}']:.4f}",
                              ("**{:.4f}**" if r is best else "{:.4f}").format(
                                  r["metrics"][f"ndcg@{K}"]),
                              f"{r['seconds']['wall']:.1f}"] for r in rows])
    return lines


def markdown(records: list[dict[str, Any]], context: dict[str, Any]) -> str:
    mach = context["machine"]
    lines = [f"Graph-filter family benchmark, {context['timestamp']} (commit "
             f"`{context['git_commit']}`), whole script {context['script_seconds']:.0f} s.", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
             f"{mach['memory_gib']} GiB RAM; torch threads {context['threads']}."]
    gow = [r for r in records if r["section"] == "gowalla"]
    if gow:
        loads = sorted({b for r in gow for b, _ in r["load_avg_1m"] if b is not None})
        lines += ["", "### Gowalla (given split, all 29,858 test users, full ranking)", "",
                  f"Published on this split, Recall@20 / NDCG@20: BSPM-EM {BSPM_PAPER[0]} / "
                  f"{BSPM_PAPER[1]}, GF-CF {GFCF_PAPER[0]} / {GFCF_PAPER[1]}, Turbo-CF "
                  f"{TURBO_PAPER[0]} / {TURBO_PAPER[1]}, LightGCN {LIGHTGCN_PAPER[0]} / "
                  f"{LIGHTGCN_PAPER[1]}. Seconds: median (min–max) of the runs; wall = fit + "
                  "evaluation (data loading apart). 1-minute load average at the children's "
                  f"starts: {loads[0]:.2f} to {loads[-1]:.2f}.", ""]
        lines += gowalla_lines(gow)
        lines += ["", "Settings: " + "; ".join(f"{r['label']}: `{json.dumps(r['options'])}`"
                                               for r in gow) + "."]
    ml = [r for r in records if r["section"] == "ml100k"]
    if ml:
        lines += ["", "### ml-100k (all ratings positive, per-user random 80/20, seed 0)", ""]
        lines += ml100k_lines(ml)
    op = [r for r in records if r["section"] == "operator"]
    if op:
        lines += ["", "### The operator's form: hop seconds against the catalogue size", "",
                  f"The {op[0]['rows']:,} heaviest users' rows over the n most popular Gowalla "
                  "items; median of 3 after a warm-up.", ""]
        lines += operator_lines(op[0])
    de = [r for r in records if r["section"] == "defaults"]
    if de:
        lines += ["", "### Validation grids (the defaults were chosen here)"] + defaults_lines(de)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="gowalla,ml100k,operator",
                   help="comma-separated: gowalla, ml100k, operator, defaults")
    p.add_argument("--quick", action="store_true", help="synthetic data, no writes unless --out")
    p.add_argument("--data", default=None, help="folder holding gowalla/ and ml-100k/")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--runs", type=int, default=0, help="children per Gowalla row (0: 3 for "
                                                       "rows under 60 s, else 1)")
    p.add_argument("--rows", default="", help="gowalla: only the rows whose label holds this")
    p.add_argument("--grid-models", default="", help="defaults: only these models' grids")
    p.add_argument("--grid-datasets", default="", help="defaults: only these data sets")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--max-wait", type=float, default=300)
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    for hidden in ("work", "dataset", "part", "model", "options", "grid"):
        p.add_argument(f"--{hidden}", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(CHILDREN[args.child](args)) + "\n")
        return 0
    if not args.quick:
        args.data = str(Path(args.data or os.environ.get("GRAPHREC_DATA") or DEFAULT_DATA))
        missing = [q for q in ("gowalla/train.txt", "ml-100k/u.data")
                   if not (Path(args.data) / q).exists()]
        if missing:
            _log(f"missing {', '.join(missing)} under {args.data}; running --quick instead")
            args.quick = True
    parts = args.parts.split(",")
    unknown = set(parts) - {"gowalla", "ml100k", "operator", "defaults"}
    if unknown:
        _log(f"--parts: unknown part {sorted(unknown)[0]!r}")
        return 2
    timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = time.monotonic()
    records: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="graphrec-gf-") as tmp:
            work = Path(tmp)
            if "operator" in parts:
                _log("operator forms ...")
                records.append({"section": "operator", **run_child("operator", args, work)})
            if "gowalla" in parts:
                records += run_gowalla(args, work)
            if "ml100k" in parts:
                records += run_ml100k(args, work)
            if "defaults" in parts:
                records += run_defaults(args, work)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _log(str(e))
        return 1
    context = {"machine": machine_info(), "threads": args.threads, "git_commit": git_commit(),
               "timestamp": timestamp, "script_seconds": round(time.monotonic() - start, 1),
               "quick": args.quick}
    text = markdown(records, context)
    print(text)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    if out is not None:
        name = "graph_filter_defaults" if parts == ["defaults"] else "graph_filter"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.jsonl", "a") as fh:
            for rec in records:
                fh.write(json.dumps({**rec, **context}) + "\n")
        # the page shows every row measured so far, the latest of each (a partial run, such as
        # --rows or --grid-models, replaces its own rows only), in the order they were first run
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        if name == "graph_filter_defaults":
            key = lambda r: (r["dataset"], r["model"], json.dumps(r["fixed"]),  # noqa: E731
                             json.dumps(r["options"]))
        else:
            key = lambda r: (r["section"], r.get("label"))  # noqa: E731
        latest: dict[Any, dict[str, Any]] = {}
        for r in rows:
            if r.get("quick") == args.quick and (name != "graph_filter" or "label" in r
                                                 or r["section"] == "operator"):
                latest[key(r)] = r
        order = {label: i for i, (label, _, _) in enumerate(GOWALLA)}
        merged = sorted(latest.values(), key=lambda r: order.get(r.get("label"), len(order)))
        text = markdown(merged, context)
        (out / f"{name}.md").write_text(text)
        _log(f"wrote {out / (name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
