"""Propagation over the symmetric-normalized bipartite adjacency (LightGCN's encoder).

Nodes are users ``0..U-1`` followed by items ``U..U+I-1``. The adjacency

    A~ = D^-1/2 A D^-1/2,   A = [[0, R], [R^T, 0]]   (or [[0, R], [R^T, S]])

is built once per training graph, vectorized, on the target device, as a torch.sparse CSR
matrix holding only its three arrays, and owned by the model (never renormalized per call,
unlike PyG's ``LGConv`` over ``edge_index``). Because ``A~`` is symmetric, the gradient of
``A~ X`` with respect to ``X`` is ``A~ G``: one more forward product.

One layer, :class:`LightGCNConv`, is a PyG ``MessagePassing`` operator (``LGConv`` without its
per-call normalization) for every adjacency form: ``propagate`` is always the entry, and its
``message_and_aggregate`` runs the fast product. What the layer computes with is decided by the
adjacency it is given (:func:`lightgcn_adjacency` builds the one a backend asks for):

* ``"symmetric"`` (the default on every device): a :class:`BlockedAdjacency`, graphrec's
  sparse matrix type (a ``torch.Tensor`` subclass with the sparse CSR layout, so PyG routes it
  to ``message_and_aggregate``), multiplied by torch's CSR x dense product forward and, by
  :func:`symmetric_spmm`, the same product backward. On a CPU, where the embedding table
  outgrows the cache, it holds tiles (:func:`blocked_adjacency`): users and items as row bands,
  so the two zero quadrants of the bipartite adjacency are never visited, each band's columns
  cut into cache-sized blocks; otherwise one tile, the CSR itself. Chosen from
  ``benchmarks/propagation.py`` (results in ``benchmarks/results/propagation.md``, 2-core CPU):
  the fastest forward and forward+backward of every backend there. No GPU has been measured
  yet; on CUDA the plain product (cuSPARSE) and the same backward argument apply.
* ``"autograd"``: the plain CSR tensor, multiplied by ``torch.sparse.mm`` with torch's own
  sparse backward, which transposes the matrix on every call: the reference the tests compare
  with.
* ``"edge_index"``: ``(edge_index, edge_weight)``, PyG's message passing (gather, scale,
  scatter): memory-hungry (one message per edge), about 27x slower on CPU, kept for comparison.

The same layer takes PyG's own inputs: ``edge_index`` with ``edge_weight``, any torch sparse
``adj_t``, and bipartite ``(x_src, x_dst)`` pairs, so it runs inside ``HeteroConv`` and
``to_hetero`` over the ``user``/``item`` node types (tests show both).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import LGConv

from graphrec.data.graph import check_schema
from graphrec.errors import GraphrecError
from graphrec.schema import EDGE, ITEM, SIMILAR, USER


BACKENDS = ("symmetric", "autograd", "edge_index")
DEFAULT_BACKEND = "symmetric"


def normalized_adjacency(graph: HeteroData, device: torch.device | str | None = None) -> Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite training graph as a ``[U+I, U+I]`` sparse CSR
    tensor (users first, then items). Nodes without edges have empty rows, not NaNs; a repeated
    (user, item) pair counts twice, in the degrees and in its entry. When the graph has
    item-item :data:`~graphrec.schema.SIMILAR` edges, they fill the item block ``S`` with their
    ``edge_weight`` (and count by it in the degrees): graph-first cold start, an item without
    interactions is reached through the items like it.

    Built straight into CSR (sort the keys, count the rows), so the result keeps only its three
    arrays alive: going through a coalesced COO tensor would leave the CSR's columns a view of
    the COO's ``[2, nnz]`` index storage (about 1.6x the memory on Gowalla). Indices are int32
    while ``U+I`` and the non-zeros fit: torch's CPU kernel (MKL) would otherwise make an
    int32 copy of the columns on every product, and the structure is a third smaller."""
    check_schema(graph, "propagation")
    num_users, num_items = int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)
    ei = graph[EDGE].edge_index.to(device)
    n = num_users + num_items
    row = torch.cat([ei[0], ei[1] + num_users])  # user -> item and item -> user
    col = torch.cat([ei[1] + num_users, ei[0]])
    weight = None
    if SIMILAR in graph.edge_types and graph[SIMILAR].num_edges:
        si = graph[SIMILAR].edge_index.to(device) + num_users
        sw = graph[SIMILAR].edge_weight.to(device).float()
        weight = torch.cat([torch.ones(row.numel(), device=sw.device), sw])
        row, col = torch.cat([row, si[0]]), torch.cat([col, si[1]])
    deg = torch.bincount(row, weights=weight, minlength=n).float()
    inv_sqrt = deg.clamp(min=1).rsqrt() if weight is None else torch.where(
        deg > 0, deg.clamp(min=1e-12).rsqrt(), 0.0)
    keys, order = torch.sort(row * n + col)
    value = inv_sqrt[row] * inv_sqrt[col]
    value = (value if weight is None else value * weight)[order]
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


