"""Exploration policies through Li et al.'s offline replay on ml-100k over time.

Protocol (``graphrec/evaluation/replay.py`` has the method and its caveats): the 100,000
ratings in time order (ties by user); the first half is the prefix the models are fitted on,
the second half is replayed. Each replayed event's candidates are the logged item plus 20 items
drawn uniformly from the catalogue, the logged one at a random position; the reward is
rating >= 4. Statistics are updated every ``--chunk`` events (100 by default); one policy is also
replayed per event (``chunk = 1``) to show what the batching changes.

Two models' scores, fixed through the replay (the same for every user):

* ``like-rate``: graphrec's ``pop`` model fitted on the prefix with the reward as its rating,
  so ``predict`` is each item's damped mean reward (pseudo-count 5 towards the prefix's mean);
  items the prefix never saw get the prefix's mean. On the scale of the reward, so UCB's and
  Thompson's priors are calibrated.
* ``popularity``: the prefix's interaction count of each item over the largest count, in [0, 1]:
  what a hit-oriented recommender ranks by. Not a reward probability, so as a prior mean it is
  mis-scaled (most items near 0).

Every setting runs on ``--seeds`` candidate draws (the policy's seed is the draw's); the tables
give the mean and standard deviation over them. Regret is greedy's reward on the same draw minus
the policy's.

Usage::

    python benchmarks/bandits.py            # results/bandits_ml100k.{jsonl,md,png}, ~2-4 min
    python benchmarks/bandits.py --quick    # synthetic data, one seed, writes only with --out
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import DEFAULT_DATA, DEFAULT_RESULTS, git_commit, import_graphrec, load_avg, machine_info  # noqa: E402

PREFIX = 0.5
DISTRACTORS = 20
DAMPING = 5.0
# (label, class name, settings); greedy first: the others' regret is against it
POLICIES: list[tuple[str, str, dict[str, Any]]] = [
    ("greedy", "EpsilonGreedy", {"epsilon": 0.0}),
    ("random", "EpsilonGreedy", {"epsilon": 1.0}),
    *[(f"epsilon {e}", "EpsilonGreedy", {"epsilon": e}) for e in (0.01, 0.05, 0.1, 0.2)],
    *[(f"UCB bonus c={c}", "UCB", {"c": c}) for c in (0.01, 0.03, 0.1)],
    *[(f"UCB prior w=10 c={c}", "UCB", {"c": c, "prior_strength": 10.0}) for c in (0.1, 0.3)],
    ("UCB1 w=0 c=0.3", "UCB", {"c": 0.3, "prior_strength": 0.0}),
    *[(f"Thompson w={w:g}", "ThompsonSampling", {"prior_strength": w}) for w in (1.0, 10.0, 100.0)],
]
EXACT = ("Thompson w=10", "UCB bonus c=0.03")  # also replayed per event on the first seed
CURVES = ("greedy", "random", "epsilon 0.05", "UCB bonus c=0.03", "UCB prior w=10 c=0.1", "Thompson w=10")


def models(graph: Any, cut: Any) -> dict[str, Any]:
    """Item scores [I] of the two prefix models."""
    import torch

    from graphrec.data.graph import edge_subgraph
    from graphrec.models.pop import PopConfig, Popularity
    from graphrec.schema import EDGE, RATING

    prefix = edge_subgraph(graph, cut)
    prefix[EDGE][RATING] = (prefix[EDGE][RATING] >= 4).float()  # the reward as the rating
    num_users, num_items = graph["user"].num_nodes, graph["item"].num_nodes
    pop = Popularity(num_users, num_items, PopConfig(damping=DAMPING))
    pop.fit(prefix)
    like = pop.predict(torch.zeros(num_items, dtype=torch.long), torch.arange(num_items)).double()
    counts = torch.bincount(prefix[EDGE].edge_index[1], minlength=num_items).double()
    return {"like-rate": like, "popularity": counts / counts.max()}


def run(args: argparse.Namespace) -> int:
    import torch

    from graphrec.data.source import DataConfig, load_data
    from graphrec.evaluation.replay import make_replay_log, replay
    from graphrec.schema import EDGE, TIME
    from graphrec.serve import explore

    path = None if args.quick else str(Path(args.data) / "ml-100k" / "u.data")
    ds = load_data(DataConfig(path=path))
    graph = ds.graph
    E = graph[EDGE].edge_index.size(1)
    start = int(E * PREFIX)
    cut = torch.zeros(E, dtype=torch.bool)
    cut[torch.argsort(graph[EDGE][TIME], stable=True)[:start]] = True
    scores = models(graph, cut)
    policies = POLICIES if not args.quick else [p for p in POLICIES if p[0] in CURVES]
    seeds = range(1 if args.quick else args.seeds)
    commit, machine = git_commit(), machine_info()
    records: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    begin = time.perf_counter()
    for seed in seeds:
        log = make_replay_log(graph, num_candidates=DISTRACTORS, start=start, seed=seed)
        for model, sc in scores.items():
            greedy = None
            for label, cls, kw in policies:
                pol = getattr(explore, cls)(ds.num_items, seed=seed, **kw)
                t0 = time.perf_counter()
                res = replay(log, pol, sc, chunk=args.chunk, greedy=greedy)
                if greedy is None:
                    greedy = res
                records.append({"model": model, "label": label, **res.summary(),
                                "seconds": round(time.perf_counter() - t0, 2)})
                if seed == 0 and label in CURVES:
                    curves.setdefault(model, {})[label] = res.gains.cumsum(0)
                print(json.dumps(records[-1]), flush=True)
            for label, cls, kw in policies if seed == 0 and not args.quick else ():
                if label in EXACT:
                    t0 = time.perf_counter()
                    res = replay(log, getattr(explore, cls)(ds.num_items, seed=seed, **kw), sc,
                                 chunk=1, greedy=greedy)
                    records.append({"model": model, "label": label, **res.summary(),
                                    "seconds": round(time.perf_counter() - t0, 2)})
                    print(json.dumps(records[-1]), flush=True)
    total_s = time.perf_counter() - begin
    meta = {"commit": commit, "machine": machine, "threads": args.threads, "load_avg": load_avg(),
            "events_replayed": len(log), "prefix_events": start, "distractors": DISTRACTORS,
            "seeds": len(seeds), "chunk": args.chunk, "seconds": round(total_s, 1)}
    days = float(log.times[-1] - log.times[0]) / 86400
    lines = report(records, meta, args, days)
    out = Path(args.out or args.results)
    if not args.quick or args.out:
        out.mkdir(parents=True, exist_ok=True)
        stem = "bandits_synthetic" if args.quick else "bandits_ml100k"
        with open(out / f"{stem}.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps({**r, "commit": commit, "cpu": machine["cpu"]}) + "\n")
        (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
        plot(curves, log.times, out / f"{stem}.png")
    print("\n".join(lines))
    return 0


def _ms(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def report(records: list[dict[str, Any]], meta: dict[str, Any], args: argparse.Namespace,
           days: float) -> list[str]:
    m = meta
    lines = ["# Exploration policies through offline replay, ml-100k" if not args.quick
             else "# Exploration policies through offline replay, synthetic data", "",
             f"`python benchmarks/bandits.py{' --quick' if args.quick else ''}` at commit {m['commit']}, "
             f"{m['machine']['cpu']}, {m['threads']} threads, {m['seconds']:.0f} s in all. "
             f"Models fitted on the first {m['prefix_events']:,} ratings in time order; the next "
             f"{m['events_replayed']:,} ({days:.0f} days) replayed (Li et al., WSDM 2011), each "
             f"with the logged item and {m['distractors']} uniformly drawn distractors "
             f"(K = {m['distractors'] + 1}); reward = rating >= 4; statistics updated every "
             f"{m['chunk']} events. Mean ± standard deviation over {m['seeds']} candidate draws "
             "(the policy seeded alike). Regret = greedy's reward on the same draw minus the "
             "policy's; matched = events whose pick was the logged item; CTR = reward / matched.", ""]
    for model in dict.fromkeys(r["model"] for r in records):
        lines += [f"## Scores: `{model}`", "",
                  "| policy | settings | reward | matched | CTR | regret vs greedy | regret % |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        rows = [r for r in records if r["model"] == model and r["chunk"] == meta["chunk"]]
        greedy = statistics.mean(r["reward"] for r in rows if r["label"] == "greedy")
        for label in dict.fromkeys(r["label"] for r in rows):
            rs = [r for r in rows if r["label"] == label]
            settings = ", ".join(f"{k}={v}" for k, v in rs[0].items()
                                 if k in ("epsilon", "c", "prior_strength"))
            lines.append(f"| {label} | {settings} | {_ms([r['reward'] for r in rs], '.0f')} | "
                         f"{_ms([r['matched'] for r in rs], '.0f')} | {_ms([r['ctr'] for r in rs], '.3f')} | "
                         f"{_ms([r['regret'] for r in rs], '.0f')} | "
                         f"{statistics.mean(r['regret'] for r in rs) / greedy:+.1%} |")
        exact = [r for r in records if r["model"] == model and r["chunk"] == 1]
        if exact:
            lines += ["", f"Per-event replay (chunk 1) against chunks of {meta['chunk']}, first draw:", "",
                      "| policy | chunk | reward | matched | CTR | seconds |", "|---|---:|---:|---:|---:|---:|"]
            for r in exact:
                (b,) = [x for x in rows if x["label"] == r["label"] and x["seed"] == r["seed"]]
                for x in (b, r):
                    lines.append(f"| {x['label']} | {x['chunk']} | {x['reward']:.0f} | {x['matched']} | "
                                 f"{x['ctr']:.3f} | {x['seconds']:.1f} |")
        lines.append("")
    return lines


def plot(curves: dict[str, dict[str, Any]], times: Any, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    days = (times - times[0]).double().numpy() / 86400
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (model, by_label) in zip(axes[0], curves.items()):
        for label, cum in by_label.items():
            ax.plot(days, cum.numpy(), label=label, lw=1.2)
        ax.set_title(f"scores: {model}")
        ax.set_xlabel("days into the replayed half")
        ax.set_ylabel("cumulative reward")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (holds ml-100k/)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--out", default=None, help="write the results here instead (also with --quick)")
    p.add_argument("--seeds", type=int, default=3, help="candidate draws")
    p.add_argument("--chunk", type=int, default=100, help="events per statistics update")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="synthetic data, one seed, a few policies")
    args = p.parse_args()
    import_graphrec(args.threads)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
