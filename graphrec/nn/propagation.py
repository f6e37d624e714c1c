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
  outgrows the cache, the product runs over tiles (:class:`BlockedAdjacency`,
  :func:`blocked_adjacency`): users and items as row bands, so the two zero quadrants of the
  bipartite adjacency are never visited, each band's columns cut into cache-sized blocks.
  Chosen from ``benchmarks/propagation.py`` (results in ``benchmarks/results/propagation.md``,
  2-core CPU): the fastest forward and forward+backward of every backend there; on Gowalla at
  F = 64, 1.4x torch's own CSR product forward (2.0x at F = 256, 3.3x on a 10^7-edge graph),
  forward+backward 2.01x its forward against 5.5x for torch's sparse autograd, and 27x faster
  than ``LGConv`` over ``edge_index`` (the run of commit 3e7f10d). No GPU has been measured
  yet; on CUDA the plain product (cuSPARSE) and the same backward argument apply.
* ``"autograd"``: the same forward with torch's own sparse backward, which transposes the
  matrix on every call: the reference the tests compare with.
* ``"edge_index"``: PyG's ``LGConv`` message passing (gather, scale, scatter) over the
  adjacency's ``edge_index`` and weights: memory-hungry (one message per edge), about 27x
  slower on CPU, kept for comparison and for inputs torch.sparse cannot take.
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


# Column blocks on a CPU: the slice of x one tile gathers from. Measured on the 2-core EPYC
# (32 MiB L3 shared with the host): 12 MiB slices ran a 10^7-edge layer 1.6x and a 10^6-edge
# layer 2x faster than one pass over a table that leaves the cache (benchmarks/propagation.py).
CPU_BLOCK_BYTES = 12 * 2**20


