"""Spine benchmark: the performance targets of graphrec's data-to-evaluation spine.

Measures, on the LightGCN Gowalla split (29,858 users, 40,981 items, 810,128 + 217,242
interactions):

* ``convert``: read the ``train.txt``/``test.txt`` pair, build the graph, save the ``.pt`` file
  (target: under 5 s in total).
* ``eval_emb``: full-ranking evaluation at K=20 of every test user, training items excluded,
  from random 64-dimensional user and item embeddings (target: under 10 s, peak RSS under 2 GiB);
  the same for the popularity model, and the embedding evaluation at other user batch sizes.
* ``read_csv`` against ``pyarrow_csv``: graphrec's reader plus the graph builder on a
  MovieLens-20M-shaped CSV (``userId,movieId,rating,timestamp``, 3M rows, about 80 MB, written
  once from a fixed seed), against ``pyarrow.csv.read_csv`` of the same file, side by side
  (target: at most 2x, as a ratio of the medians).
* ``import_baseline``: the RSS of a process that only imports torch and graphrec, so the other
  peaks can be read as "baseline + what the data structures add".

Every measurement runs in its own child process (this script re-invoked with ``--child KIND``),
which does one untimed warm-up run and then ``--repeats`` timed runs, and prints its timings and
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` as one JSON line. One measurement's memory thus
never pollutes another's. The parent imports nothing heavy on purpose: children are started with
``vfork``, and Linux carries the parent's peak RSS into a vforked child's ``ru_maxrss``.

Usage::

    python benchmarks/spine.py                 # Gowalla: appends results/spine.jsonl,
                                               # rewrites results/spine.md (~3 minutes)
    python benchmarks/spine.py --quick         # small synthetic run, < 1 minute, writes nothing
    python benchmarks/spine.py --quick --out DIR
    python benchmarks/spine.py --data /path/to/data   # folder holding gowalla/ (or gowalla/ itself)

The data folder is ``--data``, else ``$GRAPHREC_DATA``, else ``../shared/data`` beside the checkout.
Without Gowalla there, the script says so and runs the ``--quick`` benchmark instead (exit 0).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_RESULTS, current_rss_mib, git_commit, import_graphrec, load_avg, machine_info,
    maxrss_mib, reset_peak_rss, resolve_gowalla, stats, timed)

JSONL_NAME, MD_NAME = "spine.jsonl", "spine.md"

CONVERT_TARGET_S = 5.0
EVAL_TARGET_S = 10.0
EVAL_TARGET_MIB = 2048.0  # "under 2 GB" peak RSS
CSV_RATIO_TARGET = 2.0  # read + build / pyarrow.csv.read_csv
FULL_CSV_ROWS, QUICK_CSV_ROWS = 3_000_000, 100_000
EMBED_DIM, EMBED_SEED, K = 64, 0, 20
QUICK_USERS, QUICK_ITEMS = 2000, 1000
FULL_BATCH_SIZES, QUICK_BATCH_SIZES = "256,2048,4096", "256"
CHILD_TIMEOUT_S = 900

Step = Callable[[], dict[str, float]]  # one timed run: stage name -> seconds


# ============================================================================================
# Child side: each function runs in a fresh process and returns a JSON-able dict


def _measure(step: Step, repeats: int) -> dict[str, Any]:
    """One warm-up run of ``step`` and ``repeats`` timed runs, with memory before and during."""
    setup_peak = maxrss_mib()  # imports + data preparation
    before = current_rss_mib()
    reset = reset_peak_rss()
    gc.collect()
    warmup = step()
    runs = []
    for _ in range(repeats):
        gc.collect()
        runs.append(step())
    phase_peak = maxrss_mib()
    return {
        "warmup": warmup,
        "runs": runs,
        "memory": {
            "peak_rss_mib": max(setup_peak, phase_peak),  # the whole child process
            "setup_peak_rss_mib": setup_peak,
            "rss_before_mib": before,
            "phase_peak_rss_mib": phase_peak if reset else None,
        },
    }


def child_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """Import what the other children import, and nothing else; report versions and RSS."""
    import_graphrec(args.threads)
    import numpy
    import pandas
    import torch
    import torch_geometric

    import graphrec.data.graph  # noqa: F401
    import graphrec.data.readers  # noqa: F401
    import graphrec.evaluation.evaluator  # noqa: F401
    import graphrec.models  # noqa: F401
    import graphrec.split  # noqa: F401

    rss = maxrss_mib()
    return {
        "warmup": {}, "runs": [],
        "memory": {"peak_rss_mib": rss, "setup_peak_rss_mib": rss,
                   "rss_before_mib": current_rss_mib(), "phase_peak_rss_mib": None},
        "info": {"threads": torch.get_num_threads()},
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "pandas": pandas.__version__,
            "numpy": numpy.__version__,
        },
    }


def write_synthetic_pair(folder: Path) -> Path:
    """Write a small synthetic LightGCN ``train.txt``/``test.txt`` pair into ``folder`` (every
    user keeps a training item; test items all occur in training), for ``--quick``."""
    import numpy as np

    from graphrec.data.synthetic import SyntheticConfig, make_synthetic

    frame = make_synthetic(SyntheticConfig(num_users=QUICK_USERS, num_items=QUICK_ITEMS)).frame
    frame = frame.drop_duplicates(["user", "item"])
    frame = frame.iloc[np.random.default_rng(0).permutation(len(frame))]
    test = (frame.groupby("user").cumcount() % 5 == 4).to_numpy()  # ~20%, never the first
    train_part, test_part = frame[~test], frame[test]
    test_part = test_part[test_part["item"].isin(train_part["item"])]
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.txt", train_part), ("test.txt", test_part)):
        lines = [f"{u} {' '.join(map(str, g.tolist()))}"
                 for u, g in part.sort_values("user").groupby("user")["item"]]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def child_convert(args: argparse.Namespace) -> dict[str, Any]:
    """read + build + save of the LightGCN pair in ``--data``, to ``--work``/graph.pt."""
    import_graphrec(args.threads)
    from graphrec.data.graph import build, save
    from graphrec.data.readers import read

    folder = Path(args.data) if args.data else write_synthetic_pair(Path(args.work) / "synthetic")
    out = Path(args.work) / "graph.pt"
    info: dict[str, Any] = {}

    def step() -> dict[str, float]:
        raw, t_read = timed(lambda: read([folder / "train.txt", folder / "test.txt"]))
        ds, t_build = timed(lambda: build(raw))
        _, t_save = timed(lambda: save(ds, out))
        info.update(users=ds.num_users, items=ds.num_items, interactions=ds.num_interactions,
                    file_mib=out.stat().st_size / (1 << 20))
        return {"read": t_read, "build": t_build, "save": t_save,
                "total": t_read + t_build + t_save}

    result = _measure(step, args.repeats)
    result["info"] = info
    return result


def ensure_csv(work: Path, rows: int) -> Path:
    """The ratings CSV of ``rows`` rows in ``work`` (written once, from seed 0): 138,493 users
    and 26,744 items as MovieLens-20M has, half-star ratings, Unix-second timestamps."""
    path = work / f"ratings-{rows}.csv"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"userId": rng.integers(1, 138_494, rows),
                          "movieId": rng.integers(1, 26_745, rows),
                          "rating": rng.integers(1, 11, rows) / 2,
                          "timestamp": rng.integers(789_652_009, 1_427_784_002, rows)})
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def child_read_csv(args: argparse.Namespace) -> dict[str, Any]:
    """graphrec's ``read`` + ``build`` of the ratings CSV."""
    import_graphrec(args.threads)
    from graphrec.data.graph import build
    from graphrec.data.readers import read

    path = ensure_csv(Path(args.work), args.rows)
    info: dict[str, Any] = {"rows": args.rows, "file_mib": path.stat().st_size / (1 << 20)}

    def step() -> dict[str, float]:
        raw, t_read = timed(lambda: read(path))
        ds, t_build = timed(lambda: build(raw))
        info.update(users=ds.num_users, items=ds.num_items, interactions=ds.num_interactions)
        return {"read": t_read, "build": t_build, "total": t_read + t_build}

    result = _measure(step, args.repeats)
    result["info"] = info
    return result


