"""Data-parallel training over ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

Under ``torchrun`` (or any initialized default process group) the trainer wraps the model in
``DistributedDataParallel`` and every rank takes a disjoint, contiguous shard of each global
batch. The global batch itself, its order and its sampled negatives, is drawn on every rank
from the same seeded generator, exactly as one process draws it, and each rank keeps its rows
(:func:`shard`). Each rank's loss is the mean over its shard, scaled by its share of the batch
times the world size (:func:`shard_weight`), so DDP's gradient average is the gradient of the
one-process loss over the whole batch: for losses that are means over rows (BPR, BCE, MSE, the
per-row sampled softmax; a shared negative pool is drawn once per global batch and kept whole)
the weights after every step equal one process's at the same global batch, up to float
summation order (tested for bpr, lightgcn, mf and two-tower with a shared pool). Terms that do
not depend on the rows (an L2 on the whole table) are counted once either way. Dropout draws
its masks from each process's own generator, so a model with dropout matches one process in
distribution only.

``python -m graphrec.train --nproc N`` (or ``torchrun --nproc_per_node N -m graphrec.train``)
runs it; rank 0 writes the run folder. Evaluation is sharded too: each rank scores a
contiguous share of the users and the per-user values are gathered in rank order, which is user
order, so the metrics are one process's exactly. Not yet here: resuming a distributed run
(refused in one line).

Only :func:`world` and :func:`shard` are needed by the trainer; nothing here runs without an
initialized process group.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TypeVar

import torch
import torch.distributed as dist

from graphrec.batches import PairBatch, RatingBatch, SequenceBatch

B = TypeVar("B", PairBatch, RatingBatch, SequenceBatch)


def init_from_env(device: str | None) -> int | None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) initialize the default process
    group, NCCL when training on CUDA (each rank on its ``LOCAL_RANK`` device) and gloo
    otherwise, and return this process's rank; ``None`` outside ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or device in ("auto", "cuda")
                                              or str(device).startswith("cuda"))
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of rank ``rank`` in a batch of ``n`` rows: contiguous, disjoint,
    covering every row, sizes differing by at most one."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rows_of(batch: PairBatch | RatingBatch | SequenceBatch) -> int:
    """The number of rows (examples) in a batch."""
    return int(batch.seqs.size(0) if isinstance(batch, SequenceBatch) else batch.users.numel())


def shard(batch: B, rank: int, size: int) -> B:
    """Rank ``rank``'s rows of ``batch``. Per-row tensors are cut; a shared negative pool
    (``PairBatch.negatives`` of one dimension, with its ``log_q_neg``) stays whole."""
    n = rows_of(batch)
    start, end = shard_range(n, rank, size)
    pooled = isinstance(batch, PairBatch) and batch.negatives.dim() == 1
    cut = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        whole = pooled and f.name in ("negatives", "log_q_neg")
        if isinstance(value, torch.Tensor) and not whole:
            value = value[start:end]
        cut[f.name] = value
    return dataclasses.replace(batch, **cut)


def shard_weight(local_rows: int, global_rows: int, size: int) -> float:
    """The factor on a rank's mean loss that makes DDP's averaged gradient the gradient of the
    mean over the global batch: ``size * local_rows / global_rows``."""
    return size * local_rows / max(global_rows, 1)


__all__ = ["init_from_env", "world", "shard", "shard_range", "shard_weight", "rows_of"]
