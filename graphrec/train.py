"""``python -m graphrec.train``: load or convert data, split, fit, evaluate, write a run folder.

The run folder holds ``config.json`` (the resolved configuration), ``metrics.json`` (a flat
object of test metrics: ``recall@20``, ``ndcg@20``, ..., ``rmse`` when ratings are predicted),
``per_user.npz`` (each test user's metrics, compressed, for ``graphrec compare``; see
:mod:`graphrec.per_user`), ``valid_metrics.json`` when the split has a validation part,
``pop_metrics.json`` (popularity on the same test part, the floor a model must clear),
``index_metrics.json`` and the saved index when ``--index`` evaluates a retriever through an item index, and ``model.pt``, the
checkpoint ``graphrec.recommend`` serves from. Trained models add ``history.jsonl`` (one line per epoch)
``curves.png`` (loss and validation curves, with matplotlib installed) and
``trainer_state.pt``, from which ``--resume RUN_DIR`` continues a stopped run (Ctrl-C and
SIGTERM save it at the next batch boundary). ``--folds K`` runs k-fold cross-validation, one
such run folder per fold under ``--out`` and the mean ± std in its ``metrics.json`` (see
:mod:`graphrec.crossval`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graphrec.cli import Parser, add_data_arguments, add_index_set_argument, format_table, run
from graphrec._callable import make_callable
from graphrec.errors import GraphrecError
from graphrec.names import INDEX_KINDS, MODEL_ALIASES, MODEL_NAMES, SPLIT_METHODS
from graphrec.runfolder import RunFolder

if TYPE_CHECKING:
    from graphrec.config import RunConfig
    from graphrec.data.graph import Dataset
    from graphrec.split import Split

# torch, PyG and the library are imported inside the functions that run a job, so that --help
# and argument errors answer at once.

log = logging.getLogger("graphrec.train")
CURVES_NAME = "curves.png"
BASELINE_NAME = "pop_metrics.json"  # popularity on the same test part


def parser(prog: str = "python -m graphrec.train") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports)."""
    p = Parser(
        prog=prog,
        description="Train and evaluate a recommender. With no --data, uses the built-in "
                    "synthetic data set.",
    )
    p.add_argument("--model", default=None,
                   help=f"one of {', '.join(MODEL_NAMES)} "
                        f"({', '.join(f'{a} = {m}' for a, m in MODEL_ALIASES.items())}; default: lightgcn)")
    p.add_argument("--data", default=None,
                   help="raw file, folder (LightGCN train/test pair) or converted graph (.pt)")
    p.add_argument("--out", default=None, help="run folder (default: runs/MODEL-TIMESTAMP)")
    p.add_argument("--config", default=None, help="TOML file; flags override its values")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --set damping=10 (repeatable)")
    p.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel training in N processes on this machine (launches "
                        "torchrun with the same arguments; gloo on CPU, NCCL on CUDA)")
    p.add_argument("--seed", type=int, default=None, help="global seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="train into a --out folder that holds a run, removing its run files first")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue a stopped run from its folder, with its saved config (flags "
                        "that differ from it are errors, but --epochs may extend a run whose "
                        "schedule is not cosine)")
    add_data_arguments(p)
    s = p.add_argument_group("splitting")
    s.add_argument("--split", default=None, choices=SPLIT_METHODS,
                   help="default: given when the data has a predefined test part, else random")
    s.add_argument("--test-ratio", type=float, default=None, help="held-out fraction (default 0.2)")
    s.add_argument("--valid-ratio", type=float, default=None,
                   help="validation fraction of each user's interactions, for early stopping "
                        "(default 0.1 for trained models, 0 for training-free ones; "
                        "leave-one-out: one item, 0 turns it off)")
    s.add_argument("--time-cut", type=int, default=None,
                   help="time-cut split: Unix seconds where test starts")
    s.add_argument("--split-seed", type=int, default=None, help="seed of the split (default 0)")
    s.add_argument("--onboard", type=int, default=None,
                   help="cold-users split: onboarding items each cold user gives (default 5)")
    s.add_argument("--folds", type=int, default=None, metavar="K",
                   help="k-fold cross-validation (random split): K disjoint per-user folds, "
                        "each the test part of one run, OUT/fold-0 ...; OUT/metrics.json holds "
                        "every metric's mean and std (see graphrec.crossval)")
    s.add_argument("--fold", type=int, default=None, metavar="I",
                   help="with --folds: run fold I alone, into --out")
    t = p.add_argument_group("training (models that learn; a model may bring its own defaults, "
                             "e.g. lightgcn lr 5e-3 and 8 negatives, sasrec/bert4rec lr 3e-3 and "
                             "--metric ndcg@10; config.json holds what a run used)")
    t.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 200; early stopping usually ends sooner)")
    t.add_argument("--batch-size", type=int, default=None, help="interactions per step (2048)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (1e-3)")
    t.add_argument("--optimizer", default=None, help="adam (default) or adamw")
    t.add_argument("--weight-decay", type=float, default=None, help="optimizer weight decay (0)")
    t.add_argument("--schedule", default=None,
                   help="none (default), cosine, cosine-restarts, plateau (lr x 0.1 after "
                        "plateau_patience = 1 evaluations without improvement)")
    t.add_argument("--num-negatives", type=int, default=None, help="negatives per positive (1)")
    t.add_argument("--eval-every", type=int, default=None, help="epochs between validations (1)")
    t.add_argument("--patience", type=int, default=None,
                   help="validations without improvement before stopping (10; 0 = off)")
    t.add_argument("--metric", default=None, help="validation metric to stop on (ndcg@20)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--k", type=int, nargs="+", default=None, help="cut-offs (default 10 20)")
    e.add_argument("--metrics", nargs="+", default=None,
                   help="recall precision ndcg map hit mrr (default: all)")
    e.add_argument("--eval-batch", type=int, default=None,
                   help="users scored at once (default: about 32M scores a batch)")
    e.add_argument("--keep-seen", action="store_true",
                   help="also rank the user's earlier (training, validation) items")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--index", default=None, choices=INDEX_KINDS,
                   help="also evaluate the test part through an item index of a retriever's "
                        "vectors (flat, ivf, ivfpq, hnsw), beside exact scoring (default exact: "
                        "no index); the index is saved in the run folder")
    add_index_set_argument(e)
    return p


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """Resolve the run's configuration from the flags and the optional TOML file (on top of
    ``base``, a saved run's config, when resuming)."""
    from graphrec.config import parse_option, read_toml, resolve

    file_values = dict(base or {})
    if args.config:
        for key, value in read_toml(args.config).items():
            file_values[key] = ({**file_values.get(key, {}), **value} if isinstance(value, dict)
                                else value)
    flags: dict[str, dict[str, Any]] = {
        "": {"model": args.model, "out": args.out, "device": args.device, "seed": args.seed},
        "data": {"path": args.data, "format": args.format, "user_col": args.user_col,
                 "item_col": args.item_col, "rating_col": args.rating_col,
                 "time_col": args.time_col, "header": args.header, "edge_type": args.edge_type, "sep": args.sep,
                 "test_path": args.test_data, "valid_path": args.valid_data,
                 "unseen_test": args.unseen_test, "overlap": args.overlap,
                 "min_rating": args.min_rating, "kcore": args.kcore, "dedup": args.dedup,
                 "text_cols": args.text_cols, "text_model": args.text_model,
                 "text_dtype": args.text_dtype},
        "split": {"method": args.split, "test_ratio": args.test_ratio,
                  "valid_ratio": args.valid_ratio, "time_cut": args.time_cut,
                  "seed": args.split_seed, "onboard": args.onboard, "folds": args.folds,
                  "fold": args.fold},
        "eval": {"ks": tuple(args.k) if args.k else None,
                 "metrics": tuple(args.metrics) if args.metrics else None,
                 "batch_users": args.eval_batch, "progress": False if args.no_progress else None,
                 "exclude_seen": False if args.keep_seen else None},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                  "optimizer": args.optimizer, "weight_decay": args.weight_decay,
                  "schedule": args.schedule, "num_negatives": args.num_negatives,
                  "eval_every": args.eval_every, "patience": args.patience,
                  "metric": args.metric, "seed": args.seed,
                  "progress": False if args.no_progress else None},
        "index": {"kind": args.index, **dict(parse_option(o) for o in args.index_set)},
        "model_options": dict(parse_option(o) for o in args.options),
    }
    if args.split is None and "method" not in file_values.get("split", {}):
        # settled once the data is loaded; folds are of the random split
        flags["split"]["method"] = "random" if args.folds else "auto"
    return resolve(file_values, flags)


