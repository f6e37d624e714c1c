"""``graphrec tune``: hyper-parameter search over ``graphrec train`` runs, with Optuna.

Algorithm. Each trial draws one configuration from the search space with the Tree-structured
Parzen Estimator (Bergstra et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS
2011): the trials so far are cut at a quantile of their values into "good" and "bad", each
group's parameters get a Parzen (kernel) density l(x) and g(x), and the next x maximizes
l(x) / g(x), which maximizes expected improvement; the first trials are drawn at random. The
sampler is seeded. A trained model reports its validation metric after every evaluation (the
trainer's ``on_eval`` hook), and the median stopping rule (Golovin et al., "Google Vizier",
KDD 2017; optuna's ``MedianPruner``) stops a trial whose value at an epoch is worse than the
median of the earlier trials' values at that epoch. A training-free model is a one-shot trial.

Selection is always on the validation part: the objective is the metric early stopping watches
(``train.metric``: ``ndcg@20``, or ``rmse`` for rating models, minimized), of the trial's best
state. The test metrics of the best trial are printed after the search as a separate figure;
they never steer it. Training-free models, which get no validation part in ``graphrec train``,
get the trained models' default one here (10% of each user's interactions).

The run folder ``--out DIR``:

* ``study.db``: the Optuna study in a SQLite database (RDB storage), so that a killed search
  resumes where it stopped: rerunning the same command continues up to ``--trials`` trials in
  all (complete, pruned and failed ones count). A trial cut off by a kill, Ctrl-C or SIGTERM is
  marked failed and run again with the same parameters. One ``graphrec tune`` holds ``DIR`` at
  a time (a lock), so a trial still RUNNING in the study is such a leftover. The study records
  its base configuration and search space, and refuses to continue with different ones.
* ``trial-NNN/``: each trial's run folder, as ``graphrec train`` writes it.
* ``trials.jsonl``: one line per trial (number, state, value, parameters, folder, epochs).
* ``best.toml``: the best trial's whole configuration; ``graphrec train --config DIR/best.toml``
  reproduces its run. ``best.json``: its number, validation value, parameters and test metrics.
* ``history.png``: the optimization history (needs matplotlib, ``graphrec[plot]``).

Search spaces. Keys are model options or ``train.FIELD`` (a :class:`TrainConfig` field); values
are ``{"type": "float" | "int", "low", "high", "log"}`` or ``{"type": "choice", "values"}``.
Each model class declares its default in ``search_space`` (its config class may carry its own,
which replaces it: ``bpr`` beside ``lightgcn``); ``--space FILE.toml`` replaces the default with
the file's tables, e.g. ``[dim]`` ``type = "int"`` ``low = 16`` ``high = 128`` ``log = true``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import sys
import time
import tomllib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.cli import format_table, run
from graphrec.errors import GraphrecError, TrainingInterrupted

if TYPE_CHECKING:
    from graphrec.config import RunConfig

log = logging.getLogger("graphrec.tune")

DB_NAME = "study.db"
TRIALS_NAME = "trials.jsonl"
BEST_NAME = "best.toml"
BEST_JSON = "best.json"
HISTORY_PNG = "history.png"
STUDY_NAME = "graphrec-tune"
SPACE_TYPES = ("int", "float", "choice")
TRAIN_PREFIX = "train."
NO_OPTUNA = "graphrec tune needs optuna: pip install graphrec[tune]"
# TrainConfig fields a search never varies: they change how a run reports, not what it learns
NOT_SEARCHABLE = ("progress",)


def parser(prog: str = "graphrec tune") -> argparse.ArgumentParser:
    """``graphrec train``'s arguments (the base configuration of every trial) plus the search's."""
    from graphrec.train import parser as train_parser

    p = train_parser(prog)
    p.description = ("Search hyper-parameters of a model with Optuna (TPE, median pruning on "
                     "the validation curve), selecting on the validation part. Every trial is a "
                     "graphrec train run under --out; rerun the same command to resume.")
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, default=20,
                   help="trials in all, counting those of an earlier, stopped search (20)")
    g.add_argument("--space", default=None, metavar="FILE.toml",
                   help="search space replacing the model's default: tables such as [dim] "
                        "type=\"int\" low=16 high=128 log=true, [\"train.lr\"] type=\"float\" ..., "
                        "[loss] type=\"choice\" values=[\"bpr\", \"softmax\"]")
    g.add_argument("--prune-warmup", type=int, default=5,
                   help="validations a trial always gets before it may be pruned (5)")
    g.add_argument("--prune-startup", type=int, default=5,
                   help="complete trials before any is pruned (5)")
    g.add_argument("--no-prune", action="store_true", help="no median pruning")
    return p


# --- search spaces -------------------------------------------------------------------------


def default_space(model: str) -> dict[str, dict[str, Any]]:
    """Registered model ``model``'s default search space (its config class's, else its model
    class's ``search_space``)."""
    from graphrec.models import REGISTRY, canonical_name

    model_cls, cfg_cls = REGISTRY[canonical_name(model)]
    return copy.deepcopy(getattr(cfg_cls, "search_space", None) or model_cls.search_space)


