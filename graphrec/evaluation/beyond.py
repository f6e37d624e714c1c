"""Beyond-accuracy metrics of top-K lists: coverage, intra-list diversity, novelty, Gini.

Every function takes ``topk [B, K]``, the item indices of ``B`` users' lists with ``-1``
padding (lists may be shorter than ``K``), and returns one Python float. All are vectorized
over users and list positions. Averages over users skip lists too short to have a value
(empty lists; lists of one item for diversity) and are ``nan`` when no list has one.

Relation to PyG's ``torch_geometric.metrics`` (tested in ``tests/test_beyond_metrics.py``):
:func:`coverage` equals ``LinkPredCoverage``; :func:`intra_list_diversity` with one-hot
category vectors equals ``LinkPredDiversity`` (whose similarity is 1 for a shared category);
:func:`novelty` equals ``LinkPredAveragePopularity`` given each item's self-information as
its "popularity". PyG's metrics assume full lists (no ``-1`` padding), hence these versions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphrec.errors import GraphrecError

__all__ = ["coverage", "intra_list_diversity", "novelty", "gini"]

# Users per chunk of intra-list diversity are chosen to keep [b, K, F] near this many values.
_CHUNK_VALUES = 1 << 22


def _valid(topk: Tensor, num_items: int, name: str) -> Tensor:
    """``topk >= 0``, after checking the shape and that indices lie in ``[-1, num_items)``."""
    if topk.dim() != 2:
        raise GraphrecError(f"{name}: topk must be [B, K] item indices, got shape {list(topk.shape)}")
    if topk.is_floating_point() or topk.dtype == torch.bool:
        raise GraphrecError(f"{name}: topk must hold integer item indices, got {topk.dtype}")
    if num_items <= 0:
        raise GraphrecError(f"{name}: num_items must be positive, got {num_items}")
    if topk.numel() and (int(topk.min()) < -1 or int(topk.max()) >= num_items):
        raise GraphrecError(f"{name}: item indices must lie in [0, {num_items}) or be -1 (padding), "
                            f"got range [{int(topk.min())}, {int(topk.max())}]")
    return topk >= 0


def coverage(topk: Tensor, num_items: int) -> float:
    """Catalogue coverage: the fraction of the ``num_items`` items that appear in at least one
    list, ``|union of lists| / num_items`` (0 for no lists)."""
    valid = _valid(topk, num_items, "coverage")
    shown = torch.zeros(num_items, dtype=torch.bool, device=topk.device)
    shown[topk[valid]] = True
    return float(shown.sum()) / num_items


def intra_list_diversity(topk: Tensor, item_vecs: Tensor) -> float:
    r"""Intra-list diversity (Ziegler et al., WWW 2005): the mean over users of

    .. math::
        \mathrm{ILD}_u = \frac{2}{n_u (n_u - 1)} \sum_{i < j} \bigl(1 - \cos(v_{l_i}, v_{l_j})\bigr)

    over the pairs of positions of the user's list (``n_u`` valid items; lists with fewer
    than 2 are skipped). ``item_vecs [num_items, F]`` are embeddings or multi-hot features
    (genres: the cosine is then the overlap of the genre sets); a zero vector has cosine 0
    with everything. A repeated item counts as a pair at distance 0.
    """
    if item_vecs.dim() != 2:
        raise GraphrecError(f"intra_list_diversity: item_vecs must be [num_items, F], "
                            f"got shape {list(item_vecs.shape)}")
    valid = _valid(topk, item_vecs.size(0), "intra_list_diversity")
    vec = torch.nn.functional.normalize(item_vecs.to(topk.device).double(), dim=1)
    B, K = topk.shape
    upper = torch.ones(K, K, dtype=torch.bool, device=topk.device).triu(1)  # pairs i < j
    chunk = max(1, _CHUNK_VALUES // max(1, K * vec.size(1)))
    total, users = 0.0, 0
    for s in range(0, B, chunk):  # chunks of users bound the [b, K, F] gather, not a per-user loop
        t, m = topk[s:s + chunk], valid[s:s + chunk]
        v = vec[t.clamp(min=0)]  # [b, K, F]
        dist = 1.0 - v @ v.transpose(1, 2)  # [b, K, K]
        pair = upper & m[:, :, None] & m[:, None, :]
        n_pairs = pair.sum((1, 2))
        has = n_pairs > 0
        per_user = (dist * pair).sum((1, 2))[has] / n_pairs[has]
        total += float(per_user.sum())
        users += int(has.sum())
    return total / users if users else math.nan


def novelty(topk: Tensor, item_popularity: Tensor, num_users: int) -> float:
    r"""Mean self-information of the recommended items (Zhou et al., PNAS 2010): the mean over
    users of the mean over the list of

    .. math::
        -\log_2 p_i, \qquad p_i = \min\bigl(1, \max(c_i, 1) / N\bigr)

    with ``c_i = item_popularity[i]`` the item's training interaction count (users who
    interacted with it, for deduplicated interactions) and ``N = num_users``. Items never seen
    in training count as seen by one user (``p = 1 / N``, the most novel an item can be);
    ``p`` is capped at 1 (novelty 0) where repeated interactions make ``c_i > N``. Higher is
    more novel, i.e. less popular. Empty lists are skipped.
    """
    if item_popularity.dim() != 1:
        raise GraphrecError(f"novelty: item_popularity must be [num_items], "
                            f"got shape {list(item_popularity.shape)}")
    if num_users <= 0:
        raise GraphrecError(f"novelty: num_users must be positive, got {num_users}")
    if item_popularity.numel() and float(item_popularity.min()) < 0:
        raise GraphrecError("novelty: item_popularity must be non-negative counts")
    valid = _valid(topk, item_popularity.numel(), "novelty")
    p = (item_popularity.to(topk.device).double().clamp(min=1) / num_users).clamp(max=1)
    info = -torch.log2(p)[topk.clamp(min=0)] * valid  # [B, K]
    n = valid.sum(1)
    has = n > 0
    if not bool(has.any()):
        return math.nan
    return float((info.sum(1)[has] / n[has]).mean())


def gini(topk: Tensor, num_items: int) -> float:
    r"""Gini index of item exposure over the whole catalogue. The exposure ``x_i`` of item
    ``i`` is the number of lists it appears in (items never shown have ``x_i = 0``); with
    ``x_{(1)} \le \dots \le x_{(n)}`` sorted and ``n = num_items``,

    .. math::
        G = \frac{\sum_{i=1}^{n} (2i - n - 1)\, x_{(i)}}{n \sum_i x_i}
          = \frac{\sum_{i,j} |x_i - x_j|}{2 n^2 \bar x}

    0 when every item is shown equally often, at most ``1 - 1/n`` when one item takes all the
    exposure; ``nan`` when nothing is shown.
    """
    valid = _valid(topk, num_items, "gini")
    rows = torch.arange(topk.size(0), device=topk.device)[:, None].expand_as(topk)
    # one count per (list, item): a repeated item is one exposure of that list
    pairs = torch.unique(rows[valid] * num_items + topk[valid])
    x = torch.bincount(pairs % num_items, minlength=num_items).double()
    total = x.sum()
    if float(total) == 0:
        return math.nan
    x, _ = torch.sort(x)
    i = torch.arange(1, num_items + 1, dtype=torch.float64, device=x.device)
    return float(((2 * i - num_items - 1) * x).sum() / (num_items * total))