def _settle_split(cfg: RunConfig, ds: Dataset, trainable: bool) -> None:
    """``auto`` -> ``given`` when the data carries a predefined test part, else ``random``;
    an unset ``valid_ratio`` -> a validation part when the model is trained (early stopping
    watches it), none when it is not (see :func:`graphrec.split.default_valid_ratio`)."""
    from graphrec.split import default_method, default_valid_ratio

    if cfg.split.method == "auto":
        cfg.split.method = default_method(ds.graph)
    if cfg.split.valid_ratio is None:
        cfg.split.valid_ratio = default_valid_ratio(ds.graph, cfg.split, trainable)


# settings that may differ when resuming: where it runs and how it reports
RESUME_FREE = {("", "device"), ("", "out"), ("eval", "progress"), ("train", "progress"),
               ("eval", "batch_users"), *(("index", f) for f in (
                   "kind", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search",
                   "pq_bytes", "threads"))}


def resume_config(args: argparse.Namespace) -> RunConfig:
    """The saved config of run folder ``args.resume``; flags that change it are errors, except
    ``--epochs`` where the schedule does not depend on it (all but ``cosine``)."""
    from graphrec.trainer import epochs_extendable

    run_dir = Path(args.resume)
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphrecError(f"--resume: {path} not found (not a graphrec run folder)") from None
    except json.JSONDecodeError as e:
        raise GraphrecError(f"--resume: {path}: not valid JSON ({e})") from None
    cfg = config_from_args(args, saved)
    new = json.loads(json.dumps(cfg.to_dict()))
    for section in ("",) + tuple(k for k, v in new.items() if isinstance(v, dict)):
        old_s = saved if section == "" else saved.get(section, {})
        new_s = new if section == "" else new[section]
        for key, value in new_s.items():
            if (section == "" and isinstance(value, dict)) or (section, key) in RESUME_FREE:
                continue
            if (section, key) == ("train", "epochs") and epochs_extendable(cfg.train):
                continue  # train on (or stop sooner)
            if old_s.get(key) != value:
                name = f"{section}.{key}" if section else key
                raise GraphrecError(f"--resume: {name} is {value!r} here but "
                                    f"{old_s.get(key)!r} in {path}")
    cfg.out = str(run_dir)
    return cfg


