"""The graph-filter family's shared parts: one item-item operator, one ODE solver, one base class.

Every training-free filter (``graph-filter``, ``bspm``, ``turbo-cf``, ``poly-filter``) scores a
user's binary training row ``r`` (``[I]``) as ``r F`` with ``F`` a function of one operator,

    P = R~^T R~,    R~ = D_U^-a R D_I^-b

the normalised item-item Gram matrix of the training graph (``a = b = 1/2`` is the symmetric
normalization LightGCN propagates with: one hop from items to users and back). Turbo-CF also
raises ``P``'s entries to a power (``P ** s`` elementwise). :class:`ItemGraph` builds ``P`` once
per training graph and applies it in one of three forms, chosen per graph (``gram="auto"``) or
forced:

* ``"dense"``: ``P`` as a dense ``[I, I]`` matrix (small catalogues; products are GEMMs);
* ``"sparse"``: ``P`` as an explicit sparse matrix (any power);
* ``"factored"``: ``x P = (x R~^T) R~`` by two sparse products with ``R~`` (power 1 only):
  on Gowalla ``R~`` has 1.0M entries and ``P`` 42M, so a hop on a dense state costs 20x less.

A sparse input row (the first hop) always goes through ``P`` itself (dense, or the explicit
sparse ``P`` for a sparse-sparse product; scipy on the CPU, split over threads). The rule
behind ``"auto"`` is measured (``benchmarks/graph_filter.py --part operator``): see
:func:`choose_gram`.

:func:`integrate` is the one fixed-step solver (Euler or classic RK4) of linear ODEs
``dx/dt = f(x)``. It runs on score states ``[B, I]`` (with ``f`` built from ``P``) and equally
on :class:`numpy.polynomial.Polynomial` objects (with ``f`` a polynomial in ``lambda``), which
gives a filter's exact response to one eigenvalue ``lambda`` of ``P`` without touching a graph.

:class:`FilterModel` is the base class: it keeps the training graph as CSR buffers, builds the
operator after fit, load or a move between devices, gathers the rows ``r`` (from a given
history, else from training), scores batch by batch and gives an empty row popularity scores.
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history

log = logging.getLogger(__name__)

GRAM_MODES = ("auto", "dense", "sparse", "factored")
SOLVERS = ("euler", "rk4")
SVD_METHODS = ("randomized", "lanczos", "exact")
DTYPES = ("auto", "float32", "bfloat16")
#: "auto" keeps P dense up to this many items (the measured crossover, see choose_gram)
DENSE_MAX_ITEMS = 4096
#: "auto" runs the low-rank products in bfloat16 from this rank up (see choose_dtype)
BF16_MIN_RANK = 128

State = TypeVar("State")


@contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's notices that sparse CSR support is in beta and that invariant checks are
    off (the tensors are built here from valid CSR arrays)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        yield


@dataclass
class OperatorConfig:
    """Options of the shared item-item operator, common to every filter.

    Args:
        user_exp, item_exp: the normalization exponents ``a``, ``b`` of ``R~ = D_U^-a R D_I^-b``.
        gram: how ``P`` is held and applied: ``"auto"`` (:func:`choose_gram`), ``"dense"``,
            ``"sparse"`` or ``"factored"`` (power 1 only).
        max_memory_gb: the most a dense ``P`` may take; a larger one is refused up front.
        threads: CPU threads for the scipy sparse products (0: ``torch.get_num_threads()``).
        dtype: precision of the dense low-rank products ``(r W_in) W_out``: ``"float32"``,
            ``"bfloat16"`` or ``"auto"`` (:func:`choose_dtype`). Sparse hops stay float32.
        prune: the fraction of ``P``'s smallest entries dropped (0: none), a speed knob for
            the first hop, whose cost is proportional to ``P``'s entries. A pruned ``P`` is
            held explicitly (never ``"factored"``, which applies ``R~^T R~`` itself).
    """

    user_exp: float = 0.5
    item_exp: float = 0.5
    gram: str = "auto"
    max_memory_gb: float = 8.0
    threads: int = 0
    dtype: str = "auto"
    prune: float = 0.0


def check_operator(name: str, cfg: OperatorConfig, power: float = 1.0) -> None:
    """One-line errors for operator options that cannot work."""
    if cfg.gram not in GRAM_MODES:
        raise GraphrecError(f"{name}: gram must be one of {', '.join(GRAM_MODES)}, got {cfg.gram!r}")
    for option in ("user_exp", "item_exp"):
        if not math.isfinite(getattr(cfg, option)):
            raise GraphrecError(f"{name}: {option} must be a finite number")
    if not (math.isfinite(power) and power > 0):
        raise GraphrecError(f"{name}: power must be a positive number, got {power}")
    if cfg.gram == "factored" and power != 1:
        raise GraphrecError(f"{name}: gram='factored' applies R~^T R~ itself, so it needs "
                            f"power 1 (got {power}); use gram='sparse' or 'dense'")
    if not cfg.max_memory_gb > 0:
        raise GraphrecError(f"{name}: max_memory_gb must be positive, got {cfg.max_memory_gb}")
    if cfg.threads < 0:
        raise GraphrecError(f"{name}: threads must be >= 0, got {cfg.threads}")
    if not 0 <= cfg.prune < 1:
        raise GraphrecError(f"{name}: prune must be in [0, 1), got {cfg.prune}")
    if cfg.gram == "factored" and cfg.prune:
        raise GraphrecError(f"{name}: gram='factored' applies R~^T R~ itself and cannot "
                            "prune it; use gram='sparse' or prune=0")
    if cfg.dtype not in DTYPES:
        raise GraphrecError(f"{name}: dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")


def choose_dtype(requested: str, device: torch.device, rank: int) -> torch.dtype:
    """The dtype of the low-rank products ``[B, rank] @ [rank, I]``: ``requested`` unless
    ``"auto"``. Auto is bfloat16 on a CPU with native bfloat16 matrix products (AVX512-BF16 or
    AMX, as oneDNN reports) from rank :data:`BF16_MIN_RANK` up, float32 otherwise: measured on
    Gowalla's 40,981 items (``benchmarks/results/graph_filter.md``), bfloat16 is 1.5x faster
    at rank 256 and 2.0x at 448 but slower at 64, where adding the product into the float32
    scores costs more than the product; the metrics agree to the fourth decimal."""
    if requested != "auto":
        return torch.bfloat16 if requested == "bfloat16" else torch.float32
    native = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return torch.bfloat16 if native and rank >= BF16_MIN_RANK else torch.float32


def add_low_rank(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                 alpha: float = 1.0) -> torch.Tensor:
    """``out += alpha * left @ right`` in ``right``'s dtype (``left [B, k]``, ``right [k, I]``),
    accumulated into float32 ``out``."""
    if right.dtype == torch.float32:
        return out.addmm_(left.to(out.device), right, alpha=alpha)
    product = left.to(device=out.device, dtype=right.dtype) @ right
    return out.add_(product, alpha=alpha)


def dense_gram_bytes(num_items: int) -> int:
    """Bytes of a dense float32 ``[I, I]`` matrix."""
    return 4 * num_items * num_items


def choose_gram(num_items: int, power: float, requested: str, max_memory_gb: float,
                name: str, prune: float = 0.0) -> str:
    """The form ``P`` takes: ``requested`` unless ``"auto"``. Auto keeps ``P`` dense up to
    :data:`DENSE_MAX_ITEMS` items, then ``"factored"`` at power 1 without pruning and
    ``"sparse"`` otherwise. The rule is measured (``benchmarks/results/graph_filter.md``, the
    operator table: the 1,024 heaviest Gowalla users over its n most popular items): a dense
    first hop beats the explicit sparse one up to about 8,000 items, a dense hop on dense
    states beats the factored one up to about 3,000 (at 4,096: 198 ms against 165), so 4,096
    is where one filter's gain on one kind of hop about cancels the other's loss; a dense ``P``
    there takes 64 MiB. A dense ``P`` over ``max_memory_gb`` is refused with its size."""
    size = dense_gram_bytes(num_items)
    if requested == "dense" and size > max_memory_gb * 2**30:
        raise GraphrecError(f"{name}: a dense item-item matrix of {num_items:,} items takes "
                            f"{size / 2**30:.1f} GiB, over max_memory_gb={max_memory_gb:g}; "
                            "use gram='sparse' or 'factored', or raise max_memory_gb")
    if requested != "auto":
        return requested
    if num_items <= DENSE_MAX_ITEMS and size <= max_memory_gb * 2**30 and not prune:
        return "dense"
    return "factored" if power == 1 and not prune else "sparse"


class Rows:
    """A batch of binary user rows ``r [B, I]``: a scipy CSR matrix on the CPU, a torch sparse
    CSR tensor elsewhere. A repeated item counts once."""

    def __init__(self, history: History, num_items: int, device: torch.device,
                 scipy_products: bool = True) -> None:
        self.num_rows, self.num_items = history.num_rows, num_items
        self.empty = (history.ptr.diff() == 0).to(device)  # [B]
        if scipy_products:
            hp, hi = history.ptr.cpu().numpy(), history.items.cpu().numpy()
            r = sp.csr_matrix((np.ones(len(hi), dtype=np.float32), hi, hp),
                              shape=(self.num_rows, num_items))
            r.sum_duplicates()
            r.data[:] = 1.0
            self.csr: Any = r
        else:
            row = torch.repeat_interleave(torch.arange(self.num_rows, device=device),
                                          history.ptr.diff().to(device))
            keys = torch.unique(row * num_items + history.items.to(device))
            with quiet():
                self.csr = torch.sparse_coo_tensor(
                    torch.stack([keys // num_items, keys % num_items]),
                    torch.ones(keys.numel(), device=device),
                    (self.num_rows, num_items)).to_sparse_csr()

    def dense(self) -> torch.Tensor:
        """``r`` as a dense float32 tensor ``[B, I]``."""
        if isinstance(self.csr, sp.csr_matrix):
            return torch.from_numpy(self.csr.toarray())
        return self.csr.to_dense()

    def times(self, w: torch.Tensor) -> torch.Tensor:
        """``r W`` for a dense ``W [I, k]``: ``[B, k]``."""
        if isinstance(self.csr, sp.csr_matrix):
            return torch.from_numpy(np.asarray(self.csr @ w.numpy(), dtype=np.float32))
        return torch.sparse.mm(self.csr, w)


def _scipy_csr(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor,
               shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((values.numpy(), indices.numpy(), indptr.numpy()), shape=shape)


def _torch_csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A scipy CSR matrix as a torch CSR tensor; int32 indices where they fit (MKL's sparse
    product on dense states is ~25% faster with them than with int64 on Gowalla)."""
    index = np.int32 if max(m.nnz, *m.shape) < 2**31 - 1 else np.int64
    with quiet():
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(index)),
                                       torch.from_numpy(m.indices.astype(index)),
                                       torch.from_numpy(m.data.astype(np.float32)),
                                       m.shape, device=device)


