"""Neighbourhood baselines on implicit feedback: item-based and user-based kNN with the shrunk
cosine (Sarwar et al., WWW 2001; Herlocker et al., SIGIR 1999; the tuned form of Dacrema et al.,
"Are We Really Making Much Progress?", RecSys 2019).

With ``X`` the binary user-item training matrix (``[U, I]``; a repeated interaction counts
once), the similarity of two items (columns ``a``, ``b``) or two users (rows) is the cosine with
a shrinkage term that pulls the similarity of rarely co-observed pairs towards zero::

    sim(a, b) = <x_a, x_b> / (|x_a| |x_b| + shrink)

* ``itemknn``: every item ``j`` keeps its ``k`` most similar other items ``N(j)`` (positive
  similarities only), the sparse matrix ``S[i, j] = sim(i, j)`` for ``i in N(j)``; a user with
  row ``r_u`` scores ``s_u = r_u S``. Fitting computes ``X^T X`` one block of item columns at a
  time (dense ``[I, block]``, never the dense ``[I, I]``), then a vectorized top-``k`` per column.
  :class:`ItemItem` holds ``S`` and scores with it; ``slim`` (:mod:`graphrec.models.slim`)
  shares it with a learned ``S``.
* ``userknn``: a user's neighbours ``N(u)`` are the ``k`` training users most similar to the
  row being scored (positive similarities, the user itself left out); ``s_u = sum_{v in N(u)}
  sim(u, v) x_v``. Nothing is precomputed but the training matrix: the neighbourhoods of a batch
  are one sparse-dense product ``X h^T`` and a top-``k``.

Both score from the rows of a given :class:`~graphrec.batches.History` when there is one
(a user outside training gives the items they chose: ``new_users = "history"``), else from the
training rows; a user with an empty row scores 0 everywhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history


def binary_matrix(ptr: Tensor, items: Tensor, num_items: int) -> sp.csr_matrix:
    """The binary scipy CSR ``[len(ptr) - 1, num_items]`` of CSR rows ``(ptr, items)``
    (float32; repeated items count once)."""
    m = sp.csr_matrix((np.ones(items.numel(), dtype=np.float32), items.cpu().numpy(),
                       ptr.cpu().numpy()), shape=(ptr.numel() - 1, num_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def binary_rows(history: History, num_items: int, device: torch.device) -> Tensor:
    """The binary rows of ``history`` as a sparse CSR tensor ``[B, num_items]`` on ``device``
    (repeated items count once)."""
    B = history.num_rows
    rows = torch.repeat_interleave(torch.arange(B, device=device), history.ptr.diff().to(device))
    keys = torch.unique(rows * num_items + history.items.to(device))  # sorted: coalesced order
    coo = torch.sparse_coo_tensor(torch.stack([keys // num_items, keys % num_items]),
                                  torch.ones(keys.numel(), device=device), (B, num_items),
                                  is_coalesced=True, check_invariants=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


def _shrunk_cosine(dots: Tensor, norm_a: Tensor, norm_b: Tensor, shrink: float) -> Tensor:
    """``dots / (norm_a[:, None] norm_b[None, :] + shrink)``, 0 where the denominator is."""
    denom = norm_a.unsqueeze(1) * norm_b.unsqueeze(0) + shrink
    return torch.where(denom > 0, dots / denom.clamp(min=1e-30), torch.zeros_like(dots))


def item_neighbourhoods(x: sp.csr_matrix, k: int, shrink: float,
                        block: int = 1024) -> tuple[Tensor, Tensor, Tensor]:
    """The ``itemknn`` matrix ``S`` of the module docstring as COO ``(nbr, target, sim)``:
    ``S[nbr, target] = sim``, at most ``k`` positive entries per target column, self excluded.
    ``x``: the binary ``[U, I]`` training matrix; ``block``: item columns per dense block."""
    num_items = x.shape[1]
    xt = x.T.tocsr()  # [I, U]
    xc = x.tocsc()
    norm = torch.from_numpy(np.sqrt(np.asarray(x.sum(0)).ravel()).astype(np.float32))  # [I]
    k = min(k, max(num_items - 1, 1))
    nbr, tgt, val = [], [], []
    for start in range(0, num_items, block):  # blocks of columns, each a vectorized top-k
        stop = min(start + block, num_items)
        dots = torch.from_numpy(xt @ xc[:, start:stop].toarray())  # [I, b]: sparse @ dense
        sim = _shrunk_cosine(dots, norm, norm[start:stop], shrink)
        cols = torch.arange(stop - start)
        sim[cols + start, cols] = 0.0  # an item is not its own neighbour
        v, i = sim.topk(k, dim=0)  # [k, b]
        keep = v > 0
        nbr.append(i[keep])
        tgt.append((cols + start).unsqueeze(0).expand(k, -1)[keep])
        val.append(v[keep])
    return torch.cat(nbr), torch.cat(tgt), torch.cat(val)


def _check(name: str, k: int, shrink: float) -> None:
    if k < 1:
        raise GraphrecError(f"{name}: option k must be >= 1, got {k}")
    if not shrink >= 0:
        raise GraphrecError(f"{name}: option shrink must be >= 0, got {shrink}")


@dataclass
class ItemKNNConfig:
    """Args:
        k: neighbours kept per item. Chosen with ``shrink`` on a 10% validation part of
            ml-100k's random 80/20 training part (NDCG@20; the test part unused) from k in 10,
            20, 50, 100, 150, 200, 300, 500 and shrink in 0, 5, 10, 50, 100: k 200 is best
            (0.2279; at shrink 0, 50: 0.2228, 100: 0.2215, 300: 0.2278, 500: 0.2207).
        shrink: the cosine's shrinkage (module docstring); 0 is best there (at k 200, shrink
            5: 0.2276, 10: 0.2265, 50: 0.2264): ml-100k is dense, few pairs rest on a handful
            of co-occurrences; sparser data may want more (``search_space`` covers it).
        block: item columns per dense block while fitting (memory ``4 * I * block`` bytes).
    """

    k: int = 200
    shrink: float = 0.0
    block: int = 1024


class ItemItem(Recommender):
    """A sparse item-item weight matrix ``S [I, I]`` scoring ``s_u = r_u S``, the shape of
    ``itemknn`` and ``slim``: subclasses compute ``S`` in ``fit`` and hand it to
    :meth:`keep`. Rows ``r_u`` come from a given history, else from the training rows."""

    new_users = "history"  # the given row times S
    name: ClassVar[str] = "item-item"

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__(num_users, num_items)
        # S as COO (S[nbr, target] = sim) and the training rows as CSR
        self.register_buffer("nbr", torch.zeros(0, dtype=torch.long))
        self.register_buffer("target", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sim", torch.zeros(0))
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.weights: Tensor | None = None  # S as sparse CSR [nbr, target], from derive()

    def keep(self, nbr: Tensor, target: Tensor, sim: Tensor, ptr: Tensor, items: Tensor) -> None:
        """Store ``S`` (COO) and the training rows ``(ptr, items)`` on the model's device."""
        dev = self.device
        self.nbr, self.target, self.sim = nbr.to(dev), target.to(dev), sim.to(dev)
        self.user_ptr, self.user_items = ptr.to(dev).clone(), items.to(dev).clone()
        self.derive()

    def derive(self) -> None:
        """``S`` as a sparse CSR ``[I (neighbour), I (target)]`` on the model's device."""
        self.weights = None
        if self.user_items.numel() == 0:
            return  # not fitted
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            coo = torch.sparse_coo_tensor(torch.stack([self.nbr, self.target]), self.sim,
                                          (self.num_items, self.num_items), check_invariants=False)
            self.weights = coo.coalesce().to_sparse_csr()

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: ``r_u S`` with rows ``r_u`` from ``history`` or training."""
        check_history(self, users, history)
        if self.weights is None:
            raise GraphrecError(f"{self.name}: not fitted (fit it on its training graph first)")
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        r = binary_rows(history, self.num_items, self.sim.device)  # sparse [B, I]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            # sparse @ sparse: work ~ nnz(r) * k, where a dense r costs B * nnz(S)
            return torch.sparse.mm(r, self.weights).to_dense()  # [B, I]


class ItemKNN(ItemItem):
    """Item-based kNN with the shrunk cosine (module docstring); nothing is trained."""

    name = "itemknn"
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"type": "int", "low": 5, "high": 1000, "log": True},
        "shrink": {"type": "float", "low": 0.0, "high": 500.0},
    }

    def __init__(self, num_users: int, num_items: int, cfg: ItemKNNConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or ItemKNNConfig()
        _check("itemknn", cfg.k, cfg.shrink)
        if cfg.block < 1:
            raise GraphrecError(f"itemknn: option block must be >= 1, got {cfg.block}")

    def fit(self, train: HeteroData) -> None:
        """Neighbourhoods from the training graph's binary matrix (on the CPU, then moved)."""
        ptr, items = user_sequences(train)
        nbr, target, sim = item_neighbourhoods(binary_matrix(ptr, items, self.num_items),
                                               self.cfg.k, self.cfg.shrink, self.cfg.block)
        self.keep(nbr, target, sim, ptr, items)


