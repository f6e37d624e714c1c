"""SLIM: sparse linear methods (Ning & Karypis, "SLIM: Sparse Linear Methods for Top-N
Recommender Systems", ICDM 2011).

A sparse, non-negative item-item matrix ``W`` with a zero diagonal that reconstructs the binary
training matrix ``X [U, I]`` from itself, under an elastic net::

    min_W  1/2 |X - X W|_F^2 + l2/2 |W|_F^2 + l1 |W|_1    s.t.  W >= 0,  diag(W) = 0

and a user with row ``r_u`` scores ``s_u = r_u W``. EASE (:mod:`graphrec.models.ease`) is the
same problem with ``l1 = 0`` and no sign constraint, which has a closed form; the l1 term and
``W >= 0`` make ``W`` sparse and need an iterative solver.

The paper solves one elastic net per item column by coordinate descent; here all columns are
solved at once by FISTA (Beck & Teboulle, 2009), accelerated proximal gradient on the whole
matrix: with ``G = X^T X`` the gradient of the smooth part is ``(G + l2 I) W - G``, a dense
``[I, I]`` matrix product per step, and the proximal step of ``l1 |W|_1`` under the constraints
is elementwise, ``max(0, V - l1 / L)`` with the diagonal set to 0 (``L = lambda_max(G) + l2``,
the gradient's Lipschitz constant, by power iteration). The objective is strongly convex
(``l2 > 0``), so the solution is unique and every column is the paper's elastic net. Memory is a
few dense ``[I, I]`` float32 matrices (the Gram matrix, the iterate, the momentum point and the
gradient): the catalogue is refused up front past ``max_memory_gb``, as EASE's is. The solution
is stored sparse (its zeros dropped) and scored as item kNN is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch_geometric.data import HeteroData

from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.ease import gram_gib
from graphrec.models.knn import ItemItem, binary_matrix

log = logging.getLogger(__name__)

DENSE_COPIES = 4  # G, W, the momentum point and the gradient


@dataclass
class SLIMConfig:
    """Args:
        l1: the l1 penalty (sparsity of ``W``). Chosen with ``l2`` on a 10% validation part of
            ml-100k's random 80/20 training part (NDCG@20; the test part unused, 100 steps)
            from l1 1, 5, 20 x l2 10, 100, 500, then l1 0.1, 0.3 x l2 100, 300: l1 0.1, l2 300
            is best (0.2465; l1 0.3, l2 300: 0.2462; l1 1, l2 100: 0.2444; l1 5, l2 100:
            0.2406), level with EASE (0.2462 there): the l1 term buys sparsity, not accuracy.
        l2: the squared-l2 penalty (l2 10 was worst at every l1 tried).
        iterations: FISTA steps (each one dense ``[I, I]`` product). At the defaults on ml-100k
            100 steps leave a relative change of about 5e-4 per step.
        tol: stop early when a step changes ``W`` by less than ``tol`` relative to its norm.
        max_memory_gb: the most GiB the dense matrices of fitting may take (``4`` float32
            ``[I, I]`` matrices); a larger catalogue is refused up front.
    """

    l1: float = 0.1
    l2: float = 300.0
    iterations: int = 100
    tol: float = 1e-4
    max_memory_gb: float = 8.0


def slim_weights(gram: torch.Tensor, l1: float, l2: float, iterations: int,
                 tol: float) -> torch.Tensor:
    """The dense ``W [I, I]`` of the module docstring from the Gram matrix ``G = X^T X``, by
    FISTA from ``W = 0``."""
    n = gram.size(0)
    v = torch.ones(n, dtype=gram.dtype, device=gram.device) / n ** 0.5
    for _ in range(50):  # power iteration for lambda_max(G): G is PSD, so it converges up
        w = gram @ v
        v = w / w.norm().clamp(min=1e-30)
    lipschitz = float(v @ (gram @ v)) * 1.01 + l2  # a little margin over the estimate
    step, thresh = 1.0 / lipschitz, l1 / lipschitz
    diag = torch.arange(n, device=gram.device)
    w = torch.zeros_like(gram)
    y, t = w.clone(), 1.0
    change = float("inf")
    step_no = 0
    for step_no in range(1, iterations + 1):  # noqa: B007 - logged after the loop
        grad = torch.addmm(gram, gram, y, beta=-1.0)  # G Y - G
        grad.add_(y, alpha=l2)
        new = (y - step * grad).sub_(thresh).clamp_(min=0.0)  # prox: shrink, then W >= 0
        new[diag, diag] = 0.0
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        change = float((new - w).norm()) / max(float(new.norm()), 1e-30)
        y = new + ((t - 1.0) / t_next) * (new - w)  # momentum
        w, t = new, t_next
        if change < tol:
            break
    log.info("slim: %d FISTA steps, last relative change %.2e (tol %.0e)", step_no, change, tol)
    return w


class SLIM(ItemItem):
    """Sparse linear item-item model by FISTA (module docstring); nothing is trained by the
    trainer."""

    name = "slim"
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "l1": {"type": "float", "low": 0.1, "high": 100.0, "log": True},
        "l2": {"type": "float", "low": 1.0, "high": 1e3, "log": True},
    }

    def __init__(self, num_users: int, num_items: int, cfg: SLIMConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or SLIMConfig()
        if not cfg.l1 >= 0 or not cfg.l2 > 0:
            raise GraphrecError(f"slim: options l1 >= 0 and l2 > 0, got {cfg.l1}, {cfg.l2}")
        if cfg.iterations < 1 or not cfg.tol >= 0 or not cfg.max_memory_gb > 0:
            raise GraphrecError("slim: options iterations >= 1, tol >= 0, max_memory_gb > 0")
        self.check_size()  # refused before any data is read

    def check_size(self) -> None:
        """A one-line error when fitting's dense matrices exceed ``max_memory_gb``."""
        need = DENSE_COPIES * gram_gib(self.num_items)
        if need > self.cfg.max_memory_gb:
            raise GraphrecError(
                f"slim: {self.num_items:,} items need {DENSE_COPIES} dense {self.num_items:,} x "
                f"{self.num_items:,} float32 matrices, {need:.3g} GiB, over option max_memory_gb="
                f"{self.cfg.max_memory_gb:g}; raise it if the memory is there, or use itemknn")

    def fit(self, train: HeteroData) -> None:
        """``W`` from the training graph, stored sparse."""
        ptr, items = user_sequences(train)
        x = binary_matrix(ptr, items, self.num_items)
        gram = torch.from_numpy((x.T @ x).toarray()).to(self.device)  # [I, I]
        w = slim_weights(gram, self.cfg.l1, self.cfg.l2, self.cfg.iterations, self.cfg.tol)
        nbr, target = torch.nonzero(w, as_tuple=True)
        self.keep(nbr, target, w[nbr, target], ptr, items)


__all__ = ["SLIM", "SLIMConfig", "slim_weights"]
