"""Top-k items for users of a trained run, from its checkpoint: exact scoring of every item, or
a search of an item index of a retriever's vectors (:mod:`graphrec.serve.index`). The
``recommend`` command line and the Python API serve from here."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from graphrec.batches import History
from graphrec.checkpoint import Checkpoint
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import device_of, topk_excluding
from graphrec.models.base import Retriever
from graphrec.names import INDEX_KINDS
from graphrec.serve.index import IndexConfig, retriever_index

log = logging.getLogger("graphrec.recommend")  # the command's name, which users see

#: ``recommend(index=...)`` and ``--index``: exact scoring of all items, or an item index;
#: ``faiss`` is the earlier name of ``flat``
INDEXES = INDEX_KINDS + ("faiss",)


@torch.no_grad()
def recommend(ckpt: Checkpoint, users: torch.Tensor, k: int = 10, include_seen: bool = False,
              batch: int = 1024, index: str = "exact", index_config: IndexConfig | None = None,
              index_dir: str | Path | None = None, scorer: object | None = None,
              item_index: object | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` item indices and scores for dense ``users``: ``([B, k], [B, k])``.

    Sequence models score from the user's every known interaction, in time order (the
    checkpoint's seen items). Seen items are excluded unless ``include_seen``; when a user has
    fewer than ``k`` unseen items, the list is shorter (those slots hold index -1 and score
    -inf).

    Args:
        ckpt: a loaded checkpoint.
        users: dense user indices ``[B]``.
        k: items per user.
        include_seen: also recommend items the user has interacted with.
        batch: users scored (or searched) at once.
        index: ``"exact"`` scores every item with the model; ``flat``, ``ivf``, ``ivfpq``,
            ``hnsw`` search an item index over a retriever's item vectors (models that are not
            retrievers fall back to exact scoring with a warning).
        index_config: the index settings (default: :class:`IndexConfig` of ``index``).
        index_dir: where the index is saved and looked for (default: none, built in memory).
        scorer: the model's ``scorer()``, when the caller holds one across calls (a server:
            the graph family's scorer propagates over the whole graph).
        item_index: a built index of that scorer's item vectors, held the same way (then
            ``index`` names its kind).
    """
    if k < 1:
        raise GraphrecError(f"-k: must be at least 1, got {k}")
    if index not in INDEXES:
        raise GraphrecError(f"--index: unknown index {index!r}; choose one of {', '.join(INDEXES)}")
    index = "flat" if index == "faiss" else index
    model = ckpt.model
    empty = (torch.zeros(model.num_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    exclude = empty if include_seen else ckpt.seen
    device = device_of(model)
    scorer = model.scorer() if scorer is None else scorer
    if index != "exact" and item_index is None:
        if isinstance(scorer, Retriever):
            cfg = index_config or IndexConfig(kind=index)
            if cfg.kind != index:
                raise GraphrecError(f"--index: {index} asked for, settings of {cfg.kind} given")
            item_index = retriever_index(scorer, cfg, index_dir)
        else:
            log.warning("--index %s: model %s does not score by inner products of user and item "
                        "vectors; using exact scoring", index, ckpt.model_name)
    seen = (ckpt.seen[0].to(device), ckpt.seen[1].to(device))
    ex = (exclude[0].to(device), exclude[1].to(device))
    items, scores = [], []
    for s in range(0, users.numel(), batch):
        u = users[s:s + batch].to(device)
        # sequence models: the next items after all known ones
        h = History.of(*seen, u) if model.uses_history else None
        if item_index is not None:
            values, top = item_index.search(scorer.user_vectors(u, h), k, History.of(*ex, u))
        else:
            scores_b = (scorer.score(u) if h is None else scorer.score(u, h)).float().clone()
            values, top = topk_excluding(scores_b, u.to(scores_b.device), ex, k, inplace=True)
            top = top.where(torch.isfinite(values), -1)
        items.append(top.cpu())
        scores.append(values.cpu())
    return torch.cat(items), torch.cat(scores)
