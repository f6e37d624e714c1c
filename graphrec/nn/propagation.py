"""Propagation over the symmetric-normalized bipartite adjacency (LightGCN's encoder).

Nodes are users ``0..U-1`` followed by items ``U..U+I-1``. The adjacency

    A~ = D^-1/2 A D^-1/2,   A = [[0, R], [R^T, 0]]

is built once per training graph, vectorized, on the target device, as a torch.sparse CSR
matrix holding only its three arrays, and owned by the encoder (never renormalized per call,
unlike PyG's ``LGConv`` over ``edge_index``). Because ``A~`` is symmetric, the gradient of
``A~ X`` with respect to ``X`` is ``A~ G``: one more forward product.

Backends (:data:`BACKENDS`; ``LightGCNEncoder(backend=...)`` and the graph models' ``propagation``
option override the default):

* ``"symmetric"`` (the default on every device): torch's CSR x dense product forward and, by
  :func:`symmetric_spmm`, the same product backward; on a CPU, where the embedding table
  outgrows the cache, the product runs over column blocks (:class:`ColumnBlocks`,
  :func:`blocked_adjacency`). Chosen from ``benchmarks/propagation.py`` (results in
  ``benchmarks/results/propagation.md``, 2-core CPU, Gowalla, F = 64): the fastest forward and
  forward+backward of every backend there, 1.6-2.6x torch's own CSR product forward where the
  table outgrows the cache (the blocks; about equal on Gowalla at F = 64),
  forward+backward 2.2-2.5x its forward against 4-5x for torch's sparse autograd, and 25x
  faster than ``LGConv`` over ``edge_index``. No GPU has been measured yet; on CUDA the plain
  product (cuSPARSE) and the same backward argument apply.
* ``"autograd"``: the same forward with torch's own sparse backward, which transposes the
  matrix on every call: the reference the tests compare with.
* ``"edge_index"``: PyG's ``LGConv`` message passing (gather, scale, scatter) over the
  adjacency's ``edge_index`` and weights: memory-hungry (one message per edge), 10x slower on
  CPU, kept for comparison and for inputs torch.sparse cannot take.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import LGConv

from graphrec.errors import GraphrecError
from graphrec.schema import EDGE, ITEM, USER


BACKENDS = ("symmetric", "autograd", "edge_index")
DEFAULT_BACKEND = "symmetric"


def normalized_adjacency(graph: HeteroData, device: torch.device | str | None = None) -> Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite training graph as a ``[U+I, U+I]`` sparse CSR
    tensor (users first, then items). Nodes without edges have empty rows, not NaNs; a repeated
    (user, item) pair counts twice, in the degrees and in its entry.

    Built straight into CSR (sort the keys, count the rows), so the result keeps only its three
    arrays alive: going through a coalesced COO tensor would leave the CSR's columns a view of
    the COO's ``[2, nnz]`` index storage (about 1.6x the memory on Gowalla). Indices are int32
    while ``U+I`` and the non-zeros fit: torch's CPU kernel (MKL) would otherwise make an
    int32 copy of the columns on every product, and the structure is a third smaller."""
    num_users, num_items = int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)
    ei = graph[EDGE].edge_index.to(device)
    n = num_users + num_items
    row = torch.cat([ei[0], ei[1] + num_users])  # user -> item and item -> user
    col = torch.cat([ei[1] + num_users, ei[0]])
    deg = torch.bincount(row, minlength=n).float()
    inv_sqrt = deg.clamp(min=1).rsqrt()
    keys, order = torch.sort(row * n + col)
    value = (inv_sqrt[row] * inv_sqrt[col])[order]
    del row, col, order
    keys, inverse = torch.unique_consecutive(keys, return_inverse=True)
    if keys.numel() < value.numel():  # repeated pairs: one entry holding their sum
        value = torch.zeros(keys.numel(), device=value.device).index_add_(0, inverse, value)
    del inverse
    index = torch.int32 if max(n, keys.numel()) < 2**31 else torch.long
    crow = torch.zeros(n + 1, dtype=index, device=keys.device)
    crow[1:] = torch.bincount(keys // n, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # torch calls sparse CSR "beta"; it is used as documented
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, (keys % n).to(index), value, (n, n),
                                       check_invariants=False)


# Column blocks on a CPU: the slice of x one block gathers from. Measured on the 2-core EPYC
# (32 MiB L3 shared with the host): 12 MiB slices ran a 10^7-edge layer 1.6x and a 10^6-edge
# layer 2x faster than one pass over a table that leaves the cache (benchmarks/propagation.py).
CPU_BLOCK_BYTES = 12 * 2**20


