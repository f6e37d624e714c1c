"""Turbo-CF (Park et al., "Turbo-CF: Matrix Decomposition-Free Graph Filtering for Fast
Recommendation", SIGIR 2024, https://arxiv.org/abs/2404.14243).

A polynomial low-pass filter of an item-item graph built with two regulating exponents and no
matrix decomposition::

    R_bar = D_U^-alpha R D_I^-(1 - alpha),    P_bar = (R_bar^T R_bar) ** power (elementwise)
    s     = r f(P_bar)

with ``f`` one of the paper's three filters: ``1``: ``P_bar``; ``2``: ``2 P_bar - P_bar^2``;
``3``: ``P_bar + 0.01 (-P_bar^3 + 10 P_bar^2 - 29 P_bar)`` (polynomial approximations of an
ideal low-pass filter). ``alpha = 1/2`` and ``power = 1`` give GF-CF's linear term. It is
:class:`~graphrec.models.poly_filter.PolyFilter` with these coefficients and exponents; the
paper's Gowalla setting is ``alpha = 0.6``, ``power = 0.7``, filter 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from graphrec.errors import GraphrecError
from graphrec.models.filters import FilterModel, ItemGraph, OperatorConfig, Rows, check_operator, horner

#: the paper's filters as coefficients [c_0, c_1, ...] of P_bar
FILTERS: dict[int, list[float]] = {1: [0.0, 1.0], 2: [0.0, 2.0, -1.0], 3: [0.0, 0.71, 0.1, -0.01]}


@dataclass
class TurboCFConfig(OperatorConfig):
    """Args:
        alpha: the normalization exponent: users ``D_U^-alpha``, items ``D_I^-(1 - alpha)``
            (it sets ``user_exp`` and ``item_exp``, which are ignored here).
        power: elementwise power of the item-item graph's entries.
        filter: 1, 2 or 3, the paper's polynomial filters (:data:`FILTERS`).

    Defaults chosen on validation parts of ml-100k and Gowalla (``benchmarks/graph_filter.py
    --parts defaults``): filter 1 with ``alpha`` 0.5 and ``power`` 0.7 is the best filter-1
    setting on both (the paper's Gowalla ``alpha`` 0.6 ties there and is 5% lower on ml-100k).
    Filter 2 needs ``power`` 1: with ``power`` 0.7 the eigenvalues of ``P_bar`` pass 1, where
    ``2 x - x^2`` turns negative, and ranking collapses.
    """

    alpha: float = 0.5
    power: float = 0.7
    filter: int = 1


class TurboCF(FilterModel):
    """Turbo-CF's decomposition-free polynomial filter; nothing is trained."""

    name = "turbo-cf"
    search_space = {"alpha": {"type": "float", "low": 0.3, "high": 0.8},
                    "power": {"type": "float", "low": 0.3, "high": 1.5},
                    "filter": {"type": "choice", "values": [1, 2, 3]}}

    def __init__(self, num_users: int, num_items: int, cfg: TurboCFConfig | None = None) -> None:
        cfg = cfg or TurboCFConfig()
        if cfg.filter not in FILTERS:
            raise GraphrecError(f"turbo-cf: filter must be 1, 2 or 3, got {cfg.filter!r}")
        if not 0 <= cfg.alpha <= 1:
            raise GraphrecError(f"turbo-cf: alpha must be in [0, 1], got {cfg.alpha}")
        cfg = dataclasses.replace(cfg, user_exp=cfg.alpha, item_exp=1.0 - cfg.alpha)
        check_operator(self.name, cfg, cfg.power)
        super().__init__(num_users, num_items, cfg)

    def filter_rows(self, rows: Rows, graph: ItemGraph) -> torch.Tensor:
        return horner(rows, graph, FILTERS[self.cfg.filter])