def child_pyarrow_csv(args: argparse.Namespace) -> dict[str, Any]:
    """``pyarrow.csv.read_csv`` of the same file, at its defaults (typed columns, inferred)."""
    import_graphrec(args.threads)
    import pyarrow
    import pyarrow.csv

    path = ensure_csv(Path(args.work), args.rows)
    info: dict[str, Any] = {"rows": args.rows, "pyarrow": pyarrow.__version__}

    def step() -> dict[str, float]:
        _, t = timed(lambda: pyarrow.csv.read_csv(path))
        return {"total": t}

    result = _measure(step, args.repeats)
    result["info"] = info
    return result


def make_embedding_scorer(num_users: int, num_items: int, dim: int = EMBED_DIM,
                          seed: int = EMBED_SEED) -> Any:
    """Stands in for a trained two-tower/MF model: ``score(users) = user_emb[users] @ item_emb.T``
    with fixed-seed random normal embeddings. A ``torch.nn.Module`` like every graphrec model,
    so the evaluator knows the scores it returns are fresh memory it may overwrite."""
    import torch

    class EmbeddingScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gen = torch.Generator().manual_seed(seed)
            self.register_buffer("user_emb", torch.randn(num_users, dim, generator=gen))
            self.register_buffer("item_emb", torch.randn(num_items, dim, generator=gen))

        def score(self, users: Any) -> Any:
            return self.user_emb[users] @ self.item_emb.T  # [B, I]

    return EmbeddingScorer()