def read_space(path: str | Path) -> dict[str, Any]:
    """The tables of a ``--space`` TOML file (checked by :func:`check_space`)."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise GraphrecError(f"--space: {path}: no such file") from None
    except IsADirectoryError:
        raise GraphrecError(f"--space: {path}: is a folder, not a TOML file") from None
    except UnicodeDecodeError:
        raise GraphrecError(f"--space: {path}: not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise GraphrecError(f"--space: {path}: {e}") from None


def _number(value: Any, at: str, name: str, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GraphrecError(f"{at}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise GraphrecError(f"{at}: {name} must be finite, got {value!r}")
    if integer and not isinstance(value, int):
        raise GraphrecError(f"{at}: {name} of an int range must be an integer, got {value!r}")
    return value


def check_space(space: dict[str, Any], model: str, where: str,
                base: RunConfig | None = None) -> dict[str, dict[str, Any]]:
    """Check search space ``space`` of registered model ``model``; returns it normalized.

    Every key must name a field of the model's config or ``train.FIELD`` of
    :class:`TrainConfig`; ranges must be non-empty (``low < high``; ``log`` needs ``low > 0``);
    with ``base``, each bound and choice must be a value the option accepts. Errors are one line
    naming ``where`` (the file) and the key.
    """
    from graphrec.models import REGISTRY, canonical_name, model_config
    from graphrec.trainer import TrainConfig

    name = canonical_name(model)
    options = sorted(f.name for f in dataclasses.fields(REGISTRY[name][1]))
    train_fields = sorted(f.name for f in dataclasses.fields(TrainConfig)
                          if f.name not in NOT_SEARCHABLE)
    if not isinstance(space, dict):
        raise GraphrecError(f"{where}: expected tables of options")
    out: dict[str, dict[str, Any]] = {}
    for key, entry in space.items():
        at = f"{where}: [{json.dumps(key) if '.' in key else key}]"
        if key.startswith(TRAIN_PREFIX):
            if key[len(TRAIN_PREFIX):] not in train_fields:
                raise GraphrecError(f"{at}: no training setting {key[len(TRAIN_PREFIX):]!r}; "
                                    f"train.FIELD takes one of {', '.join(train_fields)}")
        elif key not in options:
            raise GraphrecError(f"{at}: model {name} has no option {key!r}; its options are "
                                f"{', '.join(options) or 'none'} (training settings: "
                                "train.FIELD, e.g. train.lr)")
        if not isinstance(entry, dict):
            raise GraphrecError(f"{at}: must be a table with type = \"int\", \"float\" or "
                                "\"choice\"")
        kind = entry.get("type")
        if kind not in SPACE_TYPES:
            raise GraphrecError(f"{at}: type must be one of {', '.join(SPACE_TYPES)}, got "
                                f"{kind!r}")
        allowed = ("type", "values") if kind == "choice" else ("type", "low", "high", "log")
        extra = sorted(set(entry) - set(allowed))
        if extra:
            raise GraphrecError(f"{at}: unknown key {extra[0]!r} for type {kind} (keys: "
                                f"{', '.join(allowed)})")
        if kind == "choice":
            values = entry.get("values")
            if not isinstance(values, list) or not values:
                raise GraphrecError(f"{at}: values must be a non-empty list")
            if not all(isinstance(v, (str, int, float, bool)) for v in values):
                raise GraphrecError(f"{at}: values must be strings, numbers or booleans")
            out[key] = {"type": kind, "values": list(values)}
        else:
            for bound in ("low", "high"):
                if bound not in entry:
                    raise GraphrecError(f"{at}: missing {bound}")
            low = _number(entry["low"], at, "low", kind == "int")
            high = _number(entry["high"], at, "high", kind == "int")
            if not low < high:
                raise GraphrecError(f"{at}: empty range (low {low} >= high {high})")
            use_log = entry.get("log", False)
            if not isinstance(use_log, bool):
                raise GraphrecError(f"{at}: log must be true or false, got {use_log!r}")
            if use_log and low <= 0:
                raise GraphrecError(f"{at}: a log range needs low > 0, got {low}")
            out[key] = {"type": kind, "low": low, "high": high, "log": use_log}
    if base is not None:  # every bound and choice must be a value the option takes
        for key, entry in out.items():
            for value in entry["values"] if entry["type"] == "choice" else (entry["low"],
                                                                           entry["high"]):
                try:
                    cfg = apply_params(base, {key: value})
                    options = model_config(name, cfg.model_options)
                    _try_build(name, options)
                except GraphrecError as e:
                    at = f"{where}: [{json.dumps(key) if '.' in key else key}]"
                    raise GraphrecError(f"{at}: value {value!r} is refused ({e})") from None
    return out


def _try_build(name: str, options: Any) -> None:
    """Build model ``name`` on a 3 x 3 catalogue: options the constructor refuses (an unknown
    loss, say) are errors now rather than failed trials. Other failures of so small a build are
    left for the trials to show."""
    from graphrec.models import build_model

    try:
        build_model(name, 3, 3, options)
    except GraphrecError:
        raise
    except Exception:  # noqa: BLE001 - not the option's fault at this size
        pass


def apply_params(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    """A copy of ``base`` with a trial's parameters set: ``train.FIELD`` in the training
    config (re-checked), the others in the model options (checked when the model is built)."""
    cfg = copy.deepcopy(base)
    train_values = {k[len(TRAIN_PREFIX):]: v for k, v in params.items()
                    if k.startswith(TRAIN_PREFIX)}
    cfg.train = dataclasses.replace(cfg.train, **train_values)
    cfg.model_options = {**cfg.model_options,
                         **{k: v for k, v in params.items() if not k.startswith(TRAIN_PREFIX)}}
    return cfg


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw ``trial``'s parameters from ``space``."""
    params: dict[str, Any] = {}
    for key, e in space.items():
        if e["type"] == "choice":
            params[key] = trial.suggest_categorical(key, e["values"])
        elif e["type"] == "int":
            params[key] = trial.suggest_int(key, e["low"], e["high"], log=e["log"])
        else:
            params[key] = trial.suggest_float(key, e["low"], e["high"], log=e["log"])
    return params


