"""Training-free graph filter (GF-CF: Shen et al., "How Powerful is Graph Convolution for
Recommendation?", CIKM 2021).

For a user with binary training row ``r_u`` the scores of all items are::

    s_u = r_u R~^T R~  +  alpha * r_u D_I^-1/2 V V^T D_I^1/2

with ``R~ = D_U^-1/2 R D_I^-1/2`` the symmetric normalization of the user-item training matrix
(the normalization LightGCN propagates with) and ``V`` its top-``k`` right singular vectors.

The link to LightGCN: one LightGCN hop from items to users and back multiplies by
``R~^T R~``, so the first term is two hops of propagation over the normalized graph without any
embedding or training, a linear low-pass filter. Stacking many hops keeps only the largest
singular directions of ``R~``; the second term is that many-layer limit, an ideal low-pass
filter onto the top-``k`` singular subspace, taken in closed form.

Fitting builds the sparse item-item matrix ``G = R~^T R~`` (never dense) and a truncated SVD:
``torch.svd_lowrank`` (Halko et al.'s randomized method, a few sparse products with a
``k + oversample``-column block, seconds on Gowalla where Lanczos takes minutes; deterministic
under ``seed``), or ``"exact"`` (dense LAPACK, small graphs only). Scoring is batched:
``r_B G`` is a sparse-sparse product (scipy on CPU, split over threads; torch sparse on other
devices) and the low-pass term two thin dense products. What is saved is the training graph and
``V``; ``G`` is derived from them after fit, load or a move to another device. ``score`` takes
the rows ``r_u`` from a given history when there is one (a new user's items, say), else from the
training graph; a user with an empty row gets popularity scores.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history

log = logging.getLogger(__name__)

SVD_METHODS = ("randomized", "exact")


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's notice that sparse CSR support is in beta (it is used as documented)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def auto_k(num_users: int, num_items: int) -> int:
    """The default number of singular vectors: min(users, items) / 32, rounded to a power of two
    in [16, 256]. On validation parts (benchmarks/results/graph_filter_k_sweep.md) ml-100k
    (943 users) is best at 32 of 16-512 and falls off above 64; Gowalla (29,858 users) improves
    up to 512, and the cap keeps the randomized SVD at the cost Gowalla's targets were set for."""
    target = max(1.0, min(num_users, num_items) / 32)
    return int(min(256, max(16, 2 ** round(math.log2(target)))))


@dataclass
class GraphFilterConfig:
    """Args:
        alpha: weight of the ideal low-pass term (0: the linear filter alone).
        k: number of singular vectors in the ideal low-pass term (0: none; ``None``, the
            default: :func:`auto_k` of the graph's size, min(users, items) / 32 as a power of
            two between 16 and 256: 32 on ml-100k, 256 on Gowalla).
        svd: ``"randomized"`` (``torch.svd_lowrank``) or ``"exact"`` (dense, small graphs).
        oversample, niter: randomized SVD's extra columns and power iterations.
        seed: seed of the randomized SVD.
        threads: CPU threads for the sparse products (0: ``torch.get_num_threads()``).
    """

    alpha: float = 0.3
    k: int | None = None
    svd: str = "randomized"
    oversample: int = 64
    niter: int = 4
    seed: int = 0
    threads: int = 0