class BlockedAdjacency(torch.Tensor):
    """A sparse ``[N, M]`` matrix ``A`` kept as tiles: row bands (``row_bounds``) times column
    blocks (``col_bounds``), each tile a CSR over its band's rows and its block's columns, empty
    tiles dropped. ``A x`` then runs band by band, ``out[band] = sum_b A_{band,b} x_b``: each
    product gathers rows from one cache-sized slice ``x_b`` instead of the whole table, and
    reads and writes the output of its own band only. With one band and one block the single
    tile is ``A`` itself (no copy).

    For the bipartite adjacency ``[[0, R], [R^T, 0]]`` the bands are the users and the items
    (:func:`blocked_adjacency`): the user band's tiles cover item columns only and the item
    band's user columns only, so the two zero quadrants cost nothing and a column block's
    extra pass over the output covers one side of the graph, not all ``U+I`` rows. Holds the
    same non-zeros as ``A`` (one permuted copy; ``A`` itself may be dropped) plus one
    row-pointer array per tile.

    It is a ``torch.Tensor`` subclass with no storage of its own and the sparse CSR layout, as
    PyG's own ``EdgeIndex`` is a tensor subclass: ``MessagePassing.propagate`` accepts it as a
    sparse ``adj_t`` and hands it to ``message_and_aggregate``. The only operations it supports
    are products through :func:`spmm`, :func:`symmetric_spmm` and :class:`LightGCNConv`; any
    other tensor operation is a one-line error. ``symmetric`` marks ``A^T = A``, which
    :class:`LightGCNConv` needs to backpropagate through it.

    Args:
        adj: the sparse CSR matrix.
        row_bounds, col_bounds: band and block boundaries, rising strictly from 0 to N (M).
        symmetric: whether ``A`` is symmetric.
    """

    bands: list[tuple[int, int, list[tuple[Tensor, int, int]]]]
    #: bytes of the tiles' indices and values
    structure_bytes: int
    symmetric: bool

    @staticmethod
    def __new__(cls, adj: Tensor, row_bounds: Sequence[int], col_bounds: Sequence[int],
                symmetric: bool = False) -> "BlockedAdjacency":
        if adj.layout != torch.sparse_csr or adj.dim() != 2:
            raise GraphrecError(f"BlockedAdjacency: needs a 2-d sparse CSR matrix, got "
                                f"{adj.layout} of shape {tuple(adj.shape)}")
        n, m = (int(d) for d in adj.shape)
        rb, cb = [int(b) for b in row_bounds], [int(b) for b in col_bounds]
        for name, b, size in (("row_bounds", rb, n), ("col_bounds", cb, m)):
            if len(b) < 2 or b[0] != 0 or b[-1] != size or any(x >= y for x, y in zip(b, b[1:])):
                raise GraphrecError(f"BlockedAdjacency: {name} must rise strictly from 0 to "
                                    f"{size}, got {b}")
        self = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, (n, m), dtype=adj.dtype, layout=torch.sparse_csr, device=adj.device,
            requires_grad=False, dispatch_layout=True)
        self.symmetric = bool(symmetric)
        if len(rb) == 2 and len(cb) == 2:  # one tile: the matrix itself
            self.bands = [(0, n, [(adj, 0, m)] if adj.values().numel() else [])]
            self.structure_bytes = sum(t.numel() * t.element_size()
                              for t in (adj.crow_indices(), adj.col_indices(), adj.values()))
        else:
            self.bands, self.structure_bytes = _tiles(adj, rb, cb)
        return self

    # No torch function overrides: Python-level attribute access stays plain; every aten
    # operation reaches __torch_dispatch__, which knows only the layout query.
    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.prim.layout.default:
            return torch.sparse_csr
        raise GraphrecError(f"BlockedAdjacency supports products by spmm, symmetric_spmm and "
                            f"LightGCNConv only, not {func}")

    def __deepcopy__(self, memo: dict) -> "BlockedAdjacency":
        return self  # immutable once built: a copy may share it

    def __reduce_ex__(self, protocol: int):  # type: ignore[no-untyped-def]
        raise GraphrecError("BlockedAdjacency is not saved: it is rebuilt from the training "
                            "edges (the model's train_edges buffer)")

    @property
    def num_tiles(self) -> int:
        """Non-empty tiles: the products one ``A @ x`` makes."""
        return sum(len(tiles) for _, _, tiles in self.bands)

    def __repr__(self) -> str:  # type: ignore[override]
        return (f"BlockedAdjacency(shape={tuple(self.shape)}, bands={len(self.bands)}, "
                f"tiles={self.num_tiles}, symmetric={self.symmetric})")

    def matmul(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``A @ x`` for dense ``x [M, F]``, accumulated tile by tile into one output."""
        if x.dim() != 2 or x.shape[0] != self.shape[1]:
            raise GraphrecError(f"BlockedAdjacency: cannot multiply {tuple(self.shape)} by "
                                f"{tuple(x.shape)}")
        out = x.new_empty(self.shape[0], x.shape[1])
        for r0, r1, tiles in self.bands:
            band = out[r0:r1]
            if not tiles:  # rows without non-zeros
                band.zero_()
            for j, (tile, lo, hi) in enumerate(tiles):
                band.addmm_(tile, x[lo:hi], beta=0.0 if j == 0 else 1.0)
        return out


def _tiles(adj: Tensor, rb: list[int], cb: list[int]
           ) -> tuple[list[tuple[int, int, list[tuple[Tensor, int, int]]]], int]:
    """The bands of :class:`BlockedAdjacency` and their bytes, cut from the CSR ``adj``."""
    crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
    starts = torch.tensor(cb[:-1], device=adj.device)
    bands: list[tuple[int, int, list[tuple[Tensor, int, int]]]] = []
    nbytes = 0
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
                    nbytes += crows[j].numel() * crows.element_size()
                begin = end
            nbytes += cols.numel() * cols.element_size() + vals.numel() * vals.element_size()
            bands.append((r0, r1, tiles))
    return bands, nbytes


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


def blocked_adjacency(adj: Tensor, dim: int, num_users: int | None = None,
                      symmetric: bool = True) -> BlockedAdjacency:
    """``adj`` as the :class:`BlockedAdjacency` that products over ``dim`` features run
    fastest on: tiles on a CPU when the table is larger than :data:`CPU_BLOCK_BYTES`, else one
    tile, ``adj`` itself (GPUs keep the one cuSPARSE call; measured on CPU only).
    ``num_users``: the bipartite split (users ``0..U-1`` first, as :func:`normalized_adjacency`
    builds it), which makes users and items the row bands; each side's columns are then cut
    by :func:`block_count` for the band that reads them. The caller may drop ``adj``
    afterwards: tiles hold their own copy. ``symmetric``: ``adj`` is symmetric (the normalized
    adjacency is)."""
    n, m = (int(d) for d in adj.shape)
    if adj.device.type != "cpu" or m * dim * 4 <= CPU_BLOCK_BYTES:
        return BlockedAdjacency(adj, [0, n], [0, m], symmetric)
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
    if len(col_bounds) == 2:
        row_bounds = [0, n]  # one block: the matrix itself, not a copy for nothing
    return BlockedAdjacency(adj, row_bounds, col_bounds, symmetric)


def spmm(adj: Tensor, x: Tensor) -> Tensor:
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
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        ctx.adj = adj
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        return None, spmm(ctx.adj, grad)


def symmetric_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a symmetric sparse ``adj [N, N]`` (CSR or :class:`BlockedAdjacency`) and
    dense ``x [N, F]``, with the cheap backward. ``adj`` itself gets no gradient. The caller
    guarantees symmetry."""
    return _SymmetricSpMM.apply(adj, x)


BACKENDS = ("symmetric", "autograd", "edge_index")
DEFAULT_BACKEND = "symmetric"

#: what :class:`LightGCNConv` propagates over: a sparse matrix (``adj_t``), or PyG's
#: ``(edge_index, edge_weight)``
Adjacency = Union[Tensor, tuple[Tensor, Tensor]]


def lightgcn_adjacency(graph: HeteroData, dim: int, backend: str = DEFAULT_BACKEND,
                       device: torch.device | str | None = None) -> Adjacency:
    """The normalized training adjacency in the form ``backend`` propagates over (see the
    module docstring), built once on ``device`` for products over ``dim`` features."""
    if backend not in BACKENDS:
        raise GraphrecError(f"propagation: unknown backend {backend!r}; choose one of "
                            f"{', '.join(BACKENDS)}")
    adj = normalized_adjacency(graph, device)
    if backend == "symmetric":  # an item block (similar edges) ends the bipartite banding
        bipartite = SIMILAR not in graph.edge_types or not graph[SIMILAR].num_edges
        return blocked_adjacency(adj, dim, int(graph[USER].num_nodes) if bipartite else None)
    if backend == "edge_index":
        coo = adj.to_sparse_coo()
        # symmetric, so rows and columns may be read either way round; PyG scatters need int64
        return coo.indices().long(), coo.values()
    return adj


class LightGCNConv(LGConv):
    r"""One LightGCN layer, :math:`x' = \tilde A x`, as a PyG ``MessagePassing`` operator:
    PyG's :class:`~torch_geometric.nn.conv.LGConv` over an adjacency normalized once by the
    caller (``normalize=False``), with graphrec's product in ``message_and_aggregate``.

    Call as ``conv(x, adj_t)`` or ``conv(x, edge_index, edge_weight)``; ``x`` may be a
    bipartite pair ``(x_src, x_dst)`` (messages come from ``x_src``), as ``HeteroConv`` and
    ``to_hetero`` pass it. ``propagate`` is always the entry; the aggregation is

    * a symmetric :class:`BlockedAdjacency` (:func:`lightgcn_adjacency`'s default):
      :func:`symmetric_spmm`, whose backward is one more forward product;
    * any other torch sparse matrix: ``torch.sparse.mm`` and its own backward;
    * ``edge_index`` with ``edge_weight``: PyG's message passing, ``x_j * w`` summed per node.

    Shapes: ``x [N, F]`` (or ``([N_src, F], [N_dst, F])``), ``adj_t [N_dst, N_src]`` sparse
    or ``edge_index [2, E]`` -> ``[N_dst, F]``.
    """

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor | tuple[Tensor, Tensor]  # noqa: D102
                              ) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        if isinstance(adj_t, BlockedAdjacency):
            if adj_t.symmetric:
                return symmetric_spmm(adj_t, x)
            if torch.is_grad_enabled() and x.requires_grad:
                raise GraphrecError("LightGCNConv: gradients through a BlockedAdjacency need "
                                    "it symmetric (pass symmetric=True or a torch sparse matrix)")
            return spmm(adj_t, x)
        return torch.sparse.mm(adj_t, x)


