"""Top-K metrics from a ranked hit matrix, vectorized over users.

Given ``hits [B, K]`` (``hits[u, r]`` is whether the item at rank ``r`` of user ``u``'s list is
relevant) and ``n_rel [B]`` (how many relevant items the user has), each function returns the
per-user value at cut-off ``k``, in float64 (row by row, so a user's value does not depend on
the batch it is computed in). Conventions (the LightGCN papers' protocol):

* Recall@K = hits in top K / |relevant| (not min(|relevant|, K)).
* Precision@K = hits in top K / K, also when fewer than K items could be ranked.
* NDCG@K: binary relevance, DCG = sum 1/log2(rank + 2), ideal DCG over min(|relevant|, K).
* MAP@K: sum over hit ranks of precision at that rank, / min(|relevant|, K).
* HitRate@K: 1 when any of the top K is relevant. MRR@K: 1 / (rank of the first hit + 1), else 0.
"""

from __future__ import annotations

import torch

RANKING_METRICS = ("recall", "precision", "ndcg", "map", "hit", "mrr")
RATING_METRICS = ("rmse", "mae")


def _top(hits: torch.Tensor, k: int) -> torch.Tensor:
    h = hits[:, :k].double()
    if h.size(1) < k:  # fewer than k items could be ranked: the missing ranks are misses
        h = torch.nn.functional.pad(h, (0, k - h.size(1)))
    return h


def recall(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Hits in the top ``k`` over the number of relevant items."""
    return _top(hits, k).sum(1) / n_rel.double()


def precision(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Hits in the top ``k`` over ``k``."""
    return _top(hits, k).sum(1) / k


def ndcg(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """Binary-relevance NDCG with the ideal DCG over ``min(n_rel, k)`` relevant items."""
    h = _top(hits, k)
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64, device=h.device) + 2)
    dcg = (h * discount).sum(1)
    ideal = torch.cumsum(discount, 0)[(n_rel.clamp(min=1, max=k) - 1).long()]
    return dcg / ideal


def average_precision(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """AP@k: mean of precision at each hit rank, normalized by ``min(n_rel, k)``."""
    h = _top(hits, k)
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=h.device)
    prec_at = torch.cumsum(h, 1) / ranks
    return (prec_at * h).sum(1) / n_rel.clamp(max=k).double()


def hit_rate(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """1 when any of the top ``k`` is relevant."""
    return (_top(hits, k).sum(1) > 0).double()


def reciprocal_rank(hits: torch.Tensor, n_rel: torch.Tensor, k: int) -> torch.Tensor:
    """1 / (rank of the first relevant item + 1) within the top ``k``, else 0."""
    h = _top(hits, k)
    first = torch.argmax(h, 1).double()
    return torch.where(h.sum(1) > 0, 1.0 / (first + 1), torch.zeros_like(first))


METRIC_FUNCTIONS = {
    "recall": recall,
    "precision": precision,
    "ndcg": ndcg,
    "map": average_precision,
    "hit": hit_rate,
    "mrr": reciprocal_rank,
}