def _eval_child(args: argparse.Namespace, make_model: Callable[[Any, int, int], Any]
                ) -> dict[str, Any]:
    """Load ``--work``/graph.pt, take its given train/test split, and time full-ranking
    evaluation at K of ``make_model(split, num_users, num_items)``."""
    import_graphrec(args.threads)
    from graphrec.data.graph import load
    from graphrec.evaluation.evaluator import EvalConfig, evaluate_ranking
    from graphrec.data.graph import user_sequences
    from graphrec.split import SplitConfig, split

    ds, t_load = timed(lambda: load(Path(args.work) / "graph.pt"))
    sp, t_split = timed(lambda: split(ds.graph, SplitConfig(method="given")))
    exclude = user_sequences(sp.train)  # training items
    model = make_model(sp, ds.num_users, ds.num_items)
    cfg = EvalConfig(ks=(K,), batch_users=args.batch, progress=False)
    metrics: dict[str, float] = {}

    def step() -> dict[str, float]:
        out, seconds = timed(lambda: evaluate_ranking(model, ds.num_items, sp.test, exclude, cfg))
        metrics.update(out)
        return {"total": seconds}

    result = _measure(step, args.repeats)
    # batch_users=0 lets the evaluator pick about 32M scores per batch (its own rule, repeated).
    batch = args.batch or max(1, (1 << 25) // max(1, ds.num_items))
    result["info"] = {"users": int(metrics["users"]), "items": ds.num_items, "batch_users": batch,
                      f"recall@{K}": metrics[f"recall@{K}"], f"ndcg@{K}": metrics[f"ndcg@{K}"],
                      "setup_load_s": t_load, "setup_split_s": t_split}
    return result


def child_eval_emb(args: argparse.Namespace) -> dict[str, Any]:
    return _eval_child(args, lambda sp, n_users, n_items: make_embedding_scorer(n_users, n_items))


def child_eval_pop(args: argparse.Namespace) -> dict[str, Any]:
    def make(sp: Any, n_users: int, n_items: int) -> Any:
        from graphrec.models import build_model

        model = build_model("pop", n_users, n_items)
        model.fit(sp.train)
        return model

    return _eval_child(args, make)


CHILDREN: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "baseline": child_baseline,
    "convert": child_convert,
    "eval-emb": child_eval_emb,
    "eval-pop": child_eval_pop,
    "read-csv": child_read_csv,
    "pyarrow-csv": child_pyarrow_csv,
}


