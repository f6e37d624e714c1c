"""Graph-filter benchmark: the training-free GF-CF model against its issue's targets.

The issue: "Training-free graph filters ... beats trained LightGCN in under a minute on a CPU".
Three parts:

* ``gowalla``: the default ``GraphFilterConfig`` (alpha 0.3, k 256, randomized SVD) on the
  LightGCN Gowalla split (29,858 users, 40,981 items; ``SplitConfig("given")``). Recall@20 and
  NDCG@20 of all 29,858 test users (targets: the published GF-CF 0.1849 / 0.1518), the wall time
  of fit + full-ranking evaluation (target: under 60 s) and the peak RSS (target: under 3 GiB).
  Fit is ``model.fit(train)`` (normalization, SVD and the sparse item-item matrix); evaluation is
  ``evaluate(model, split, "test", EvalConfig(ks=(20,)))``; data load + split is reported apart.
  One timed run per child process (a run takes ~25 s), ``--runs`` children (default 3): median
  and min-max; the metrics must be identical in every child (the SVD is seeded), else the
  script fails.
* ``sweep``: ml-100k (all 100,000 ratings as positives, per-user random 80/20 split, seed 0),
  alpha in {0, 0.1, 0.3, 0.5, 1} x k in {0, 32, 64, 128, 256}: Recall@20 / NDCG@20 on ml-100k's
  test part, to document sensible defaults. k=0 (or alpha=0) is the linear filter alone, run once.
* ``models``: the same ml-100k split, ``pop``, ``random`` and ``graph-filter`` (default config):
  Recall/NDCG/Precision@20, fit and evaluation seconds (median of ``--repeats`` timed runs after
  one warm-up run).

Every child process is this script re-invoked with ``--child KIND``; it prints one JSON line.
The parent imports only the standard library (and the standard-library helpers of
``spine.py``), so its memory never leaks into a child's ``ru_maxrss``. Before each Gowalla child
the parent waits (up to ``--max-wait`` s) for the 1-minute load average to drop below
``--max-load``, and records the load per row.

Usage::

    python benchmarks/graph_filter.py          # Gowalla + ml-100k (~2 minutes); appends
                                               # results/graph_filter.jsonl, rewrites .md
    python benchmarks/graph_filter.py --quick  # synthetic data, < 1 minute, writes nothing
    python benchmarks/graph_filter.py --quick --out DIR
    python benchmarks/graph_filter.py --data /path/to/data   # folder holding gowalla/, ml-100k/

The data folder is ``--data``, else ``$GRAPHREC_DATA``, else ``../shared/data`` beside the
checkout. Without ``gowalla/`` or ``ml-100k/`` there, the script says so and runs ``--quick``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, current_rss_mib, git_commit, import_graphrec, load_avg,
    machine_info, maxrss_mib, reset_peak_rss, stats, timed)
from spine import QUICK_ITEMS, QUICK_USERS, write_synthetic_pair  # noqa: E402

JSONL_NAME, MD_NAME = "graph_filter.jsonl", "graph_filter.md"
K = 20
TARGET_RECALL, TARGET_NDCG = 0.1849, 0.1518  # published GF-CF on Gowalla (Shen et al. 2021)
LIGHTGCN_RECALL, LIGHTGCN_NDCG = 0.1830, 0.1554  # published LightGCN on Gowalla (He et al. 2020)
TARGET_WALL_S = 60.0  # fit + evaluation
TARGET_RSS_MIB = 3072.0  # "under 3 GB" peak RSS
ALPHAS, KS = (0.0, 0.1, 0.3, 0.5, 1.0), (0, 32, 64, 128, 256)
QUICK_ALPHAS, QUICK_KS = (0.0, 0.3, 1.0), (0, 32, 128)  # --quick: a smaller grid
DEFAULT_ALPHA, DEFAULT_K = 0.3, 256  # GraphFilterConfig's defaults, marked in the sweep table
MODELS = ("pop", "random", "graph-filter")
CHILD_TIMEOUT_S = 900


# ============================================================================================
# Child side: each function runs in a fresh process and returns a JSON-able dict


def _versions() -> dict[str, str]:
    import platform

    import numpy
    import scipy
    import torch
    import torch_geometric

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "scipy": scipy.__version__,
            "numpy": numpy.__version__}


def _hwm_mib() -> float | None:
    """The peak RSS of this process since the last reset of the mark (``VmHWM``), in MiB.
    Unlike ``ru_maxrss``, it does not keep the peaks of threads that exited before the reset."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def _import_all(threads: int) -> None:
    """Import torch and every graphrec module the children use, so no timing includes imports."""
    import_graphrec(threads)
    import graphrec.data  # noqa: F401
    import graphrec.data.synthetic  # noqa: F401
    import graphrec.evaluation.evaluator  # noqa: F401
    import graphrec.models  # noqa: F401
    import graphrec.split  # noqa: F401


