"""ANN benchmark: exact search against faiss Flat, IVF-Flat, IVF-PQ and HNSW, as graphrec
serves a retriever (``graphrec.serve.index.ItemIndex``: inner products turned into L2 for the
approximate indexes, candidates over-fetched and scored exactly).

Item tables:

* ``gowalla``: the learned item vectors of a Gowalla run (``--run``, a run folder of a
  retriever such as ``lightgcn`` or ``bpr``), queried by the user vectors of 2,000 test users;
  skipped with the reason when the run folder is missing;
* ``synthetic-1e5``, ``-1e6``, ``-1e7``: clustered item tables at dim 64 shaped like a learned
  one (the spectrum and norm spread of a Gowalla LightGCN table; cluster sizes skewed like item
  popularity), queried by vectors drawn from the same clusters.

For each index and setting: build seconds and index bytes, recall@10 and @100 against exact
search over the same vectors (2,000 queries; top 10 and top 100 through ``ItemIndex.search``),
queries per second at batch 1 on one thread and at batch 1,024 on all threads (after a warm-up
batch; the median of 3 timings). Each table runs in its own child process. HNSW is not built
for tables whose estimated build time exceeds ``--max-build-s`` (10^7 items on a 2-core
machine); the row says so.

Usage::

    python benchmarks/ann.py --run runs/gowalla-lightgcn   # all tables: appends
                                                          # results/ann.jsonl, writes ann.md/png
    python benchmarks/ann.py --quick                      # 10^4 items, < 1 minute, no files
    python benchmarks/ann.py --tables synthetic-1e6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_RESULTS, REPO, current_rss_mib, git_commit, import_graphrec, load_avg, machine_info,
    resolve_gowalla)

JSONL_NAME, MD_NAME, PNG_NAME = "ann.jsonl", "ann.md", "ann.png"
DIM, QUERIES = 64, 2000
TABLES = ("gowalla", "synthetic-1e5", "synthetic-1e6", "synthetic-1e7")
KINDS = ("exact", "flat", "ivf", "ivfpq", "hnsw")
# search-time sweeps (one build each): HNSW efSearch, IVF nprobe
EF_SEARCH = (64, 128, 256, 512, 1024, 2048)
HNSW_BUILD = {"hnsw_m": 32, "ef_construction": 200}
NPROBE = (4, 8, 16, 32, 64, 128, 256, 0)  # 0: the default, a sixteenth of the lists
NPROBE_PQ = (8, 32, 128, 0)
HNSW_BUILD_S_PER_ITEM = 3.5e-4  # measured here: 2 threads, M = 32, efConstruction = 200, dim 65
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 20.0  # at 10^6 items, recall@100 and batch-1 QPS ratio


# ============================================================================================
# Child: one item table, every index


def synthetic_table(n: int, dim: int, queries: int, seed: int = 0) -> tuple[Any, Any]:
    """Items and queries around ``n // 100`` cluster centres, shaped like a learned embedding
    table: coordinate variances decay as ``0.926^j`` (a Gowalla LightGCN table's spectrum: 71%
    of the variance in 16 directions, 91% in 32), cluster sizes follow ``1 / rank^0.8``, and
    vector norms spread log-normally (sigma 0.25, that table's 1st-99th percentile spread), as
    popular items have larger embeddings."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = np.sqrt(0.926 ** np.arange(dim)).astype(np.float32)  # per-coordinate std
    clusters = max(10, n // 100)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * scale
    weight = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weight /= weight.sum()
    items = np.empty((n, dim), dtype=np.float32)
    step = 1 << 20
    for s in range(0, n, step):  # chunks bound the temporaries at 10^7 items
        m = min(step, n - s)
        which = rng.choice(clusters, m, p=weight)
        block = centres[which] + 0.5 * scale * rng.standard_normal((m, dim), dtype=np.float32)
        block *= np.exp(0.25 * rng.standard_normal((m, 1))).astype(np.float32)
        items[s:s + m] = block
    which = rng.choice(clusters, queries, p=weight)
    q = centres[which] + 0.5 * scale * rng.standard_normal((queries, dim), dtype=np.float32)
    return items, q.astype(np.float32)


def gowalla_table(run: Path, queries: int) -> tuple[Any, Any]:
    """A run's item vectors and the user vectors of ``queries`` test users (fixed seed)."""
    import torch

    from graphrec.checkpoint import load_checkpoint
    from graphrec.models.base import Retriever

    ckpt = load_checkpoint(run)
    scorer = ckpt.model.scorer()
    if not isinstance(scorer, Retriever):
        raise SystemExit(f"ann: {run}: model {ckpt.model_name} is not a retriever")
    users = torch.randperm(ckpt.model.num_users, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (scorer.item_vectors().float().numpy(),
                scorer.user_vectors(users[:queries]).float().numpy())


def _qps(search: Any, queries: Any, batch: int, budget_s: float, max_calls: int) -> float:
    """Queries per second of ``search`` over consecutive ``batch``-row slices of ``queries``:
    one warm-up call, then calls until ``budget_s`` or ``max_calls``; median of 3 such runs
    (one run where a single call outlasts the budget: exact search of 10^7 items)."""
    start = time.perf_counter()
    search(queries[:batch])
    slow = time.perf_counter() - start > budget_s
    rates = []
    for _ in range(1 if slow else 3):
        calls, start = 0, time.perf_counter()
        while calls < max_calls and (calls == 0 or time.perf_counter() - start < budget_s):
            s = (calls * batch) % max(1, queries.shape[0] - batch + 1)
            search(queries[s:s + batch])
            calls += 1
        rates.append(calls * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def _gowalla_evaluation(run: Path, data: Path) -> dict[str, Any]:
    """Test Recall/NDCG@20 of the run's model on the Gowalla split, exact and through an index
    (the evaluator ranks every test user's unseen items)."""
    from graphrec.checkpoint import load_checkpoint
    from graphrec.data.source import DataConfig, load_data
    from graphrec.evaluation.evaluator import EvalConfig, evaluate
    from graphrec.split import SplitConfig, split

    model = load_checkpoint(run).model
    parts = split(load_data(DataConfig(path=str(data))).graph, SplitConfig("given"))
    cfg = EvalConfig(ks=(20,), metrics=("recall", "ndcg"), progress=False)

    def run_eval(index: Any) -> dict[str, float]:
        return evaluate(model, parts, "test", cfg, index=index)
    return {"run": run_eval, "exact": run_eval(None)}


def _recall(got: Any, want: Any) -> float:
    """Mean over rows of |got ∩ want| / |want|."""
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.tolist(), want.tolist()))
    return hits / max(1, want.numel())


def child(args: argparse.Namespace) -> dict[str, Any]:
    import_graphrec(args.threads)
    import faiss
    import torch

    from graphrec.serve.index import IndexConfig, ItemIndex

    faiss.omp_set_num_threads(args.threads)
    if args.table == "gowalla":
        items_np, queries_np = gowalla_table(Path(args.run), QUERIES)
    else:
        n = int(float(args.table.split("-")[1]))
        items_np, queries_np = synthetic_table(n, DIM, QUERIES)
    items, queries = torch.from_numpy(items_np), torch.from_numpy(queries_np)
    n, dim = items.shape
    base_rss = current_rss_mib()
    exact = ItemIndex(items, IndexConfig("exact"))
    truth = {k: exact.search(queries, k)[1] for k in (10, 100)}
    evaluation = (_gowalla_evaluation(Path(args.run), Path(args.data)) if args.table == "gowalla"
                  else None)

    def measure(index: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in (10, 100):
            out[f"recall@{k}"] = _recall(index.search(queries, k)[1], truth[k])
        if evaluation is not None:  # the test metric through the index, seen items excluded
            got = evaluation["run"](None if index is exact else index)
            out.update({f"eval_{m}": got[m] for m in ("recall@20", "ndcg@20")})
            out.update({f"eval_{m}_loss": evaluation["exact"][m] - got[m]
                        for m in ("recall@20", "ndcg@20")})

        def search(q: Any) -> Any:
            return index.search(q, 100)

        torch.set_num_threads(1)
        faiss.omp_set_num_threads(1)
        out["qps_batch1"] = _qps(search, queries, 1, args.budget, 2000)
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
        out["qps_batch1024"] = _qps(search, queries, 1024, args.budget, 20)
        return out

    def index_bytes(index: Any) -> int:
        if index.faiss is None:
            return int(items.numel() * 4)
        with tempfile.NamedTemporaryFile(suffix=".faiss") as fh:
            faiss.write_index(index.faiss, fh.name)
            return os.path.getsize(fh.name)

    rows = []
    plans: list[tuple[str, dict[str, int], str, tuple[int, ...]]] = [
        ("exact", {}, "", ()), ("flat", {}, "", ()),
        ("ivf", {}, "nprobe", NPROBE), ("ivfpq", {}, "nprobe", NPROBE_PQ),
        ("hnsw", HNSW_BUILD, "ef_search", EF_SEARCH)]
    if n >= 5_000_000:  # fewer settings where every one takes minutes
        plans = [("exact", {}, "", ()), ("flat", {}, "", ()), ("ivf", {}, "nprobe", (64, 256, 0)),
                 ("ivfpq", {}, "nprobe", (256, 0)), ("hnsw", HNSW_BUILD, "ef_search", (1024,))]
    if args.quick:
        plans = [("exact", {}, "", ()), ("flat", {}, "", ()), ("ivf", {}, "nprobe", (8, 32)),
                 ("ivfpq", {}, "nprobe", (32,)), ("hnsw", HNSW_BUILD, "ef_search", (64, 256))]
    if args.indexes:
        wanted = set(args.indexes.split(",")) | {"exact"}  # exact: the baseline of every ratio
        plans = [p for p in plans if p[0] in wanted]
    for kind, build, knob, values in plans:
        est = HNSW_BUILD_S_PER_ITEM * n * 2 / max(1, args.threads)
        if kind == "hnsw" and est > args.max_build_s:
            rows.append({"index": kind, "skipped": f"build would take about {est / 60:.0f} "
                                                   f"minutes here (limit {args.max_build_s:.0f} s)"})
            continue
        print(f"ann: {args.table}: building {kind} ...", file=sys.stderr, flush=True)
        rss0 = current_rss_mib()
        start = time.perf_counter()
        index = exact if kind == "exact" else ItemIndex(items, IndexConfig(kind, **build))
        built = time.perf_counter() - start if kind != "exact" else 0.0
        rss1 = current_rss_mib()
        common = {"index": kind, "build_s": built, "index_mib": index_bytes(index) / 2**20,
                  "build_rss_mib": (rss1 - rss0) if rss0 and rss1 else None, **build}
        if kind == "ivf" or kind == "ivfpq":
            common["nlist"] = index.nlist()
        if kind == "ivfpq":
            common["pq_bytes"] = index.pq_bytes()
        for value in values or (None,):
            if knob:  # a search-time setting: the same index, searched differently
                setattr(index.cfg, knob, value)
            setting = {knob: value} if knob else {}
            if knob == "nprobe":
                setting = {"nprobe": index.nprobe(), "default": value == 0}
            elif knob == "ef_search":
                setting["default"] = value == IndexConfig().ef_search
            rows.append({**common, **setting, **measure(index)})
            print(f"ann: {args.table}: {kind} {knob}={value}: " + json.dumps(
                {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float)}),
                file=sys.stderr, flush=True)
        del index
    return {"table": args.table, "items": int(n), "dim": int(dim), "queries": QUERIES,
            "threads": args.threads, "rss_items_mib": base_rss, "rows": rows,
            "versions": {"faiss": faiss.__version__, "torch": torch.__version__}}


# ============================================================================================
# Parent: run the tables, summarise, write


def run_table(table: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--table", table,
           "--threads", str(args.threads), "--budget", str(args.budget),
           "--max-build-s", str(args.max_build_s), "--run", str(args.run),
           "--data", str(args.data), "--indexes", args.indexes or ""]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=7200)  # stderr: live
    if proc.returncode != 0:
        raise RuntimeError(f"ann: child {table} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speedups(result: dict[str, Any]) -> None:
    """Each row's batch-1 and batch-1024 throughput as a multiple of exact search's."""
    exact = next(r for r in result["rows"] if r["index"] == "exact")
    for row in result["rows"]:
        if "qps_batch1" in row:
            row["speedup_batch1"] = row["qps_batch1"] / exact["qps_batch1"]
            row["speedup_batch1024"] = row["qps_batch1024"] / exact["qps_batch1024"]


def choose(result: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest batch-1 setting with recall@100 >= TARGET_RECALL, among approximate rows."""
    ok = [r for r in result["rows"] if r.get("recall@100", 0) >= TARGET_RECALL
          and r["index"] in ("ivf", "ivfpq", "hnsw")]
    return max(ok, key=lambda r: r["qps_batch1"]) if ok else None


def _setting(row: dict[str, Any]) -> str:
    parts = [f"{k}={row[k]}" for k in ("nlist", "nprobe", "pq_bytes", "hnsw_m", "ef_construction",
                                       "ef_search") if k in row]
    if row.get("default"):
        parts.append("**default**")
    return ", ".join(parts) or "-"


def markdown(results: list[dict[str, Any]], context: dict[str, Any]) -> str:
    m = context["machine"]
    lines = [f"# ANN benchmark ({context['timestamp']}, commit {context['git_commit']})", "",
             f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {context['threads']} "
             f"threads for batch 1,024, one for batch 1; faiss {context['versions']['faiss']}, "
             f"torch {context['versions']['torch']}. Recall against exact search over the same "
             f"vectors, {QUERIES} queries; QPS: median of 3 timings after a warm-up.", ""]
    for res in results:
        evals = any("eval_recall@20" in r for r in res["rows"])
        extra = " test Recall@20 (loss) | test NDCG@20 (loss) |" if evals else ""
        when = (f" (measured {res['timestamp']}, commit {res['git_commit']})"
                if res.get("timestamp", context["timestamp"]) != context["timestamp"] else "")
        load = res.get("load_avg_1m") or [None, None]
        loads = (f"1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end "
                 "(other work on the machine slows both exact and approximate search)."
                 if None not in load else "")
        lines += [f"## {res['table']}: {res['items']:,} items, dim {res['dim']}{when}", "",
                  *([loads, ""] if loads else []),
                  "| index | setting | build s | index MiB | recall@10 | recall@100 | "
                  "QPS batch 1 | x exact | QPS batch 1024 | x exact |" + extra,
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
                  + (" --- | --- |" if evals else "")]
        for r in res["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['index']} | skipped: {r['skipped']} | | | | | | | | |")
                continue
            cells = ""
            if evals:
                cells = (f" {r['eval_recall@20']:.4f} ({r['eval_recall@20_loss']:+.4f}) |"
                         f" {r['eval_ndcg@20']:.4f} ({r['eval_ndcg@20_loss']:+.4f}) |")
            lines.append(
                f"| {r['index']} | {_setting(r)} | {r['build_s']:.1f} | {r['index_mib']:,.0f} | "
                f"{r['recall@10']:.4f} | {r['recall@100']:.4f} | {r['qps_batch1']:,.0f} | "
                f"{r['speedup_batch1']:.1f} | {r['qps_batch1024']:,.0f} | "
                f"{r['speedup_batch1024']:.1f} |" + cells)
        best = choose(res)
        lines.append("")
        if best:
            lines.append(f"Fastest at recall@100 >= {TARGET_RECALL}: {best['index']} "
                         f"({_setting(best)}), recall@100 {best['recall@100']:.4f}, "
                         f"{best['speedup_batch1']:.1f}x exact at batch 1.")
        else:
            lines.append(f"No approximate setting reached recall@100 {TARGET_RECALL}.")
        for d in (r for r in res["rows"] if r.get("default")):
            lines.append(f"Default {d['index']} ({_setting(d)}): recall@100 "
                         f"{d['recall@100']:.4f}, {d['speedup_batch1']:.1f}x exact at batch 1.")
        if res["table"] == "synthetic-1e6":
            verdict = bool(best and best["speedup_batch1"] >= TARGET_SPEEDUP)
            picked = [d["index"] for d in res["rows"] if d.get("default") and
                      d.get("recall@100", 0) >= TARGET_RECALL and
                      d.get("speedup_batch1", 0) >= TARGET_SPEEDUP]
            lines.append(f"Target (10^6 items: recall@100 >= {TARGET_RECALL} at >= "
                         f"{TARGET_SPEEDUP:.0f}x exact's batch-1 throughput, and the defaults "
                         f"pick it): an index reaches it: {'pass' if verdict else 'FAIL'}; at "
                         f"its defaults: {'pass (' + ', '.join(picked) + ')' if picked else 'FAIL'}.")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, res in zip(axes[0], results):
        for kind in ("ivf", "ivfpq", "hnsw", "flat", "exact"):
            rows = [r for r in res["rows"] if r["index"] == kind and "qps_batch1" in r]
            if rows:
                ax.plot([r["recall@100"] for r in rows], [r["qps_batch1"] for r in rows],
                        marker="o", label=kind)
        ax.set_yscale("log")
        ax.set_xlabel("recall@100")
        ax.set_title(f"{res['table']} ({res['items']:,})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("queries/s, batch 1, one thread")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10^4 synthetic items; writes nothing")
    p.add_argument("--tables", help=f"comma-separated subset of {','.join(TABLES)}")
    p.add_argument("--indexes", help="comma-separated subset of exact,flat,ivf,ivfpq,hnsw "
                                     "(exact always runs: it is every ratio's baseline)")
    p.add_argument("--run", default=str(REPO / "runs" / "gowalla-lightgcn"),
                   help="run folder of a Gowalla retriever (the gowalla table)")
    p.add_argument("--data", default=str(resolve_gowalla(None)),
                   help="the Gowalla folder (its test part scores the gowalla table's indexes)")
    p.add_argument("--threads", type=int, default=2, help="threads for batch 1,024 (default 2)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds per QPS timing (2)")
    p.add_argument("--max-build-s", type=float, default=900.0,
                   help="skip HNSW where its build would take longer (900)")
    p.add_argument("--out", help="results folder (default benchmarks/results; --quick: none)")
    p.add_argument("--report", action="store_true",
                   help="only rewrite ann.md and ann.png from the JSON lines in --out")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--table", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.report:
        out = Path(args.out or DEFAULT_RESULTS)
        latest = latest_records(out / JSONL_NAME)
        context = {k: latest[-1][k] for k in ("machine", "git_commit", "threads", "timestamp",
                                             "versions")}
        (out / MD_NAME).write_text(markdown(latest, context))
        print(plot(latest, out / PNG_NAME) or f"ann: wrote {out / MD_NAME}", file=sys.stderr)
        return 0
    tables = (args.tables.split(",") if args.tables else
              ["synthetic-1e4"] if args.quick else list(TABLES))
    if args.quick:
        args.budget = min(args.budget, 0.3)
    results = []
    for table in tables:
        if table == "gowalla" and not (Path(args.run) / "model.pt").exists():
            print(f"ann: gowalla skipped: no run folder at {args.run} (train one, e.g. "
                  "python -m graphrec.train --model lightgcn --data ../shared/data/gowalla "
                  "--out runs/gowalla-lightgcn)", file=sys.stderr)
            continue
        before = load_avg()
        res = run_table(table, args)
        res["load_avg_1m"] = [before, load_avg()]
        speedups(res)
        results.append(res)
    context = {"machine": machine_info(), "git_commit": git_commit(), "threads": args.threads,
               "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "versions": results[0]["versions"] if results else {}}
    print(markdown(results, context))
    out = None if args.quick and not args.out else Path(args.out or DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / JSONL_NAME, "a") as fh:
            for res in results:
                fh.write(json.dumps({**context, **res}) + "\n")
        latest = latest_records(out / JSONL_NAME)  # a partial rerun refreshes its own tables
        (out / MD_NAME).write_text(markdown(latest, context))
        note = plot(latest, out / PNG_NAME)
        print(note or f"ann: wrote {out / MD_NAME}, {out / PNG_NAME}", file=sys.stderr)
    return 0


def latest_records(path: Path) -> list[dict[str, Any]]:
    """For each table of the JSON lines (in the order of :data:`TABLES`), the newest rows of
    each index kind, so that a rerun of some indexes (``--indexes``) replaces just their rows.
    A row's speed-ups are against the exact search of its own run."""
    newest: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        old = newest.get(rec["table"])
        kinds = {r["index"] for r in rec["rows"]} - ({"exact"} if old else set())
        if old is not None:
            rec = {**rec, "rows": [r for r in old["rows"] if r["index"] not in kinds] +
                   [r for r in rec["rows"] if r["index"] in kinds]}
            rec["rows"].sort(key=lambda r: KINDS.index(r["index"]))
        newest[rec["table"]] = rec
    order = {t: i for i, t in enumerate(TABLES)}
    return sorted(newest.values(), key=lambda r: order.get(r["table"], len(order)))


if __name__ == "__main__":
    sys.exit(main())