# --- outputs -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # Python's shortest round-trip form is valid TOML
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise GraphrecError(f"best.toml: cannot write {value!r} as TOML")


def config_toml(config: dict[str, Any], header: str = "") -> str:
    """A run's ``config.json`` object as a ``--config`` TOML file: unset (null) values, the run
    folder and the progress switches left out, data paths made absolute."""
    config = copy.deepcopy(config)
    config.pop("out", None)
    for section in ("train", "eval"):
        config.get(section, {}).pop("progress", None)
    for key in ("path", "test_path", "valid_path"):
        value = config.get("data", {}).get(key)
        if isinstance(value, str) and Path(value).exists():
            config["data"][key] = str(Path(value).resolve())
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in config.items()
              if not isinstance(v, dict) and v is not None]
    for key, table in config.items():
        if isinstance(table, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()
                                         if v is not None]
    return "\n".join(lines) + "\n"


def trial_record(t: Any) -> dict[str, Any]:
    """One line of ``trials.jsonl``."""
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else None)
    steps = sorted(t.intermediate_values)
    # optuna gives a pruned trial its last reported value: kept apart from complete values
    value = t.value if t.state.name == "COMPLETE" else None
    return {"number": t.number, "state": t.state.name, "value": value, "params": t.params,
            "folder": t.user_attrs.get("folder"), "epochs": steps[-1] if steps else None,
            "last_reported": t.intermediate_values[steps[-1]] if steps else None,
            "seconds": seconds, "error": t.user_attrs.get("error"),
            "retry_of": t.user_attrs.get("retry_of")}


def write_trials(study: Any, path: Path) -> list[dict[str, Any]]:
    """Rewrite ``trials.jsonl`` from the study (atomically); returns its records."""
    from graphrec.utils import atomic_write_bytes, strict_json

    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    atomic_write_bytes(path, "".join(json.dumps(strict_json(r)) + "\n"
                                     for r in records).encode())
    return records