class ColumnBlocks:
    """A sparse ``[N, M]`` CSR matrix ``A`` kept as column blocks ``A_1 .. A_k``, each a CSR over
    all rows and one range of columns, so that ``A x = sum_b A_b x_b`` gathers rows from one
    cache-sized slice ``x_b`` at a time instead of from the whole table. Costs one pass over
    the output per block, so it pays only where the table outgrows the cache and rows have
    several non-zeros each (:func:`block_count`). Holds the same non-zeros as ``A`` (one
    permuted copy; ``A`` itself may be dropped) plus ``k`` row-pointer arrays.

    Used by :func:`spmm` and :func:`symmetric_spmm`; :func:`blocked_adjacency` decides."""

    def __init__(self, adj: Tensor, num_blocks: int) -> None:
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        n, m = adj.shape
        self.shape = (int(n), int(m))
        self.device = adj.device
        width = -(-m // num_blocks)
        row = torch.repeat_interleave(torch.arange(n, device=adj.device), crow.diff().long())
        block = col.long() // width
        # stable: each block keeps the row-major order of its entries (CSR order)
        order = torch.sort(block, stable=True).indices
        counts = torch.bincount(block * n + row, minlength=num_blocks * n).view(num_blocks, n)
        del row
        crows = torch.zeros(num_blocks, n + 1, dtype=crow.dtype, device=adj.device)
        crows[:, 1:] = counts.cumsum(1)
        ends = counts.sum(1).cumsum(0).tolist()
        cols = (col.long() - block * width)[order].to(col.dtype)
        vals = val[order]
        self.blocks: list[tuple[Tensor, int, int]] = []
        start = 0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            for b, end in enumerate(ends):
                lo, hi = b * width, min((b + 1) * width, m)
                part = torch.sparse_csr_tensor(crows[b], cols[start:end], vals[start:end],
                                               (n, hi - lo), check_invariants=False)
                self.blocks.append((part, lo, hi))
                start = end
        self.nbytes = sum(t.numel() * t.element_size() for t in (crows, cols, vals))

    def __repr__(self) -> str:
        return f"ColumnBlocks(shape={self.shape}, blocks={len(self.blocks)})"

    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x`` for dense ``x [M, F]``, accumulated block by block into one output."""
        out = x.new_empty(self.shape[0], x.shape[1])
        for b, (part, lo, hi) in enumerate(self.blocks):
            out.addmm_(part, x[lo:hi], beta=0.0 if b == 0 else 1.0)
        return out


def block_count(num_rows: int, num_cols: int, nnz: int, dim: int,
                block_bytes: int | None = None) -> int:
    """How many column blocks a CPU product over ``dim`` features should use: enough that each
    slice of the table holds at most ``block_bytes``, but at most half the non-zeros per row
    (each block reads and writes the output once more, which must stay below the gathers it
    saves). 1 means one plain product. ``block_bytes`` defaults to :data:`CPU_BLOCK_BYTES`."""
    wanted = -(-num_cols * dim * 4 // (block_bytes or CPU_BLOCK_BYTES))
    return max(1, min(wanted, nnz // max(1, 2 * num_rows)))


def blocked_adjacency(adj: Tensor, dim: int) -> Tensor | ColumnBlocks:
    """``adj`` as :class:`ColumnBlocks` where that pays for products over ``dim`` features (CPU,
    tables beyond the cache; :func:`block_count`), else ``adj`` itself. The caller may drop
    ``adj`` afterwards: the blocks hold their own copy."""
    if adj.device.type != "cpu":  # measured on CPU only; GPUs keep the one cuSPARSE call
        return adj
    k = block_count(adj.shape[0], adj.shape[1], adj.values().numel(), dim)
    return adj if k == 1 else ColumnBlocks(adj, k)


def spmm(adj: Tensor | ColumnBlocks, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse ``adj [N, M]`` (CSR or :class:`ColumnBlocks`) and dense
    ``x [M, F]``, written straight into one new ``[N, F]`` tensor. ``adj @ x`` itself allocates
    a zeroed ``[N, F]`` input beside its result (torch computes it as ``addmm(zeros, adj, x)``):
    ``addmm_`` with ``beta=0`` into the output (documented to ignore the output's old contents)
    keeps the peak at the output alone. No autograd through ``adj``; use
    :func:`symmetric_spmm` for gradients."""
    if isinstance(adj, ColumnBlocks):
        return adj.matmul(x)
    return x.new_empty(adj.shape[0], x.shape[1]).addmm_(adj, x, beta=0.0)


class _SymmetricSpMM(torch.autograd.Function):
    """``A X`` for a symmetric sparse ``A``: the backward is ``A G`` (``A^T = A``)."""

    @staticmethod
    def forward(ctx, adj: Tensor | ColumnBlocks, x: Tensor) -> Tensor:  # noqa: D102
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        return None, spmm(ctx.adj, grad)


def symmetric_spmm(adj: Tensor | ColumnBlocks, x: Tensor) -> Tensor:
    """``adj @ x`` for a symmetric sparse ``adj [N, N]`` (CSR or :class:`ColumnBlocks`) and
    dense ``x [N, F]``, with the cheap backward. ``adj`` itself gets no gradient. The caller
    guarantees symmetry."""
    return _SymmetricSpMM.apply(adj, x)


class SymmetricLGConv(LGConv):
    """PyG's :class:`~torch_geometric.nn.conv.LGConv` over a prebuilt, already normalized,
    symmetric sparse adjacency: ``x' = A~ x``, aggregated by :func:`symmetric_spmm`.

    Call as ``conv(x, adj)`` with ``adj`` from :func:`normalized_adjacency` (a sparse tensor,
    through PyG's ``propagate``) or :func:`blocked_adjacency` (:class:`ColumnBlocks`, which PyG
    does not know: multiplied directly, the same aggregation).
    """

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def forward(self, x: Tensor, edge_index: Tensor | ColumnBlocks,  # type: ignore[override]
                edge_weight: Tensor | None = None) -> Tensor:
        if isinstance(edge_index, ColumnBlocks):
            return symmetric_spmm(edge_index, x)
        return super().forward(x, edge_index, edge_weight)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        return symmetric_spmm(adj_t, x)


class _AutogradLGConv(LGConv):
    """``LGConv`` over the prebuilt adjacency with torch's own sparse autograd."""

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        return torch.sparse.mm(adj_t, x)


class _EdgeIndexLGConv(torch.nn.Module):
    """``LGConv`` message passing over the adjacency's ``edge_index`` and weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = LGConv(normalize=False)
        self._cache: tuple[Tensor, Tensor, Tensor] | None = None

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:  # noqa: D102
        if self._cache is None or self._cache[0] is not adj:
            coo = adj.to_sparse_coo()
            # the adjacency is symmetric, so rows and columns may be read either way round
            self._cache = (adj, coo.indices().long(), coo.values())  # PyG scatters need int64
        return self.conv(x, self._cache[1], self._cache[2])


def make_conv(backend: str = DEFAULT_BACKEND) -> torch.nn.Module:
    """One propagation layer ``x -> A~ x`` of ``backend`` (see the module docstring)."""
    if backend == "symmetric":
        return SymmetricLGConv()
    if backend == "autograd":
        return _AutogradLGConv()
    if backend == "edge_index":
        return _EdgeIndexLGConv()
    raise GraphrecError(f"propagation: unknown backend {backend!r}; choose one of "
                        f"{', '.join(BACKENDS)}")


class LightGCNEncoder(torch.nn.Module):
    r"""K hops of LightGCN propagation and a weighted combination of the layers
    (He et al., SIGIR 2020):

    .. math::
        E^{(k+1)} = \tilde A E^{(k)}, \qquad E = \sum_{k=0}^{K} \alpha_k E^{(k)}

    Args:
        num_layers: ``K``; 0 returns the input (plain embedding lookup: MF and BPR).
        layer_weights: ``alpha_0..alpha_K``; default ``1 / (K + 1)`` each (the mean).
        backend: how a layer is computed (:data:`BACKENDS`; default ``"symmetric"``, the fastest
            measured, see the module docstring).

    Shapes: ``x [U+I, F]`` and ``adj [U+I, U+I]`` sparse -> ``[U+I, F]``.
    """

    def __init__(self, num_layers: int = 3, layer_weights: Sequence[float] | None = None,
                 backend: str = DEFAULT_BACKEND) -> None:
        super().__init__()
        if num_layers < 0:
            raise GraphrecError(f"num_layers must be >= 0, got {num_layers}")
        weights = ([1.0 / (num_layers + 1)] * (num_layers + 1) if layer_weights is None
                   else [float(w) for w in layer_weights])
        if len(weights) != num_layers + 1:
            raise GraphrecError(f"layer_weights needs {num_layers + 1} values (layers 0..K), "
                                f"got {len(weights)}")
        self.num_layers = num_layers
        self.register_buffer("layer_weights", torch.tensor(weights))
        self.conv = make_conv(backend)

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        if self.num_layers == 0:
            return x * self.layer_weights[0]
        out = x * self.layer_weights[0]
        for k in range(1, self.num_layers + 1):
            x = self.conv(x, adj)  # [U+I, F]
            out = out + x * self.layer_weights[k]
        return out