@dataclass
class UserKNNConfig:
    """Args:
        k: neighbour users per scored user. Chosen with ``shrink`` on a 10% validation part
            of ml-100k's random 80/20 training part (NDCG@20; the test part unused) from k in
            10, 20, 30, 50, 70, 100, 200, 500 and shrink in 0, 5, 10, 50, 100: k 70 is best
            (0.2282; at shrink 0, 20: 0.2131, 50: 0.2281, 100: 0.2250, 500: 0.2010).
        shrink: the cosine's shrinkage (module docstring); 0 is best there (at k 70, shrink
            5: 0.2280, 10: 0.2258, 100: 0.2068).
    """

    k: int = 70
    shrink: float = 0.0


class UserKNN(Recommender):
    """User-based kNN with the shrunk cosine (module docstring); nothing is trained."""

    new_users = "history"  # neighbours of the given row among the training users
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"type": "int", "low": 5, "high": 1000, "log": True},
        "shrink": {"type": "float", "low": 0.0, "high": 500.0},
    }

    def __init__(self, num_users: int, num_items: int, cfg: UserKNNConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or UserKNNConfig()
        _check("userknn", cfg.k, cfg.shrink)
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.matrix: tuple[Tensor, Tensor, Tensor] | None = None  # (X, X^T, |x_v|^2), derive()

    def fit(self, train: HeteroData) -> None:
        """Keep the training rows; neighbourhoods are found when scoring."""
        ptr, items = user_sequences(train)
        self.user_ptr, self.user_items = ptr.to(self.device).clone(), items.to(self.device).clone()
        self.derive()

    def derive(self) -> None:
        """The binary training matrix ``X [U, I]``, its transpose (sparse CSR) and the row
        norms, on the model's device."""
        self.matrix = None
        if self.user_items.numel() == 0:
            return
        dev = self.user_ptr.device
        x = binary_rows(History(self.user_ptr, self.user_items), self.num_items, dev)  # [U, I]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            xt = x.to_sparse_coo().t().coalesce().to_sparse_csr()  # [I, U]
        degree = x.crow_indices().diff().float()  # [U]: |x_v|^2 of a binary row
        self.matrix = (x, xt, degree)

    def neighbours(self, users: Tensor, history: History | None = None) -> tuple[Tensor, Tensor]:
        """The ``k`` training users nearest each row (``history``'s rows when given, else the
        training rows): ``(index [B, k'], sim [B, k'])``, ``k' = min(k, U)``, similarity
        descending, non-positive similarities set to 0 (they add nothing)."""
        check_history(self, users, history)
        if self.matrix is None:
            raise GraphrecError("userknn: not fitted (fit it on its training graph first)")
        x, _, degree = self.matrix
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        h = binary_rows(history, self.num_items, degree.device).to_dense()  # [B, I]
        dots = (x @ h.T).T  # [B, U]
        h_norm2 = h.sum(1)  # [B]
        sim = _shrunk_cosine(dots, h_norm2.sqrt(), degree.sqrt(), self.cfg.shrink)
        # The user itself is left out: the training user of this id whose row is the row being
        # scored (the same items: dot == |h|^2 == |x_v|^2). A new user's row, under whatever id
        # the caller gives it, keeps every training user.
        users = users.to(degree.device)
        u = users.clamp(max=self.num_users - 1).unsqueeze(1)  # [B, 1]
        d_self = dots.gather(1, u).squeeze(1)
        is_self = (d_self == h_norm2) & (d_self == degree[u.squeeze(1)]) & (users < self.num_users)
        sim.scatter_(1, u, sim.gather(1, u).masked_fill(is_self.unsqueeze(1), 0.0))
        v, i = sim.topk(min(self.cfg.k, self.num_users), dim=1)  # [B, k']
        return i, v.clamp(min=0)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: the neighbours' rows weighted by their similarity."""
        idx, sim = self.neighbours(users, history)
        w = torch.zeros(idx.size(0), self.num_users, device=sim.device).scatter_(1, idx, sim)
        return (self.matrix[1] @ w.T).T  # X^T [I, U] @ w^T [U, B] -> [B, I]


__all__ = [
    "ItemItem",
    "ItemKNN",
    "ItemKNNConfig",
    "UserKNN",
    "UserKNNConfig",
    "binary_matrix",
    "binary_rows",
    "item_neighbourhoods",
]