def write_history(records: list[dict[str, Any]], png: Path, metric: str,
                  minimize: bool) -> str | None:
    """The optimization history as a PNG: each complete trial's validation value, pruned ones at
    their last reported value, and the best so far. Returns ``None`` when written, else a
    one-line note (no matplotlib, no complete trial)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"matplotlib not installed: no {png.name} (pip install graphrec[plot])"
    from graphrec.utils import atomic_write_bytes

    done = [(r["number"], r["value"]) for r in records if r["state"] == "COMPLETE"]
    if not done:
        return f"no complete trial: no {png.name}"
    fig = Figure(figsize=(7, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.scatter([n for n, _ in done], [v for _, v in done], s=18, label="complete")
    pruned = [(r["number"], r["last_reported"]) for r in records
              if r["state"] == "PRUNED" and r["last_reported"] is not None]
    if pruned:
        ax.scatter([n for n, _ in pruned], [v for _, v in pruned], marker="x", color="gray",
                   s=18, label="pruned (last reported)")
    best, xs, ys = None, [], []
    for n, v in done:
        if best is None or (v < best if minimize else v > best):
            best = v
        xs.append(n)
        ys.append(best)
    ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=f"validation {metric}" + (" (lower is better)" if minimize else ""),
           title=f"optimization history ({len(records)} trials)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(png, buffer.getvalue())
    return None


# --- the search ----------------------------------------------------------------------------


class _TrialFailed(Exception):
    """A trial that failed for good (diverged, or a refused combination): the search goes on."""


def _study_key(cfg: RunConfig, space: dict[str, Any]) -> dict[str, Any]:
    """What a resumed study must share with the one in the database."""
    config = json.loads(json.dumps(cfg.to_dict()))
    config.pop("out", None)
    for section in ("train", "eval"):
        config[section].pop("progress", None)
    return {"config": config, "space": space}


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if old == new else f"{path} is {new!r} here but {old!r} in the study"


def prepare(cfg: RunConfig, space_path: str | None) -> tuple[dict[str, dict[str, Any]], str, bool]:
    """Settle the base configuration ``cfg`` in place (split with a validation part, no progress
    bars) and check the space; returns ``(space, metric, minimize)``."""
    from graphrec.data.source import load_data
    from graphrec.models import REGISTRY, canonical_name, model_config
    from graphrec.split import split
    from graphrec.train import _settle_split
    from graphrec.trainer import LOWER_IS_BETTER

    cfg.model = canonical_name(cfg.model)
    model_config(cfg.model, cfg.model_options)  # the model's name and fixed options
    if space_path:
        space = check_space(read_space(space_path), cfg.model, f"--space {space_path}", cfg)
    else:
        raw = default_space(cfg.model)
        if not raw:
            raise GraphrecError(f"model {cfg.model} has no hyper-parameters to tune (give a "
                                "--space FILE.toml)")
        space = check_space(raw, cfg.model, f"model {cfg.model} search_space", cfg)
    cfg.train.progress = False
    cfg.eval.progress = False
    ds = load_data(cfg.data)
    # trained or not, the model is selected on a validation part: the trained models' default
    _settle_split(cfg, ds, trainable=True)
    if cfg.split.method == "leave-one-out" and cfg.split.valid_ratio is None:
        cfg.split.valid_ratio = 1.0  # leave-one-out: any positive ratio holds out one item
    if split(ds.graph, cfg.split).valid is None:
        raise GraphrecError("tune: the split has no validation part to select on (set "
                            "--valid-ratio above 0, or give --valid-data)")
    metric = cfg.train.metric
    model_cls = REGISTRY[cfg.model][0]
    known = [f"{m}@{k}" for m in cfg.eval.metrics for k in cfg.eval.ks]
    if model_cls.predicts_ratings:
        known += list(LOWER_IS_BETTER)
    if metric not in known:
        raise GraphrecError(f"--metric: {metric} is not among the validation metrics of "
                            f"{cfg.model} ({', '.join(known)})")
    return space, metric, metric in LOWER_IS_BETTER


def tune(cfg: RunConfig, root: Path, trials: int, space: dict[str, dict[str, Any]],
         metric: str, minimize: bool, prune: bool = True, prune_warmup: int = 5,
         prune_startup: int = 5) -> Any:
    """Run (or resume) the study in ``root`` up to ``trials`` trials; returns the study.

    ``cfg`` is the settled base configuration (:func:`prepare`); ``root`` must be held (locked)
    by the caller."""
    import optuna
    from optuna.trial import TrialState

    from graphrec.runfolder import RunFolder
    from graphrec.train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(root / DB_NAME).resolve()}")
    key = _study_key(cfg, space)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, load_if_exists=True,
                                direction="minimize" if minimize else "maximize")
    saved = study.user_attrs.get("key")
    if saved is None:
        study.set_user_attr("key", key)
        study.set_user_attr("metric", metric)
    else:
        diff = _first_difference(saved, key)
        if diff:
            raise GraphrecError(f"--out {root}: {DB_NAME} holds a study of another search "
                                f"({diff}); choose another --out")

    # leftovers of a stopped search: the lock says no other process runs them
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # _trial_id: the storage's key of the trial; optuna's public API only ends a trial
        # from inside it (Study.tell would also do, but records no cut-off)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        log.warning("trial %d was cut off (the search was killed): marked failed", t.number)
    existing = study.get_trials(deepcopy=False)
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    done = sum(t.state in counted or (t.state == TrialState.FAIL and "error" in t.user_attrs)
               for t in existing)
    remaining = trials - done
    if done:
        log.info("resuming the study in %s: %d of %d trials done", root / DB_NAME, done, trials)
    # trials cut off (killed, Ctrl-C, SIGTERM; not those that failed for good) run again with
    # their parameters, first, once each; with nothing left to run, none is queued
    retried = {t.user_attrs.get("retry_of") for t in existing}
    for t in existing if remaining > 0 else ():
        if (t.state == TrialState.FAIL and "error" not in t.user_attrs
                and t.number not in retried):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            log.info("trial %d will be run again with the same parameters", t.number)

    # a fresh seed per resumption: a resumed sampler must not repeat the first trials' draws
    study.sampler = optuna.samplers.TPESampler(
        seed=cfg.seed + len(existing), multivariate=True,
        n_startup_trials=max(2, min(10, trials // 3)))
    study.pruner = (optuna.pruners.MedianPruner(
        n_startup_trials=max(0, prune_startup),
        n_warmup_steps=max(0, prune_warmup) * cfg.train.eval_every)
        if prune else optuna.pruners.NopPruner())

    def objective(trial: Any) -> float:
        params = suggest(trial, space)
        out = root / f"trial-{trial.number:03d}"
        trial.set_user_attr("folder", out.name)
        try:
            run_cfg = apply_params(cfg, params)
        except GraphrecError as e:
            trial.set_user_attr("error", str(e))
            raise _TrialFailed(str(e)) from None
        run_cfg.out = str(out)

        def on_eval(epoch: int, valid: dict[str, float]) -> None:
            value = float(valid[metric])
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} {value:.4f}")

        start = time.perf_counter()
        try:
            with RunFolder(out, "overwrite"):
                train(run_cfg, out, on_eval=on_eval, curves=False)
        except TrainingInterrupted as e:  # the search stops; the trial runs again on resumption
            signal_name = str(e).split(" ", 1)[0]
            raise TrainingInterrupted(f"{signal_name} during trial {trial.number}: the study is "
                                      f"saved in {root / DB_NAME}; rerun the same graphrec tune "
                                      "command to resume (this trial runs again)",
                                      e.exit_code) from None
        except GraphrecError as e:  # diverged, or options that refuse each other
            trial.set_user_attr("error", str(e))
            raise _TrialFailed(str(e)) from None
        value = float(json.loads((out / "valid_metrics.json").read_text())[metric])
        log.info("trial %d: valid %s %.4f (%.0f s) %s", trial.number, metric, value,
                 time.perf_counter() - start, _params_text(params))
        return value

    def after(study: Any, trial: Any) -> None:
        if trial.state == TrialState.PRUNED:
            steps = sorted(trial.intermediate_values)
            log.info("trial %d: pruned after epoch %s %s", trial.number,
                     steps[-1] if steps else "?", _params_text(trial.params))
        elif trial.state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, trial.user_attrs.get("error"))
        write_trials(study, root / TRIALS_NAME)

    if remaining > 0:
        study.optimize(objective, n_trials=remaining, catch=(_TrialFailed,), callbacks=[after])
    return study


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def finish(study: Any, root: Path, metric: str, minimize: bool) -> dict[str, Any]:
    """After the search: ``trials.jsonl``, ``best.toml``, ``best.json``, ``history.png``;
    returns ``best.json``'s object."""
    from graphrec.plots import write_curves
    from graphrec.train import CURVES_NAME
    from graphrec.trainer import HISTORY_NAME
    from graphrec.utils import atomic_write_bytes, atomic_write_json

    records = write_trials(study, root / TRIALS_NAME)
    states = {s: sum(r["state"] == s for r in records) for s in ("COMPLETE", "PRUNED", "FAIL")}
    if not states["COMPLETE"]:
        raise GraphrecError(f"tune: no trial completed ({states['PRUNED']} pruned, "
                            f"{states['FAIL']} failed; see {root / TRIALS_NAME})")
    best = study.best_trial
    folder = root / best.user_attrs["folder"]
    config = json.loads((folder / "config.json").read_text())
    test = json.loads((folder / "metrics.json").read_text())
    header = (f"graphrec tune: the best of {len(records)} trials ({folder.name}), validation "
              f"{metric} = {best.value:.6g}\nreproduce: graphrec train --config {root / BEST_NAME}"
              " --out RUN")
    atomic_write_bytes(root / BEST_NAME, config_toml(config, header).encode())
    seconds = sum(r["seconds"] or 0.0 for r in records)
    summary = {"trial": best.number, "folder": folder.name, "metric": metric,
               "direction": "minimize" if minimize else "maximize", "valid": best.value,
               "params": best.params, "trials": states, "trial_seconds": seconds,
               "test": test}  # reported after the search; never used to select
    atomic_write_json(root / BEST_JSON, summary)
    note = write_history(records, root / HISTORY_PNG, metric, minimize)
    if note:
        log.info(note)
    elif (folder / HISTORY_NAME).exists():  # the trials skip it; the best one's is worth a look
        write_curves(folder / HISTORY_NAME, folder / CURVES_NAME)
    return summary


