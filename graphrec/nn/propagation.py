"""Propagation over the symmetric-normalized bipartite adjacency (LightGCN's encoder).

Nodes are users ``0..U-1`` followed by items ``U..U+I-1``. The adjacency

    A~ = D^-1/2 A D^-1/2,   A = [[0, R], [R^T, 0]]

is built once per training graph, vectorized, on the target device, as a torch.sparse CSR
matrix, and owned by the encoder (never renormalized per call, unlike PyG's ``LGConv`` over
``edge_index``). Because ``A~`` is symmetric, the gradient of ``A~ X`` with respect to ``X`` is
``A~ G``: one more forward product. :func:`symmetric_spmm` uses that instead of torch's sparse
autograd, whose backward builds the transposed matrix on every call (about 5x a forward).
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


def normalized_adjacency(graph: HeteroData, device: torch.device | str | None = None) -> Tensor:
    """``D^-1/2 A D^-1/2`` of the bipartite training graph as a ``[U+I, U+I]`` sparse CSR
    tensor (users first, then items). Nodes without edges have empty rows, not NaNs."""
    num_users, num_items = int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)
    ei = graph[EDGE].edge_index.to(device)
    n = num_users + num_items
    row = torch.cat([ei[0], ei[1] + num_users])  # user -> item and item -> user
    col = torch.cat([ei[1] + num_users, ei[0]])
    deg = torch.bincount(row, minlength=n).float()
    inv_sqrt = deg.clamp(min=1).rsqrt()
    value = inv_sqrt[row] * inv_sqrt[col]
    with warnings.catch_warnings():  # torch calls sparse CSR "beta"; it is used as documented
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_coo_tensor(torch.stack([row, col]), value, (n, n),
                                       check_invariants=False).coalesce().to_sparse_csr()


class _SymmetricSpMM(torch.autograd.Function):
    """``A X`` for a symmetric sparse ``A``: the backward is ``A G`` (``A^T = A``)."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # noqa: D102
        return None, ctx.adj @ grad


def symmetric_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a symmetric sparse ``adj [N, N]`` and dense ``x [N, F]``, with the cheap
    backward. ``adj`` itself gets no gradient. The caller guarantees symmetry."""
    return _SymmetricSpMM.apply(adj, x)


class SymmetricLGConv(LGConv):
    """PyG's :class:`~torch_geometric.nn.conv.LGConv` over a prebuilt, already normalized,
    symmetric sparse adjacency: ``x' = A~ x``, aggregated by :func:`symmetric_spmm`.

    Call as ``conv(x, adj)`` with ``adj`` from :func:`normalized_adjacency`.
    """

    def __init__(self) -> None:
        super().__init__(normalize=False)

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:  # noqa: D102
        return symmetric_spmm(adj_t, x)


class LightGCNEncoder(torch.nn.Module):
    r"""K hops of LightGCN propagation and a weighted combination of the layers
    (He et al., SIGIR 2020):

    .. math::
        E^{(k+1)} = \tilde A E^{(k)}, \qquad E = \sum_{k=0}^{K} \alpha_k E^{(k)}

    Args:
        num_layers: ``K``; 0 returns the input (plain embedding lookup: MF and BPR).
        layer_weights: ``alpha_0..alpha_K``; default ``1 / (K + 1)`` each (the mean).

    Shapes: ``x [U+I, F]`` and ``adj [U+I, U+I]`` sparse -> ``[U+I, F]``.
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
        self.conv = SymmetricLGConv()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        if self.num_layers == 0:
            return x * self.layer_weights[0]
        out = x * self.layer_weights[0]
        for k in range(1, self.num_layers + 1):
            x = self.conv(x, adj)  # [U+I, F]
            out = out + x * self.layer_weights[k]
        return out
