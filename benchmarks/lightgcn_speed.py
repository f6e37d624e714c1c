"""LightGCN training speed: graphrec against PyG's ``LightGCN`` in its fastest form, side by side.

Both models train on the same adjacency (graphrec's symmetric-normalized CSR, which PyG's
``LightGCN(normalize=False)`` takes as a pre-normalized ``torch.sparse`` matrix, its fastest
form), from the same initial embeddings, on the same batches (the same users, positives and
sampled negatives), with Adam (graphrec's trainer uses torch's fused kernel; PyG's example
uses the default one): each timed batch runs one graphrec step and then one PyG step,
so drift on a shared machine hits both alike. Before timing, both models' propagated
embeddings are checked to agree, so a fast wrong model cannot win.

Each step is split into sampling (shared), forward (3-layer propagation over all nodes plus the
BPR loss), backward (through the propagation) and the optimizer step. An epoch is estimated as
the median step times the number of batches in an epoch (the mean-based figure is recorded too); the training runs in the
README give measured full epochs. Peak memory comes from separate child processes, one per
model, each running the same steps and (graphrec) the full ranking of every test user.

Usage::

    python benchmarks/lightgcn_speed.py            # Gowalla, paper settings, ~4 minutes here
    python benchmarks/lightgcn_speed.py --quick    # a small synthetic graph, < 1 minute, writes
                                                   # nothing unless --out DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, git_commit, import_graphrec, load_avg, machine_info,
    maxrss_mib)

PHASES = ("sampling", "forward", "backward", "step")
TARGET_RATIO = 0.5  # graphrec epoch <= half of PyG's fastest form
TARGET_PEAK_MIB = 2048.0


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    """Data, split, both models with equal weights, optimizers and the batch source."""
    import_graphrec(args.threads)
    import torch
    from torch_geometric.nn.models import LightGCN

    from graphrec.batches import PairBatches
    from graphrec.data.graph import build
    from graphrec.data.source import DataConfig, load_data
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.models import build_model
    from graphrec.models.lightgcn import LightGCNConfig
    from graphrec.nn.propagation import normalized_adjacency
    from graphrec.split import SplitConfig, split
    from graphrec.trainer import TrainConfig, build_optimizer

    torch.manual_seed(0)
    if args.quick:
        ds = build(make_synthetic(SyntheticConfig(num_users=2000, num_items=1500, seed=1)))
        parts = split(ds.graph, SplitConfig("random", seed=0))
    else:
        ds = load_data(DataConfig(path=str(args.data)))
        parts = split(ds.graph, SplitConfig("given"))
    cfg = LightGCNConfig(dim=args.dim, num_layers=args.layers, l2=1e-4)
    ours = build_model("lightgcn", ds.num_users, ds.num_items, cfg)
    ours.fit(parts.train)
    # PyG's model gets the plain CSR (its fastest form); ours builds its own (tiles where
    # they pay), as in training
    adj = normalized_adjacency(parts.train)
    pyg = LightGCN(ds.num_users + ds.num_items, args.dim, args.layers, normalize=False)
    with torch.no_grad():
        pyg.embedding.weight.copy_(ours.embedding.weight)
    return {"torch": torch, "ds": ds, "parts": parts, "ours": ours, "pyg": pyg, "adj": adj,
            "batches": PairBatches(parts.train, 1),
            "gen": torch.Generator().manual_seed(0),
            # ours: the trainer's optimizer (fused Adam); PyG's: torch's Adam, as in its example
            "opt_ours": build_optimizer(ours, TrainConfig(lr=1e-3)),
            "opt_pyg": torch.optim.Adam(pyg.parameters(), lr=1e-3)}


def _clock(t0: float) -> float:
    return time.perf_counter() - t0


def _timed_step(forward: Any, opt: Any) -> dict[str, float]:
    """One training step: ``forward()`` returns the loss; each phase timed."""
    t = time.perf_counter()
    loss = forward()
    fwd = _clock(t)
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    bwd = _clock(t)
    t = time.perf_counter()
    opt.step()
    return {"forward": fwd, "backward": bwd, "step": _clock(t)}


def step_ours(s: dict[str, Any], batch: Any) -> dict[str, float]:
    """One graphrec training step (the trainer's: ``loss = model(batch)``), timed by phase."""
    return _timed_step(lambda: s["ours"](batch), s["opt_ours"])


def step_pyg(s: dict[str, Any], batch: Any) -> dict[str, float]:
    """One step of PyG's LightGCN as its documentation trains it: ``get_embedding`` over the
    adjacency, dot products, ``recommendation_loss`` (BPR + L2 on the batch's layer-0 rows)."""
    torch, pyg, n_users = s["torch"], s["pyg"], s["ds"].num_users
    u, i, neg = batch.users, batch.items + n_users, batch.negatives[:, 0] + n_users

    def forward() -> Any:
        out = pyg.get_embedding(s["adj"])
        pos_rank = (out[u] * out[i]).sum(-1)
        neg_rank = (out[u] * out[neg]).sum(-1)
        return pyg.recommendation_loss(pos_rank, neg_rank, node_id=torch.cat([u, i, neg]),
                                       lambda_reg=1e-4)

    return _timed_step(forward, s["opt_pyg"])


def _batch(s: dict[str, Any], order: Any, b: int, size: int) -> tuple[Any, float]:
    t = time.perf_counter()
    batch = s["batches"].batch(order[b * size:(b + 1) * size], s["gen"])
    return batch, _clock(t)


def child_timing(args: argparse.Namespace) -> dict[str, Any]:
    s = _setup(args)
    torch = s["torch"]
    with torch.no_grad():  # same weights, same adjacency: the same propagated embeddings
        u, i = s["ours"].embeddings()
        ref = s["pyg"].get_embedding(s["adj"])
        err = float((torch.cat([u, i]) - ref).abs().max())
    if err > 1e-5:
        raise SystemExit(f"graphrec and PyG embeddings differ by {err:g}: not comparable")
    n = s["batches"].num_examples
    per_epoch = -(-n // args.batch_size)
    order = torch.randperm(n, generator=s["gen"])
    runs: dict[str, list[dict[str, float]]] = {"graphrec": [], "pyg": []}
    for b in range(args.warmup + args.batches):
        batch, sample_s = _batch(s, order, b % per_epoch, args.batch_size)
        ours, pyg = step_ours(s, batch), step_pyg(s, batch)
        if b >= args.warmup:
            runs["graphrec"].append({"sampling": sample_s, **ours})
            runs["pyg"].append({"sampling": sample_s, **pyg})
    return {"runs": runs, "batches_per_epoch": per_epoch, "check_max_abs_err": err,
            "graph": {"users": s["ds"].num_users, "items": s["ds"].num_items,
                      "train_interactions": n}}


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    s = _setup(args)
    torch = s["torch"]
    base = maxrss_mib()
    n = s["batches"].num_examples
    order = torch.randperm(n, generator=s["gen"])
    step = step_ours if args.model == "graphrec" else step_pyg
    for b in range(args.memory_batches):
        batch, _ = _batch(s, order, b, args.batch_size)
        step(s, batch)
    train_peak = maxrss_mib()
    result: dict[str, Any] = {"setup_peak_rss_mib": base, "train_peak_rss_mib": train_peak}
    if args.model == "graphrec":
        from graphrec.evaluation.evaluator import EvalConfig, evaluate

        gc.collect()
        t = time.perf_counter()
        metrics = evaluate(s["ours"], s["parts"], "test", EvalConfig(ks=(20,), progress=False))
        result["full_ranking_s"] = _clock(t)
        result["test_users"] = int(metrics["users"])
    result["peak_rss_mib"] = maxrss_mib()
    return result


def run_child(kind: str, args: argparse.Namespace, model: str = "") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--model", model or "graphrec",
           "--batches", str(args.batches), "--warmup", str(args.warmup),
           "--memory-batches", str(args.memory_batches), "--threads", str(args.threads),
           "--batch-size", str(args.batch_size), "--data", str(args.data)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(timing: dict[str, Any], memory: dict[str, dict[str, Any]]) -> dict[str, Any]:
    per_epoch = timing["batches_per_epoch"]
    out: dict[str, Any] = {}
    for model, runs in timing["runs"].items():
        totals = [sum(r[p] for p in PHASES) for r in runs]
        out[model] = {
            "step_ms": {p: 1000 * statistics.median(r[p] for r in runs) for p in PHASES},
            "step_total_ms": {"median": 1000 * statistics.median(totals),
                              "mean": 1000 * statistics.mean(totals),
                              "min": 1000 * min(totals), "max": 1000 * max(totals)},
            # the median resists the bursts of other work on a shared machine; the mean is there too
            "epoch_s_estimate": statistics.median(totals) * per_epoch,
            "epoch_s_estimate_mean": statistics.mean(totals) * per_epoch,
            "memory": memory[model],
        }
    out["ratio"] = out["graphrec"]["epoch_s_estimate"] / out["pyg"]["epoch_s_estimate"]
    return out


def markdown(rec: dict[str, Any]) -> str:
    s, g = rec["summary"], rec["graph"]
    lines = [
        f"LightGCN training speed, {rec['dataset']} ({g['users']:,} users, {g['items']:,} items, "
        f"{g['train_interactions']:,} training interactions), dim {rec['dim']}, "
        f"{rec['layers']} layers, batch {rec['batch_size']}, 1 negative, float32, "
        f"{rec['threads']} threads; {rec['machine']['cpu']}; commit {rec['git_commit']}; "
        f"{rec['timed_batches']} interleaved batches after {rec['warmup']} warm-up; load average "
        f"{rec['load_avg_1m']} at the start.",
        "",
        "| model | sampling ms | forward ms | backward ms | optimizer step ms | step ms (median; min-max) "
        "| epoch s (median step x batches) | peak RSS MiB (training) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, label in (("graphrec", "graphrec `lightgcn`"),
                         ("pyg", "PyG `LightGCN`, pre-normalized CSR")):
        m = s[model]
        st = m["step_total_ms"]
        lines.append(f"| {label} | " + " | ".join(f"{m['step_ms'][p]:.1f}" for p in PHASES)
                     + f" | {st['median']:.0f} ({st['min']:.0f}-{st['max']:.0f}) | "
                     f"{m['epoch_s_estimate']:.1f} | {m['memory']['train_peak_rss_mib']:,.0f} |")
    mem = s["graphrec"]["memory"]
    lines += [
        "",
        f"graphrec / PyG epoch time: **{s['ratio']:.2f}** (target <= {TARGET_RATIO}: "
        f"{'pass' if s['ratio'] <= TARGET_RATIO else 'FAIL'}); graphrec peak RSS "
        f"{mem['peak_rss_mib']:,.0f} MiB including the full ranking (target < 2 GiB: "
        f"{'pass' if mem['peak_rss_mib'] < TARGET_PEAK_MIB else 'FAIL'}); full ranking of "
        f"{mem.get('test_users', 0):,} test users {mem.get('full_ranking_s', float('nan')):.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small synthetic graph, < 1 minute")
    p.add_argument("--data", default=str(DEFAULT_DATA / "gowalla"), help="LightGCN-format folder")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results; "
                                               "--quick writes nothing without it)")
    p.add_argument("--batches", type=int, default=None, help="timed batches (40; quick 10)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--memory-batches", type=int, default=None, help="steps per memory child")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default="graphrec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batches is None:
        args.batches = 10 if args.quick else 40
    if args.memory_batches is None:
        args.memory_batches = 5 if args.quick else 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child_timing(args) if args.child == "timing" else child_memory(args)
        print(json.dumps(result))
        return 0
    if not args.quick and not Path(args.data, "train.txt").exists():
        raise SystemExit(f"--data: {args.data}/train.txt not found (Gowalla, LightGCN format)")
    start = time.perf_counter()
    load = load_avg()
    print("timing graphrec and PyG side by side ...", file=sys.stderr, flush=True)
    timing = run_child("timing", args)
    memory = {}
    for model in ("graphrec", "pyg"):
        print(f"peak memory of {model} ...", file=sys.stderr, flush=True)
        memory[model] = run_child("memory", args, model)
    import torch
    import torch_geometric

    rec = {"benchmark": "lightgcn_speed", "dataset": "synthetic" if args.quick else "gowalla",
           "quick": args.quick, "dim": args.dim, "layers": args.layers,
           "batch_size": args.batch_size, "threads": args.threads, "timed_batches": args.batches,
           "warmup": args.warmup, "graph": timing["graph"],
           "batches_per_epoch": timing["batches_per_epoch"],
           "check_max_abs_err": timing["check_max_abs_err"],
           "summary": summarize(timing, memory), "runs": timing["runs"],
           "machine": machine_info(), "load_avg_1m": load, "git_commit": git_commit(),
           "versions": {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__},
           "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "script_seconds": time.perf_counter() - start}
    rec["summary"]["target"] = {"ratio_max": TARGET_RATIO, "peak_mib_max": TARGET_PEAK_MIB}
    text = markdown(rec)
    print(text)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "lightgcn_speed.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        (out / "lightgcn_speed.md").write_text(text)
        print(f"wrote {out / 'lightgcn_speed.jsonl'} and lightgcn_speed.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