class LightGCNEncoder(torch.nn.Module):
    r"""K hops of LightGCN propagation and a weighted combination of the layers
    (He et al., SIGIR 2020):

    .. math::
        E^{(k+1)} = \tilde A E^{(k)}, \qquad E = \sum_{k=0}^{K} \alpha_k E^{(k)}

    Args:
        num_layers: ``K``; 0 returns the input (plain embedding lookup: MF and BPR).
        layer_weights: ``alpha_0..alpha_K``; default ``1 / (K + 1)`` each (the mean).

    Shapes: ``x [U+I, F]`` and ``adj`` (:data:`Adjacency`, from :func:`lightgcn_adjacency`)
    -> ``[U+I, F]``.
    """

    def __init__(self, num_layers: int = 3, layer_weights: Sequence[float] | None = None) -> None:
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
        self.conv = LightGCNConv()

    def forward(self, x: Tensor, adj: Adjacency | None) -> Tensor:
        out = x * self.layer_weights[0]
        if self.num_layers == 0:
            return out
        if adj is None:
            raise GraphrecError("LightGCNEncoder: propagation needs the training adjacency "
                                "(fit the model on its training graph first)")
        args = adj if isinstance(adj, tuple) else (adj,)
        for k in range(1, self.num_layers + 1):
            x = self.conv(x, *args)  # [U+I, F]
            out = out + x * self.layer_weights[k]
        return out
