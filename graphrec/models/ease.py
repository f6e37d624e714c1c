"""EASE: the embarrassingly shallow autoencoder (Steck, "Embarrassingly Shallow Autoencoders for
Sparse Data", WWW 2019).

An item-item weight matrix ``B`` that reconstructs the binary training matrix ``X [U, I]``
from itself, with a zero diagonal so that no item predicts itself::

    min_B |X - X B|_F^2 + l2 |B|_F^2   subject to diag(B) = 0

has the closed form (Lagrange multipliers for the constraint)::

    P = (X^T X + l2 I)^-1,    B = I - P diag(1 / diag(P)),  i.e.  B_ij = -P_ij / P_jj (i != j)

and a user with row ``r_u`` scores ``s_u = r_u B``. Nothing is trained: fitting is one dense
``[I, I]`` Gram matrix and its inverse, and time grows as ``I^3``. The Gram matrix is filled one
block of item columns at a time from sparse products and inverted by torch's Cholesky
routines (``cholesky_ex`` then ``cholesky_inverse``, MKL's LAPACK, writing into the Gram
matrix's own buffer); the factorization holds one working copy, so fitting peaks at two dense
matrices, ``8 I^2`` bytes in float32. (scipy's OpenBLAS ``potrf`` crashed on Gowalla's
40,981 items, so it is not used.) Float64 when two float64 matrices and the float32 result fit
under ``max_memory_gb``, else float32. A catalogue whose two float32 matrices exceed
``max_memory_gb`` is refused before anything is computed, with its size. Scoring is a sparse-dense product of the
batch's binary rows with ``B`` (rows of ``B`` gathered, ``nnz(r) * I`` work), from the rows of a
given history when there is one (a new user: ``new_users = "history"``), else from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history
from graphrec.models.knn import binary_matrix, binary_rows

GIB = 2 ** 30


@dataclass
class EASEConfig:
    """Args:
        l2: the L2 penalty ``l2`` of the module docstring. Chosen on a 10% validation part of
            ml-100k's random 80/20 training part (NDCG@20; the test part unused) from 10, 50,
            100, 200, 300, 400, 500, 700, 1000, 2000: 400 is best (0.2462; 300: 0.2446, 500:
            0.2452, 1000: 0.2409, 100: 0.2359, 10: 0.1944). Steck used 500 on ML-20M and
            Netflix.
        max_memory_gb: the most memory the fit's two dense ``[I, I]`` float32 matrices may
            take, in GiB; a larger catalogue is refused up front. 16 GiB lets Gowalla's 40,981
            items through (12.5 GiB) on a machine with 24 GiB or more.
        block: item columns per block while filling the Gram matrix.
    """

    l2: float = 400.0
    max_memory_gb: float = 16.0
    block: int = 2048


def gram_gib(num_items: int, itemsize: int = 4) -> float:
    """GiB of one dense ``[num_items, num_items]`` matrix of ``itemsize``-byte floats."""
    return num_items * num_items * itemsize / GIB


def ease_weights(x: Any, l2: float, dtype: type = np.float32, block: int = 2048) -> np.ndarray:
    """``B`` of the module docstring (C-ordered ``[I, I]`` of ``dtype``) from the binary scipy
    CSR ``x [U, I]``, computed in one dense buffer that LAPACK overwrites."""
    num_items = x.shape[1]
    xt, xc = x.T.tocsr(), x.tocsc()
    gram = np.empty((num_items, num_items), dtype=dtype)  # G, then P, then B, in place
    for start in range(0, num_items, block):
        stop = min(start + block, num_items)
        gram[:, start:stop] = xt @ xc[:, start:stop].toarray()  # sparse @ dense block
    gram[np.diag_indices(num_items)] += l2
    # In place on the same buffer: torch allocates one working copy for the factorization.
    g = torch.from_numpy(gram)
    info = torch.zeros((), dtype=torch.int32)
    torch.linalg.cholesky_ex(g, out=(g, info))
    if int(info) != 0:
        raise GraphrecError(f"ease: the Gram matrix plus l2 is not positive definite (LAPACK "
                            f"info {int(info)}); raise option l2")
    torch.cholesky_inverse(g, out=g)  # P, symmetric, full
    if g.data_ptr() != gram.ctypes.data:  # torch wrote elsewhere after all: keep its result
        gram = g.numpy()
    diag = gram.diagonal().copy()  # P_jj
    gram /= -diag[None, :]  # B_ij = -P_ij / P_jj
    gram[np.diag_indices(num_items)] = 0.0
    return gram


class EASE(Recommender):
    """The closed-form linear item-item autoencoder (module docstring); nothing is trained."""

    new_users = "history"  # the given row times B
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "l2": {"type": "float", "low": 1.0, "high": 1e4, "log": True},
    }

    def __init__(self, num_users: int, num_items: int, cfg: EASEConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or EASEConfig()
        if not cfg.l2 > 0:
            raise GraphrecError(f"ease: option l2 must be > 0, got {cfg.l2}")
        if not cfg.max_memory_gb > 0 or cfg.block < 1:
            raise GraphrecError("ease: options max_memory_gb must be > 0 and block >= 1")
        self.check_size()  # refused before any data is read
        self.register_buffer("weights", torch.zeros(0, 0))  # B [I, I], sized by fit
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))

    def check_size(self) -> None:
        """A one-line error when the dense item-item matrix exceeds ``max_memory_gb``."""
        need = gram_gib(self.num_items, 8)
        if need > self.cfg.max_memory_gb:
            raise GraphrecError(
                f"ease: {self.num_items:,} items need two dense {self.num_items:,} x "
                f"{self.num_items:,} float32 matrices, {need:.3g} GiB, over option max_memory_gb="
                f"{self.cfg.max_memory_gb:g}; raise it if the memory is there, or use itemknn or "
                "graph-filter")

    def fit(self, train: HeteroData) -> None:
        """``B`` from the training graph, on the CPU, then moved to the model's device."""
        ptr, items = user_sequences(train)
        x = binary_matrix(ptr, items, self.num_items)
        # float64 when its two matrices and the float32 result fit the budget (20 bytes a cell)
        wide = gram_gib(self.num_items, 20) <= self.cfg.max_memory_gb
        b = ease_weights(x, self.cfg.l2, np.float64 if wide else np.float32, self.cfg.block)
        dev = self.device
        self.weights = torch.from_numpy(b.astype(np.float32, copy=False)).to(dev)
        self.user_ptr, self.user_items = ptr.to(dev).clone(), items.to(dev).clone()

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: ``r_u B`` with rows ``r_u`` from ``history`` or training."""
        check_history(self, users, history)
        if self.weights.numel() == 0:
            raise GraphrecError("ease: not fitted (fit it on its training graph first)")
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        r = binary_rows(history, self.num_items, self.weights.device)  # sparse [B, I]
        return r @ self.weights  # [B, I]


__all__ = ["EASE", "EASEConfig", "ease_weights", "gram_gib"]