def load_gowalla(args: argparse.Namespace) -> tuple[Any, Any]:
    """The Gowalla pair in ``--data`` (``--quick``: a synthetic pair, written first), read,
    built and split as given."""
    from graphrec.data import build, read
    from graphrec.split import SplitConfig, split

    folder = (write_synthetic_pair(Path(args.work) / "synthetic") if args.quick
              else Path(args.data) / "gowalla")
    ds = build(read([folder / "train.txt", folder / "test.txt"]))
    return ds, split(ds.graph, SplitConfig("given"))


def load_ml100k(args: argparse.Namespace) -> tuple[Any, Any]:
    """ml-100k's ``u.data``, every rating a positive (``--quick``: the built-in synthetic data
    set), split per user at random 80/20 with seed 0."""
    from graphrec.data import build, read
    from graphrec.data.synthetic import make_synthetic
    from graphrec.split import SplitConfig, split

    raw = make_synthetic() if args.quick else read(Path(args.data) / "ml-100k" / "u.data")
    ds = build(raw)
    return ds, split(ds.graph, SplitConfig("random", seed=0))


def fit_model(name: str, ds: Any, sp: Any, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, float]]:
    """Build and fit a model; returns it and ``{"fit": seconds}``."""
    from graphrec.models import build_model, model_config

    model = build_model(name, ds.num_users, ds.num_items, model_config(name, options))
    _, t_fit = timed(lambda: model.fit(sp.train))
    return model, {"fit": t_fit}


def evaluate_model(model: Any, sp: Any) -> tuple[dict[str, float], float]:
    """Full-ranking test metrics at K=20 (training items excluded) and the seconds they took."""
    from graphrec.evaluation.evaluator import EvalConfig, evaluate

    out, seconds = timed(lambda: evaluate(model, sp, "test", EvalConfig(ks=(K,), progress=False)))
    keep = (f"recall@{K}", f"ndcg@{K}", f"precision@{K}", "users")
    return {key: out[key] for key in keep}, seconds


def warm_up() -> float:
    """Fit and evaluate the graph filter once on a tiny synthetic graph, so the timed run does
    not pay first-call costs (lazy imports, thread pools, kernel dispatch). Returns seconds."""
    from graphrec.data import build
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.split import SplitConfig, split

    start = time.perf_counter()
    ds = build(make_synthetic(SyntheticConfig(num_users=200, num_items=100)))
    sp = split(ds.graph, SplitConfig("random", seed=0))
    model, _ = fit_model("graph-filter", ds, sp, {"k": 16})
    evaluate_model(model, sp)
    return time.perf_counter() - start


def _sizes(ds: Any, sp: Any) -> dict[str, int]:
    return {"users": ds.num_users, "items": ds.num_items, "interactions": ds.num_interactions,
            "test_interactions": len(sp.test)}


def child_gowalla(args: argparse.Namespace) -> dict[str, Any]:
    """One timed run of the default graph filter on Gowalla: load + split, fit, evaluate."""
    _import_all(args.threads)
    (ds, sp), t_load = timed(lambda: load_gowalla(args))
    t_warm = warm_up()
    setup_peak, before = maxrss_mib(), current_rss_mib()
    reset = reset_peak_rss()
    gc.collect()
    model, fit_s = fit_model("graph-filter", ds, sp)
    metrics, t_eval = evaluate_model(model, sp)
    return {
        "seconds": {"load_split": t_load, **fit_s, "evaluate": t_eval,
                    "wall": fit_s["fit"] + t_eval, "warmup": t_warm},
        "metrics": metrics,
        "config": asdict(model.cfg),
        "memory": {"peak_rss_mib": maxrss_mib(), "setup_peak_rss_mib": setup_peak,
                   "rss_before_mib": before, "phase_peak_rss_mib": _hwm_mib() if reset else None},
        "info": _sizes(ds, sp),
        "versions": _versions(),
    }