def train(cfg: RunConfig, out: Path, resume: bool = False,
          on_eval: Callable[[int, dict[str, float]], None] | None = None,
          curves: bool = True) -> dict[str, float]:
    """Run one experiment from a resolved config; writes the run folder and returns test metrics.

    ``resume``: continue the training saved in ``out`` (see :func:`graphrec.trainer.train_model`).
    ``on_eval(epoch, valid_metrics)``: the trainer's per-validation hook (``graphrec tune``);
    ``curves=False``: no ``curves.png`` (a figure costs seconds; tune draws its best trial's).
    """
    import torch

    from graphrec.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from graphrec.data.source import load_data
    from graphrec.evaluation.evaluator import evaluate, evaluate_detailed
    from graphrec.per_user import (PER_USER_NAME, data_fingerprint, interactions_fingerprint,
                                   save_per_user)
    from graphrec.models import REGISTRY, build_model, canonical_name, model_config
    from graphrec.plots import write_curves
    from graphrec.split import split
    from graphrec.trainer import HISTORY_NAME, train_model
    from graphrec.utils import atomic_write_json, resolve_device

    torch.manual_seed(cfg.seed)
    cfg.model = canonical_name(cfg.model)
    model_cfg = model_config(cfg.model, cfg.model_options)
    cfg.model_options = dataclasses.asdict(model_cfg)  # config.json: every value resolved
    if resume and not REGISTRY[cfg.model][0].trainable:
        raise GraphrecError(f"--resume: model {cfg.model} is not trained, there is nothing to resume")
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    ds = load_data(cfg.data)
    _settle_split(cfg, ds, REGISTRY[cfg.model][0].trainable)
    log.info("data: %s users, %s items, %s interactions (%.1f s)", f"{ds.num_users:,}",
             f"{ds.num_items:,}", f"{ds.num_interactions:,}", time.perf_counter() - start)
    parts: Split = split(ds.graph, cfg.split)
    log.info("split %s: %s train, %s valid, %s test interactions", cfg.split.method,
             f"{parts.train['user', 'interacts', 'item'].num_edges:,}",
             f"{len(parts.valid) if parts.valid is not None else 0:,}", f"{len(parts.test):,}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", cfg.to_dict())

    model = build_model(cfg.model, ds.num_users, ds.num_items, model_cfg).to(device)
    fit_start = time.perf_counter()
    model.fit(parts.train)  # the graph stays on the CPU; the model copies what it needs
    if model.trainable:
        summary = train_model(model, parts, cfg.train, cfg.eval, out, resume=resume,
                              on_eval=on_eval)
        log.info("trained %d epochs (best epoch %d) in %.1f s", summary["epochs"],
                 summary["best_epoch"], summary["seconds"])
        note = write_curves(out / HISTORY_NAME, out / CURVES_NAME) if curves else None
        if note:
            log.info(note)
    fit_seconds = time.perf_counter() - fit_start
    if parts.valid is not None:
        valid = evaluate(model, parts, "valid", cfg.eval)
        atomic_write_json(out / "valid_metrics.json", valid)
    eval_start = time.perf_counter()
    metrics, per_user = evaluate_detailed(model, parts, "test", cfg.eval)
    per_user.data_fingerprint = data_fingerprint(ds.graph)
    per_user.test_fingerprint = interactions_fingerprint(parts.test)
    save_per_user(out / PER_USER_NAME, per_user)  # what graphrec compare tests, user by user
    metrics["fit_seconds"] = fit_seconds
    metrics["eval_seconds"] = time.perf_counter() - eval_start
    atomic_write_json(out / "metrics.json", metrics)
    # the floor every model must clear, on the same parts (popularity knows nothing of cold items)
    if cfg.model != "pop" and parts.cold_items is None:
        pop = build_model("pop", ds.num_users, ds.num_items, model_config("pop", {}))
        pop.fit(parts.train)
        atomic_write_json(out / BASELINE_NAME, evaluate(pop, parts, "test", cfg.eval))
    if cfg.index.kind != "exact":
        _evaluate_index(model, parts, cfg, out)
    save_checkpoint(out / CHECKPOINT_NAME, cfg.model, model_cfg, model, ds, cfg.to_dict())
    return metrics