def default_out(model: str) -> Path:
    """``runs/tune-MODEL-TIMESTAMP``."""
    from graphrec.train import default_out as train_out

    base = train_out(model)
    return base.with_name(f"tune-{base.name}")


def main(argv: list[str] | None = None, prog: str = "graphrec tune") -> int:
    """The command: parse ``argv``, run or resume the search, print the best trial."""
    args = parser(prog).parse_args(argv)
    if args.trials < 1:
        raise GraphrecError(f"--trials: must be at least 1, got {args.trials}")
    if args.resume:
        raise GraphrecError("--resume: not with tune; rerun the same tune command with the same "
                            "--out to resume a search")
    if getattr(args, "folds", None) is not None or getattr(args, "fold", None) is not None:
        raise GraphrecError("--folds: not with tune (trials are selected on one validation "
                            "part; cross-validate the best config with graphrec train "
                            "--config DIR/best.toml --folds K)")
    if args.overwrite:
        raise GraphrecError("--overwrite: not with tune; choose a new --out (rerunning into the "
                            "same one resumes its search)")
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise GraphrecError(NO_OPTUNA) from None
    from graphrec.runfolder import RunFolder
    from graphrec.train import config_from_args

    cfg = config_from_args(args)
    root = Path(cfg.out) if cfg.out else default_out(cfg.model)
    cfg.out = None
    space, metric, minimize = prepare(cfg, args.space)
    # quiet trials: one line each from here, not the trainer's epoch lines
    for name in ("graphrec.train", "graphrec.trainer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.perf_counter()
    with RunFolder(root, "new", "--out"):
        study = tune(cfg, root, args.trials, space, metric, minimize, prune=not args.no_prune,
                     prune_warmup=args.prune_warmup, prune_startup=args.prune_startup)
        summary = finish(study, root, metric, minimize)
    records = [json.loads(line) for line in (root / TRIALS_NAME).read_text().splitlines()]
    done = sorted((r for r in records if r["state"] == "COMPLETE"),
                  key=lambda r: r["value"], reverse=not minimize)
    rows = [[r["number"], r["value"], r["epochs"] or "-", _params_text(r["params"])]
            for r in done[:5]]
    counts = summary["trials"]
    print(f"{cfg.model}: {len(records)} trials ({counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned, {counts['FAIL']} failed) in {time.perf_counter() - start:.0f} s "
          f"this session; best by validation {metric}:")
    print(format_table(rows, ["trial", f"valid {metric}", "epochs", "parameters"]))
    test = summary["test"]
    shown = [k for k in (metric, "recall@20", "ndcg@20", "rmse") if k in test]
    print(f"trial {summary['trial']}'s test metrics (reported, not used to select): "
          + "   ".join(f"{k} {test[k]:.4f}" for k in dict.fromkeys(shown)))
    print(f"best config: {root / BEST_NAME} (graphrec train --config {root / BEST_NAME})")
    print(f"study: {root / DB_NAME}; rerun this command to add trials or resume")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