def child_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """The alpha x k sweep on ml-100k's split: one fit + evaluation per setting (the linear
    filter, k=0, once). Metrics only; the seconds are informative, not benchmark timings."""
    _import_all(args.threads)
    ds, sp = load_ml100k(args)
    warm_up()
    alphas, ks = (QUICK_ALPHAS, QUICK_KS) if args.quick else (ALPHAS, KS)
    settings = [(0.0, 0)] + [(a, k) for a in alphas if a > 0 for k in ks if k > 0]
    rows = []
    for alpha, k in settings:
        model, fit_s = fit_model("graph-filter", ds, sp, {"alpha": alpha, "k": k})
        metrics, t_eval = evaluate_model(model, sp)
        rows.append({"alpha": alpha, "k": k, "metrics": metrics,
                     "seconds": {"fit": fit_s["fit"], "evaluate": t_eval}})
    return {"rows": rows, "memory": {"peak_rss_mib": maxrss_mib()}, "info": _sizes(ds, sp)}


def child_model(args: argparse.Namespace) -> dict[str, Any]:
    """Model ``--model`` on ml-100k's split: one warm-up fit + evaluation, then ``--repeats``
    timed ones, each from a fresh model; the metrics must agree across them."""
    _import_all(args.threads)
    ds, sp = load_ml100k(args)
    runs, metrics = [], []
    for i in range(args.repeats + 1):
        gc.collect()
        model, fit_s = fit_model(args.model, ds, sp)
        out, t_eval = evaluate_model(model, sp)
        metrics.append(out)
        if i:  # run 0 is the warm-up
            runs.append({"fit": fit_s["fit"], "evaluate": t_eval})
    if any(m != metrics[0] for m in metrics):
        raise RuntimeError(f"{args.model}: metrics differ between repeats: {metrics}")
    return {"runs": runs, "metrics": metrics[0], "memory": {"peak_rss_mib": maxrss_mib()},
            "info": _sizes(ds, sp)}


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "gowalla": child_gowalla,
    "sweep": child_sweep,
    "model": child_model,
}


# ============================================================================================
# Parent side: run the children, check, summarise, write results (standard library only)


@dataclass
class Plan:
    """What this invocation does."""

    quick: bool
    data: Path | None  # folder holding gowalla/ and ml-100k/; None with --quick
    runs: int  # Gowalla children
    repeats: int  # timed runs per ml-100k model child
    out: Path | None
    threads: int
    max_load: float
    max_wait: float
    notes: list[str] = field(default_factory=list)

    @property
    def main_dataset(self) -> str:
        return (f"synthetic LightGCN pair ({QUICK_USERS} users, {QUICK_ITEMS} items)" if self.quick
                else "gowalla")

    @property
    def small_dataset(self) -> str:
        return ("synthetic (1000 users, 500 items), random 80/20, seed 0" if self.quick
                else "ml-100k, all ratings positive, random 80/20 per user, seed 0")


def run_child(kind: str, plan: Plan, work: Path, model: str = "") -> dict[str, Any]:
    """Start this script as ``--child kind`` and return the JSON it printed, with the 1-minute
    load average before and after it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work),
           "--threads", str(plan.threads), "--repeats", str(plan.repeats)]
    cmd += ["--quick"] if plan.quick else ["--data", str(plan.data)]
    cmd += ["--model", model] if model else []
    load_before = load_avg()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} {model} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_avg_1m"] = [load_before, load_avg()]
    return result


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Sleep until the 1-minute load average is below ``max_load`` (at most ``max_wait``
    seconds); returns the seconds waited."""
    start = time.monotonic()
    while (load := load_avg()) is not None and load >= max_load:
        if time.monotonic() - start >= max_wait:
            print(f"graph_filter: load average still {load:.2f} after {max_wait:.0f} s; "
                  "timing anyway (recorded)", file=sys.stderr)
            break
        time.sleep(5)
    return time.monotonic() - start


def _log(msg: str) -> None:
    print(f"graph_filter: {msg}", file=sys.stderr, flush=True)


