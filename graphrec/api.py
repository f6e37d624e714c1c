"""The Python API: load, split, train, evaluate and recommend in a few lines, with the command
line's defaults, trainer and evaluator.

```python
import graphrec as gr
data = gr.load("u.data")                       # or gr.from_pandas(df, user=..., item=...)
parts = gr.split(data, "random", test_ratio=0.2)
model = gr.train("lightgcn", parts, epochs=20)  # model options and training settings by name
gr.evaluate(model, parts, ks=(10, 20))          # {"recall@10": ..., "ndcg@20": ..., ...}
model.recommend("196", k=10)                    # raw ids in and out
```
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from graphrec.checkpoint import Checkpoint, checkpoint_of, load_checkpoint, write_checkpoint
from graphrec.config import model_train_defaults
from graphrec.data.graph import Dataset, build
from graphrec.data.readers import ColumnNames, RawData, _finish, _select
from graphrec.data.source import DataConfig, load_data
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig
from graphrec.evaluation.evaluator import evaluate as _evaluate
from graphrec.models import build_model, canonical_name, model_config
from graphrec.options import checked
from graphrec.split import Split, SplitConfig, default_method, default_valid_ratio
from graphrec.split import split as _split
from graphrec.trainer import TrainConfig, train_model
from graphrec.utils import resolve_device

if TYPE_CHECKING:
    import pandas as pd

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def load(path: str | Path, **reading: Any) -> Dataset:
    """A data set from a raw file, a folder (a LightGCN train/test pair) or a converted ``.pt``.

    ``reading``: the fields of :class:`graphrec.data.source.DataConfig` (``format``,
    ``user_col``, ``item_col``, ``rating_col``, ``time_col``, ``header``, ``min_rating``,
    ``kcore``, ``dedup``), as the command line's reading flags.
    """
    if "path" in reading:
        raise GraphrecError("load: the path is the first argument, not an option")
    return load_data(DataConfig(path=str(path), **_options(DataConfig, reading, "load")))


def _options(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` as fields of dataclass ``cls``, type-checked; an unknown name is an error."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise GraphrecError(f"{where}: unknown option {unknown[0]!r}")
    return checked(cls, values, f"{where}: ")


def from_pandas(frame: pd.DataFrame, user: str = "user", item: str = "item",
                rating: str | None = None, time: str | None = None, dedup: str = "last",
                min_rating: float | None = None, kcore: int = 0) -> Dataset:
    """A data set from a DataFrame of interactions, one row each; ids are kept as given (a row
    number names a bad value, counted from 1)."""
    frame = frame.reset_index(drop=True)
    frame.index = frame.index + 1
    where = "DataFrame"
    selected = _select(frame.copy(), ColumnNames(user, item, rating, time), Path(where))
    return build(RawData(_finish(selected, where), where, "pandas"), dedup, min_rating, kcore)


@dataclass
class Parts:
    """A data set and its split into a training graph and held-out parts (what :func:`train`
    and :func:`evaluate` take)."""

    data: Dataset
    split: Split
    config: SplitConfig


def split(data: Dataset, method: str | None = None, **options: Any) -> Parts:
    """Split ``data`` by ``method`` (``random``, ``temporal``, ``time-cut``, ``leave-one-out``,
    ``given``; default ``given`` where the data carries a test part, else ``random``).

    ``options``: :class:`graphrec.split.SplitConfig` fields (``test_ratio``, ``valid_ratio``,
    ``time_cut``, ``seed``). As on the command line, a validation part for early stopping is
    carved from the training data unless ``valid_ratio=0`` (10% of each user's interactions;
    one item for ``leave-one-out``); training-free models need none.
    """
    cfg = SplitConfig(method=method or default_method(data.graph),
                      **_options(SplitConfig, options, "split"))
    if cfg.valid_ratio is None:  # the command line's default for a trained model
        cfg.valid_ratio = default_valid_ratio(data.graph, cfg)
    return Parts(data, _split(data.graph, cfg), cfg)


class Model:
    """A trained model with what serving needs: its id maps and every user's known items."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint

    @property
    def name(self) -> str:
        """The registered model name."""
        return self.checkpoint.model_name

    @property
    def module(self) -> torch.nn.Module:
        """The underlying :class:`graphrec.models.base.Recommender`."""
        return self.checkpoint.model

    def recommend(self, users: Any, k: int = 10, filter_seen: bool = True,
                  scores: bool = False) -> list:
        """Top ``k`` items for one raw user id or a sequence of them.

        Returns the raw item ids, best first (``[(item, score), ...]`` with ``scores``); for a
        sequence of users, one such list per user. ``filter_seen`` drops the items the user has
        interacted with anywhere in the data. A user the data does not know gets the onboarding
        list (popular items, diversified; see :meth:`recommend_new` for a new user's items).
        """
        from graphrec.serve.recommend import onboarding, recommend

        single = isinstance(users, (str, int)) or not isinstance(users, Sequence)
        raw = [users] if single else list(users)
        dense = torch.as_tensor(self.checkpoint.users.lookup(raw))
        known = dense >= 0
        items = torch.full((len(raw), k), -1, dtype=torch.long)
        values = torch.full((len(raw), k), float("-inf"))
        if known.any():  # (fewer than k columns when the data has fewer items)
            got, vals = recommend(self.checkpoint, dense[known], k, include_seen=not filter_seen)
            items[known, :got.size(1)], values[known, :got.size(1)] = got, vals
        if not known.all():
            top, counts = onboarding(self.checkpoint, k)
            items[~known, :top.numel()], values[~known, :top.numel()] = top, counts
        return self._raw(items, values, scores, single)

    def recommend_new(self, items: Sequence[Any], k: int = 10, fold_in: str = "mean",
                      scores: bool = False) -> list:
        """Top ``k`` raw item ids for a user the model was not trained on, from the raw ids of
        the items they gave (unknown ones dropped with a warning; an error if none is known;
        none at all: the onboarding list). ``fold_in``: ``mean`` or ``ls`` for embedding
        models (:mod:`graphrec.models.coldstart`)."""
        from graphrec.batches import History
        from graphrec.serve.recommend import recommend_new

        raw = [str(i) for i in items]
        index = self.checkpoint.items.lookup(raw) if raw else []
        unknown = [r for r, i in zip(raw, index) if i < 0]
        if unknown:
            warnings.warn(f"recommend_new: dropped {', '.join(map(repr, unknown))}: not in the "
                          "model's data", stacklevel=2)
            if len(unknown) == len(raw):
                raise GraphrecError(f"recommend_new: none of the {len(raw)} items is in the "
                                    "model's data")
        top, values = recommend_new(self.checkpoint, History.from_lists([[int(i) for i in index
                                                                           if i >= 0]]),
                                    k, fold_in)
        return self._raw(top, values, scores, True)

    def _raw(self, items: torch.Tensor, values: torch.Tensor, scores: bool, single: bool) -> list:
        names = self.checkpoint.items.raw
        out = []
        for row, vals in zip(items.tolist(), values.tolist()):
            ids = [_plain(names[i]) for i in row if i >= 0]
            out.append(list(zip(ids, vals)) if scores else ids)
        return out[0] if single else out

    def __repr__(self) -> str:
        return (f"Model({self.name}, {len(self.checkpoint.users):,} users, "
                f"{len(self.checkpoint.items):,} items)")


