"""The one training loop: every trainable model turns a batch into a loss; this does the rest.

Per epoch: shuffle the training interactions (seeded), cut batches, sample negatives for
pair-wise losses, step the optimizer; then, every ``eval_every`` epochs, evaluate on the
validation part and stop early after ``patience`` evaluations without improvement, keeping the
best state. Progress bars show the live loss and examples/second; each epoch appends a line to
``history.jsonl`` in the run folder.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models.base import Recommender
from graphrec.sampling import NegativeSampler
from graphrec.schema import EDGE, ITEM, RATING, SEQ_ITEM, SEQ_PTR, USER
from graphrec.split import Split

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("none", "cosine", "cosine-restarts")
LOWER_IS_BETTER = ("rmse", "mae")


@dataclass
class TrainConfig:
    """Args:
        epochs: maximum number of passes over the training interactions.
        batch_size: interactions per step.
        lr, optimizer, weight_decay: the optimizer (``adam`` or ``adamw``).
        schedule: learning rate ``none``, ``cosine`` (to 0 over ``epochs``) or
            ``cosine-restarts`` (period ``restart_epochs``).
        num_negatives: sampled negatives per positive for pair-wise losses.
        eval_every: epochs between validation evaluations.
        patience: evaluations without improvement before stopping (0: never stop early).
        metric: the validation metric early stopping watches, e.g. ``ndcg@20``, or ``rmse`` /
            ``mae`` (lower is better) for rating models.
        seed: seed of shuffling, negatives and initialization.
        deterministic: run torch's deterministic kernels while training, so that a seed gives
            the same model bit for bit on CPU (otherwise float sums of duplicate-index
            gradients may be added in a different order from run to run).
        progress: show progress bars.
    """

    epochs: int = 50
    batch_size: int = 2048
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "none"
    restart_epochs: int = 10
    num_negatives: int = 1
    eval_every: int = 1
    patience: int = 10
    metric: str = "ndcg@20"
    seed: int = 0
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise GraphrecError(f"--optimizer: choose one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise GraphrecError(f"--schedule: choose one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size", "num_negatives", "eval_every", "restart_epochs"):
            if getattr(self, name) < 1:
                raise GraphrecError(f"--{name.replace('_', '-')}: must be at least 1")
        if not self.lr > 0:
            raise GraphrecError(f"--lr: must be positive, got {self.lr}")


def _optimizer(model: Recommender, cfg: TrainConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "cosine-restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_epochs)
    return None


def train_model(model: Recommender, split: Split, cfg: TrainConfig,
                eval_cfg: EvalConfig | None = None, out: Path | None = None) -> dict[str, Any]:
    """Optimize ``model.loss`` on ``split.train``; early stopping on ``split.valid`` when present.

    Returns ``{"epochs": n, "best_epoch": e, "best_valid": value or None, "seconds": s}``; the
    model ends with its best validation state (its last state without validation).
    """
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    try:
        return _train(model, split, cfg, eval_cfg, out)
    finally:
        torch.use_deterministic_algorithms(before)


def _train(model: Recommender, split: Split, cfg: TrainConfig, eval_cfg: EvalConfig | None,
           out: Path | None) -> dict[str, Any]:
    eval_cfg = eval_cfg or EvalConfig(progress=False)
    known = [f"{m}@{k}" for m in eval_cfg.metrics for k in eval_cfg.ks]
    if model.predicts_ratings:
        known += list(LOWER_IS_BETTER)
    if split.valid is not None and cfg.metric not in known:
        raise GraphrecError(f"--metric: {cfg.metric} is not among the evaluated metrics "
                            f"({', '.join(known)})")
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    store = split.train[EDGE]
    users, items = store.edge_index[0], store.edge_index[1]
    ratings = store[RATING] if RATING in store else None
    pairwise = getattr(model.cfg, "loss", "bpr") == "bpr"
    if not pairwise and ratings is None:
        raise GraphrecError("this model learns from ratings, and the data has none")
    sampler = (NegativeSampler(split.train[USER][SEQ_PTR], split.train[USER][SEQ_ITEM],
                               int(split.train[ITEM].num_nodes)) if pairwise else None)
    opt, history_path = _optimizer(model, cfg), (out / "history.jsonl" if out else None)
    sched = _scheduler(opt, cfg)
    best, best_state, best_epoch, stale = -math.inf, None, 0, 0
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0, total = time.perf_counter(), 0.0
        order = torch.randperm(users.numel(), generator=gen)
        bar = tqdm(range(0, order.numel(), cfg.batch_size), desc=f"epoch {epoch}", unit="batch",
                   disable=not cfg.progress, leave=False)
        for s in bar:
            idx = order[s:s + cfg.batch_size]
            u, i = users[idx], items[idx]
            neg = sampler.sample(u, cfg.num_negatives, gen).to(device) if sampler else None
            r = ratings[idx].to(device) if ratings is not None and not pairwise else None
            loss = model.loss(u.to(device), i.to(device), neg, r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            ex_s=f"{(s + idx.numel()) / (time.perf_counter() - t0):,.0f}")
        if sched is not None:
            sched.step()
        record: dict[str, Any] = {"epoch": epoch, "loss": total / users.numel(),
                                  "seconds": time.perf_counter() - t0,
                                  "lr": opt.param_groups[0]["lr"]}
        if split.valid is not None and epoch % cfg.eval_every == 0:
            model.eval()
            record["valid"] = evaluate(model, split, "valid", eval_cfg)
            value = sign * record["valid"][cfg.metric]
            if value > best:
                best, best_epoch, stale = value, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        log.info("epoch %d: loss %.4f%s (%.1f s)", epoch, record["loss"],
                 f", valid {cfg.metric} {record['valid'][cfg.metric]:.4f}" if "valid" in record else "",
                 record["seconds"])
        if history_path is not None:
            with open(history_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        if cfg.patience and stale >= cfg.patience:
            log.info("early stop: no better %s for %d evaluations", cfg.metric, stale)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"epochs": epoch, "best_epoch": best_epoch or epoch,
            "best_valid": sign * best if best_state is not None else None,
            "seconds": time.perf_counter() - start}