def run_gowalla(plan: Plan, work: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """``plan.runs`` Gowalla children, each after the machine is quiet: one record, and the
    library versions the children reported."""
    children = []
    for i in range(plan.runs):
        waited = 0.0 if plan.quick else wait_for_quiet(plan.max_load, plan.max_wait)
        _log(f"{plan.main_dataset}: graph filter, run {i + 1} of {plan.runs} ...")
        res = run_child("gowalla", plan, work)
        res["waited_s"] = round(waited, 1)
        children.append(res)
    first = children[0]
    if any(c["metrics"] != first["metrics"] for c in children):
        raise RuntimeError("the graph filter's metrics differ between runs: "
                           f"{[c['metrics'] for c in children]}")
    sec = {s: {**stats([c["seconds"][s] for c in children]),
               "runs": [c["seconds"][s] for c in children]} for s in first["seconds"]}
    peak = max(c["memory"]["peak_rss_mib"] for c in children)
    rec: dict[str, Any] = {
        "name": "gowalla_graph_filter", "section": "gowalla", "dataset": plan.main_dataset,
        "model": "graph-filter", "config": first["config"], "runs": len(children),
        "metrics": first["metrics"], "seconds": sec,
        "memory_mib": {"peak_rss_mib": peak, "runs": [c["memory"] for c in children]},
        "load_avg_1m": [c["load_avg_1m"] for c in children],
        "waited_s": [c["waited_s"] for c in children],
        "info": first["info"],
        "published": {"gf-cf": {f"recall@{K}": TARGET_RECALL, f"ndcg@{K}": TARGET_NDCG},
                      "lightgcn": {f"recall@{K}": LIGHTGCN_RECALL, f"ndcg@{K}": LIGHTGCN_NDCG}},
        "target": None, "passed": None,
    }
    if not plan.quick:  # the targets are Gowalla's
        rec["target"] = {f"recall@{K}": TARGET_RECALL, f"ndcg@{K}": TARGET_NDCG,
                         "wall_seconds": TARGET_WALL_S, "peak_rss_mib": TARGET_RSS_MIB}
        rec["passed"] = {
            f"recall@{K}": first["metrics"][f"recall@{K}"] >= TARGET_RECALL,
            f"ndcg@{K}": first["metrics"][f"ndcg@{K}"] >= TARGET_NDCG,
            "wall_seconds": sec["wall"]["median"] < TARGET_WALL_S,
            "peak_rss_mib": peak < TARGET_RSS_MIB,
        }
    return rec, first["versions"]


def run_sweep(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """One child for the whole alpha x k sweep; one record per setting."""
    _log(f"{plan.small_dataset}: alpha x k sweep ...")
    res = run_child("sweep", plan, work)
    return [{"name": f"sweep_alpha{row['alpha']:g}_k{row['k']}", "section": "sweep",
             "dataset": plan.small_dataset, "model": "graph-filter", "alpha": row["alpha"],
             "k": row["k"], "metrics": row["metrics"], "seconds": row["seconds"],
             "memory_mib": {"child_peak_rss_mib": res["memory"]["peak_rss_mib"]},
             "load_avg_1m": res["load_avg_1m"], "info": res["info"]}
            for row in res["rows"]]


def run_models(plan: Plan, work: Path) -> list[dict[str, Any]]:
    """One child per model of the ml-100k table; one record each."""
    records = []
    for name in MODELS:
        _log(f"{plan.small_dataset}: {name} ...")
        res = run_child("model", plan, work, name)
        sec = {s: {**stats([r[s] for r in res["runs"]]), "runs": [r[s] for r in res["runs"]]}
               for s in ("fit", "evaluate")}
        records.append({"name": f"model_{name}", "section": "models",
                        "dataset": plan.small_dataset, "model": name, "repeats": len(res["runs"]),
                        "metrics": res["metrics"], "seconds": sec, "memory_mib": res["memory"],
                        "load_avg_1m": res["load_avg_1m"], "info": res["info"]})
    return records


def run_plan(plan: Plan) -> list[dict[str, Any]]:
    """Every part, each child in turn; the records with the run's context added."""
    timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="graphrec-gf-") as tmp:
        gowalla, versions = run_gowalla(plan, Path(tmp))
        records = [gowalla] + run_sweep(plan, Path(tmp)) + run_models(plan, Path(tmp))
    context = {"machine": machine_info(), "versions": versions, "threads": plan.threads,
               "git_commit": git_commit(), "timestamp": timestamp,
               "script_seconds": round(time.monotonic() - start, 1), "quick": plan.quick,
               "notes": plan.notes}
    return [{**rec, **context} for rec in records]


# --------------------------------------------------------------------------------------------
# Markdown


def _span(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def _verdict(rec: dict[str, Any], key: str) -> str:
    return "–" if rec["passed"] is None else ("**pass**" if rec["passed"][key] else "**FAIL**")


def gowalla_table(rec: dict[str, Any]) -> list[str]:
    """The Gowalla result against the targets and the published figures."""
    m, sec, n = rec["metrics"], rec["seconds"], rec["runs"]
    quick = rec["target"] is None
    peaks = ", ".join(f"{r['peak_rss_mib']:,.0f}" for r in rec["memory_mib"]["runs"])
    rows = [
        [f"Recall@{K}", f"{m[f'recall@{K}']:.4f}", "–" if quick else f"≥ {TARGET_RECALL}",
         f"{TARGET_RECALL:.4f}", f"{LIGHTGCN_RECALL:.4f}", _verdict(rec, f"recall@{K}")],
        [f"NDCG@{K}", f"{m[f'ndcg@{K}']:.4f}", "–" if quick else f"≥ {TARGET_NDCG}",
         f"{TARGET_NDCG:.4f}", f"{LIGHTGCN_NDCG:.4f}", _verdict(rec, f"ndcg@{K}")],
        ["**wall = fit + evaluation**, s", _span(sec["wall"]),
         "–" if quick else f"< {TARGET_WALL_S:g} s", "–", "–", _verdict(rec, "wall_seconds")],
        ["· fit (normalization, randomized SVD, item-item matrix), s", _span(sec["fit"]), "", "", "", ""],
        [f"· evaluation of {m['users']:,} users, full ranking @{K}, s", _span(sec["evaluate"]),
         "", "", "", ""],
        ["data load + split (not in the wall), s", _span(sec["load_split"]), "", "", "", ""],
        ["peak RSS of the child, MiB", f"{rec['memory_mib']['peak_rss_mib']:,.0f} (runs: {peaks})",
         "–" if quick else f"< {TARGET_RSS_MIB / 1024:g} GiB", "–", "–",
         _verdict(rec, "peak_rss_mib")],
    ]
    head = ["", f"measured (median, min–max of {n} runs)", "target", "published GF-CF",
            "published LightGCN", "result"]
    return _table(head, rows)


def sweep_table(recs: list[dict[str, Any]]) -> list[str]:
    """alpha x k grid of NDCG@20 / Recall@20; k=0 and alpha=0 cells are the linear filter."""
    by = {(r["alpha"], r["k"]): r["metrics"] for r in recs}
    alphas = [0.0] + sorted({a for a, _ in by if a > 0})
    ks = [0] + sorted({k for _, k in by if k > 0})
    linear = by[(0.0, 0)]
    best = max(by.values(), key=lambda m: m[f"ndcg@{K}"])

    def cell(alpha: float, k: int) -> str:
        m = linear if alpha == 0 or k == 0 else by[(alpha, k)]
        text = f"{m[f'ndcg@{K}']:.4f} / {m[f'recall@{K}']:.4f}"
        if m is best:
            text = f"**{text}**"
        if alpha == 0 or k == 0:
            text = f"*{text}*"
        return text + (" †" if (alpha, k) == (DEFAULT_ALPHA, DEFAULT_K) else "")

    head = ["alpha \\ k"] + [str(k) for k in ks]
    return _table(head, [[f"{a:g}"] + [cell(a, k) for k in ks] for a in alphas])


def models_table(recs: list[dict[str, Any]]) -> list[str]:
    head = ["model", f"Recall@{K}", f"NDCG@{K}", f"Precision@{K}", "fit s", "evaluation s"]
    rows = [[f"`{r['model']}`" + (" (default config)" if r["model"] == "graph-filter" else ""),
             f"{r['metrics'][f'recall@{K}']:.4f}", f"{r['metrics'][f'ndcg@{K}']:.4f}",
             f"{r['metrics'][f'precision@{K}']:.4f}", _span(r["seconds"]["fit"], 3),
             _span(r["seconds"]["evaluate"], 3)] for r in recs]
    return _table(head, rows)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def markdown(records: list[dict[str, Any]]) -> str:
    """The three tables of one run, with the machine and versions it ran on."""
    gowalla = records[0]
    sweep = [r for r in records if r["section"] == "sweep"]
    models = [r for r in records if r["section"] == "models"]
    mach, ver = gowalla["machine"], gowalla["versions"]
    loads = ", ".join(f"{b:.2f}" for b, _ in gowalla["load_avg_1m"] if b is not None)
    cfg = ", ".join(f"{k}={v!r}" for k, v in gowalla["config"].items())
    lines = [
        f"Graph-filter (GF-CF) benchmark, {gowalla['timestamp']} (commit "
        f"`{gowalla['git_commit']}`), whole script {gowalla['script_seconds']:.0f} s.",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
        f"{mach['memory_gib']} GiB RAM, {mach['system']}; torch threads {gowalla['threads']}. "
        f"Python {ver['python']}, torch {ver['torch']}, torch_geometric {ver['torch_geometric']}, "
        f"scipy {ver['scipy']}, numpy {ver['numpy']}.",
        "",
        f"### {gowalla['dataset']}: default graph filter vs the targets",
        "",
        f"`GraphFilterConfig({cfg})`; {gowalla['info']['users']:,} users, "
        f"{gowalla['info']['items']:,} items, {gowalla['info']['interactions']:,} interactions. "
        f"One timed run per child process, {gowalla['runs']} "
        + ("children; the metrics were identical in all of them. " if gowalla["runs"] > 1
           else "child. ")
        + f"1-minute load average at each child's start: {loads}.",
        "",
        *gowalla_table(gowalla),
        "",
        f"### Sweep on {sweep[0]['dataset']}: NDCG@{K} / Recall@{K} on its test part",
        "",
        "*Italic*: the linear filter alone (k=0, or alpha=0; one run). **Bold**: the best NDCG. "
        "†: the default (alpha 0.3, k 256).",
        "",
        *sweep_table(sweep),
        "",
        f"### Models on {models[0]['dataset']}",
        "",
        f"Median (min–max) of {models[0]['repeats']} timed runs after a warm-up run, each model "
        "in its own child process.",
        "",
        *models_table(models),
        "",
        "The trained models (`bpr`, `lightgcn`, `ncf` and the rest) are in the model table of "
        "`benchmarks/models.py` (results/models.md).",
    ]
    lines += [""] + [f"Note: {n}." for n in gowalla["notes"]] if gowalla["notes"] else []
    return "\n".join(lines) + "\n"


def write_results(records: list[dict[str, Any]], out: Path) -> None:
    """Append one JSON line per record to graph_filter.jsonl; rewrite graph_filter.md."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JSONL_NAME, "a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    (out / MD_NAME).write_text(markdown(records))


# --------------------------------------------------------------------------------------------
# Command line


def make_plan(args: argparse.Namespace) -> Plan:
    """Full run on Gowalla + ml-100k, or the quick synthetic one (asked for, or data missing)."""
    notes: list[str] = []
    quick, data = args.quick, None
    if not quick:
        data = Path(args.data or os.environ.get("GRAPHREC_DATA") or DEFAULT_DATA).expanduser()
        missing = [str(p) for p in (data / "gowalla" / "train.txt", data / "gowalla" / "test.txt",
                                    data / "ml-100k" / "u.data") if not p.exists()]
        if missing:
            print(f"graph_filter: missing {', '.join(missing)}. Pass --data or set GRAPHREC_DATA "
                  "to the folder holding gowalla/ and ml-100k/. Running the --quick synthetic "
                  "benchmark instead; the targets do not apply to it.", file=sys.stderr)
            notes.append(f"data missing ({', '.join(missing)}): ran --quick instead")
            quick, data = True, None
    out = Path(args.out) if args.out else (None if quick else DEFAULT_RESULTS)
    return Plan(quick, data, args.runs or (1 if quick else 3), args.repeats or (1 if quick else 3),
                out, args.threads, args.max_load, args.max_wait, notes)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small synthetic data sets, no file writes unless --out")
    p.add_argument("--data", help="folder holding gowalla/ and ml-100k/ (default "
                                  "$GRAPHREC_DATA, else ../shared/data beside the checkout)")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: none)")
    p.add_argument("--runs", type=int, default=0,
                   help="Gowalla child processes, one timed run each (default 3; --quick: 1)")
    p.add_argument("--repeats", type=int, default=0,
                   help="timed runs per ml-100k model after a warm-up (default 3; --quick: 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--max-load", type=float, default=1.5,
                   help="wait before each Gowalla run until the 1-minute load average is "
                        "below this (default 1.5)")
    p.add_argument("--max-wait", type=float, default=300,
                   help="longest such wait in seconds (default 300)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--model", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(CHILDREN[args.child](args)) + "\n")
        return 0
    plan = make_plan(args)
    try:
        records = run_plan(plan)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"graph_filter: {e}", file=sys.stderr)
        return 1
    print(markdown(records))
    if plan.out is not None:
        write_results(records, plan.out)
        _log(f"appended {len(records)} lines to {plan.out / JSONL_NAME}; "
             f"wrote {plan.out / MD_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