def _evaluate_index(model: Any, parts: Split, cfg: RunConfig, out: Path) -> None:
    """The test metrics through the ``--index`` item index, in ``index_metrics.json``."""
    import torch as _torch

    from graphrec.evaluation.evaluator import evaluate
    from graphrec.models.base import Retriever
    from graphrec.serve.index import retriever_index
    from graphrec.utils import atomic_write_json

    with _torch.no_grad():
        scorer = model.scorer()
        if not isinstance(scorer, Retriever):
            log.warning("--index %s: model %s does not score by inner products of user and item "
                        "vectors; only exact metrics", cfg.index.kind, cfg.model)
            return
        start = time.perf_counter()
        index = retriever_index(scorer, cfg.index, out)
        built = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(model, parts, "test", cfg.eval, index=index)
    metrics.update(index=cfg.index.kind, build_seconds=built,
                   eval_seconds=time.perf_counter() - start)
    atomic_write_json(out / "index_metrics.json", metrics)


def metrics_table(metrics: dict[str, float], baseline: dict[str, float] | None = None) -> str:
    """Ranking metrics as a metric x K table (``baseline``'s, popularity's, in columns beside
    them), rating errors below it."""
    ranking = [k for k in metrics if "@" in k]
    names = list(dict.fromkeys(k.split("@")[0] for k in ranking))
    ks = sorted({int(k.split("@")[1]) for k in ranking})
    rows = [[n] + [metrics.get(f"{n}@{k}", "") for k in ks]
            + ([baseline.get(f"{n}@{k}", "") for k in ks] if baseline else []) for n in names]
    head = ["metric"] + [f"@{k}" for k in ks] + ([f"pop @{k}" for k in ks] if baseline else [])
    text = format_table(rows, head) if rows else ""
    extra = [f"{k} = {v:.4f}" + (f" (pop {baseline[k]:.4f})" if baseline and k in baseline else "")
             for k, v in metrics.items() if k in ("rmse", "mae")]
    extra.append(f"test users = {int(metrics['users']):,}")
    return text + "\n" + "   ".join(extra)