def child_main(args: argparse.Namespace) -> int:
    """Run one child routine and print its result as the last line of stdout."""
    result = CHILDREN[args.child](args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# ============================================================================================
# Parent side: plan, run the children, summarise, write results (standard library only)


@dataclass(frozen=True)
class Measurement:
    """One benchmark line: which child runs it, with which batch size, against which target."""

    name: str
    child: str
    description: str
    batch_users: int = 0
    target_s: float | None = None
    target_rss_mib: float | None = None


@dataclass
class Plan:
    """What this invocation does."""

    dataset: str
    data: Path | None  # the LightGCN folder; None: the convert child writes synthetic data
    repeats_convert: int
    repeats_eval: int
    batch_sizes: list[int]
    out: Path | None
    with_targets: bool
    threads: int
    csv_rows: int = FULL_CSV_ROWS
    notes: list[str] = field(default_factory=list)


def measurements(plan: Plan) -> list[Measurement]:
    """The benchmark list; targets are the spine issue's, stated for Gowalla only."""
    t = plan.with_targets
    emb = f"full ranking @{K}, {EMBED_DIM}-d random embeddings"
    out = [
        Measurement("import_baseline", "baseline", "child that only imports torch + graphrec"),
        Measurement("convert", "convert", "read train/test + build graph + save .pt",
                    target_s=CONVERT_TARGET_S if t else None),
        Measurement("eval_emb", "eval-emb", f"{emb}, default batch",
                    target_s=EVAL_TARGET_S if t else None,
                    target_rss_mib=EVAL_TARGET_MIB if t else None),
        Measurement("eval_pop", "eval-pop", f"full ranking @{K}, popularity model, default batch",
                    target_s=EVAL_TARGET_S if t else None,
                    target_rss_mib=EVAL_TARGET_MIB if t else None),
    ]
    for b in plan.batch_sizes:
        out.append(Measurement(f"eval_emb_batch{b}", "eval-emb", f"{emb}, batch_users={b}", b,
                               EVAL_TARGET_S if t else None, EVAL_TARGET_MIB if t else None))
    csv = f"{plan.csv_rows:,}-row ratings CSV"
    out += [Measurement("pyarrow_csv", "pyarrow-csv", f"pyarrow.csv.read_csv of the {csv}"),
            Measurement("read_csv", "read-csv", f"graphrec read + build of the {csv}")]
    return out


def run_child(kind: str, plan: Plan, work: Path, data: Path | None, repeats: int = 1,
              batch: int = 0) -> dict[str, Any]:
    """Start this script as ``--child kind`` and return the JSON it printed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work),
           "--repeats", str(repeats), "--batch", str(batch), "--threads", str(plan.threads),
           "--rows", str(plan.csv_rows)]
    if data is not None:
        cmd += ["--data", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def to_record(m: Measurement, result: dict[str, Any], plan: Plan,
              context: dict[str, Any]) -> dict[str, Any]:
    """One JSON line: the numbers of a measurement, its target and verdict, and the context."""
    runs = result["runs"]
    mem = result["memory"]
    rec: dict[str, Any] = {"name": m.name, "description": m.description, "dataset": plan.dataset,
                           "repeats": len(runs)}
    if runs:
        totals = [r["total"] for r in runs]
        rec["seconds"] = {**stats(totals), "runs": totals, "warmup": result["warmup"]["total"]}
        stages = [s for s in runs[0] if s != "total"]
        if stages:
            rec["stages"] = {s: stats([r[s] for r in runs]) for s in stages}
        if "batch_users" in result.get("info", {}):  # an evaluation
            rec["users_per_s"] = result["info"]["users"] / rec["seconds"]["median"]
    rec["memory_mib"] = mem
    rec["load_avg_1m"] = result["load_avg_1m"]
    rec["info"] = result.get("info", {})
    rec["target"] = {"seconds": m.target_s, "peak_rss_mib": m.target_rss_mib}
    rec["passed"] = verdict(m, rec)
    rec.update(context)
    return rec


def verdict(m: Measurement, rec: dict[str, Any]) -> bool | None:
    """Pass/fail against the target (median time and whole-child peak RSS); None: no target."""
    checks = []
    if m.target_s is not None:
        checks.append(rec["seconds"]["median"] < m.target_s)
    if m.target_rss_mib is not None:
        checks.append(rec["memory_mib"]["peak_rss_mib"] < m.target_rss_mib)
    return all(checks) if checks else None


def _fmt_target(rec: dict[str, Any]) -> str:
    t = rec["target"]
    parts = []
    if t["seconds"] is not None:
        parts.append(f"< {t['seconds']:g} s")
    if t["peak_rss_mib"] is not None:
        parts.append(f"< {t['peak_rss_mib'] / 1024:g} GiB")
    if t.get("ratio_vs_pyarrow") is not None:
        parts.append(f"<= {t['ratio_vs_pyarrow']:g}x pyarrow")
    return ", ".join(parts) or "–"


def _fmt_row(rec: dict[str, Any]) -> list[str]:
    sec = rec.get("seconds")
    mem = rec["memory_mib"]
    info = rec["info"]
    if "stages" in rec:
        details = " + ".join(f"{k} {v['median']:.2f}" for k, v in rec["stages"].items())
        if "ratio_vs_pyarrow" in rec:
            details += f"; {rec['ratio_vs_pyarrow']:.2f}x pyarrow"
    elif "batch_users" in info:
        details = f"batch {info['batch_users']}, recall@{K} {info[f'recall@{K}']:.4f}"
    else:
        details = f"{info.get('threads', '')} torch threads"
    added = (mem["phase_peak_rss_mib"] - mem["rss_before_mib"]
             if mem.get("phase_peak_rss_mib") is not None and mem.get("rss_before_mib") else None)
    passed = {True: "**pass**", False: "**FAIL**", None: "–"}[rec["passed"]]
    return [
        f"`{rec['name']}`",
        f"{sec['median']:.2f}" if sec else "–",
        f"{sec['min']:.2f}–{sec['max']:.2f}" if sec else "–",
        f"{rec['users_per_s']:,.0f}" if "users_per_s" in rec else "–",
        f"{mem['peak_rss_mib']:,.0f}",
        f"{added:+,.0f}" if added is not None else "–",
        details, _fmt_target(rec), passed,
    ]


def markdown(records: list[dict[str, Any]]) -> str:
    """The results table of one run, with the machine and versions it ran on."""
    first = records[0]
    mach, ver = first["machine"], first["versions"]
    loads = [r["load_avg_1m"][0] for r in records if r["load_avg_1m"][0] is not None]
    load = f"{min(loads):.2f}–{max(loads):.2f}" if loads else "unknown"
    head = ["measurement", "median s", "min–max s", "users/s", "peak RSS MiB",
            "phase Δ MiB", "details (medians, s)", "target", "result"]
    lines = [
        f"Spine benchmark, data set **{first['dataset']}**, {first['timestamp']} "
        f"(commit `{first['git_commit']}`).",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores ({mach['usable_cores']} usable), "
        f"{mach['memory_gib']} GiB RAM, {mach['system']}; torch threads {first['threads']}. "
        f"Python {ver['python']}, torch {ver['torch']}, torch_geometric {ver['torch_geometric']}, "
        f"pandas {ver['pandas']}, numpy {ver['numpy']}.",
        f"Timings: median of {first['repeats_plan']} timed runs after one warm-up run; every "
        f"row ran in its own process. 1-minute load average at the rows' starts: {load}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(_fmt_row(r)) + " |" for r in records]
    lines += [""] + [f"Note: {n}." for n in first["notes"]] if first["notes"] else []
    return "\n".join(lines) + "\n"


def write_results(records: list[dict[str, Any]], out: Path) -> None:
    """Append one JSON line per measurement to spine.jsonl; rewrite spine.md with this run."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JSONL_NAME, "a") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    (out / MD_NAME).write_text(markdown(records))


def make_plan(args: argparse.Namespace) -> Plan:
    """Full Gowalla run, or the quick synthetic one (asked for, or Gowalla is missing)."""
    notes = []
    quick = args.quick
    if not quick:
        gowalla = resolve_gowalla(args.data)
        if not ((gowalla / "train.txt").exists() and (gowalla / "test.txt").exists()):
            print(f"spine: Gowalla not found at {gowalla} (no train.txt/test.txt there). Pass "
                  "--data or set GRAPHREC_DATA to the folder holding gowalla/. Running the "
                  "--quick synthetic benchmark instead; targets do not apply to it.",
                  file=sys.stderr)
            notes.append(f"Gowalla missing at {gowalla}: ran --quick instead")
            quick = True
    sizes = args.batch_sizes or (QUICK_BATCH_SIZES if quick else FULL_BATCH_SIZES)
    batch_sizes = [int(b) for b in sizes.split(",") if b.strip()]
    if quick:
        return Plan(f"synthetic({QUICK_USERS} users, {QUICK_ITEMS} items)", None,
                    args.repeats or 1, args.repeats or 1, batch_sizes,
                    Path(args.out) if args.out else None, False, args.threads,
                    QUICK_CSV_ROWS, notes)
    return Plan("gowalla", gowalla, args.repeats or 5, args.repeats or 3, batch_sizes,
                Path(args.out) if args.out else DEFAULT_RESULTS, True, args.threads,
                FULL_CSV_ROWS, notes)


def run_plan(plan: Plan) -> list[dict[str, Any]]:
    """Run every measurement in its own child; return the records."""
    run_start = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="graphrec-spine-") as tmp:
        work = Path(tmp)
        results: list[tuple[Measurement, dict[str, Any]]] = []
        for m in measurements(plan):
            repeats = {"baseline": 0, "convert": plan.repeats_convert,
                       "read-csv": plan.repeats_convert,
                       "pyarrow-csv": plan.repeats_convert}.get(m.child, plan.repeats_eval)
            print(f"spine: {m.name} ({m.description}) ...", file=sys.stderr, flush=True)
            load_before = load_avg()
            res = run_child(m.child, plan, work, plan.data, repeats, m.batch_users)
            res["load_avg_1m"] = [load_before, load_avg()]  # other work on the machine
            results.append((m, res))
    versions = results[0][1]["versions"]
    context = {"machine": machine_info(), "versions": versions, "threads": plan.threads,
               "git_commit": git_commit(), "timestamp": run_start,
               "repeats_plan": f"{plan.repeats_convert} (convert) / {plan.repeats_eval} (eval)",
               "notes": plan.notes}
    records = [to_record(m, res, plan, context) for m, res in results]
    by_name = {r["name"]: r for r in records}
    if "read_csv" in by_name and "pyarrow_csv" in by_name:  # the reader's target is a ratio
        ours, peer = by_name["read_csv"], by_name["pyarrow_csv"]
        ratio = ours["seconds"]["median"] / peer["seconds"]["median"]
        ours["ratio_vs_pyarrow"] = ratio
        ours["target"]["ratio_vs_pyarrow"] = CSV_RATIO_TARGET
        ours["passed"] = ratio <= CSV_RATIO_TARGET if plan.with_targets else None
    return records