def train(model: str, parts: Parts, device: str = "cpu", seed: int = 0, progress: bool = True,
          **settings: Any) -> Model:
    """Train registered model ``model`` on ``parts`` with the command line's defaults.

    ``settings``: training settings (:class:`graphrec.trainer.TrainConfig` fields: ``epochs``,
    ``lr``, ``batch_size``, ``num_negatives``, ``patience``, ...) and model options (the
    model's config fields: ``dim``, ``num_layers``, ...), by name. Early stopping runs on
    ``parts``' validation part when it has one.
    """
    name = canonical_name(model)
    torch.manual_seed(seed)
    train_values = {**model_train_defaults(name), "seed": seed, "progress": progress}
    train_values.update({k: v for k, v in settings.items() if k in _TRAIN_FIELDS})
    options = {k: v for k, v in settings.items() if k not in _TRAIN_FIELDS}
    cfg = model_config(name, options)
    train_cfg = TrainConfig(**checked(TrainConfig, train_values, "train: "))
    data = parts.data
    net = build_model(name, data.num_users, data.num_items, cfg).to(resolve_device(device))
    net.fit(parts.split.train)
    if net.trainable:
        train_model(net, parts.split, train_cfg, EvalConfig(progress=False))
    net.eval()
    config = {"model": name, "model_options": dataclasses.asdict(cfg),
              "train": dataclasses.asdict(train_cfg), "split": dataclasses.asdict(parts.config)}
    return Model(checkpoint_of(name, cfg, net, data, config))


def evaluate(model: Model, parts: Parts, ks: Sequence[int] = (10, 20), part: str = "test",
             metrics: Sequence[str] | None = None) -> dict[str, float]:
    """Full-ranking metrics of ``model`` on ``parts``' ``part`` (``test`` or ``valid``), as the
    command line computes them: ``{"recall@10": ..., "ndcg@20": ..., "users": ...}``."""
    cfg = EvalConfig(ks=tuple(ks), progress=False,
                     **({"metrics": tuple(metrics)} if metrics else {}))
    with torch.no_grad():
        return _evaluate(model.module, parts.split, part, cfg)


def save(model: Model, path: str | Path) -> None:
    """Write ``model`` as a checkpoint file (a run folder's ``model.pt``; loads without pickle)."""
    write_checkpoint(path, model.checkpoint)


def load_model(path: str | Path, device: str = "cpu") -> Model:
    """A saved model: a checkpoint file or a run folder written by ``graphrec train``."""
    return Model(load_checkpoint(path, resolve_device(device)))


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


__all__ = ["Model", "Parts", "evaluate", "from_pandas", "load", "load_model", "save", "split",
           "train"]
