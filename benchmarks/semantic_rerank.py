"""What the semantic re-ranker (graphrec.serve.semantic) does to NDCG@20 on top of a retriever.

ml-100k, per-user random 80/20 split, seed 0 (the run's own split), every rating a positive.
The retriever is a ``graph-filter`` run at its defaults (``python -m graphrec.train --model
graph-filter``; reused when the work folder has it). Its top 100 candidates per user, seen items
excluded, are re-ranked by the blend of its score with the cosine of each candidate's MiniLM
text embedding (``movie_title`` + ``class``, :mod:`graphrec.data.text`) to the mean embedding of
the user's last ``history`` items, over a grid of ``alpha`` (weight of the retriever's score)
and ``history``.

Selection on validation only: a validation part (12.5% of each user's training interactions,
10% of all, seed 1) is carved from the training part, a graph-filter is fitted on the rest, and
the (alpha, history) of the best validation NDCG@20 is chosen there. The test rows then use the
run itself (fitted on the whole training part, histories = the training part) and report every
grid point, the chosen one marked, with a paired bootstrap interval of its NDCG@20 change.

``--quick``: synthetic data with random unit "text" vectors (no encoder), small grid; writes
nothing unless ``--out``.

Usage::

    python benchmarks/semantic_rerank.py     # results/semantic_rerank_ml100k.{jsonl,md}
    python benchmarks/semantic_rerank.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_DATA, DEFAULT_RESULTS, REPO, git_commit, import_graphrec, load_avg, machine_info  # noqa: E402

ALPHAS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.0)
HISTORIES = (10, 50, 0)  # 0: every training item of the user
QUICK = {"alphas": (1.0, 0.8, 0.0), "histories": (10, 0)}
N, K = 100, 20
TEXT_COLS = ("movie_title", "class")


def train_run(data: str | None, out: Path) -> Path:
    """The graph-filter run at its defaults (reused when its metrics are there)."""
    from graphrec import train
    from graphrec.cli import run

    if not (out / "metrics.json").exists():
        argv = ["--model", "graph-filter", "--out", str(out), "--no-progress", "--overwrite"]
        if run(train.main, argv + (["--data", data] if data else [])) != 0:
            raise SystemExit("training graph-filter failed")
    return out


def evaluate(model: Any, known: Any, heldout: Any, emb: Any, grid: list[tuple[int, float]],
             num_users: int) -> dict[tuple[int, float], Any]:
    """Per grid point, the per-user NDCG@20 and Recall@20 ``[U]`` of the re-ranked top-100 of
    ``model`` for the users of ``heldout``, histories and exclusions from ``known``."""
    import torch

    from graphrec.batches import History
    from graphrec.data.graph import user_sequences
    from graphrec.evaluation.metrics import METRIC_FUNCTIONS
    from graphrec.serve.candidates import retrieve
    from graphrec.serve.semantic import history_vectors, semantic

    users = torch.unique(heldout.user)
    seq = user_sequences(known)
    with torch.no_grad():
        cand = retrieve([model], users, seq, [N], N)
    items, scores = cand.items, cand.scores[..., 0].masked_fill(~cand.mask, float("-inf"))
    key = torch.unique(heldout.user.long() * emb.size(0) + heldout.item.long())
    n_rel = torch.bincount(heldout.user, minlength=num_users)[users]
    vecs = emb[items.clamp(min=0)]  # [U, N, D]
    out = {}
    for history, alpha in grid:
        start = time.perf_counter()
        prof = history_vectors(emb, History.of(*seq, users), history)
        pos = semantic(scores, vecs, prof, K, alpha, mask=cand.mask)
        seconds = time.perf_counter() - start
        top = items.gather(1, pos.clamp(min=0)).masked_fill(pos < 0, -1)
        hits = torch.isin(users[:, None] * emb.size(0) + top.clamp(min=0), key) & (top >= 0)
        out[history, alpha] = {m: METRIC_FUNCTIONS[m](hits, n_rel, K) for m in ("ndcg", "recall")}
        out[history, alpha]["seconds"] = seconds
    out["candidate_recall"] = float((torch.isin(users[:, None] * emb.size(0) + items.clamp(min=0), key)
                                     & cand.mask).sum(1).div(n_rel).mean())
    out["users"] = int(users.numel())
    return out


def bootstrap(a: Any, b: Any, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% paired bootstrap interval of mean(b - a) over users."""
    import numpy as np

    d = (b - a).numpy()
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (rounds, d.size))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--work", default=str(REPO / "runs" / "bench-semantic"), help="where the run is kept")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="--quick: write its results to this folder")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    start_load = load_avg()
    import_graphrec(args.threads)
    import torch

    from graphrec.checkpoint import load_checkpoint
    from graphrec.config import resolve
    from graphrec.data.source import load_data
    from graphrec.models import build_model, model_config
    from graphrec.split import SplitConfig, split

    name = "synthetic" if args.quick else "ml100k"
    data = None if args.quick else str(Path(args.data) / "ml-100k" / "u.data")
    run = train_run(data, Path(args.work) / name / "graph-filter")
    cfg = resolve(json.loads((run / "config.json").read_text()), {})
    ckpt = load_checkpoint(run / "model.pt")
    start = time.perf_counter()
    if args.quick:  # no text: random unit vectors stand in for the embeddings
        ds = load_data(cfg.data)
        emb = torch.nn.functional.normalize(torch.randn(ds.num_items, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    else:
        ds = load_data(dataclasses.replace(cfg.data, text_cols=TEXT_COLS))
        emb = ds.graph["item"].text_emb.float()
    encode_s = time.perf_counter() - start
    if [str(x) for x in ds.items.raw] != [str(x) for x in ckpt.items.raw]:
        raise SystemExit("the run's item ids differ from the data's")
    parts = split(ds.graph, cfg.split)
    # validation carved from training: 12.5% of each user's training part (10% of all)
    inner = split(parts.train, SplitConfig(method="random", test_ratio=0.125, seed=1))
    valid_model = build_model(cfg.model, ds.num_users, ds.num_items, model_config(cfg.model, cfg.model_options))
    valid_model.fit(inner.train)
    grid_spec = QUICK if args.quick else {"alphas": ALPHAS, "histories": HISTORIES}
    # alpha = 1 is the retriever's own order whatever the history: one row of it
    grid = [(grid_spec["histories"][0], 1.0)] + [(h, a) for h in grid_spec["histories"]
                                                 for a in grid_spec["alphas"] if a != 1.0]
    val = evaluate(valid_model.eval(), inner.train, inner.test, emb, grid, ds.num_users)
    best = max(grid, key=lambda g: (float(val[g]["ndcg"].mean()), g[1]))  # ties: more alpha
    test = evaluate(ckpt.model.eval(), parts.train, parts.test, emb, grid, ds.num_users)
    base_key = grid[0]
    base = test[base_key]
    run_ndcg = json.loads((run / "metrics.json").read_text())["ndcg@20"]
    records = []
    for g in grid:
        t, v = test[g], val[g]
        lo, hi = bootstrap(base["ndcg"], t["ndcg"])
        records.append({"history": g[0], "alpha": g[1], "chosen": g == best,
                        "valid_ndcg@20": float(v["ndcg"].mean()), "valid_recall@20": float(v["recall"].mean()),
                        "test_ndcg@20": float(t["ndcg"].mean()), "test_recall@20": float(t["recall"].mean()),
                        "delta_ndcg@20": float((t["ndcg"] - base["ndcg"]).mean()), "delta_ci95": [lo, hi],
                        "rerank_seconds": t["seconds"]})
        print(json.dumps(records[-1]), flush=True)
    chosen = next(r for r in records if r["chosen"])
    meta = {"data": name, "n": N, "k": K, "text_cols": list(TEXT_COLS), "valid_users": val["users"],
            "test_users": test["users"], "candidate_recall@100": test["candidate_recall"],
            "valid_candidate_recall@100": val["candidate_recall"], "run_ndcg@20": run_ndcg,
            "encode_seconds": round(encode_s, 1), "commit": git_commit(), "machine": machine_info(),
            "load_avg": start_load, "threads": args.threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    b = records[grid.index(base_key)]
    text = ("random unit vectors (--quick)" if args.quick
            else f"{' + '.join(TEXT_COLS)} by all-MiniLM-L6-v2")
    lines = [f"# Semantic re-ranking on {name}", "",
             f"`python benchmarks/semantic_rerank.py{' --quick' if args.quick else ''}` at commit "
             f"{meta['commit']}, {meta['machine']['cpu']}, {args.threads} threads. Retriever: "
             f"`graph-filter` at its defaults (its run's test NDCG@20 {run_ndcg:.4f}; the top 20 of its "
             f"top {N} here: {b['test_ndcg@20']:.4f}); its top {N} candidates per user, seen items "
             f"excluded (candidate recall@{N} {test['candidate_recall']:.4f}), re-ranked to {K} by "
             f"`alpha * minmax(score) + (1 - alpha) * minmax(cos(text_emb, mean text_emb of the "
             f"last `history` training items))`; text: {text}. "
             f"alpha and history chosen on a validation part carved from training "
             f"({val['users']} users; graph-filter refitted without it), reported on the test "
             f"part ({test['users']} users). Δ: change of mean NDCG@20 against alpha = 1 with a "
             "95% paired bootstrap interval over users.", "",
             f"**Chosen on validation: alpha = {chosen['alpha']}, history = "
             f"{chosen['history'] or 'all'}: test NDCG@20 {b['test_ndcg@20']:.4f} → "
             f"{chosen['test_ndcg@20']:.4f} ({chosen['delta_ndcg@20']:+.4f}, 95% CI "
             f"[{chosen['delta_ci95'][0]:+.4f}, {chosen['delta_ci95'][1]:+.4f}]), Recall@20 "
             f"{b['test_recall@20']:.4f} → {chosen['test_recall@20']:.4f}.**", "",
             "| history | alpha | valid NDCG@20 | test NDCG@20 | Δ NDCG@20 (95% CI) | test Recall@20 | re-rank s |",
             "|---:|---:|---:|---:|---|---:|---:|"]
    for r in records:
        mark = " ← chosen" if r["chosen"] else ""
        hist = "–" if r["alpha"] == 1.0 else (r["history"] or "all")
        lines.append(f"| {hist} | {r['alpha']} | {r['valid_ndcg@20']:.4f} | "
                     f"{r['test_ndcg@20']:.4f} | {r['delta_ndcg@20']:+.4f} [{r['delta_ci95'][0]:+.4f}, "
                     f"{r['delta_ci95'][1]:+.4f}]{mark} | {r['test_recall@20']:.4f} | {r['rerank_seconds']:.3f} |")
    lines += ["", f"re-rank s: wall seconds for all {test['users']} test users in one batch ({N} "
              f"candidates, {emb.size(1)}-d vectors: the profiles and the blend), after the "
              f"candidates; encoding the {ds.num_items} item texts once (with loading the data) took "
              f"{meta['encode_seconds']} s. Load average {start_load} at the start on "
              f"{meta['machine']['cores']} cores: a load above 1 per core means other work slowed these timings."]
    if not args.quick or args.out:
        out = Path(args.out if args.quick and args.out else args.results)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"semantic_rerank_{name}"
        with open(out / f"{stem}.jsonl", "w") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
            for r in records:
                f.write(json.dumps(r) + "\n")
        (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
