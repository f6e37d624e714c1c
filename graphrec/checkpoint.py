"""Run checkpoints: everything ``recommend`` needs in one file, loaded without pickled code.

A checkpoint holds the model's name, config and state, the id maps, every known interaction
of each user (so recommendations never repeat them) and item titles when the data has them.
It is written atomically and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graphrec.data.graph import Dataset, IdMap, ids_from_saved, ids_to_saved, user_sequences
from graphrec.errors import GraphrecError
from graphrec.models import build_model, model_config
from graphrec.models.base import Recommender
from graphrec.utils import atomic_torch_save, load_artifact

FORMAT = "graphrec-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "model.pt"


@dataclass
class Checkpoint:
    """A loaded checkpoint: a ready model plus what serving needs around it."""

    model_name: str
    model: Recommender
    users: IdMap
    items: IdMap
    seen: tuple[torch.Tensor, torch.Tensor]  # CSR (ptr [U + 1], items) of all known interactions
    titles: list[str] | None
    config: dict[str, Any]
    path: Path | None = None  # the checkpoint file it was loaded from
    model_config: Any = None  # the model's config dataclass
    #: the data's side-feature descriptions per node type: each feature's type and, for
    #: token and multi-hot features, its vocabulary (raw value of each code)
    features: dict[str, Any] = field(default_factory=dict)
    #: ``[num_items, F]`` content the onboarding list diversifies by (the items' genres, else
    #: their text embeddings), or ``None``
    item_content: torch.Tensor | None = None


def item_titles(ds: Dataset) -> list[str] | None:
    """The item text feature that reads as a title (name containing 'title' or 'name')."""
    texts = [name for name, info in ds.meta.get("features", {}).get("item", {}).items()
             if isinstance(info, dict) and info.get("type") == "text"]
    named = [t for t in texts if "title" in t.lower() or "name" in t.lower()]
    if not named:
        return None
    return [str(t) for t in ds.graph["item"][named[0]]]


def item_content(ds: Dataset) -> torch.Tensor | None:
    """The items' first multi-hot feature (genres), else their ``text_emb`` (float16), else
    ``None``: what a new user's onboarding list is diversified by."""
    store = ds.graph["item"]
    for name, info in ds.meta.get("features", {}).get("item", {}).items():
        if isinstance(info, dict) and info.get("type") == "multi_hot" and name in store:
            return store[name].float()
    if "text_emb" in store:
        return store["text_emb"].half()
    return None


def checkpoint_of(model_name: str, model_cfg: Any, model: Recommender, ds: Dataset,
                  config: dict[str, Any]) -> Checkpoint:
    """The in-memory checkpoint of ``model`` trained on ``ds``: what a saved one loads as."""
    return Checkpoint(model_name, model, ds.users, ds.items, user_sequences(ds.graph),
                      item_titles(ds), config, model_config=model_cfg,
                      features=ds.meta.get("features", {}), item_content=item_content(ds))


def save_checkpoint(path: str | Path, model_name: str, model_cfg: Any, model: Recommender,
                    ds: Dataset, config: dict[str, Any]) -> None:
    """Write a checkpoint for ``model`` trained on ``ds`` (atomically); a model with non-finite
    weights is refused, never saved."""
    write_checkpoint(path, checkpoint_of(model_name, model_cfg, model, ds, config))


def write_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically."""
    state = {k: v.detach().cpu() for k, v in ckpt.model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise GraphrecError(f"{path}: not saved: the model's {bad[0]} has non-finite values")
    seen_ptr, seen_items = ckpt.seen
    atomic_torch_save(path, {
        "format": FORMAT, "version": VERSION, "model": ckpt.model_name,
        "model_config": json.dumps(dataclasses.asdict(ckpt.model_config)),
        "num_users": len(ckpt.users), "num_items": len(ckpt.items), "state": state,
        "user_ids": ids_to_saved(ckpt.users), "item_ids": ids_to_saved(ckpt.items),
        "seen_ptr": seen_ptr.cpu(), "seen_items": seen_items.cpu().clone(),
        "titles": ckpt.titles, "config": json.dumps(ckpt.config),
        "features": json.dumps(ckpt.features),
        "item_content": None if ckpt.item_content is None else ckpt.item_content.cpu(),
    })


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint and rebuild its model on ``device``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    blob = load_artifact(path, FORMAT, "graphrec checkpoint",
                         "no such checkpoint (is it a graphrec run folder?)")
    if blob.get("version") != VERSION:
        raise GraphrecError(f"{path}: checkpoint version {blob.get('version')} is not supported")
    cfg = model_config(blob["model"], json.loads(blob["model_config"]))
    model = build_model(blob["model"], blob["num_users"], blob["num_items"], cfg)
    model.load_state_dict(blob["state"])
    return Checkpoint(blob["model"], model.to(device), ids_from_saved(blob["user_ids"]),
                      ids_from_saved(blob["item_ids"]),
                      (blob["seen_ptr"], blob["seen_items"]), blob["titles"],
                      json.loads(blob["config"]), path, cfg,
                      json.loads(blob.get("features", "{}")), blob.get("item_content"))


__all__ = ["Checkpoint", "CHECKPOINT_NAME", "checkpoint_of", "save_checkpoint", "write_checkpoint",
           "load_checkpoint", "item_titles", "item_content"]
