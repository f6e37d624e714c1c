"""``ials``: implicit alternating least squares with confidence weights (Hu, Koren & Volinsky,
"Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008).

Every (user, item) pair is a training example. An observed pair has preference ``p_ui = 1``
and confidence ``c_ui = 1 + alpha * r_ui`` (``r_ui``: how many training edges join the pair,
1 on deduplicated data; ratings are not read); an unobserved pair has ``p_ui = 0`` and
``c_ui = 1``. The objective is::

    L(X, Y) = sum_{u,i} c_ui (p_ui - x_u . y_i)^2  +  l2 (|X|_F^2 + |Y|_F^2)

With ``Y`` fixed it is a ridge regression per user, solved in closed form by the normal
equations ``(Y^T C_u Y + l2 I) x_u = Y^T C_u p_u``; then the same for the items with ``X``
fixed, and so on (one iteration = both half-sweeps). The paper's trick makes the dense part
shared: ``Y^T C_u Y = Y^T Y + Y^T (C_u - I) Y``, where ``C_u - I`` is non-zero only on the
user's own items, so each user costs ``O(n_u F^2)`` instead of ``O(I F^2)``.

Solvers:

* ``"cg"`` (default, as the ``implicit`` library's ``ConjugateGradient`` solver of Takacs,
  Pilaszy & Tikk, RecSys 2011): a few conjugate-gradient steps per half-sweep, warm-started from
  the current factors, for *all users at once* as tensor operations. The one product CG needs,
  ``A_u p_u = (Y^T Y + l2 I) p_u + Y^T (C_u - I) Y p_u``, is a dense ``[U, F] x [F, F]``
  product plus two sparse products over the interaction pattern: ``s = (P Y^T) o R`` (a
  sampled dense-dense product) and ``((C - 1) o s) Y`` (a sparse-dense product). Each CG step
  decreases that user's quadratic, so the objective never rises over sweeps.
* ``"cholesky"``: the exact solve of every user's ``F x F`` system (batched over blocks of
  users, ``torch.linalg.cholesky``); slower, for tests and small data.

Scores are ``x_u . y_i``, so the model is a retriever (faiss indexes serve it). A user outside
training folds in by the same normal equations against the item factors (``new_users =
"fold-in"``, :meth:`IALS.new_user_vectors`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history
from graphrec.schema import EDGE

log = logging.getLogger(__name__)

SOLVERS = ("cg", "cholesky")
_TINY = 1e-20  # a residual this small is converged (implicit's threshold)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's notices that sparse CSR support is in beta (it is used as documented)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        yield


@dataclass
class IALSConfig:
    """Args:
        dim: factors per user and item.
        l2: the ridge weight λ on every factor vector.
        alpha: confidence slope: an observed pair weighs ``1 + alpha * r_ui``. (The
            ``implicit`` library weighs it ``alpha * r_ui``: its ``alpha`` a is this one's
            a - 1 on binary data.)
        iterations: alternating sweeps (users, then items).
        cg_steps: conjugate-gradient steps per half-sweep (``solver="cg"``).
        solver: ``"cg"`` or ``"cholesky"`` (exact, for tests and small data).
        init_std: standard deviation of the normal initialization of both factor tables.
        seed: seed of the initialization.

    Defaults: dim 64 (graphrec's embedding size); l2 50 and alpha 10 chosen on a validation
    part (10%) of ml-100k's training part (every rating a positive, random 80/20 split, seed 0):
    the best validation NDCG@20 (0.252) of l2 in {0.1, 1, 10, 50, 100, 200} x alpha in
    {1, 5, 10, 20, 40} at dim 64 and 15 iterations (``python benchmarks/implicit_peers.py
    --ml100k-grid``; l2 10 gave 0.21-0.22, l2 200 0.14-0.21); 15 iterations and 3 CG steps
    as ``implicit``.
    """

    dim: int = 64
    l2: float = 50.0
    alpha: float = 10.0
    iterations: int = 15
    cg_steps: int = 3
    solver: str = "cg"
    init_std: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise GraphrecError(f"ials: dim must be at least 1, got {self.dim}")
        if not self.l2 > 0:
            raise GraphrecError(f"ials: l2 must be > 0, got {self.l2}")
        if not self.alpha >= 0:
            raise GraphrecError(f"ials: alpha must be >= 0, got {self.alpha}")
        if self.iterations < 0 or self.cg_steps < 1:
            raise GraphrecError("ials: need iterations >= 0 and cg_steps >= 1")
        if self.solver not in SOLVERS:
            raise GraphrecError(f"ials: solver must be one of {', '.join(SOLVERS)}, "
                                f"got {self.solver!r}")
        if not self.init_std > 0:
            raise GraphrecError(f"ials: init_std must be > 0, got {self.init_std}")


@dataclass
class _Side:
    """The interactions of one side (users or items) as a CSR matrix against the other side:
    ``pattern`` (values 1) and each stored entry's ``c - 1 = alpha * r``."""

    pattern: Tensor  # sparse CSR [rows, cols], values 1
    extra: Tensor  # [nnz] c_ui - 1

    @property
    def ptr(self) -> Tensor:
        return self.pattern.crow_indices()

    @property
    def cols(self) -> Tensor:
        return self.pattern.col_indices()

    def weighted(self, values: Tensor) -> Tensor:
        """The same pattern with other values (a CSR tensor sharing the indices)."""
        return torch.sparse_csr_tensor(self.ptr, self.cols, values, self.pattern.shape)


class IALS(Recommender):
    """Implicit ALS; fitted in ``fit`` (no trainer). ``iteration_seconds`` keeps the wall time
    of each sweep of the last fit."""

    new_users = "fold-in"  # the user's normal equations against the item factors
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "dim": {"type": "int", "low": 16, "high": 256, "log": True},
        "l2": {"type": "float", "low": 1e-2, "high": 1e2, "log": True},
        "alpha": {"type": "float", "low": 0.5, "high": 100.0, "log": True},
        "iterations": {"type": "int", "low": 5, "high": 30},
    }

    def __init__(self, num_users: int, num_items: int, cfg: IALSConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or IALSConfig()
        self.register_buffer("user_factors", torch.zeros(num_users, cfg.dim))  # X [U, F]
        self.register_buffer("item_factors", torch.zeros(num_items, cfg.dim))  # Y [I, F]
        self.users_side: _Side | None = None  # set by start(); not saved (fitting only)
        self.items_side: _Side | None = None
        self.iteration_seconds: list[float] = []

    # ---------------------------------------------------------------------------- fitting

    def fit(self, train: HeteroData) -> None:
        """Initialize the factors and run ``iterations`` alternating sweeps."""
        self.start(train)
        self.iteration_seconds = []
        for it in range(self.cfg.iterations):
            begin = time.perf_counter()
            self.sweep()
            self.iteration_seconds.append(time.perf_counter() - begin)
            log.debug("ials: iteration %d in %.2f s", it + 1, self.iteration_seconds[-1])
        self.users_side = self.items_side = None  # the fitting matrices are not kept

    def start(self, train: HeteroData) -> None:
        """Build the user x item and item x user confidence matrices from ``train`` and draw
        the initial factors (seeded by ``seed``); no sweep yet."""
        device = self.user_factors.device
        ei = train[EDGE].edge_index.to(device)
        if ei.numel() and (int(ei[0].max()) >= self.num_users or int(ei[1].max()) >= self.num_items):
            raise GraphrecError("ials: the training graph has more users or items than the model")
        # r_ui: the number of training edges of each distinct pair
        keys, counts = torch.unique(ei[0] * self.num_items + ei[1], return_counts=True)
        users, items = keys // self.num_items, keys % self.num_items
        extra = self.cfg.alpha * counts.to(torch.float32)
        self.users_side = self._side(users, items, extra, self.num_users, self.num_items)
        order = torch.argsort(items * self.num_users + users)
        self.items_side = self._side(items[order], users[order], extra[order], self.num_items,
                                     self.num_users)
        gen = torch.Generator(device=device).manual_seed(self.cfg.seed)
        std = self.cfg.init_std
        self.user_factors = torch.randn(self.num_users, self.cfg.dim, generator=gen,
                                        device=device) * std
        self.item_factors = torch.randn(self.num_items, self.cfg.dim, generator=gen,
                                        device=device) * std

    @staticmethod
    def _side(rows: Tensor, cols: Tensor, extra: Tensor, num_rows: int, num_cols: int) -> _Side:
        """``rows`` sorted; CSR of the pattern."""
        ptr = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
        ptr[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
        # int32 indices where they fit: the sparse kernels run 10-20% faster on them
        index = torch.int32 if rows.numel() < 2 ** 31 else torch.long
        with _quiet():
            pattern = torch.sparse_csr_tensor(ptr.to(index), cols.to(index),
                                              torch.ones_like(extra), (num_rows, num_cols))
        return _Side(pattern, extra)

    def _need_start(self) -> tuple[_Side, _Side]:
        if self.users_side is None or self.items_side is None:
            raise GraphrecError("ials: call start(train) (or fit) before sweeping")
        return self.users_side, self.items_side

    def sweep(self) -> None:
        """One iteration: solve every user against the item factors, then every item against
        the new user factors."""
        users, items = self._need_start()
        self.user_factors = self.solve(users, self.user_factors, self.item_factors)
        self.item_factors = self.solve(items, self.item_factors, self.user_factors)

    def solve(self, side: _Side, own: Tensor, other: Tensor) -> Tensor:
        """New factors of every row of ``side`` (users or items) with the ``other`` side's
        factors fixed: CG steps from ``own`` or the exact solve (``solver``)."""
        with _quiet():
            if self.cfg.solver == "cholesky":
                return self._cholesky(side, other)
            return self._cg(side, own, other)

    def _cg(self, side: _Side, x: Tensor, other: Tensor) -> Tensor:
        """``cg_steps`` batched conjugate-gradient steps on ``A_u x_u = b_u`` for every row."""
        F = other.size(1)
        gram = other.T @ other + self.cfg.l2 * torch.eye(F, dtype=other.dtype, device=other.device)

        def sparse_part(p: Tensor, weights: Tensor) -> Tensor:
            """``Y^T diag(weights o (p_u . y_i)) Y`` row by row: ``[rows, F]``."""
            dots = torch.sparse.sampled_addmm(side.pattern, p, other.T, beta=0.0).values()
            return side.weighted(weights * dots) @ other

        # the residual b - A x in one sparse product, as implicit's solver: b_u = Y^T C_u p_u is
        # sum_i c_ui y_i and the sparse part of A x is sum_i (c_ui - 1)(x_u . y_i) y_i
        x = x.clone()
        dots = torch.sparse.sampled_addmm(side.pattern, x, other.T, beta=0.0).values()
        r = side.weighted(side.extra + 1.0 - side.extra * dots) @ other - x @ gram
        p = r.clone()
        rs_old = (r * r).sum(1)
        for _ in range(self.cfg.cg_steps):
            active = rs_old > _TINY
            if not bool(active.any()):
                break
            ap = p @ gram + sparse_part(p, side.extra)
            denom = (p * ap).sum(1)
            step = torch.where(active & (denom > 0), rs_old / denom.clamp(min=_TINY),
                               torch.zeros_like(denom))
            x.addcmul_(step.unsqueeze(1), p)
            r.addcmul_(step.unsqueeze(1), ap, value=-1.0)
            rs_new = (r * r).sum(1)
            beta = torch.where(active, rs_new / rs_old.clamp(min=_TINY), torch.zeros_like(rs_new))
            p = r + beta.unsqueeze(1) * p
            rs_old = torch.where(active, rs_new, torch.zeros_like(rs_new))
        return x

    def _cholesky(self, side: _Side, other: Tensor, block: int = 512) -> Tensor:
        """The exact solve of every row's normal equations, in blocks of rows (the ``[B, F, F]``
        systems of a block at once)."""
        F = other.size(1)
        gram = other.T @ other + self.cfg.l2 * torch.eye(F, dtype=other.dtype, device=other.device)
        ptr, cols = side.ptr.long(), side.cols.long()
        out = torch.empty(ptr.numel() - 1, F, dtype=other.dtype, device=other.device)
        for start in range(0, out.size(0), block):  # blocks bound the [B, L, F] gather
            stop = min(start + block, out.size(0))
            history = History(ptr[start: stop + 1] - ptr[start],
                              cols[ptr[start]: ptr[stop]])
            weights = side.extra[ptr[start]: ptr[stop]]
            out[start:stop] = self._normal_solve(gram, other, history, weights)
        return out

    @staticmethod
    def _normal_solve(gram: Tensor, other: Tensor, history: History, extra: Tensor) -> Tensor:
        """``(gram + Q^T diag(extra) Q)^-1 Q^T (extra + 1)`` for each history row, ``Q`` its
        rows of ``other``: ``[B, F]``."""
        counts = history.ptr.diff()
        B, F = counts.numel(), other.size(1)
        L = max(int(counts.max()) if B else 0, 1)
        rows = torch.repeat_interleave(torch.arange(B, device=counts.device), counts)
        cols = torch.arange(history.items.numel(), device=counts.device) - history.ptr[:-1][rows]
        q = other.new_zeros(B, L, F)  # zero rows past each row's end add nothing
        w = other.new_zeros(B, L)
        q[rows, cols] = other[history.items]
        w[rows, cols] = extra.to(other.dtype)
        a = gram + (q * w.unsqueeze(2)).transpose(1, 2) @ q  # [B, F, F]
        rhs = (q.sum(1) + (q * w.unsqueeze(2)).sum(1)).unsqueeze(2)  # [B, F, 1]: sum c_ui y_i
        return torch.cholesky_solve(rhs, torch.linalg.cholesky(a)).squeeze(2)

    def objective(self) -> float:
        """``L(X, Y)`` of the current factors on the started training data (module
        docstring), without forming the ``U x I`` score matrix: the sum of every squared score
        is ``trace(X^T X Y^T Y)``, and the observed pairs add ``c (1 - s)^2 - s^2``."""
        users, _ = self._need_start()
        x, y = self.user_factors.double(), self.item_factors.double()
        with _quiet():
            s = torch.sparse.sampled_addmm(users.pattern.to(torch.float64), x, y.T,
                                           beta=0.0).values()
        c = users.extra.double() + 1.0
        total = ((x.T @ x) * (y.T @ y)).sum() + (c * (1 - s) ** 2 - s ** 2).sum()
        return float(total + self.cfg.l2 * (x.pow(2).sum() + y.pow(2).sum()))

    # ---------------------------------------------------------------------------- scoring

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F]`` user factors."""
        return self.user_factors[users.to(self.user_factors.device)]

    def item_vectors(self) -> Tensor:
        """``[I, F]`` item factors."""
        return self.item_factors

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """``x_u . y_i`` for every item: ``[B, I]`` (the history is not read)."""
        check_history(self, users, history)
        return self.user_vectors(users) @ self.item_factors.T

    def new_user_vectors(self, history: History, method: str = "ls", reg: float = 1.0) -> Tensor:
        """``[B, F]`` vectors of users outside training from their history rows: with
        ``method="ls"`` the user half-sweep itself, the exact solve of the normal equations
        against the item factors with the model's own ``l2`` and ``alpha`` (``reg`` is not
        read: the model was fitted with its ``l2``); ``"mean"`` the mean item factor."""
        from graphrec.models.coldstart import FOLD_IN, fold_in

        if method not in FOLD_IN:
            raise GraphrecError(f"--fold-in: one of {', '.join(FOLD_IN)}, got {method!r}")
        y = self.item_factors
        if method == "mean":
            return fold_in(y, history, "mean")
        ptr = history.ptr.to(y.device)
        B = ptr.numel() - 1
        row = torch.repeat_interleave(torch.arange(B, device=y.device), ptr.diff())
        # a repeated item of a row is one pair with r_ui > 1, as in training
        keys, counts = torch.unique(row * self.num_items + history.items.to(y.device),
                                    return_counts=True)
        new_ptr = torch.zeros(B + 1, dtype=torch.long, device=y.device)
        new_ptr[1:] = torch.bincount(keys // self.num_items, minlength=B).cumsum(0)
        extra = self.cfg.alpha * counts.to(y.dtype)
        F = y.size(1)
        gram = y.T @ y + self.cfg.l2 * torch.eye(F, dtype=y.dtype, device=y.device)
        return self._normal_solve(gram, y, History(new_ptr, keys % self.num_items), extra)


__all__ = ["IALS", "IALSConfig", "SOLVERS"]