def default_out(model: str) -> Path:
    """``runs/MODEL-TIMESTAMP``, with ``-2``, ``-3``... when a run of the same second holds it."""
    base = Path("runs") / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _launch(nproc: int, argv: list[str]) -> int:
    """``--nproc N``: run this command under ``torchrun --nproc_per_node N`` (without
    ``--nproc``) and return its exit status."""
    import subprocess

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if nproc < 1 or nproc > (cores or 1):
        raise GraphrecError(f"--nproc: {nproc} processes for {cores} cores; use 1 to {cores}")
    rest, skip = [], False
    for arg in argv:  # drop --nproc N / --nproc=N
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "graphrec.train", *rest]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (cores or 1) // nproc)))}
    return subprocess.run(cmd, env=env).returncode


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.train") -> int:
    """The command: parse ``argv``, train into the run folder, print the test metrics. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel (:mod:`graphrec.distributed`):
    rank 0 writes the run folder and prints, the other ranks work in a private temporary folder
    that is removed at the end."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser(prog).parse_args(argv)
    if args.nproc is not None and args.nproc > 1:
        return _launch(args.nproc, argv)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not under torchrun
        return _main(args)
    from graphrec.distributed import init_from_env

    rank = init_from_env(args.device)
    import shutil
    import tempfile

    import torch.distributed as dist

    if args.resume or args.folds is not None:
        raise GraphrecError(f"{'--resume' if args.resume else '--folds'}: not yet with "
                            "data-parallel training; run it in one process")
    scratch = None
    try:
        if rank != 0:  # same work, private folder, no output
            scratch = tempfile.mkdtemp(prefix=f"graphrec-rank{rank}-")
            args.out, args.overwrite, args.no_progress = scratch, True, True
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                return _main(args)
        return _main(args)
    finally:
        dist.destroy_process_group()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _main(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise GraphrecError("--overwrite: not with --resume (a resumed run continues its folder)")
    cfg = resume_config(args) if args.resume else config_from_args(args)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model)
    cfg.out = str(out)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    if args.folds is not None or cfg.split.folds:
        return _main_folds(args, cfg, out, mode)
    if args.fold is not None:
        raise GraphrecError("--fold: needs --folds K")
    with RunFolder(out, mode, "--resume" if args.resume else "--out"):
        metrics = train(cfg, out, resume=bool(args.resume))
    baseline_file = out / BASELINE_NAME
    baseline = json.loads(baseline_file.read_text()) if baseline_file.exists() else None
    print(f"{cfg.model} on {cfg.data.path or 'synthetic'} ({cfg.split.method} split), test"
          + (", popularity beside it:" if baseline else ":"))
    print(metrics_table(metrics, baseline))
    index_file = out / "index_metrics.json"
    if cfg.index.kind != "exact" and index_file.exists():
        through = json.loads(index_file.read_text())
        diffs = "   ".join(f"{k} {through[k]:.4f} ({through[k] - metrics[k]:+.4f})"
                           for k in metrics if "@" in k and k.split("@")[0] in ("recall", "ndcg"))
        print(f"through the {cfg.index.kind} index (against exact): {diffs}")
    print(f"run folder: {out}")
    return 0


def _main_folds(args: argparse.Namespace, cfg: RunConfig, out: Path, mode: str) -> int:
    """``--folds K``: every fold into ``OUT/fold-I`` and the mean ± std (``--fold I``: that fold
    alone, into ``OUT``, as one run)."""
    from graphrec.crossval import CV_NAME, run_folds, summary_table
    from graphrec.split import check_folds

    check_folds(cfg.split.folds, cfg.split.method)
    if args.test_ratio is not None:
        raise GraphrecError("--test-ratio: not with --folds (each fold is the test part once)")
    if cfg.split.fold is not None:  # one fold (or the resume of one)
        with RunFolder(out, mode, "--resume" if args.resume else "--out"):
            metrics = train(cfg, out, resume=bool(args.resume))
        print(f"{cfg.model}, fold {cfg.split.fold} of {cfg.split.folds}, test:")
        print(metrics_table(metrics))
        print(f"run folder: {out}")
        return 0
    if args.resume:
        raise GraphrecError(f"--resume: {out} is a k-fold parent; resume one of its folds "
                            f"({out}/fold-I)")
    summary = run_folds(cfg, out, mode, train)
    wall = json.loads((out / CV_NAME).read_text())["wall_seconds"]
    print(f"{cfg.model} on {cfg.data.path or 'synthetic'}, {cfg.split.folds}-fold "
          f"cross-validation ({cfg.split.method} split, per user), test, {wall:.1f} s:")
    print(summary_table(summary))
    print(f"run folders: {out}/fold-0 ... fold-{cfg.split.folds - 1}; mean and std in "
          f"{out / 'metrics.json'}")
    return 0


# ``gr.train(...)``: this module, called, is graphrec.api.train (graphrec/_callable.py)
make_callable(__name__)


if __name__ == "__main__":
    sys.exit(run(main))
