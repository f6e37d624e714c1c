"""Run configuration, resolved once at the command line: defaults < the model's training
defaults < TOML file < flags.

A model class may carry ``train_defaults`` (e.g. the sequence models: batch 128, early stopping
on ``ndcg@10``), which replace :class:`TrainConfig`'s graph-model defaults for that model only.

Each concern keeps its own dataclass next to its consumer (:class:`DataConfig`,
:class:`SplitConfig`, :class:`EvalConfig`, the model's config); :class:`RunConfig` only groups
them. Unknown keys are errors. Below the command line, code takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphrec.data.source import DataConfig
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig
from graphrec.options import checked
from graphrec.serve.index import IndexConfig
from graphrec.split import SplitConfig
from graphrec.trainer import TrainConfig

SECTIONS = {"data": DataConfig, "split": SplitConfig, "eval": EvalConfig, "train": TrainConfig,
            "index": IndexConfig}
# command-line flags named differently from the field they set (the others: --field-name)
FLAG_NAMES = {("", "seed"): "--seed", ("data", "path"): "--data", ("data", "header"): "--no-header",
              ("split", "method"): "--split", ("split", "seed"): "--split-seed",
              ("eval", "ks"): "--k", ("eval", "batch_users"): "--eval-batch",
              ("eval", "exclude_seen"): "--keep-seen", ("eval", "progress"): "--no-progress",
              ("train", "progress"): "--no-progress", ("index", "kind"): "--index"}


def flag_names(section: str, keys: Any) -> dict[str, str]:
    """The command-line flag of each field of ``section`` (for messages)."""
    return {k: FLAG_NAMES.get((section, k), "--" + k.replace("_", "-")) for k in keys}
TOP_LEVEL = ("model", "out", "device", "seed")


@dataclass
class RunConfig:
    """Everything one ``graphrec.train`` run needs, as saved in ``config.json``."""

    model: str = "lightgcn"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    out: str | None = None
    device: str = "auto"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_keys(where: str, values: dict[str, Any], cls: type) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GraphrecError(f"{where}: unknown key {unknown[0]!r}; known keys are "
                            f"{', '.join(sorted(known))}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a config file: top-level ``model``/``out``/``device``/``seed`` and the tables
    ``[data]``, ``[split]``, ``[eval]``, ``[train]``, ``[index]`` and ``[model_options]``.

    A ``.json`` file is read as a run's ``config.json`` (the same keys, every value resolved;
    ``null`` means unset), so that a run can be repeated from its folder alone."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            values = json.loads(path.read_text())
            if not isinstance(values, dict):
                raise GraphrecError(f"--config: {path}: expected a JSON object")
            values = {k: ({kk: vv for kk, vv in v.items() if vv is not None}
                          if isinstance(v, dict) else v)
                      for k, v in values.items() if v is not None}
        else:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
    except FileNotFoundError:
        raise GraphrecError(f"--config: {path}: no such file") from None
    except IsADirectoryError:
        raise GraphrecError(f"--config: {path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise GraphrecError(f"--config: {path}: not a text file") from None
    except tomllib.TOMLDecodeError as e:
        raise GraphrecError(f"--config: {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise GraphrecError(f"--config: {path}: not valid JSON ({e})") from None
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise GraphrecError(f"{path}: [{key}] must be a table")
            _check_keys(f"{path}: [{key}]", value, SECTIONS[key])
            values[key] = checked(SECTIONS[key], value, f"{path}: [{key}] ")
        elif key == "model_options":
            if not isinstance(value, dict):
                raise GraphrecError(f"{path}: [model_options] must be a table")
        elif key not in TOP_LEVEL:
            raise GraphrecError(f"{path}: unknown key {key!r}; known keys are "
                                f"{', '.join(TOP_LEVEL + tuple(SECTIONS) + ('model_options',))}")
    top = checked(RunConfig, {k: v for k, v in values.items() if k in TOP_LEVEL}, f"{path}: ")
    return {**values, **top}


def resolve(file_values: dict[str, Any], flags: dict[str, dict[str, Any]]) -> RunConfig:
    """Merge defaults, a config file's values and command-line flags (``None`` = not given).

    ``flags`` has the same shape as the file: ``{"": top-level, "data": {...}, ...}``.
    """
    top = {k: v for k, v in file_values.items() if k in TOP_LEVEL}
    top_flags = {k: v for k, v in flags.get("", {}).items() if v is not None}
    top.update(checked(RunConfig, top_flags, "", flag_names("", top_flags)))
    sections = {}
    for name, cls in SECTIONS.items():
        merged = dict(model_train_defaults(top.get("model", RunConfig.model))) if name == "train" else {}
        merged.update(file_values.get(name, {}))
        given = {k: v for k, v in flags.get(name, {}).items() if v is not None}
        _check_keys(f"[{name}]", {**merged, **given}, cls)
        merged = checked(cls, merged, f"[{name}] ")
        merged.update(checked(cls, given, "", flag_names(name, given)))
        try:
            sections[name] = cls(**merged)
        except TypeError as e:
            raise GraphrecError(f"[{name}]: {e}") from None
    options = dict(file_values.get("model_options", {}))
    options.update(flags.get("model_options", {}))
    return RunConfig(model_options=options, **sections, **top)


def model_train_defaults(name: str) -> dict[str, Any]:
    """The training defaults of registered model ``name``: the model class's
    ``train_defaults`` under its config class's (so that ``lightgcn`` and ``bpr``, one class,
    differ); empty for unknown names, which fail later with the registry's message."""
    from graphrec.models import REGISTRY, canonical_name

    entry = REGISTRY.get(canonical_name(str(name)))
    if not entry:
        return {}
    return {**getattr(entry[0], "train_defaults", {}), **getattr(entry[1], "train_defaults", {})}


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as TOML (numbers, booleans, strings)."""
    if "=" not in text:
        raise GraphrecError(f"--set: expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


__all__ = ["RunConfig", "read_toml", "resolve", "parse_option"]