class ItemGraph:
    """The operator ``P = R~^T R~`` of one training graph (entries to ``power``), in the form
    :func:`choose_gram` picks, on the device of ``user_ptr``.

    ``hop_rows(rows)`` is ``r P`` for sparse binary rows, ``hop(x)`` is ``x P`` for dense states
    ``[B, I]`` (both give dense ``[B, I]``); ``norm`` is ``R~`` (scipy CSR ``[U, I]`` on the CPU,
    torch CSR elsewhere) for the singular vectors; ``item_deg`` the item degrees.
    ``scipy_products`` (default: on the CPU) does the sparse products of sparse rows in scipy;
    else in torch, as on a GPU."""

    def __init__(self, user_ptr: torch.Tensor, user_items: torch.Tensor, num_items: int,
                 cfg: OperatorConfig, power: float = 1.0, name: str = "filter",
                 scipy_products: bool | None = None) -> None:
        self.device = user_ptr.device
        self.scipy_products = (self.device.type == "cpu" if scipy_products is None
                               else scipy_products)
        self.num_users, self.num_items = user_ptr.numel() - 1, num_items
        self.power, self.threads = power, cfg.threads
        counts = user_ptr.diff()
        user = torch.repeat_interleave(torch.arange(self.num_users, device=self.device), counts)
        self.user_deg = counts.float()
        self.item_deg = torch.bincount(user_items, minlength=num_items).float()
        value = (_inverse_power(self.user_deg, cfg.user_exp)[user]
                 * _inverse_power(self.item_deg, cfg.item_exp)[user_items])
        self.mode = choose_gram(num_items, power, cfg.gram, cfg.max_memory_gb, name, cfg.prune)
        # R~ and P on the CPU through scipy (sparse-sparse products release the GIL), moved
        # to torch for a dense P or another device
        norm = _scipy_csr(user_ptr.cpu(), user_items.cpu(), value.cpu(),
                          (self.num_users, num_items))
        norm.sort_indices()
        gram = (norm.T.tocsr() @ norm).tocsr()
        if power != 1:
            gram.data **= power
        if cfg.prune:  # drop the smallest entries: a quantile of the values
            gram.data[gram.data < np.quantile(gram.data, cfg.prune)] = 0
            gram.eliminate_zeros()
        self.norm: Any = norm if self.scipy_products else _torch_csr(norm, self.device)
        self.gram: Any = None  # explicit sparse P: for the first hop (CPU) and "sparse" hops
        self.dense: torch.Tensor | None = None
        self.norm_t: Any = None  # R~^T as torch CSR, for "factored" hops
        self.norm_torch: Any = None
        self.gram_t: Any = None
        if self.mode == "dense":
            self.dense = torch.from_numpy(gram.toarray()).to(self.device)
        else:
            self.gram = gram if self.scipy_products else _torch_csr(gram, self.device)
            if self.mode == "sparse":  # torch CSR for hops on dense states
                self.gram_t = _torch_csr(gram, self.device) if self.scipy_products else self.gram
            else:
                self.norm_torch = _torch_csr(norm, self.device)
                self.norm_t = _torch_csr(norm.T.tocsr(), self.device)
        log.info("%s: item-item operator %s (%s items, %.1f MiB)", name, self.mode,
                 f"{num_items:,}", self.nbytes() / 2**20)

    def nbytes(self) -> int:
        """Memory held by the operator's matrices, in bytes."""
        total = 0
        seen: set[int] = set()
        for m in (self.norm, self.gram, self.dense, self.gram_t, self.norm_torch, self.norm_t):
            if m is None or id(m) in seen:
                continue
            seen.add(id(m))
            if isinstance(m, sp.csr_matrix):
                total += m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
            elif isinstance(m, torch.Tensor):
                if m.layout == torch.sparse_csr:
                    total += sum(t.numel() * t.element_size()
                                 for t in (m.values(), m.col_indices(), m.crow_indices()))
                else:
                    total += m.numel() * m.element_size()
        return total

    def hop_rows(self, rows: Rows) -> torch.Tensor:
        """``r P`` for sparse binary rows: dense ``[B, I]``."""
        if self.dense is not None:
            if isinstance(rows.csr, sp.csr_matrix):
                with quiet():
                    return torch.sparse.mm(_torch_csr(rows.csr, self.device), self.dense)
            return torch.sparse.mm(rows.csr, self.dense)
        if not isinstance(rows.csr, sp.csr_matrix):
            with quiet():
                return torch.sparse.mm(rows.csr, self.gram).to_dense()
        r_b, gram = rows.csr, self.gram
        out = np.empty((rows.num_rows, self.num_items), dtype=np.float32)
        parts = [p for p in np.array_split(np.arange(rows.num_rows),
                                           self.threads or torch.get_num_threads()) if len(p)]

        def part(idx: np.ndarray) -> None:  # scipy releases the GIL in sparse products
            out[idx[0]: idx[-1] + 1] = (r_b[idx[0]: idx[-1] + 1] @ gram).toarray()

        if len(parts) > 1:
            with ThreadPoolExecutor(len(parts)) as pool:
                list(pool.map(part, parts))
        elif parts:
            part(parts[0])
        return torch.from_numpy(out)

    def hop(self, x: torch.Tensor) -> torch.Tensor:
        """``x P`` for dense states ``x [B, I]``: dense ``[B, I]``."""
        if self.dense is not None:
            return x @ self.dense
        with quiet():
            xt = x.T.contiguous()  # [I, B]: sparse @ dense is the product torch has
            if self.mode == "factored":  # P = R~^T R~, so x P = ((R~ x^T)^T R~) = (R~^T (R~ x^T))^T
                out = torch.sparse.mm(self.norm_t, torch.sparse.mm(self.norm_torch, xt))
            else:  # P is symmetric: x P = (P x^T)^T
                out = torch.sparse.mm(self.gram_t, xt)
        return out.T.contiguous()