class GraphFilter(Recommender):
    """Closed-form low-pass filtering of the user-item graph; nothing is trained."""

    new_users = "history"  # the formula applied to the given row
    #: ``graphrec tune``: the ideal low-pass term's weight and rank
    search_space = {"alpha": {"type": "float", "low": 0.0, "high": 1.0},
                    "k": {"type": "int", "low": 16, "high": 512, "log": True}}

    def __init__(self, num_users: int, num_items: int, cfg: GraphFilterConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or GraphFilterConfig()
        if cfg.alpha < 0 or (cfg.k is not None and cfg.k < 0) or cfg.svd not in SVD_METHODS:
            raise GraphrecError(f"graph-filter: need alpha >= 0, k >= 0 and svd in {SVD_METHODS}")
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))  # train CSR
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("basis", torch.zeros(num_items, 0))  # V [I, k]
        self.operator: tuple | None = None  # (G, low_in, low_out, du, pop), from derive()

    def fit(self, train: HeteroData) -> None:
        wanted = auto_k(self.num_users, self.num_items) if self.cfg.k is None else self.cfg.k
        k = min(wanted, self.num_users, self.num_items)
        if k < wanted and self.cfg.k is not None:  # a small graph has fewer singular vectors
            log.warning("graph-filter: k=%d exceeds min(users, items); using k=%d", wanted, k)
        device = self.user_ptr.device
        ptr, items = user_sequences(train)
        self.user_ptr, self.user_items = ptr.to(device).clone(), items.to(device).clone()
        basis = torch.zeros(self.num_items, k, device=self.user_ptr.device)
        if k:
            with _quiet():
                norm = self._normalized().to_sparse_csr()  # R~ [U, I]
            if self.cfg.svd == "exact":
                basis = torch.linalg.svd(norm.to_dense(), full_matrices=False)[2][:k].T
            else:
                q = min(k + self.cfg.oversample, self.num_users, self.num_items)
                devices = [self.user_ptr.device] if self.user_ptr.is_cuda else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(self.cfg.seed)
                    basis = torch.svd_lowrank(norm, q=q, niter=self.cfg.niter)[2][:, :k]
        self.basis = basis.contiguous()
        self.derive()  # build G now, so fitting time includes it

    def _degrees(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        user = torch.repeat_interleave(torch.arange(self.num_users, device=self.user_ptr.device),
                                       self.user_ptr.diff())
        return (user, self.user_ptr.diff().float(),
                torch.bincount(self.user_items, minlength=self.num_items).float())

    def _normalized(self) -> torch.Tensor:
        """R~ = D_U^-1/2 R D_I^-1/2 as a sparse COO tensor [U, I] (zero degrees stay zero)."""
        user, du, di = self._degrees()
        value = du[user].rsqrt() * di[self.user_items].rsqrt()
        return torch.sparse_coo_tensor(torch.stack([user, self.user_items]), value,
                                       (self.num_users, self.num_items),
                                       check_invariants=False).coalesce()

    def derive(self) -> None:
        """G = R~^T R~ and the low-pass factors for the current device: a scipy matrix for CPU
        scoring, a torch sparse tensor on other devices."""
        self.operator = None
        if self.user_items.numel():
            self.operator = self._build(scipy_products=self.user_ptr.device.type == "cpu")

    def _build(self, scipy_products: bool) -> tuple:
        di = self._degrees()[2]
        low_in = self.basis * di.clamp(min=1).rsqrt().where(di > 0, 0).unsqueeze(1)  # [I, k]
        low_out = (self.basis * di.sqrt().unsqueeze(1)).T.contiguous()  # [k, I]
        norm = self._normalized()
        shape = (self.num_users, self.num_items)
        if scipy_products:
            n = sp.csr_matrix((norm.values().numpy(), norm.indices().numpy()), shape=shape).tocsr()
            gram = (n.T.tocsr() @ n).tocsr()
        else:
            with _quiet():
                csr = norm.to_sparse_csr()
                gram = torch.sparse.mm(csr.t().to_sparse_csr(), csr)
        pop = di / di.max().clamp(min=1)  # fallback for empty rows
        return (gram, low_in, low_out, pop)

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        """Scores ``[B, I]``; rows ``r_u`` from ``history`` when given, else from training."""
        check_history(self, users, history)
        if self.operator is None:
            raise GraphrecError("graph-filter: not fitted (fit it on its training graph first)")
        gram, low_in, low_out, pop = self.operator
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        if isinstance(gram, sp.csr_matrix):
            hp, hi = history.ptr.cpu().numpy(), history.items.cpu().numpy()
            # binary rows: a repeated item counts once
            r_b = sp.csr_matrix((np.ones(len(hi), dtype=np.float32), hi, hp),
                                shape=(users.numel(), self.num_items))
            r_b.sum_duplicates()
            r_b.data[:] = 1.0
            out = np.empty((users.numel(), self.num_items), dtype=np.float32)
            parts = np.array_split(np.arange(users.numel()), self.cfg.threads or torch.get_num_threads())
            parts = [p for p in parts if len(p)]

            def linear(idx: np.ndarray) -> None:  # scipy releases the GIL in sparse products
                out[idx[0]: idx[-1] + 1] = (r_b[idx[0]: idx[-1] + 1] @ gram).toarray()

            with ThreadPoolExecutor(len(parts)) as pool:
                list(pool.map(linear, parts))
            scores = torch.from_numpy(out)  # [B, I]
            low = torch.from_numpy(np.asarray(r_b @ low_in.numpy(), dtype=np.float32))  # [B, k]
        else:
            with _quiet():
                row = torch.repeat_interleave(torch.arange(users.numel(), device=gram.device),
                                              history.ptr.diff())
                keys = torch.unique(row * self.num_items + history.items.to(gram.device))
                r_b = torch.sparse_coo_tensor(
                    torch.stack([keys // self.num_items, keys % self.num_items]),
                    torch.ones(keys.numel(), device=gram.device),
                    (users.numel(), self.num_items)).to_sparse_csr()
                scores = torch.sparse.mm(r_b, gram).to_dense()  # [B, I]
                low = torch.sparse.mm(r_b, low_in)  # [B, k]
        if self.cfg.alpha and low.size(1):
            scores.addmm_(low, low_out, alpha=self.cfg.alpha)
        cold = (history.ptr.diff() == 0).to(scores.device)
        if cold.any():
            scores[cold] = pop
        return scores