class BlockedAdjacency:
    """A sparse ``[N, M]`` CSR matrix ``A`` kept as tiles: row bands (``row_bounds``) times
    column blocks (``col_bounds``), each tile a CSR over its band's rows and its block's
    columns, empty tiles dropped. ``A x`` then runs band by band, ``out[band] = sum_b A_{band,b}
    x_b``: each product gathers rows from one cache-sized slice ``x_b`` instead of the whole
    table, and reads and writes the output of its own band only.

    For the bipartite adjacency ``[[0, R], [R^T, 0]]`` the bands are the users and the items
    (:func:`blocked_adjacency`): the user band's tiles cover item columns only and the item
    band's user columns only, so the two zero quadrants cost nothing and a column block's
    extra pass over the output covers one side of the graph, not all ``U+I`` rows. Holds the
    same non-zeros as ``A`` (one permuted copy; ``A`` itself may be dropped) plus one
    row-pointer array per tile.

    Used by :func:`spmm` and :func:`symmetric_spmm`."""

    def __init__(self, adj: Tensor, row_bounds: Sequence[int], col_bounds: Sequence[int]) -> None:
        n, m = (int(d) for d in adj.shape)
        rb, cb = [int(b) for b in row_bounds], [int(b) for b in col_bounds]
        for name, b, size in (("row_bounds", rb, n), ("col_bounds", cb, m)):
            if len(b) < 2 or b[0] != 0 or b[-1] != size or any(x >= y for x, y in zip(b, b[1:])):
                raise GraphrecError(f"BlockedAdjacency: {name} must rise strictly from 0 to "
                                    f"{size}, got {b}")
        self.shape, self.device = (n, m), adj.device
        crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
        starts = torch.tensor(cb[:-1], device=adj.device)
        self.bands: list[tuple[int, int, list[tuple[Tensor, int, int]]]] = []
        self.nbytes = 0
        k = len(cb) - 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            for r0, r1 in zip(rb, rb[1:]):
                rows, first, last = r1 - r0, int(crow[r0]), int(crow[r1])
                # the band's non-zeros are one contiguous run of the CSR, row-major
                row = torch.repeat_interleave(torch.arange(rows, device=adj.device),
                                              crow[r0:r1 + 1].diff().long())
                band_col = col[first:last].long()
                block = torch.bucketize(band_col, starts, right=True) - 1
                order = torch.sort(block, stable=True).indices  # keeps row-major order per tile
                counts = torch.bincount(block * rows + row, minlength=k * rows).view(k, rows)
                del row
                crows = torch.zeros(k, rows + 1, dtype=crow.dtype, device=adj.device)
                crows[:, 1:] = counts.cumsum(1)
                ends = counts.sum(1).cumsum(0).tolist()
                cols = (band_col - starts[block])[order].to(col.dtype)
                vals = val[first:last][order]
                del band_col, block, order
                tiles, begin = [], 0
                for j, end in enumerate(ends):
                    if end > begin:
                        lo, hi = cb[j], cb[j + 1]
                        tile = torch.sparse_csr_tensor(crows[j].clone(), cols[begin:end],
                                                       vals[begin:end], (rows, hi - lo),
                                                       check_invariants=False)
                        tiles.append((tile, lo, hi))
                        self.nbytes += crows[j].numel() * crows.element_size()
                    begin = end
                self.nbytes += (cols.numel() * cols.element_size()
                                + vals.numel() * vals.element_size())
                self.bands.append((r0, r1, tiles))

    @property
    def num_tiles(self) -> int:
        """Non-empty tiles: the products one ``A @ x`` makes."""
        return sum(len(tiles) for _, _, tiles in self.bands)

    def __repr__(self) -> str:
        return (f"BlockedAdjacency(shape={self.shape}, bands={len(self.bands)}, "
                f"tiles={self.num_tiles})")

    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x`` for dense ``x [M, F]``, accumulated tile by tile into one output."""
        if x.dim() != 2 or x.shape[0] != self.shape[1]:
            raise GraphrecError(f"BlockedAdjacency: cannot multiply {self.shape} by "
                                f"{tuple(x.shape)}")
        out = x.new_empty(self.shape[0], x.shape[1])
        for r0, r1, tiles in self.bands:
            band = out[r0:r1]
            if not tiles:  # rows without non-zeros
                band.zero_()
            for j, (tile, lo, hi) in enumerate(tiles):
                band.addmm_(tile, x[lo:hi], beta=0.0 if j == 0 else 1.0)
        return out


def block_count(num_rows: int, num_cols: int, nnz: int, dim: int,
                block_bytes: int | None = None) -> int:
    """How many column blocks a CPU product over ``dim`` features should cut ``num_cols``
    columns into, when ``num_rows`` rows read ``nnz`` non-zeros from them: enough that each
    slice of the table holds at most ``block_bytes``, but at most half the non-zeros per row
    (each block reads and writes those rows' output once more, which must stay below the
    gathers it saves). 1 means one block. ``block_bytes`` defaults to
    :data:`CPU_BLOCK_BYTES`."""
    wanted = -(-num_cols * dim * 4 // (block_bytes or CPU_BLOCK_BYTES))
    return max(1, min(wanted, nnz // max(1, 2 * num_rows)))


def blocked_adjacency(adj: Tensor, dim: int, num_users: int | None = None
                      ) -> Tensor | BlockedAdjacency:
    """``adj`` as :class:`BlockedAdjacency` where that pays for products over ``dim`` features
    (CPU, a table larger than :data:`CPU_BLOCK_BYTES`), else ``adj`` itself. ``num_users``: the
    bipartite split (users ``0..U-1`` first, as :func:`normalized_adjacency` builds it), which
    makes users and items the row bands; each side's columns are then cut by
    :func:`block_count` for the band that reads them. The caller may drop ``adj`` afterwards:
    the tiles hold their own copy."""
    n, m = (int(d) for d in adj.shape)
    if adj.device.type != "cpu" or m * dim * 4 <= CPU_BLOCK_BYTES:
        return adj  # GPUs keep the one cuSPARSE call (measured on CPU only); small tables fit
    nnz = adj.values().numel()
    if num_users is not None and 0 < num_users < min(n, m):
        row_bounds = [0, num_users, n]
        # user rows read the item columns and item rows the user columns
        head = int(adj.crow_indices()[num_users])
        sides = [(0, num_users, n - num_users, nnz - head), (num_users, m, num_users, head)]
    else:
        row_bounds, sides = [0, n], [(0, m, n, nnz)]
    col_bounds = [0]
    for lo, hi, readers, side_nnz in sides:
        k = block_count(readers, hi - lo, side_nnz, dim)
        width = -(-(hi - lo) // k)
        col_bounds += list(range(lo + width, hi, width)) + [hi]
    if len(row_bounds) == len(col_bounds) == 2:
        return adj  # one tile: a copy of the matrix for nothing
    return BlockedAdjacency(adj, row_bounds, col_bounds)


def spmm(adj: Tensor | BlockedAdjacency, x: Tensor) -> Tensor:
    """``adj @ x`` for a sparse ``adj [N, M]`` (CSR or :class:`BlockedAdjacency`) and dense
    ``x [M, F]``, written straight into one new ``[N, F]`` tensor. ``adj @ x`` itself allocates
    a zeroed ``[N, F]`` input beside its result (torch computes it as ``addmm(zeros, adj, x)``):
    ``addmm_`` with ``beta=0`` into the output (documented to ignore the output's old contents)
    keeps the peak at the output alone. No autograd through ``adj``; use
    :func:`symmetric_spmm` for gradients."""
    if isinstance(adj, BlockedAdjacency):
        return adj.matmul(x)
    return x.new_empty(adj.shape[0], x.shape[1]).addmm_(adj, x, beta=0.0)


class _SymmetricSpMM(torch.autograd.Function):
    """``A X`` for a symmetric sparse ``A``: the backward is ``A G`` (``A^T = A``)."""

    @staticmethod
    def forward(ctx, adj: Tensor | BlockedAdjacency, x: Tensor) -> Tensor:  # noqa: D102
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        return None, spmm(ctx.adj, grad)


def symmetric_spmm(adj: Tensor | BlockedAdjacency, x: Tensor) -> Tensor:
    """``adj @ x`` for a symmetric sparse ``adj [N, N]`` (CSR or :class:`BlockedAdjacency`) and
    dense ``x [N, F]``, with the cheap backward. ``adj`` itself gets no gradient. The caller
    guarantees symmetry."""
    return _SymmetricSpMM.apply(adj, x)


class SymmetricLGConv(LGConv):
    """PyG's :class:`~torch_geometric.nn.conv.LGConv` over a prebuilt, already normalized,
    symmetric sparse adjacency: ``x' = A~ x``, aggregated by :func:`symmetric_spmm`.

    Call as ``conv(x, adj)`` with ``adj`` from :func:`normalized_adjacency` (a sparse tensor,
    through PyG's ``propagate``) or :func:`blocked_adjacency` (:class:`BlockedAdjacency`, which PyG
    does not know: multiplied directly, the same aggregation).
    """

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def forward(self, x: Tensor, edge_index: Tensor | BlockedAdjacency,  # type: ignore[override]
                edge_weight: Tensor | None = None) -> Tensor:
        if isinstance(edge_index, BlockedAdjacency):
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