def _inverse_power(degree: torch.Tensor, exponent: float) -> torch.Tensor:
    """``degree ** -exponent`` with zero degrees left at zero."""
    return torch.where(degree > 0, degree.clamp(min=1) ** -exponent, torch.zeros_like(degree))


def integrate(x0: State, f: Callable[[State], State], time: float, steps: int, solver: str,
              f0: State | None = None) -> list[State]:
    """Fixed-step solution of the linear ODE ``dx/dt = f(x)`` from ``x(0) = x0`` to
    ``x(time)`` in ``steps`` steps of ``solver`` (``"euler"``, or ``"rk4"``: the classic
    fourth-order Runge-Kutta). Returns the states at every step, ``x(0)`` first. ``f0``, when
    given, is ``f(x0)`` computed by the caller (a cheaper sparse first hop). Works on anything
    with ``+`` and scalar ``*``: tensors, or polynomials for a filter's spectral response."""
    h = time / steps
    states = [x0]
    x = x0
    for step in range(steps):
        k1 = f0 if (step == 0 and f0 is not None) else f(x)
        if solver == "euler":
            x = x + k1 * h
        else:
            k2 = f(x + k1 * (h / 2))
            k3 = f(x + k2 * (h / 2))
            k4 = f(x + k3 * h)
            x = x + (k1 + k2 * 2 + k3 * 2 + k4) * (h / 6)
        states.append(x)
    return states