def print_summary(records: list[dict[str, Any]]) -> None:
    """A plain-text table on stdout."""
    print(f"\n{'measurement':<22} {'median s':>9} {'min-max s':>13} {'users/s':>9} "
          f"{'peak MiB':>9}  result")
    for rec in records:
        sec = rec.get("seconds")
        span = f"{sec['min']:.2f}-{sec['max']:.2f}" if sec else "-"
        ups = f"{rec['users_per_s']:,.0f}" if "users_per_s" in rec else "-"
        med = f"{sec['median']:.2f}" if sec else "-"
        res = {True: "pass", False: "FAIL", None: "-"}[rec["passed"]]
        print(f"{rec['name']:<22} {med:>9} {span:>13} "
              f"{ups:>9} {rec['memory_mib']['peak_rss_mib']:>9,.0f}  {res}")
        if "stages" in rec:
            print("  " + ", ".join(f"{k} {v['median']:.2f} s" for k, v in rec["stages"].items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small synthetic data set, one repeat, no file writes unless --out")
    p.add_argument("--data", help="folder holding gowalla/ (or the Gowalla folder itself); "
                                  "default $GRAPHREC_DATA, else ../shared/data beside the checkout")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: none)")
    p.add_argument("--repeats", type=int, default=0,
                   help="timed runs after the warm-up (default, or 0: 5 for convert, 3 for "
                        "each evaluation; 1 with --quick)")
    p.add_argument("--batch-sizes",
                   help="extra evaluation batch sizes (users per batch), comma-separated "
                        f"(default {FULL_BATCH_SIZES}; --quick: {QUICK_BATCH_SIZES})")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=FULL_CSV_ROWS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    plan = make_plan(args)
    try:
        records = run_plan(plan)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"spine: {e}", file=sys.stderr)
        return 1
    print_summary(records)
    if plan.out is not None:
        write_results(records, plan.out)
        print(f"\nspine: appended {len(records)} lines to {plan.out / JSONL_NAME}; "
              f"wrote {plan.out / MD_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
