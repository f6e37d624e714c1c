"""The one training loop: every trainable model turns a batch into a loss; this does the rest.

Per epoch: shuffle the training examples (seeded), cut batches (:mod:`graphrec.batches` builds
the typed batches the model's ``batch_spec()`` declares: pairs with sampled negatives, ratings,
sequence windows), call the module on each (``loss = model(batch)``), step the optimizer;
then, every ``eval_every`` epochs, evaluate on the validation part and stop early
after ``patience`` evaluations without improvement, keeping the best state. Progress bars show
the live loss and examples/second; each epoch appends a line to ``history.jsonl`` in the run
folder.

Resuming. With a run folder, the full training state (model, optimizer, schedule, the
shuffling/sampling generator, torch's global RNG, the epoch's order and position, the best
state so far) is saved atomically to ``trainer_state.pt`` after every epoch, and at the next
batch boundary after Ctrl-C or SIGTERM (a second Ctrl-C stops at once). ``resume=True``
continues from it to the same result as an unbroken run, bit for bit on CPU with
``deterministic``. The state records a fingerprint of the split and the training config, and
refuses to continue on different ones, except ``epochs`` where the schedule does not depend on
it (all but ``cosine``): a finished run resumed with more epochs trains on, as one unbroken run
of that length would.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from graphrec.batches import make_batches
from graphrec.distributed import rows_of, shard, shard_range, shard_weight, world
from graphrec.errors import GraphrecError, TrainingDiverged, TrainingInterrupted
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.evaluation.metrics import RANKING_METRICS
from graphrec.models.base import Recommender
from graphrec.schema import EDGE
from graphrec.split import Split
from graphrec.runfolder import append_line
from graphrec.utils import atomic_torch_save, atomic_write_bytes, load_artifact, strict_json

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("none", "cosine", "cosine-restarts", "plateau")
LOWER_IS_BETTER = ("rmse", "mae")
STATE_NAME = "trainer_state.pt"
HISTORY_NAME = "history.jsonl"
STATE_FORMAT = "graphrec-trainer-state"
#: ``on_eval(epoch, valid_metrics)``: a hook called after each validation evaluation
EvalCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainConfig:
    """Args:
        epochs: maximum number of passes over the training interactions (early stopping on
            the validation part usually ends a run sooner).
        batch_size: interactions per step.
        lr, optimizer, weight_decay: the optimizer (``adam`` or ``adamw``).
        schedule: learning rate ``none``, ``cosine`` (to 0 over ``epochs``),
            ``cosine-restarts`` (period ``restart_epochs``) or ``plateau`` (times 0.1 after
            ``plateau_patience`` evaluations without a better validation metric, down to 1e-6;
            needs a validation part).
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

    epochs: int = 200
    batch_size: int = 2048
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "none"
    restart_epochs: int = 10
    plateau_patience: int = 1
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
        for name in ("epochs", "batch_size", "num_negatives", "eval_every", "restart_epochs",
                     "plateau_patience"):
            if getattr(self, name) < 1:
                raise GraphrecError(f"--{name.replace('_', '-')}: must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise GraphrecError(f"--lr: must be a positive finite number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise GraphrecError(f"--weight-decay: must be >= 0, got {self.weight_decay}")
        if self.patience < 0:
            raise GraphrecError(f"--patience: must be >= 0 (0: never stop early), got {self.patience}")


def build_optimizer(model: Recommender, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The trainer's optimizer for ``model``: Adam or AdamW at ``cfg.lr`` and
    ``cfg.weight_decay``."""
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    params = list(model.parameters())
    # the fused kernel: one pass over each table instead of several (6x faster on a CPU over
    # Gowalla's 4.5M embedding weights); same update up to float rounding
    if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        try:
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except RuntimeError:  # torch < 2.4 has no fused kernel on CPU
            pass
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "cosine-restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_epochs)
    if cfg.schedule == "plateau":  # stepped with the signed validation metric (higher = better)
        # patience - 1: torch cuts after `patience` bad steps *beyond* its own count
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=0.1, patience=cfg.plateau_patience - 1, threshold=0.0,
            min_lr=1e-6)
    return None


def split_fingerprint(split: Split) -> str:
    """A hash of the split's parts: a resumed run must see the very same data."""
    h = hashlib.sha256()
    store = split.train[EDGE]
    h.update(repr((int(split.train["user"].num_nodes), int(split.train["item"].num_nodes))).encode())
    h.update(store.edge_index.cpu().contiguous().numpy().tobytes())
    for part in (split.valid, split.test):
        if part is not None:
            for name in ("user", "item"):
                t = getattr(part, name, None)
                if isinstance(t, torch.Tensor):
                    h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def epochs_extendable(cfg: TrainConfig) -> bool:
    """Whether a resumed run may change ``epochs`` and still equal an unbroken run of the new
    length: only the ``cosine`` schedule depends on the epoch count."""
    return cfg.schedule != "cosine"


def _train_key(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share (progress bars may differ)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "progress"}


class _StopRequest:
    """Ctrl-C / SIGTERM handlers that ask the loop to stop at the next batch boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum
        log.warning("%s: saving a resumable state at the next batch boundary (Ctrl-C again "
                    "to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_model(model: Recommender, split: Split, cfg: TrainConfig,
                eval_cfg: EvalConfig | None = None, out: Path | None = None,
                resume: bool = False, resume_command: str | None = None,
                on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Optimize ``model.loss`` on ``split.train``; early stopping on ``split.valid`` when present.

    ``out``: the run folder for ``history.jsonl`` and the resumable ``trainer_state.pt``;
    ``resume``: continue from that state (an error when it is missing or was made with other
    data or training settings). Returns ``{"epochs": n, "best_epoch": e, "best_valid": value or
    None, "seconds": s}``; the model ends with its best validation state (its last state without
    validation). Raises :class:`TrainingInterrupted` after Ctrl-C or SIGTERM, once the state is
    saved; its message names ``resume_command`` as the way on (default
    ``python -m graphrec.train --resume OUT``; scripts driving the trainer pass their own).
    ``on_eval(epoch, valid_metrics)``: called after each validation evaluation, once the epoch
    is saved (``graphrec tune`` reports the curve to its pruner); an exception it raises ends
    training and propagates.
    """
    if resume and out is None:
        raise GraphrecError("--resume: needs the run folder")
    if out is not None and not resume:
        out.mkdir(parents=True, exist_ok=True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)
    try:
        with _StopRequest() as stop:
            return _train(model, split, cfg, eval_cfg, out, resume, stop,
                          resume_command or f"python -m graphrec.train --resume {out}", on_eval)
    finally:
        torch.use_deterministic_algorithms(before)


def _load_state(path: Path, fingerprint: str, cfg: TrainConfig) -> dict[str, Any]:
    # onto the CPU: RNG states must stay there; load_state_dict moves the rest to the model
    state = load_artifact(path, STATE_FORMAT, "graphrec trainer state",
                          "not found (nothing to resume in that folder)", prefix="--resume: ")
    if state["fingerprint"] != fingerprint:
        raise GraphrecError(f"--resume: the data or split differ from the run's ({path.parent})")
    # compared as JSON, as saved; a setting added after the run was saved counts as its default
    saved = {**json.loads(json.dumps(_train_key(TrainConfig()))), **json.loads(state["config"])}
    for key, value in json.loads(json.dumps(_train_key(cfg))).items():
        if key == "epochs" and epochs_extendable(cfg) and saved.get(key) != value:
            log.info("--resume: %s epochs now (%s in the run)", value, saved.get(key))
            continue
        if saved.get(key) != value:
            raise GraphrecError(f"--resume: training setting {key} is {value!r} here but "
                                f"{saved.get(key)!r} in the run ({path.parent})")
    return state


def _train(model: Recommender, split: Split, cfg: TrainConfig, eval_cfg: EvalConfig | None,
           out: Path | None, resume: bool, stop: _StopRequest, resume_command: str,
           on_eval: EvalCallback | None = None) -> dict[str, Any]:
    eval_cfg = eval_cfg or EvalConfig(progress=False)
    known = [f"{m}@{k}" for m in eval_cfg.metrics for k in eval_cfg.ks]
    if model.predicts_ratings:
        known += list(LOWER_IS_BETTER)
    name, _, cut = cfg.metric.partition("@")
    if cfg.metric not in LOWER_IS_BETTER and (name not in RANKING_METRICS or not cut.isdigit()):
        # a typo is an error with or without a validation part to stop on
        raise GraphrecError(f"--metric: unknown metric {cfg.metric!r}; use NAME@K with NAME one "
                            f"of {', '.join(RANKING_METRICS)}, or {' or '.join(LOWER_IS_BETTER)}")
    if split.valid is not None and cfg.metric not in known:
        raise GraphrecError(f"--metric: {cfg.metric} is not among the evaluated metrics "
                            f"({', '.join(known)})")
    sign = -1.0 if cfg.metric in LOWER_IS_BETTER else 1.0
    device = model.device
    # data parallel under an initialized process group (graphrec.distributed): every rank
    # draws the same global batch and trains on its shard; rank 0 alone writes
    rank, size = world()
    net: torch.nn.Module = model
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True)
    # sampled and gathered where the training graph is (the CPU); each batch then moves once
    batches = make_batches(model.batch_spec(), split.train, cfg.num_negatives)
    n = batches.num_examples
    if n == 0:
        raise GraphrecError("training: no training examples")
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = build_optimizer(model, cfg)
    if cfg.schedule == "plateau" and split.valid is None:
        raise GraphrecError("--schedule plateau: needs a validation part (--valid-ratio)")
    sched = _scheduler(opt, cfg)
    fingerprint = split_fingerprint(split)
    history_path = out / HISTORY_NAME if out else None
    state_path = out / STATE_NAME if out else None
    # the loop's state: what a resumed run restores
    st: dict[str, Any] = {"epoch": 0, "position": 0, "order": None, "total": 0.0,
                          "epoch_seconds": 0.0, "best": -math.inf, "best_state": None,
                          "best_epoch": 0, "stale": 0, "seconds": 0.0, "stopped": False}
    if resume:
        assert state_path is not None
        saved = _load_state(state_path, fingerprint, cfg)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None:
            sched.load_state_dict(saved["scheduler"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        st.update({k: saved[k] for k in st})
        _truncate_history(history_path, st["epoch"])
        if st["stopped"]:
            log.warning("--resume: the run stopped early at epoch %d (no better %s for %d "
                        "evaluations); nothing more to train", st["epoch"], cfg.metric,
                        st["stale"])
        else:
            log.info("resuming after epoch %d%s", st["epoch"],
                     f" (batch {st['position'] // cfg.batch_size} of the next)"
                     if st["position"] else "")
    elif history_path is not None and history_path.exists() and rank == 0:
        history_path.unlink()  # a fresh run in a reused folder

    def save() -> None:
        if state_path is None or rank != 0:
            return
        atomic_torch_save(state_path, {
            "format": STATE_FORMAT, "version": 1, "fingerprint": fingerprint,
            "config": json.dumps(_train_key(cfg)), **st,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state()})

    params = [p for p in model.parameters() if p.requires_grad]

    def diverged(what: str, epoch: int, batch: int, value: float) -> TrainingDiverged:
        batches_per_epoch = math.ceil(n / cfg.batch_size)
        cause = (f"the learning rate ({cfg.lr:g}) is likely too high; try a lower --lr"
                 if epoch > 1 or batch > 1 else
                 "it happened at the first batch: check the data (extreme ratings) and the "
                 "model's options")
        kept = (f"the last good state (after epoch {st['epoch']}) is kept in {state_path}"
                if state_path is not None and st["epoch"] > 0 else "no state was saved")
        shown = f"loss {value:g}" if what == "loss" else f"gradient (loss {value:g})"
        return TrainingDiverged(f"training stopped: non-finite {shown} at epoch {epoch}, batch "
                                f"{batch} of {batches_per_epoch}; {cause}; {kept}")

    def interrupted() -> TrainingInterrupted:
        signum = stop.signum or signal.SIGINT
        where = (f"resumable state saved in {state_path}; continue with: {resume_command}"
                 if state_path else "no run folder, nothing saved")
        return TrainingInterrupted(f"{signal.Signals(signum).name} during epoch "
                                   f"{st['epoch'] + 1}: {where}", 128 + int(signum))

    start = time.perf_counter() - st["seconds"]
    epoch = st["epoch"]
    for epoch in range(st["epoch"] + 1, cfg.epochs + 1):
        if st["stopped"]:
            epoch = st["epoch"]
            break
        model.train()
        if st["position"] == 0:
            st.update(order=torch.randperm(n, generator=gen), total=0.0, epoch_seconds=0.0)
        order, first = st["order"], st["position"]
        t_run = time.perf_counter()
        t0 = t_run - st["epoch_seconds"]  # the epoch's clock, across a resume
        bar = tqdm(total=math.ceil(n / cfg.batch_size), initial=first // cfg.batch_size,
                   desc=f"epoch {epoch}", unit="batch", disable=not cfg.progress, leave=False)
        for s in range(first, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            batch, weight, rows = batches.batch(idx, gen), 1.0, idx.numel()
            if size > 1:
                start, end = shard_range(rows_of(batch), rank, size)
                # a batch smaller than the world leaves some ranks empty: they run one row at
                # weight 0, so every rank still joins DDP's gradient all-reduce
                part = shard(batch, rank, size) if end > start else shard(batch, 0, rows_of(batch))
                weight = shard_weight(end - start, rows_of(batch), size)
                batch, rows = part, end - start
            loss = net(batch.to(device))
            if not bool(torch.isfinite(loss)):
                bar.close()
                raise diverged("loss", epoch, s // cfg.batch_size + 1, float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            (loss * weight if size > 1 else loss).backward()
            if not all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None):
                bar.close()
                raise diverged("gradient", epoch, s // cfg.batch_size + 1, float(loss.detach()))
            opt.step()
            step_total = loss.item() * rows
            if size > 1:  # the epoch's loss over every rank's rows
                summed = torch.tensor([step_total], dtype=torch.float64)
                torch.distributed.all_reduce(summed)
                step_total = float(summed)
            st["total"] += step_total
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            ex_s=f"{(s + idx.numel() - first) / (time.perf_counter() - t_run):,.0f}")
            if stop.signum is not None:
                bar.close()
                st.update(position=s + cfg.batch_size, epoch_seconds=time.perf_counter() - t0,
                          seconds=time.perf_counter() - start)
                save()
                raise interrupted()
        bar.close()
        if sched is not None and cfg.schedule != "plateau":
            sched.step()
        record: dict[str, Any] = {"epoch": epoch, "loss": st["total"] / n,
                                  "seconds": time.perf_counter() - t0,
                                  "lr": opt.param_groups[0]["lr"]}
        if split.valid is not None and epoch % cfg.eval_every == 0:
            model.eval()
            record["valid"] = evaluate(model, split, "valid", eval_cfg)
            value = sign * record["valid"][cfg.metric]
            if value > st["best"]:
                st.update(best=value, best_epoch=epoch, stale=0,
                          best_state=copy.deepcopy(model.state_dict()))
            else:
                st["stale"] += 1
            if cfg.schedule == "plateau":
                sched.step(value)
        record["elapsed"] = time.perf_counter() - start
        log.info("epoch %d: loss %.4f%s (%.1f s)", epoch, record["loss"],
                 f", valid {cfg.metric} {record['valid'][cfg.metric]:.4f}" if "valid" in record else "",
                 record["seconds"])
        if history_path is not None and rank == 0:
            append_line(history_path, json.dumps(strict_json(record)))
        st.update(epoch=epoch, position=0, order=None, seconds=time.perf_counter() - start)
        if cfg.patience and st["stale"] >= cfg.patience:
            log.info("early stop: no better %s for %d evaluations", cfg.metric, st["stale"])
            st["stopped"] = True
        save()
        if on_eval is not None and "valid" in record:
            on_eval(epoch, record["valid"])
        if st["stopped"]:
            break
        if stop.signum is not None:
            raise interrupted()
    if st["best_state"] is not None:
        model.load_state_dict(st["best_state"])
    model.eval()
    return {"epochs": epoch, "best_epoch": st["best_epoch"] or epoch,
            "best_valid": sign * st["best"] if st["best_state"] is not None else None,
            "seconds": time.perf_counter() - start}


def _truncate_history(path: Path | None, epochs: int) -> None:
    """Keep the first ``epochs`` complete lines: a run killed between writing a line and saving
    its state would otherwise repeat that epoch's line, and a line cut short by a kill would be
    glued to the next record (it is dropped, with a warning). Rewritten atomically, never
    through a link."""
    if path is None or not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink():
        raise GraphrecError(f"{path} is a symbolic link; graphrec never writes through links")
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        log.warning("%s: dropped a half-written last line (%d bytes) before resuming", path,
                    len(lines[-1]))
        lines = lines[:-1]
    kept = lines[:epochs]
    if "".join(kept) != text:
        atomic_write_bytes(path, "".join(kept).encode())
