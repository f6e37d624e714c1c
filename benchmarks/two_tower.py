"""two-tower against the graph family: side features on ml-100k (warm and cold users), and
training and serving speed on Gowalla.

``--accuracy`` (ml-100k, per-user random 80/20, seed 0; every model at its defaults, early
stopping on the command line's validation part): two-tower with user and item features,
two-tower ID-only (``features=none``), lightgcn and bpr, on Recall@20 and NDCG@20. Then the
cold-user variant: the same split with a random 30% of the users cut to at most 5 training
interactions (their other training and validation interactions dropped), every model retrained,
scored on those users' test items only.

``--speed`` (Gowalla, the given split): training examples per second of two-tower (its
defaults: shared pool of 512 negatives, sampled softmax, history aggregate), bpr and lightgcn (their
defaults) in the same process, each timed over ``--steps`` optimizer steps after a warm-up,
median step; the epoch time is the training interactions over that rate. Then the time to build
every item vector and an HNSW index over them, and the latency of serving one user (its vector,
then the index search for the top 20) over ``--queries`` users: p50 and p99.

Gowalla accuracy runs go through ``gowalla_curve.py`` (see the README for the commands).

Usage::

    python benchmarks/two_tower.py --accuracy      # results/two_tower_accuracy.{jsonl,md}
    python benchmarks/two_tower.py --speed         # results/two_tower_speed.{jsonl,md}
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
from harness import (  # noqa: E402
    DEFAULT_DATA, DEFAULT_RESULTS, git_commit, import_graphrec, machine_info, maxrss_mib,
    resolve_gowalla)

ACCURACY_MODELS = [("two-tower", {}), ("two-tower", {"features": "none"}),
                   ("lightgcn", {}), ("bpr", {})]
COLD_SHARE, COLD_KEEP = 0.3, 5


def _label(name: str, options: dict[str, Any]) -> str:
    return name + "".join(f" {k}={v}" for k, v in options.items())


def cold_parts(parts: Any, seed: int = 0) -> Any:
    """``parts`` with a random ``COLD_SHARE`` of users cut to at most ``COLD_KEEP`` training
    interactions (the rest of their training and validation interactions dropped) and a test
    part of those users only."""
    import torch

    from graphrec.api import Parts
    from graphrec.data.graph import edge_subgraph
    from graphrec.schema import EDGE
    from graphrec.split import Split

    train, valid, test = parts.split.train, parts.split.valid, parts.split.test
    num_users = int(train["user"].num_nodes)
    gen = torch.Generator().manual_seed(seed)
    cold = torch.zeros(num_users, dtype=torch.bool)
    cold[torch.randperm(num_users, generator=gen)[: int(COLD_SHARE * num_users)]] = True
    user = train[EDGE].edge_index[0]
    # a random rank of each edge within its user: keep the first COLD_KEEP of cold users
    order = torch.randperm(user.numel(), generator=gen)
    order = order[torch.sort(user[order], stable=True)[1]]
    rank = torch.empty_like(user)
    start = torch.zeros(num_users + 1, dtype=torch.long)
    start[1:] = torch.bincount(user, minlength=num_users).cumsum(0)
    rank[order] = torch.arange(user.numel()) - start[user[order]]
    keep = ~cold[user] | (rank < COLD_KEEP)
    new_valid = None
    if valid is not None:
        new_valid = _subset(valid, ~cold[valid.user])
    new_test = _subset(test, cold[test.user])
    return Parts(parts.data, Split(edge_subgraph(train, keep), new_test, valid=new_valid),
                 parts.config), int(cold.sum())


def _subset(part: Any, mask: Any) -> Any:
    """The interactions of ``part`` (a :class:`graphrec.split.Interactions`) where ``mask``."""
    from graphrec.split import Interactions

    return Interactions(part.user[mask], part.item[mask],
                        None if part.rating is None else part.rating[mask])


def accuracy(args: argparse.Namespace) -> int:
    import_graphrec(args.threads)
    from graphrec import api

    ds = api.load(str(Path(args.data) / "ml-100k" / "u.data"))
    records = []
    warm = api.split(ds, "random", seed=0)
    cold, num_cold = cold_parts(warm)
    for variant, parts in (("all users", warm), (f"cold users (<= {COLD_KEEP} training "
                                                 f"interactions, {num_cold} users)", cold)):
        for name, options in ACCURACY_MODELS:
            start = time.perf_counter()
            model = api.train(name, parts, progress=False, **options)
            seconds = time.perf_counter() - start
            m = api.evaluate(model, parts, ks=(20,), metrics=("recall", "ndcg"))
            rec = {"variant": variant, "model": _label(name, options),
                   "recall@20": m["recall@20"], "ndcg@20": m["ndcg@20"], "users": m["users"],
                   "train_seconds": round(seconds, 1)}
            print(json.dumps(rec), flush=True)
            records.append(rec)
    lines = ["# two-tower on ml-100k: side features against IDs, warm and cold users", "",
             f"`python benchmarks/two_tower.py --accuracy` at commit {git_commit()}, "
             f"{machine_info().get('cpu', 'CPU')}, {args.threads} threads. Random 80/20 per "
             "user (seed 0); every model at its defaults with early stopping on the "
             "command line's validation part. Cold users: a random 30% of users cut to at "
             f"most {COLD_KEEP} training interactions, scored on their test items.", "",
             "| users | model | Recall@20 | NDCG@20 | test users | train s |",
             "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | `{r['model']}` | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
              f"{r['users']} | {r['train_seconds']} |" for r in records]
    _write(args, "two_tower_accuracy", records, lines)
    return 0


def _step_seconds(name: str, options: dict[str, Any], graph: Any, steps: int,
                  warmup: int) -> dict[str, Any]:
    import torch

    from graphrec.batches import make_batches
    from graphrec.config import model_train_defaults
    from graphrec.models import build_model, model_config
    from graphrec.trainer import TrainConfig, build_optimizer

    torch.manual_seed(0)
    defaults = {**TrainConfig().__dict__, **model_train_defaults(name)}
    model = build_model(name, int(graph["user"].num_nodes), int(graph["item"].num_nodes),
                        model_config(name, options))
    model.fit(graph)
    model.train()
    cfg = TrainConfig(batch_size=defaults["batch_size"], lr=defaults["lr"],
                      num_negatives=defaults["num_negatives"], progress=False)
    opt = build_optimizer(model, cfg)
    batches = make_batches(model.batch_spec(), graph, cfg.num_negatives)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(batches.num_examples, generator=gen)
    times = []
    for step in range(warmup + steps):
        idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        start = time.perf_counter()
        loss = model(batches.batch(idx, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    rate = cfg.batch_size / step
    return {"model": _label(name, options), "batch_size": cfg.batch_size,
            "num_negatives": cfg.num_negatives, "median_step_s": round(step, 4),
            "examples_per_s": round(rate), "epoch_s": round(batches.num_examples / rate, 1),
            "peak_rss_mib": round(maxrss_mib())}


def speed(args: argparse.Namespace) -> int:
    import_graphrec(args.threads)
    import numpy as np
    import torch

    from graphrec.data.source import DataConfig, load_data
    from graphrec.models import build_model
    from graphrec.serve.index import IndexConfig, ItemIndex
    from graphrec.split import SplitConfig, split

    ds = load_data(DataConfig(path=str(resolve_gowalla(args.data))))
    train = split(ds.graph, SplitConfig("given")).train
    records = [_step_seconds(name, {}, train, args.steps, args.warmup)
               for name in ("two-tower", "bpr", "lightgcn")]
    for r in records:
        print(json.dumps(r), flush=True)
    torch.manual_seed(0)
    model = build_model("two-tower", ds.num_users, ds.num_items)
    model.fit(train)
    model.eval()
    start = time.perf_counter()
    scorer = model.scorer()
    vectors = scorer.item_vectors()
    vec_s = time.perf_counter() - start
    start = time.perf_counter()
    index = ItemIndex(vectors, IndexConfig("hnsw"))
    index_s = time.perf_counter() - start
    users = torch.randperm(ds.num_users, generator=torch.Generator().manual_seed(1))[: args.queries]
    lat = []
    with torch.no_grad():
        for u in users.tolist():  # one request at a time, as a server answers them
            start = time.perf_counter()
            index.search(scorer.user_vectors(torch.tensor([u])), 20)
            lat.append(time.perf_counter() - start)
    serve = {"model": "two-tower serving", "item_vectors_s": round(vec_s, 3),
             "hnsw_build_s": round(index_s, 3), "queries": len(lat),
             "p50_ms": round(1000 * float(np.percentile(lat, 50)), 3),
             "p99_ms": round(1000 * float(np.percentile(lat, 99)), 3)}
    print(json.dumps(serve), flush=True)
    base = {r["model"]: r for r in records}
    lines = ["# two-tower training and serving speed on Gowalla", "",
             f"`python benchmarks/two_tower.py --speed` at commit {git_commit()}, "
             f"{machine_info().get('cpu', 'CPU')}, {args.threads} threads, the given split "
             f"({train['user', 'interacts', 'item'].edge_index.size(1):,} training "
             f"interactions). Median of {args.steps} optimizer steps after {args.warmup} "
             "warm-up steps, each model at its training defaults; peak RSS is the process's "
             "so far (cumulative).", "",
             "| model | batch | negatives | median step s | examples/s | epoch s | "
             "vs bpr | peak RSS MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        ratio = r["examples_per_s"] / base["bpr"]["examples_per_s"]
        lines.append(f"| `{r['model']}` | {r['batch_size']} | {r['num_negatives']} | "
                     f"{r['median_step_s']} | {r['examples_per_s']:,} | {r['epoch_s']} | "
                     f"{ratio:.2f}x | {r['peak_rss_mib']} |")
    lines += ["", f"Serving (an untrained model: the cost does not depend on the weights): "
              f"item vectors of all {ds.num_items:,} items in {serve['item_vectors_s']} s, "
              f"HNSW build {serve['hnsw_build_s']} s; one user's vector and top-20 search: "
              f"p50 {serve['p50_ms']} ms, p99 {serve['p99_ms']} ms over {len(lat)} users."]
    _write(args, "two_tower_speed", records + [serve], lines)
    return 0


def _write(args: argparse.Namespace, name: str, records: list[dict[str, Any]],
           lines: list[str]) -> None:
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / name}.md", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--accuracy", action="store_true", help="ml-100k, features vs IDs")
    p.add_argument("--speed", action="store_true", help="Gowalla training and serving speed")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--queries", type=int, default=1000)
    args = p.parse_args(argv)
    if not (args.accuracy or args.speed):
        p.error("choose --accuracy and/or --speed")
    if args.accuracy:
        accuracy(args)
    if args.speed:
        speed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
