"""The multi-stage pipeline against the single models it combines, the MMR/DPP trade-off, and
the cost of one request.

``--accuracy`` (ml-100k, per-user random 80/20, seed 0, every rating a positive): trains the
retriever runs at their defaults (``python -m graphrec.train --model M``; reused when the work
folder has them), reads each run's test metrics, then fits the pipeline's ranker by the
leak-free protocol and evaluates every stage on the same test part, in this script. Then the
re-rankers: MMR and DPP over the ranked list at several lambdas (similarity: the items' genres),
NDCG@20 against intra-list diversity, plotted.

``--gowalla``: the same over the Gowalla split with graph-filter and bpr runs.

``--speed``: one request on Gowalla-sized data, one thread: an HNSW search for 500 candidates
over a bpr model's item vectors, the candidate features, a DCN-v2 ranker over the 500 and MMR to
20; p50/p99 over ``--queries`` users, and the throughput of batches of 256 users. Untrained
weights: the cost does not depend on them.

``--quick``: ``--accuracy`` on the built-in synthetic data at small settings (the tests).

Usage::

    python benchmarks/pipeline.py --accuracy     # results/pipeline_ml100k.{jsonl,md,png}
    python benchmarks/pipeline.py --gowalla      # results/pipeline_gowalla.{jsonl,md}
    python benchmarks/pipeline.py --speed        # results/pipeline_speed.{jsonl,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, import_graphrec, machine_info, maxrss_mib,
    resolve_gowalla)

ML_RETRIEVERS = ("graph-filter", "lightgcn")
SINGLE_MODELS = ("graph-filter", "lightgcn", "bpr", "two-tower")
LAMBDAS = {"mmr": (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.5),
           "dpp": (1.0, 0.995, 0.99, 0.98, 0.95, 0.9)}  # DPP's quality is exp(lam / (2 (1 - lam)) r)
QUICK_LAMBDAS = {"mmr": (1.0, 0.8), "dpp": (0.99,)}
RANKER = {"kind": "dcn-v2"}  # the pipeline's defaults otherwise (softmax, dropout 0.3, 3 folds)


def train_runs(data: str | None, work: Path, models: tuple[str, ...],
               extra: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """A run folder per model at its defaults (reused when its metrics are there)."""
    from graphrec import train
    from graphrec.cli import run

    runs = {}
    for model in models:
        out = work / model
        if not (out / "metrics.json").exists():
            argv = ["--model", model, "--out", str(out), "--no-progress", "--overwrite"]
            argv += (["--data", data] if data else []) + (extra or {}).get(model, [])
            start = time.perf_counter()
            if run(train.main, argv) != 0:
                raise SystemExit(f"training {model} failed")
            print(f"trained {model} in {time.perf_counter() - start:.0f} s", flush=True)
        runs[model] = out
    return runs


def pipeline_config(runs: dict[str, Path], retrievers: tuple[str, ...], work: Path, n: int,
                    k: int, ranker: dict[str, Any] | None, rerank: dict[str, Any] | None = None
                    ) -> Any:
    from graphrec.serve.pipeline import parse_config

    values: dict[str, Any] = {"retriever": [{"run": str(runs[m])} for m in retrievers], "n": n, "k": k}
    if ranker is not None:
        values["ranker"] = {"run": str(work / "ranker"), **ranker}
    if rerank:
        values["rerank"] = rerank
    return parse_config(values)


def accuracy(args: argparse.Namespace, data: str | None, name: str, retrievers: tuple[str, ...],
             singles: tuple[str, ...], extra: dict[str, list[str]] | None = None,
             ranker: dict[str, Any] | None = None) -> int:
    """Single models, then the pipeline, then the re-rankers' sweep."""
    from graphrec.serve.pipeline import Pipeline, RerankSpec

    work = Path(args.work) / name
    runs = train_runs(data, work, tuple(dict.fromkeys(singles + retrievers)), extra)
    records = []
    for model in singles:
        m = json.loads((runs[model] / "metrics.json").read_text())
        records.append({"what": f"`{model}` alone", "recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"]})
        print(json.dumps(records[-1]), flush=True)
    best = max(records, key=lambda r: r["ndcg@20"])
    ranker = ranker or RANKER
    cfg = pipeline_config(runs, retrievers, work, args.n, 20, ranker)
    pipe = Pipeline(cfg, progress=False, load_ranker=args.reuse_ranker)
    start = time.perf_counter()
    if pipe.ranker is None:
        meta = pipe.fit_ranker()
        fit_s = time.perf_counter() - start
    else:  # --reuse-ranker: the one fitted before, for these runs
        meta = pipe.ranker_meta
        fit_s = meta["seconds"]
    cache: dict[str, Any] = {}  # stages 1 and 2 once; the sweep below redoes stage 3 only
    res = pipe.evaluate(cache)
    fused = " + ".join(f"`{m}`" for m in retrievers)
    records.append({"what": f"pipeline: {fused}, {args.n} candidates, `dcn-v2` ranker",
                    "recall@20": res["final.recall@20"], "ndcg@20": res["final.ndcg@20"],
                    "candidate_recall": res[f"candidates.recall@{args.n}"],
                    "per_retriever_recall": {k: v for k, v in res.items() if k.startswith("retriever")},
                    "diversity": res.get("final.diversity"), "coverage": res["final.coverage"],
                    "novelty": res["final.novelty"], "gini": res["final.gini"],
                    "fit_seconds": round(fit_s, 1), "protocol": meta["protocol"]})
    print(json.dumps(records[-1]), flush=True)
    gain = records[-1]["ndcg@20"] / best["ndcg@20"] - 1
    sweep: list[dict[str, Any]] = []
    sim = "genres" if pipe.genres() is not None else "cooccurrence"
    # diversity is measured by the items' genre vectors: without them (Gowalla) there is
    # nothing to trade NDCG for, and co-occurrence similarity there is a dense items x users
    # matrix (gigabytes), so the sweep is left out
    grid = {} if pipe.genres() is None else QUICK_LAMBDAS if args.quick else LAMBDAS
    for method, lams in grid.items():
        for lam in lams:
            pipe.cfg.rerank = RerankSpec(method=method, lam=lam, similarity=sim)
            r = pipe.evaluate(cache)
            sweep.append({"method": method, "lam": lam, "ndcg@20": r["final.ndcg@20"],
                          "recall@20": r["final.recall@20"], "diversity": r.get("final.diversity"),
                          "coverage": r["final.coverage"], "novelty": r["final.novelty"]})
            print(json.dumps(sweep[-1]), flush=True)
    base = sweep[0] if sweep else {}
    lines = [f"# The pipeline on {name}", "",
             f"`python benchmarks/pipeline.py {'--quick' if args.quick else '--' + args.mode}` "
             f"at commit {git_commit()}, {machine_info().get('cpu', 'CPU')}, {args.threads} threads. "
             "Single models at their defaults, each its own run on the same split; the pipeline "
             "fits its ranker by the leak-free protocol (README) and is scored on the same test "
             f"part. Ranker: {json.dumps(ranker)}; fit {fit_s:.0f} s (retrievers retrained on "
             f"{meta['protocol']['retrained_on']:,} interactions, holdout of "
             f"{meta['protocol']['holdout']:,}).", "",
             "| what | Recall@20 | NDCG@20 |", "|---|---:|---:|"]
    lines += [f"| {r['what']} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} |" for r in records]
    lines += ["", f"The pipeline against the best single model ({best['what']}): NDCG@20 "
              f"{gain:+.1%}. Candidate recall@{args.n}: fused {res[f'candidates.recall@{args.n}']:.4f}; "
              + ", ".join(f"{k.split('.')[1]} alone {v:.4f}" for k, v in res.items()
                          if k.startswith("retriever")) + "."]
    if not sweep:
        lines += ["", "No re-ranking sweep: the items have no genres to measure diversity by."]
    else:
        lines += ["", f"Re-ranking the ranked list (item similarity: {sim}), diversity = "
                  "intra-list diversity of the top 20 by the items' genre vectors:", "",
                  "| re-ranker | lambda | NDCG@20 | NDCG lost | diversity | diversity gained | "
                  "coverage | novelty |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sweep:  # (nothing when there is no sweep)
        d0, d = base["diversity"], s["diversity"]
        lines.append(f"| {s['method']} | {s['lam']} | {s['ndcg@20']:.4f} | "
                     f"{1 - s['ndcg@20'] / base['ndcg@20']:.1%} | {d:.4f} | {d / d0 - 1:+.1%} | "
                     f"{s['coverage']:.3f} | {s['novelty']:.2f} |")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"pipeline_{name}"
    if not args.quick or args.out:
        with open(out / f"{stem}.jsonl", "w") as f:
            for r in records + sweep:
                f.write(json.dumps(r) + "\n")
        (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
        if sweep:
            _plot(sweep, out / f"{stem}.png", name)
    print("\n".join(lines))
    return 0


def _plot(sweep: list[dict[str, Any]], path: Path, name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in ("mmr", "dpp"):
        pts = [s for s in sweep if s["method"] == method]
        ax.plot([s["diversity"] for s in pts], [s["ndcg@20"] for s in pts], marker="o", label=method.upper())
        for s in pts:
            ax.annotate(f"{s['lam']}", (s["diversity"], s["ndcg@20"]), fontsize=7)
    ax.set_xlabel("intra-list diversity@20 (genres)")
    ax.set_ylabel("NDCG@20")
    ax.set_title(f"re-ranking the pipeline's list, {name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speed(args: argparse.Namespace) -> int:
    """One request on Gowalla-sized data, one thread."""
    import torch

    from graphrec.data.source import load_data
    from graphrec.config import DataConfig
    from graphrec.models import build_model, model_config
    from graphrec.models.dcn import CandidateRanker, RankerConfig
    from graphrec.serve import rerank
    from graphrec.serve.candidates import retrieve
    from graphrec.serve.features import FeatureBuilder, layout_of, parse_groups
    from graphrec.serve.index import IndexConfig, ItemIndex
    from graphrec.data.graph import user_sequences

    torch.set_num_threads(1)
    ds = load_data(DataConfig(path=str(resolve_gowalla(args.data))))
    graph = ds.graph
    torch.manual_seed(0)
    model = build_model("bpr", ds.num_users, ds.num_items, model_config("bpr", {}))
    model.fit(graph)
    model.eval()
    start = time.perf_counter()
    index = ItemIndex(model.item_vectors().detach(), IndexConfig(kind="hnsw"))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    layout = layout_of(graph, parse_groups("all"), 1, strict=False)
    builder = FeatureBuilder(layout, graph)
    features_s = time.perf_counter() - start
    from graphrec.serve.pipeline import RANKER_DEFAULTS

    ranker = CandidateRanker(len(layout.dense_names), layout.vocab, RankerConfig(**RANKER_DEFAULTS)).eval()
    seen = user_sequences(graph)
    vecs = torch.nn.functional.normalize(model.item_vectors().detach(), dim=1)
    n, k = 500, 20
    gen = torch.Generator().manual_seed(1)
    users = torch.randint(0, ds.num_users, (args.queries + 20,), generator=gen)

    @torch.no_grad()
    def request(u: torch.Tensor) -> dict[str, float]:
        t0 = time.perf_counter()
        cand = retrieve([model], u, seen, [n], n, indexes=[index])
        t1 = time.perf_counter()
        dense, tokens = builder.build(u, cand)
        t2 = time.perf_counter()
        scores = ranker(dense, tokens, cand.mask)
        t3 = time.perf_counter()
        order = torch.argsort(scores, dim=1, descending=True)
        items = cand.items.gather(1, order)
        rerank.mmr(scores.gather(1, order), vecs[items.clamp(min=0)], k, 0.9, mask=items >= 0)
        t4 = time.perf_counter()
        return {"total": t4 - t0, "retrieve": t1 - t0, "features": t2 - t1, "rank": t3 - t2, "rerank": t4 - t3}

    for u in users[:20]:
        request(u[None])
    times = [request(u[None]) for u in users[20:]]
    parts = {key: sorted(t[key] for t in times) for key in times[0]}

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    batch = users[:256]
    request(batch)
    start = time.perf_counter()
    reps = 3
    for _ in range(reps):
        request(batch)
    per_s = 256 * reps / (time.perf_counter() - start)
    rec = {"users": ds.num_users, "items": ds.num_items, "n": n, "k": k,
           "p50_ms": pct(parts["total"], 0.5), "p99_ms": pct(parts["total"], 0.99),
           **{f"{key}_p50_ms": pct(v, 0.5) for key, v in parts.items() if key != "total"},
           "batch256_users_per_s": per_s, "hnsw_build_s": build_s, "features_build_s": features_s,
           "peak_rss_mib": maxrss_mib(), "dense_features": len(layout.dense_names)}
    print(json.dumps(rec), flush=True)
    lines = ["# One pipeline request on Gowalla", "",
             f"`python benchmarks/pipeline.py --speed` at commit {git_commit()}, "
             f"{machine_info().get('cpu', 'CPU')}, one thread; {ds.num_users:,} users, "
             f"{ds.num_items:,} items. A request: HNSW search of {n} candidates over a bpr model's "
             f"64-d item vectors (seen items excluded), {len(layout.dense_names)} dense candidate "
             f"features, a DCN-v2 ranker over the {n}, MMR (lambda 0.9) to {k}. Untrained weights "
             f"(the cost does not depend on them); median and 99th percentile over {len(times)} users.", "",
             "| stage | p50 ms |", "|---|---:|"]
    lines += [f"| {key} | {pct(v, 0.5):.2f} |" for key, v in parts.items() if key != "total"]
    lines += [f"| **request** | **{rec['p50_ms']:.2f}** (p99 {rec['p99_ms']:.2f}) |", "",
              f"Batches of 256 users: {per_s:,.0f} users/s. HNSW build {build_s:.1f} s; the "
              f"feature tables (co-occurrence, two-hop, adjacency) {features_s:.1f} s; peak RSS "
              f"{rec['peak_rss_mib']:,.0f} MiB. Target: p50/p99 <= 5/10 ms."]
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_speed.jsonl").write_text(json.dumps(rec) + "\n")
    (out / "pipeline_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--accuracy", dest="mode", action="store_const", const="accuracy")
    mode.add_argument("--gowalla", dest="mode", action="store_const", const="gowalla")
    mode.add_argument("--speed", dest="mode", action="store_const", const="speed")
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--work", default=str(REPO / "runs" / "bench-pipeline"),
                   help="where the retriever runs and the ranker are kept")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--out", default=None, help="--quick: write its results to this folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reuse-ranker", action="store_true",
                   help="evaluate the ranker fitted before in the work folder, if any")
    p.add_argument("-n", type=int, default=200, help="candidates")
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    args.quick = args.mode == "quick"
    import_graphrec(args.threads)
    if args.mode == "speed":
        return speed(args)
    if args.mode == "gowalla":
        return accuracy(args, str(resolve_gowalla(args.data)), "gowalla", ("graph-filter", "bpr"),
                        ("graph-filter", "bpr"), {"bpr": ["--epochs", "12", "--lr", "5e-3"]},
                        # one holdout (bpr retrains in minutes) and a short fit: ~27k users x
                        # 200 candidates is 5M rows an epoch on this CPU
                        {"kind": "dcn-v2", "folds": 1, "epochs": 8, "batch_size": 256,
                         "patience": 2})
    if args.quick:
        if args.out:
            args.results = args.out
        args.n = 50
        return accuracy(args, None, "synthetic", ("graph-filter", "bpr"), ("graph-filter", "bpr"),
                        {"bpr": ["--epochs", "5", "--lr", "0.01"]},
                        {"kind": "dcn-v2", "folds": 1, "epochs": 8})
    data = str(Path(args.data) / "ml-100k" / "u.data")
    return accuracy(args, data, "ml100k", ML_RETRIEVERS, SINGLE_MODELS)


if __name__ == "__main__":
    sys.exit(main())

