"""Stage 1 of a pipeline: candidates from several retrievers, fused into one list per user.

Each retriever scores every item for a batch of users (exactly, from its model; an item index
serves the same lists approximately), seen items excluded, and keeps its top ``depth``. The
lists are fused by union in round-robin order: position 0 of every retriever in config order,
then position 1, and so on, each retriever contributing at most its ``quota`` items, an item
kept where it first appears, until ``n`` candidates. Every candidate then carries every
retriever's score and rank, also for the items another retriever brought in, so a ranker can
weigh them. All of it is tensor work over the batch: no loop over users or candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import topk_excluding


@dataclass
class Candidates:
    """One batch of fused candidate lists.

    ``items [B, N]`` (item indices, -1 where a row has fewer than ``N``), ``scores [B, N, R]``
    (retriever ``r``'s score of each candidate), ``ranks [B, N, R]`` (its 0-based rank in
    retriever ``r``'s list, ``depth`` when outside it), ``source [B, N]`` (the retriever that
    brought it in), ``depth`` (the length of each retriever's list).
    """

    items: Tensor
    scores: Tensor
    ranks: Tensor
    source: Tensor
    depth: int

    @property
    def mask(self) -> Tensor:
        """``[B, N]``: True at real candidates."""
        return self.items >= 0

    def take(self, order: Tensor) -> "Candidates":
        """The candidates reordered (or cut) by positions ``order [B, M]`` (-1: a pad)."""
        idx = order.clamp(min=0)
        pad = order < 0
        items = self.items.gather(1, idx).masked_fill(pad, -1)
        r = self.scores.size(2)
        return Candidates(items, self.scores.gather(1, idx[..., None].expand(-1, -1, r)),
                          self.ranks.gather(1, idx[..., None].expand(-1, -1, r)),
                          self.source.gather(1, idx).masked_fill(pad, -1), self.depth)


def fuse(lists: list[Tensor], quotas: list[int], n: int) -> tuple[Tensor, Tensor]:
    """Union of ranked lists ``[B, D_r]`` (item indices, -1 pads) in round-robin order, at most
    ``quotas[r]`` items from list ``r``, the first ``n`` distinct items of each row.

    Returns ``(items [B, n], source [B, n])``, -1 where a row has fewer distinct items.
    """
    if len(lists) != len(quotas) or not lists:
        raise GraphrecError("candidates: one quota per retriever")
    num = len(lists)
    items, keys, source = [], [], []
    for r, (top, q) in enumerate(zip(lists, quotas)):
        top = top[:, :q]
        pos = torch.arange(top.size(1), device=top.device)
        items.append(top)
        keys.append((pos * num + r).expand_as(top))  # round robin: position first, then list
        source.append(torch.full_like(top, r))
    item = torch.cat(items, 1)
    key = torch.cat(keys, 1)
    src = torch.cat(source, 1)
    big = int(key.max()) + 1 if key.numel() else 1
    invalid = item < 0
    # Within each row, an item's first appearance has the smallest key: sort by (item, key)
    # and keep the head of each run of equal items.
    combined = torch.where(invalid, torch.full_like(item, -1), item) * big + key
    order = torch.argsort(combined, dim=1, stable=True)
    sorted_item = item.gather(1, order)
    first = torch.ones_like(sorted_item, dtype=torch.bool)
    first[:, 1:] = sorted_item[:, 1:] != sorted_item[:, :-1]
    keep = torch.zeros_like(first).scatter_(1, order, first) & ~invalid
    # The kept entries in key order, the first n of them.
    rank_key = torch.where(keep, key, torch.full_like(key, big))
    width = min(n, item.size(1))
    chosen_key, pos = torch.topk(rank_key, width, dim=1, largest=False, sorted=True)
    out_items = item.gather(1, pos).masked_fill(chosen_key == big, -1)
    out_src = src.gather(1, pos).masked_fill(chosen_key == big, -1)
    if width < n:  # pad to n columns
        pad = torch.full((item.size(0), n - width), -1, dtype=item.dtype, device=item.device)
        out_items, out_src = torch.cat([out_items, pad], 1), torch.cat([out_src, pad], 1)
    return out_items, out_src


@torch.no_grad()
def retrieve(scorers: list, users: Tensor, exclude: tuple[Tensor, Tensor], quotas: list[int],
             n: int, histories: list[History | None] | None = None,
             indexes: list[Any] | None = None) -> Candidates:
    """Fused candidates of ``users [B]`` from ``scorers`` (anything with ``score(users,
    history)``), items in ``exclude`` (a CSR over all users) never returned.

    ``histories[r]``: the history retriever ``r`` scores from (``None`` for models that read
    none). ``indexes[r]``: an item index over retriever ``r``'s item vectors
    (:class:`graphrec.serve.index.ItemIndex`; the retriever is then a ``Retriever``): its list
    comes from the index, and its scores of every candidate are exact inner products of the
    user's vector with the candidates' vectors. Each retriever keeps its top ``max(n, quota)``
    for the rank features.
    """
    if n <= 0:
        raise GraphrecError(f"candidates: n must be positive, got {n}")
    histories = histories or [None] * len(scorers)
    indexes = indexes or [None] * len(scorers)
    tops, full = [], []
    depth = max([n] + list(quotas))
    for scorer, hist, index in zip(scorers, histories, indexes):
        if index is not None:
            query = scorer.user_vectors(users, hist)
            values, top = index.search(query, min(depth, index.num_items),
                                       History.of(exclude[0], exclude[1], users))
            top = top.masked_fill(~torch.isfinite(values), -1)
            tops.append(top)
            full.append((query, scorer.item_vectors(), top))
            continue
        scores = scorer.score(users) if hist is None else scorer.score(users, hist)
        scores = scores.float()
        d = min(depth, scores.size(1))
        values, top = topk_excluding(scores.clone(), users, exclude, d, inplace=True)
        top = top.masked_fill(~torch.isfinite(values), -1)
        tops.append(top)
        full.append((scores, None, top))
    items, source = fuse(tops, quotas, n)
    safe = items.clamp(min=0)
    score_cols, rank_cols = [], []
    for scores, item_vecs, top in full:
        if item_vecs is None:
            score_cols.append(scores.gather(1, safe))
        else:  # the user's vector against each candidate's
            score_cols.append(torch.einsum("bf,bnf->bn", scores, item_vecs[safe]).float())
        # ranks by a sort of each list's items: no [B, num_items] table
        rank_cols.append(_ranks(top, safe, depth))
    return Candidates(items, torch.stack(score_cols, 2), torch.stack(rank_cols, 2), source, depth)


def _ranks(top: Tensor, items: Tensor, depth: int) -> Tensor:
    """The position of each of ``items [B, N]`` in the ranked list ``top [B, D]`` (``depth``
    where absent), by a sorted search per row."""
    big = torch.iinfo(torch.long).max
    keyed = torch.where(top >= 0, top, torch.full_like(top, big))
    sorted_items, order = torch.sort(keyed, dim=1)
    pos = torch.searchsorted(sorted_items, items.contiguous()).clamp(max=top.size(1) - 1)
    found = sorted_items.gather(1, pos) == items
    return torch.where(found, order.gather(1, pos).float(), torch.full_like(items, depth, dtype=torch.float))


__all__ = ["Candidates", "fuse", "retrieve"]