def check_ode(name: str, prefix: str, time: float, steps: int, solver: str) -> None:
    """One-line errors for an ODE's terminal time, step count and solver."""
    if not (math.isfinite(time) and time > 0):
        raise GraphrecError(f"{name}: {prefix}_time must be a positive number, got {time}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise GraphrecError(f"{name}: {prefix}_steps must be a positive integer, got {steps}")
    if solver not in SOLVERS:
        raise GraphrecError(f"{name}: {prefix}_solver must be one of {', '.join(SOLVERS)}, "
                            f"got {solver!r}")


def auto_k(num_users: int, num_items: int) -> int:
    """The default number of singular vectors: min(users, items) / 32, rounded to a power of two
    in [16, 256]. On validation parts (benchmarks/results/graph_filter_k_sweep.md) ml-100k
    (943 users) is best at 32 of 16-512 and falls off above 64; Gowalla (29,858 users) improves
    up to 512, and the cap keeps the randomized SVD at the cost Gowalla's targets were set for."""
    target = max(1.0, min(num_users, num_items) / 32)
    return int(min(256, max(16, 2 ** round(math.log2(target)))))


def resolve_k(name: str, k: int | None, num_users: int, num_items: int,
              default: Callable[[int, int], int] = auto_k) -> int:
    """The number of singular vectors to compute: ``k``, or ``default`` of the graph's size
    (capped at the rank bound min(users, items)). An explicit ``k`` above that bound is an
    error naming it."""
    bound = min(num_users, num_items)
    if k is None:
        return min(default(num_users, num_items), bound)
    if k > bound:
        raise GraphrecError(f"{name}: k={k} singular vectors exceed the rank bound "
                            f"min(users, items) = {bound}; set k <= {bound}")
    return int(k)


def top_singular(graph: ItemGraph, k: int, method: str, oversample: int, niter: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` right singular vectors ``V [I, k]`` and singular values ``[k]`` of ``R~``,
    by ``"randomized"`` (``torch.svd_lowrank``: Halko et al.'s method, a few sparse products
    with a ``k + oversample`` column block), ``"lanczos"`` (scipy's ARPACK ``svds``, start
    vector seeded) or ``"exact"`` (dense LAPACK, small graphs). Deterministic under ``seed``."""
    device = graph.device
    if k == 0:
        return torch.zeros(graph.num_items, 0, device=device), torch.zeros(0, device=device)
    norm = graph.norm
    if method == "exact":
        dense = (torch.from_numpy(norm.toarray()) if isinstance(norm, sp.csr_matrix)
                 else norm.to_dense())
        _, s, vh = torch.linalg.svd(dense.to(device), full_matrices=False)
        return vh[:k].T.contiguous(), s[:k].contiguous()
    if method == "lanczos":
        from scipy.sparse.linalg import svds

        m = norm if isinstance(norm, sp.csr_matrix) else _scipy_from_torch(norm)
        v0 = np.random.default_rng(seed).standard_normal(min(m.shape))
        _, s, vh = svds(m.astype(np.float64), k=min(k, min(m.shape) - 1), v0=v0)
        order = np.argsort(-s)
        v = torch.from_numpy(np.ascontiguousarray(vh[order].T, dtype=np.float32))
        return v.to(device), torch.from_numpy(s[order].astype(np.float32)).to(device)
    q = min(k + oversample, graph.num_users, graph.num_items)
    with quiet():
        m = _torch_csr(norm, device) if isinstance(norm, sp.csr_matrix) else norm
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            _, s, v = torch.svd_lowrank(m, q=q, niter=niter)
    return v[:, :k].contiguous(), s[:k].contiguous()


def _scipy_from_torch(m: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix((m.values().cpu().numpy(), m.col_indices().cpu().numpy(),
                          m.crow_indices().cpu().numpy()), shape=tuple(m.shape))


def check_svd(name: str, k: int | None, method: str, oversample: int, niter: int) -> None:
    """One-line errors for the singular-vector options."""
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 0):
        raise GraphrecError(f"{name}: k must be an integer >= 0, got {k}")
    if method not in SVD_METHODS:
        raise GraphrecError(f"{name}: svd must be one of {', '.join(SVD_METHODS)}, got {method!r}")
    if oversample < 0 or niter < 0:
        raise GraphrecError(f"{name}: oversample and niter must be >= 0")


class FilterModel(Recommender):
    """Base of the training-free filters: nothing is trained. Subclasses set ``name`` and
    implement :meth:`fit_filter` (fit-time state kept in buffers, e.g. singular vectors),
    :meth:`prepare` (structures derived from that state and the operator) and
    :meth:`filter_rows` (the scores of a batch of rows). What is saved is the training graph as
    CSR buffers plus the subclass's buffers; the operator is rebuilt after load or a move."""

    new_users = "history"  # the formula applied to the given row
    name = "filter"

    def __init__(self, num_users: int, num_items: int, cfg: Any) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))  # CSR
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.graph: ItemGraph | None = None
        self.pop: torch.Tensor | None = None

    def fit(self, train: HeteroData) -> None:
        device = self.user_ptr.device
        ptr, items = user_sequences(train)
        self.user_ptr, self.user_items = ptr.to(device).clone(), items.to(device).clone()
        self._build_graph()
        if self.graph is not None:
            self.fit_filter(self.graph)
        self._prepare()  # derived structures now, so fitting time includes them

    def derive(self) -> None:
        self._build_graph()
        self._prepare()

    def _build_graph(self) -> None:
        self.graph = None
        if self.user_items.numel():
            # the elementwise power of P's entries, for configs that have one (Turbo-CF)
            self.graph = ItemGraph(self.user_ptr, self.user_items, self.num_items, self.cfg,
                                   float(getattr(self.cfg, "power", 1.0)), self.name)

    def _prepare(self) -> None:
        if self.graph is None:
            return
        di = self.graph.item_deg
        self.pop = di / di.max().clamp(min=1)  # the scores of an empty row
        self.prepare(self.graph)

    def fit_filter(self, graph: ItemGraph) -> None:
        """Compute and keep (in buffers) what the filter needs beyond the operator."""

    def prepare(self, graph: ItemGraph) -> None:
        """Build structures derived from the saved state and the operator."""

    @abstractmethod
    def filter_rows(self, rows: Rows, graph: ItemGraph) -> torch.Tensor:
        """The scores ``[B, I]`` of a batch of binary rows."""

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        """Scores ``[B, I]``; rows ``r_u`` from ``history`` when given, else from training."""
        check_history(self, users, history)
        if self.graph is None or self.pop is None:
            raise GraphrecError(f"{self.name}: not fitted (fit it on its training graph first)")
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        rows = Rows(history, self.num_items, self.graph.device, self.graph.scipy_products)
        scores = self.filter_rows(rows, self.graph)
        if rows.empty.any():
            scores[rows.empty.to(scores.device)] = self.pop.to(scores.device)
        return scores

    def ideal_factors(self, basis: torch.Tensor, graph: ItemGraph
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """GF-CF's ideal low-pass term ``r D_I^-b V V^T D_I^b`` as two factors
        ``(D_I^-b V [I, k], V^T D_I^b [k, I])``, ``b`` the item exponent."""
        di = graph.item_deg
        b = self.cfg.item_exp
        low_in = basis * _inverse_power(di, b).unsqueeze(1)
        low_out = (basis * torch.where(di > 0, di.clamp(min=1) ** b, torch.zeros_like(di))
                   .unsqueeze(1)).T.contiguous()
        return low_in, low_out


def horner(x: Rows | torch.Tensor, graph: ItemGraph, coefficients: list[float]) -> torch.Tensor:
    """``x (c_0 + c_1 P + ... + c_d P^d)`` by Horner's scheme, ``coefficients = [c_0, ..., c_d]``,
    for sparse binary rows (the first hop from the sparse rows) or dense states ``[B, I]``; then
    ``d - 1`` hops on dense states."""
    c = [float(v) for v in coefficients]
    sparse = isinstance(x, Rows)
    if len(c) == 1:
        return (x.dense() if sparse else x) * c[0]
    out = graph.hop_rows(x) if sparse else graph.hop(x)
    if c[-1] != 1:
        out.mul_(c[-1])
    base = (x.dense() if any(c[:-1]) else None) if sparse else x
    for j in range(len(c) - 2, -1, -1):
        if c[j] and base is not None:
            out.add_(base, alpha=c[j])
        if j:
            out = graph.hop(out)
    return out
