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

__all__ = ["recommend", "recommend_new", "onboarding", "INDEXES"]

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


#: the onboarding list: MMR over the ``ONBOARD_POOL`` most popular items with this lambda
ONBOARD_POOL = 200
ONBOARD_LAM = 0.7


def onboarding(ckpt: Checkpoint, k: int = 10, lam: float = ONBOARD_LAM,
               pool: int = ONBOARD_POOL) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user with no items gets: the ``pool`` most popular items (training counts),
    diversified by MMR (:func:`graphrec.serve.rerank.mmr`, ``lam``) over the items' genres or
    text embeddings (``ckpt.item_content``; plain popularity without it). ``([k], [k])``
    item indices and popularity counts."""
    from graphrec.serve.rerank import mmr

    counts = torch.bincount(ckpt.seen[1], minlength=len(ckpt.items)).float()
    values, top = torch.topk(counts, min(pool, counts.numel()))
    k = min(k, top.numel())
    if ckpt.item_content is None or lam >= 1:
        return top[:k], values[:k]
    pos = mmr(values.unsqueeze(0), ckpt.item_content[top].float().unsqueeze(0), k, lam)[0]
    pos = pos[pos >= 0]
    return top[pos], values[pos]


@torch.no_grad()
def recommend_new(ckpt: Checkpoint, history: History, k: int = 10, fold_in: str = "mean",
                  include_given: bool = False, scorer: object | None = None,
                  users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` items for users the run was not trained on, from the items each one gives
    (``history``, one row per user, dense item indices): ``([B, k], [B, k])``, -1 / -inf
    padded. A row with items goes through the model's new-user path
    (:class:`~graphrec.models.coldstart.NewUsers`: fold-in, or the model reading the history);
    the given items are excluded unless ``include_given``. An empty row gets the
    :func:`onboarding` list. ``users``: dense indices when the users are nodes of the data
    (their side features count), else ``None``."""
    from graphrec.models.coldstart import NewUsers

    if k < 1:
        raise GraphrecError(f"-k: must be at least 1, got {k}")
    B = history.num_rows
    items = torch.full((B, k), -1, dtype=torch.long)
    scores = torch.full((B, k), float("-inf"))
    counts = history.ptr.diff().cpu()
    given = torch.nonzero(counts > 0).flatten()
    if given.numel():
        device = device_of(ckpt.model)
        sub = History.of(history.ptr, history.items, given.to(history.ptr.device))
        sub = History(sub.ptr.to(device), sub.items.to(device))
        u = users[given].to(device) if users is not None else torch.zeros(given.numel(),
                                                                           dtype=torch.long,
                                                                           device=device)
        new = NewUsers(ckpt.model, fold_in, outside=users is None, scorer=scorer)
        s = new.score(u, sub).float().clone()  # [G, I]
        ex = (sub.ptr, sub.items) if not include_given else (
            torch.zeros(given.numel() + 1, dtype=torch.long, device=device),
            torch.zeros(0, dtype=torch.long, device=device))
        values, top = topk_excluding(s, torch.arange(given.numel(), device=device), ex, k,
                                     inplace=True)
        top = top.where(torch.isfinite(values), -1)
        items[given, :top.size(1)], scores[given, :top.size(1)] = top.cpu(), values.cpu()
    if given.numel() < B:
        top, values = onboarding(ckpt, k)
        empty = torch.nonzero(counts == 0).flatten()
        items[empty, :top.numel()], scores[empty, :top.numel()] = top, values
    return items, scores
