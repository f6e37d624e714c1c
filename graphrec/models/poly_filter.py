"""A polynomial graph filter with the user's coefficients: design your own filter.

For a user's binary training row ``r`` the scores are::

    s = r (c_0 + c_1 P + c_2 P^2 + ... + c_d P^d),    P = (R~^T R~) ** power (elementwise)

over the shared item-item operator of :mod:`graphrec.models.filters` (``R~ = D_U^-a R D_I^-b``,
the exponents and the elementwise power are options). ``P``'s eigenvalues lie in ``[0, 1]`` at
the symmetric normalization and power 1, so a polynomial ``f`` is the frequency response
``f(lambda)``: ``[0, 1]`` (the default) is two hops of LightGCN-style propagation, the linear
low-pass filter of GF-CF; Turbo-CF's filters (:mod:`graphrec.models.turbo_cf`) are
``[0, 2, -1]`` and ``[0, 0.71, 0.1, -0.01]``. No decomposition and nothing trained: scoring is
Horner's scheme, ``d`` hops (the first from the sparse rows, the rest on dense states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from graphrec.errors import GraphrecError
from graphrec.models.filters import FilterModel, ItemGraph, OperatorConfig, Rows, check_operator, horner


def check_coefficients(name: str, coefficients: tuple[float, ...] | list[float]) -> list[float]:
    """The coefficients as floats; one-line errors when empty or not finite."""
    if not isinstance(coefficients, (list, tuple)) or not coefficients:
        raise GraphrecError(f"{name}: coefficients must be a non-empty list [c_0, c_1, ...], "
                            f"got {coefficients!r}")
    try:
        values = [float(c) for c in coefficients]
    except (TypeError, ValueError):
        raise GraphrecError(f"{name}: coefficients must be numbers, got {coefficients!r}") from None
    if not all(math.isfinite(c) for c in values):
        raise GraphrecError(f"{name}: coefficients must be finite, got {coefficients!r}")
    while len(values) > 1 and values[-1] == 0:  # trailing zeros add hops, not terms
        values.pop()
    return values


@dataclass
class PolyFilterConfig(OperatorConfig):
    """Args:
        coefficients: ``[c_0, c_1, ..., c_d]``, the filter ``c_0 + c_1 P + ... + c_d P^d``.
        power: elementwise power of ``P``'s entries (1: ``P`` itself).

    The operator's options (``user_exp``, ``item_exp``, ``gram``, ``max_memory_gb``,
    ``threads``) are :class:`~graphrec.models.filters.OperatorConfig`'s."""

    coefficients: tuple[float, ...] = (0.0, 1.0)
    power: float = 1.0


class PolyFilter(FilterModel):
    """``r f(P)`` for a polynomial ``f`` given by its coefficients; nothing is trained."""

    name = "poly-filter"
    #: ``graphrec tune``: the operator's normalization and elementwise power (the coefficients
    #: are the user's design)
    search_space = {"user_exp": {"type": "float", "low": 0.3, "high": 0.8},
                    "power": {"type": "float", "low": 0.5, "high": 1.5}}

    def __init__(self, num_users: int, num_items: int, cfg: PolyFilterConfig | None = None) -> None:
        cfg = cfg or PolyFilterConfig()
        self.coefficients = check_coefficients(self.name, cfg.coefficients)
        check_operator(self.name, cfg, cfg.power)
        super().__init__(num_users, num_items, cfg)

    def filter_rows(self, rows: Rows, graph: ItemGraph) -> torch.Tensor:
        return horner(rows, graph, self.coefficients)
