"""Training-free graph filter (GF-CF: Shen et al., "How Powerful is Graph Convolution for
Recommendation?", CIKM 2021, https://arxiv.org/abs/2108.07567).

For a user with binary training row ``r_u`` the scores of all items are::

    s_u = r_u P  +  alpha * r_u D_I^-1/2 V V^T D_I^1/2,    P = R~^T R~

with ``R~ = D_U^-1/2 R D_I^-1/2`` the symmetric normalization of the user-item training matrix
(the normalization LightGCN propagates with; the exponents are options of the shared operator,
:mod:`graphrec.models.filters`) and ``V`` its top-``k`` right singular vectors.

The link to LightGCN: one LightGCN hop from items to users and back multiplies by ``P``, so the
first term is two hops of propagation over the normalized graph without any embedding or
training, a linear low-pass filter. Stacking many hops keeps only the largest singular
directions of ``R~``; the second term is that many-layer limit, an ideal low-pass filter onto
the top-``k`` singular subspace, taken in closed form.

Fitting builds the operator (:class:`~graphrec.models.filters.ItemGraph`) and a truncated SVD
(:func:`~graphrec.models.filters.top_singular`: randomized by default, deterministic under
``seed``). Scoring is one hop of the sparse rows through ``P`` and two thin dense products for
the low-pass term. What is saved is the training graph and ``V``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphrec.errors import GraphrecError
from graphrec.models.filters import (
    SVD_METHODS, FilterModel, ItemGraph, OperatorConfig, Rows, add_low_rank, auto_k,
    check_operator, check_svd, choose_dtype, resolve_k, top_singular)

__all__ = ["GraphFilter", "GraphFilterConfig", "SVD_METHODS", "auto_k"]


@dataclass
class GraphFilterConfig(OperatorConfig):
    """Args:
        alpha: weight of the ideal low-pass term (0: the linear filter alone).
        k: number of singular vectors in the ideal low-pass term (0: none; ``None``, the
            default: :func:`~graphrec.models.filters.auto_k` of the graph's size,
            min(users, items) / 32 as a power of two between 16 and 256: 32 on ml-100k, 256 on
            Gowalla). More than min(users, items) is an error.
        svd: ``"randomized"`` (``torch.svd_lowrank``), ``"lanczos"`` (ARPACK) or ``"exact"``
            (dense, small graphs).
        oversample, niter: randomized SVD's extra columns and power iterations.
        seed: seed of the randomized SVD (and of Lanczos's start vector).

    The operator's options (``user_exp``, ``item_exp``, ``gram``, ``max_memory_gb``,
    ``threads``) are :class:`~graphrec.models.filters.OperatorConfig`'s.
    """

    alpha: float = 0.3
    k: int | None = None
    svd: str = "randomized"
    oversample: int = 64
    niter: int = 4
    seed: int = 0


class GraphFilter(FilterModel):
    """Closed-form low-pass filtering of the user-item graph; nothing is trained."""

    name = "graph-filter"
    #: ``graphrec tune``: the ideal low-pass term's weight and rank
    search_space = {"alpha": {"type": "float", "low": 0.0, "high": 1.0},
                    "k": {"type": "int", "low": 16, "high": 512, "log": True}}

    def __init__(self, num_users: int, num_items: int, cfg: GraphFilterConfig | None = None) -> None:
        cfg = cfg or GraphFilterConfig()
        if not cfg.alpha >= 0:
            raise GraphrecError(f"graph-filter: alpha must be >= 0, got {cfg.alpha}")
        check_svd(self.name, cfg.k, cfg.svd, cfg.oversample, cfg.niter)
        check_operator(self.name, cfg)
        super().__init__(num_users, num_items, cfg)
        self.register_buffer("basis", torch.zeros(num_items, 0))  # V [I, k]
        self.low: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit_filter(self, graph: ItemGraph) -> None:
        k = resolve_k(self.name, self.cfg.k, self.num_users, self.num_items)
        self.basis = top_singular(graph, k, self.cfg.svd, self.cfg.oversample, self.cfg.niter,
                                  self.cfg.seed)[0]

    def prepare(self, graph: ItemGraph) -> None:
        self.low = None
        if self.basis.size(1) and self.cfg.alpha:
            low_in, low_out = self.ideal_factors(self.basis, graph)
            self.low = (low_in, low_out.to(choose_dtype(self.cfg.dtype, graph.device,
                                                          low_out.size(0))))

    def filter_rows(self, rows: Rows, graph: ItemGraph) -> torch.Tensor:
        scores = graph.hop_rows(rows)  # [B, I]
        if self.low is not None:
            low_in, low_out = self.low
            add_low_rank(scores, rows.times(low_in), low_out, self.cfg.alpha)
        return scores
