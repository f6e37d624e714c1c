"""Data-parallel training: two gloo processes give one process's weights at the same global
batch, and the shards of a batch are disjoint and cover it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from graphrec.batches import PairBatch, RatingBatch
from graphrec.distributed import shard, shard_range, shard_weight, world

# dropout draws its masks from each process's own generator, so a model with dropout matches
# one process only in distribution; the two-tower model runs without it here
MODELS = [("bpr", {}), ("lightgcn", {}), ("mf", {}),
          ("two-tower", {"features": "none", "negatives": "shared", "dropout": 0.0})]


def test_shards_are_disjoint_contiguous_and_cover_the_batch():
    for n in (1, 2, 7, 64, 65):
        for size in (1, 2, 3, 4):
            ranges = [shard_range(n, r, size) for r in range(size)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [e - s for s, e in ranges]
            assert max(sizes) - min(sizes) <= 1
            assert sum(shard_weight(k, n, size) for k in sizes) == pytest.approx(size)
    assert world() == (0, 1)  # no process group here


def test_shard_cuts_rows_and_keeps_a_shared_pool_whole():
    pooled = PairBatch(torch.arange(5), torch.arange(5) + 10, torch.arange(3),
                       log_q_pos=torch.zeros(5), log_q_neg=torch.ones(3),
                       hits=torch.zeros(5, 3, dtype=torch.bool))
    part = shard(pooled, 1, 2)
    assert part.users.tolist() == [3, 4] and part.items.tolist() == [13, 14]
    assert part.negatives.tolist() == [0, 1, 2] and part.log_q_neg.numel() == 3
    assert part.hits.shape == (2, 3) and part.log_q_pos.numel() == 2
    per_row = PairBatch(torch.arange(4), torch.arange(4), torch.arange(8).view(4, 2))
    assert shard(per_row, 0, 2).negatives.tolist() == [[0, 1], [2, 3]]
    rating = RatingBatch(torch.arange(3), torch.arange(3), torch.ones(3))
    assert shard(rating, 2, 3).users.tolist() == [2]


def _train(name: str, options: dict, epochs: int = 2):
    """Train ``name`` on a small synthetic split at a fixed seed; the trained model."""
    from graphrec.data.graph import build
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.config import model_train_defaults
    from graphrec.models import build_model, model_config
    from graphrec.split import SplitConfig, split
    from graphrec.trainer import TrainConfig, train_model

    ds = build(make_synthetic(SyntheticConfig(num_users=120, num_items=80, num_clusters=4)))
    parts = split(ds.graph, SplitConfig("random", seed=0, valid_ratio=0.0))
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items, model_config(name, options))
    model.fit(parts.train)
    defaults = {k: v for k, v in model_train_defaults(name).items() if k != "epochs"}
    cfg = TrainConfig(**{**defaults, "epochs": epochs, "batch_size": 96, "seed": 3,
                         "progress": False, "patience": 0})
    train_model(model, parts, cfg)
    return model


def _worker(rank: int, size: int, store: str, out: str) -> None:
    """One rank of the 2-process run: every model of MODELS trained, then the sharded
    evaluation; rank 0 saves what it got. One spawn for all of it: process start-up is most of
    the cost."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        result = {"weights": {name: _train(name, options).state_dict()
                              for name, options in MODELS},
                  "evaluation": _evaluate()}
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def _evaluate():
    """graph-filter's per-user test metrics on a small synthetic split, and how many users
    this process scored."""
    from graphrec.data.graph import build
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.evaluation.evaluator import EvalConfig, evaluate_detailed
    from graphrec.models import build_model, model_config
    from graphrec.split import SplitConfig, split

    ds = build(make_synthetic(SyntheticConfig(num_users=130, num_items=70, num_clusters=4)))
    parts = split(ds.graph, SplitConfig("random", seed=0, valid_ratio=0.0))
    model = build_model("graph-filter", ds.num_users, ds.num_items,
                        model_config("graph-filter", {"k": 8, "dtype": "float32"}))
    model.fit(parts.train)
    scored = []
    score = model.score
    model.score = lambda users, history=None: scored.append(users.numel()) or score(users, history)
    metrics, per_user = evaluate_detailed(model, parts, "test",
                                          EvalConfig(batch_users=16, progress=False))
    return {"metrics": metrics, "scored": sum(scored), "users": torch.from_numpy(per_user.users),
            "values": {k: torch.from_numpy(v) for k, v in per_user.values.items()}}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What rank 0 of a 2-process gloo run saved."""
    tmp = tmp_path_factory.mktemp("ddp")
    os.environ.pop("WORLD_SIZE", None)
    mp.spawn(_worker, args=(2, str(tmp / "store"), str(tmp / "ddp.pt")), nprocs=2, join=True)
    return torch.load(tmp / "ddp.pt", weights_only=True)


@pytest.mark.parametrize("name,options", MODELS)
def test_two_gloo_processes_give_one_process_weights(name, options, two_ranks):
    """Tolerance 1e-5: the gradients are summed across ranks in another order than within one
    process, so the weights agree to float32 rounding, not bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train(name, options).state_dict()
    finally:
        torch.set_num_threads(threads)
    ddp = two_ranks["weights"][name]
    assert ddp.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-5, atol=1e-5, msg=key)


def test_evaluation_sharded_over_two_ranks_gives_one_process_metrics(two_ranks):
    """Each rank scores a contiguous share of the users; gathered in rank order they are the
    one-process values in user order, so the metrics are identical, not merely close."""
    two, one = two_ranks["evaluation"], _evaluate()
    assert two["metrics"] == one["metrics"]
    n = one["metrics"]["users"]
    assert one["scored"] == n and two["scored"] == -(-n // 2)  # rank 0 scored its half
    assert torch.equal(two["users"], one["users"])
    assert all(torch.equal(two["values"][k], one["values"][k]) for k in one["values"])


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "graphrec.train", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_nproc_2_gives_one_process_metrics(tmp_path):
    """`graphrec train --nproc 2` (torchrun, gloo): the same test metrics as one process at the
    same global batch, within 1e-4; rank 0 alone writes the run folder."""
    import json

    if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) < 2:
        pytest.skip("needs 2 cores")
    common = ["--model", "bpr", "--epochs", "3", "--no-progress"]
    two = _run([*common, "--nproc", "2", "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    one = _run([*common, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    a = json.loads((tmp_path / "two" / "metrics.json").read_text())
    b = json.loads((tmp_path / "one" / "metrics.json").read_text())
    ranked = [k for k in b if "@" in k]
    assert ranked and all(abs(a[k] - b[k]) <= 1e-4 for k in ranked)
    assert two.stdout.count("run folder:") == 1  # one rank prints


def test_nproc_beyond_the_cores_is_a_one_line_error(tmp_path):
    proc = _run(["--model", "bpr", "--nproc", "999", "--out", str(tmp_path / "x")])
    assert proc.returncode == 2 and "--nproc: 999 processes for" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0

