"""Propagation against dense references and PyG's own LGConv, gradients included."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import LGConv

from conftest import random_graph
from graphrec.errors import GraphrecError
from graphrec.nn import propagation
from graphrec.nn.propagation import (BACKENDS, DEFAULT_BACKEND, BlockedAdjacency, LightGCNConv,
                                     LightGCNEncoder, block_count, blocked_adjacency,
                                     lightgcn_adjacency, normalized_adjacency, spmm,
                                     symmetric_spmm)
from graphrec.schema import EDGE


def dense_adjacency(graph) -> torch.Tensor:
    """D^-1/2 A D^-1/2 for the bipartite graph, every matrix dense."""
    U, I = graph["user"].num_nodes, graph["item"].num_nodes
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    ei = graph[EDGE].edge_index
    A[ei[0], ei[1] + U] = 1.0
    A[ei[1] + U, ei[0]] = 1.0
    deg = A.sum(1)
    inv = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * A * inv[None, :]


@pytest.fixture
def graph():
    return random_graph(num_users=7, num_items=12, per_user=(0, 6), seed=3)  # isolated nodes too


def test_adjacency_matches_dense(graph):
    adj = normalized_adjacency(graph)
    torch.testing.assert_close(adj.to_dense().double(), dense_adjacency(graph), rtol=1e-6, atol=1e-7)


def test_adjacency_indices_are_int32(graph):
    adj = normalized_adjacency(graph)
    assert adj.crow_indices().dtype == adj.col_indices().dtype == torch.int32


def test_spmm_ignores_garbage_in_its_output(graph, monkeypatch):
    """spmm writes into uninitialized memory with beta=0: NaNs already there must not leak."""
    adj = normalized_adjacency(graph)
    x = torch.randn(12, 19).T  # non-contiguous [19, 12]
    real_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *size, **kw: real_empty(self, *size, **kw).fill_(float("nan")))
    got = spmm(adj, x)
    torch.testing.assert_close(got.double(), dense_adjacency(graph) @ x.double(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("row_bounds,col_bounds", [
    ([0, 19], [0, 19]),  # one tile: the plain product
    ([0, 19], [0, 10, 19]),  # column blocks over all rows
    ([0, 7, 19], [0, 7, 19]),  # users and items: the zero quadrants dropped
    ([0, 7, 19], [0, 3, 7, 12, 19]),  # each side cut again
    ([0, 2, 7, 19], list(range(20))),  # one column each: many tiles empty
])
def test_blocked_adjacency_matches_dense(graph, row_bounds, col_bounds):
    adj = normalized_adjacency(graph)
    blocks = BlockedAdjacency(adj, row_bounds, col_bounds, symmetric=True)
    assert blocks.shape == (19, 19) and len(blocks.bands) == len(row_bounds) - 1
    assert blocks.layout == torch.sparse_csr and isinstance(blocks, torch.Tensor)
    # exactly the non-empty (band, block) pairs become tiles
    dense_nz = adj.to_dense() != 0
    want = sum(bool(dense_nz[r0:r1, c0:c1].any()) for r0, r1 in zip(row_bounds, row_bounds[1:])
               for c0, c1 in zip(col_bounds, col_bounds[1:]))
    assert blocks.num_tiles == want
    dense = dense_adjacency(graph)
    x = torch.randn(19, 5, dtype=torch.float64)
    torch.testing.assert_close(spmm(blocks, x.float()).double(), dense @ x, rtol=1e-5, atol=1e-6)
    # strided inputs, as autograd may pass them: a transpose, and the expanded ones of a sum
    for xs in (x.float().T.contiguous().T, torch.ones(1, 5).expand(19, 5)):
        torch.testing.assert_close(spmm(blocks, xs).double(), dense @ xs.double(), rtol=1e-5,
                                   atol=1e-6)
    # the 3-layer encoder over the tiles, value and gradient, against the CSR's
    xb, xc = (x.float().requires_grad_() for _ in range(2))
    g = torch.randn(19, 5)
    out_b, out_c = LightGCNEncoder(3)(xb, blocks), LightGCNEncoder(3)(xc, adj)
    torch.testing.assert_close(out_b, out_c)
    (out_b * g).sum().backward()
    (out_c * g).sum().backward()
    torch.testing.assert_close(xb.grad, xc.grad)


def test_bipartite_bands_skip_the_zero_quadrants(graph):
    """Users read item columns only and items user columns only: two tiles, not four."""
    blocks = BlockedAdjacency(normalized_adjacency(graph), [0, 7, 19], [0, 7, 19])
    assert [(r0, r1, [(lo, hi) for _, lo, hi in tiles]) for r0, r1, tiles in blocks.bands] == [
        (0, 7, [(7, 19)]), (7, 19, [(0, 7)])]


def test_blocked_adjacency_zeroes_rows_of_an_empty_band(monkeypatch):
    """A band without non-zeros (users without interactions) is written as zeros, not left as
    whatever the fresh output held."""
    g = random_graph(num_users=6, num_items=5, per_user=(2, 4), seed=1)
    g[EDGE].edge_index = g[EDGE].edge_index[:, g[EDGE].edge_index[0] >= 2]  # users 0, 1: none
    adj = normalized_adjacency(g)
    blocks = BlockedAdjacency(adj, [0, 2, 6, 11], [0, 6, 11])
    assert blocks.bands[0][2] == []
    real_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *size, **kw: real_empty(self, *size, **kw).fill_(float("nan")))
    x = torch.randn(11, 3)
    torch.testing.assert_close(spmm(blocks, x), adj.to_dense() @ x)


@pytest.mark.parametrize("bounds", [[0, 19, 19], [1, 19], [0, 18], [0]])
def test_blocked_adjacency_rejects_bad_bounds(graph, bounds):
    adj = normalized_adjacency(graph)
    with pytest.raises(GraphrecError, match="row_bounds must rise strictly from 0 to 19"):
        BlockedAdjacency(adj, bounds, [0, 19])
    with pytest.raises(GraphrecError, match="col_bounds must rise strictly from 0 to 19"):
        BlockedAdjacency(adj, [0, 19], bounds)


def test_blocked_adjacency_rejects_a_wrong_shape(graph):
    blocks = BlockedAdjacency(normalized_adjacency(graph), [0, 7, 19], [0, 7, 19])
    with pytest.raises(GraphrecError, match=r"cannot multiply \(19, 19\) by \(18, 4\)"):
        spmm(blocks, torch.randn(18, 4))


def test_blocked_adjacency_keeps_int64_indices(graph):
    adj = normalized_adjacency(graph)
    wide = torch.sparse_csr_tensor(adj.crow_indices().long(), adj.col_indices().long(),
                                   adj.values(), adj.shape, check_invariants=True)
    blocks = BlockedAdjacency(wide, [0, 7, 19], [0, 3, 7, 19])
    assert all(t.col_indices().dtype == torch.int64 for _, _, band in blocks.bands
               for t, _, _ in band)
    x = torch.randn(19, 4)
    torch.testing.assert_close(spmm(blocks, x), adj.to_dense() @ x)


@pytest.mark.parametrize("num_users", [None, 0, 19, 25])
def test_blocked_adjacency_one_band_without_a_split(graph, num_users, monkeypatch):
    """No (valid) user count: one band over all rows; a single tile would be a copy for
    nothing, so the one tile is the CSR itself."""
    adj = normalized_adjacency(graph)
    monkeypatch.setattr(propagation, "CPU_BLOCK_BYTES", 64)
    out = blocked_adjacency(adj, 4, num_users)
    # 2 non-zeros a row: the cap (half of that) allows one block
    assert out.num_tiles == 1 and out.bands[0][2][0][0] is adj
    monkeypatch.setattr(propagation, "block_count", lambda *a, **k: 2)
    out = blocked_adjacency(adj, 4, num_users)
    assert isinstance(out, BlockedAdjacency) and [(r0, r1) for r0, r1, _ in out.bands] == [(0, 19)]


def test_block_count_rule():
    """Per side of the bipartite adjacency, as blocked_adjacency calls it: (rows that read the
    side, its columns, their non-zeros, F)."""
    # Gowalla at F = 64: item rows read 29,858 user columns (7 MiB), user rows 40,981 item
    # columns (10 MiB): each side fits in one 12 MiB slice
    assert block_count(40_981, 29_858, 810_128, 64) == 1
    assert block_count(29_858, 40_981, 810_128, 64) == 1
    assert block_count(29_858, 40_981, 810_128, 256) == 4  # 40 MiB: four slices
    # the 10^7 graph at F = 256: 488 MiB of user columns would want 41 slices, 244 MiB of
    # item columns 21; capped at half the non-zeros per reading row (40 and 20), as each block
    # costs one more pass over its band's output
    assert block_count(250_000, 500_000, 10**7, 256) == 20
    assert block_count(500_000, 250_000, 10**7, 256) == 10
    assert block_count(10**6, 10**6, 10**6, 256) == 1


def test_blocked_adjacency_only_where_it_pays(monkeypatch):
    adj = normalized_adjacency(random_graph(num_users=20, num_items=30, per_user=(8, 12), seed=2))
    one = blocked_adjacency(adj, 4, 20)  # the table fits: one plain product, no copy
    assert one.num_tiles == 1 and one.bands[0][2][0][0] is adj and one.symmetric
    monkeypatch.setattr(propagation, "CPU_BLOCK_BYTES", 64)  # force tiles on the tiny graph
    plain = blocked_adjacency(adj, 4)
    assert isinstance(plain, BlockedAdjacency) and len(plain.bands) == 1
    tiles = blocked_adjacency(adj, 4, 20)
    assert [(r0, r1) for r0, r1, _ in tiles.bands] == [(0, 20), (20, 50)]
    # users (212 non-zeros, 10.6 a row) read 30 item columns: 5 blocks by the cap; items read
    # 20 user columns (320 bytes at F = 4): 5 slices wanted, 3 by the cap (212 / 30 / 2)
    assert [len(band) for _, _, band in tiles.bands] == [5, 3]
    # the user band gathers from item columns only and the item band from user columns only,
    # each side cut into several slices (as many as block_count allows) that cover it
    for (_, _, band), side in zip(tiles.bands, [(20, 50), (0, 20)]):
        ranges = [(lo, hi) for _, lo, hi in band]
        assert len(ranges) > 1 and ranges[0][0] == side[0] and ranges[-1][1] == side[1]
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    x = torch.randn(50, 4)
    torch.testing.assert_close(spmm(tiles, x), adj @ x)


def test_lightgcn_scores_same_with_tiles(monkeypatch):
    from graphrec.models import build_model
    from graphrec.models.lightgcn import LightGCNConfig

    g = random_graph(num_users=40, num_items=30, per_user=(4, 12), seed=5)
    model = build_model("lightgcn", 40, 30, LightGCNConfig(dim=8))
    model.fit(g)
    plain = model.score(torch.arange(40))
    assert isinstance(model.adj, BlockedAdjacency) and model.adj.num_tiles == 1
    monkeypatch.setattr(propagation, "CPU_BLOCK_BYTES", 256)
    model.fit(g)  # rebuilds the adjacency
    assert isinstance(model.adj, BlockedAdjacency) and model.adj.num_tiles > 2
    torch.testing.assert_close(model.score(torch.arange(40)), plain)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_layers", [0, 1, 3])
def test_encoder_matches_dense_layer_mean(graph, num_layers, backend):
    x = torch.randn(19, 5, dtype=torch.float64)
    dense = dense_adjacency(graph)
    layers, h = [x], x
    for _ in range(num_layers):
        h = dense @ h
        layers.append(h)
    want = torch.stack(layers).mean(0)
    adj = lightgcn_adjacency(graph, 5, backend)
    xf = x.float().requires_grad_()
    got = LightGCNEncoder(num_layers)(xf, adj)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    # gradient of sum(out * g): the transpose of the same linear map, applied to g
    g = torch.randn_like(x)
    (got * g.float()).sum().backward()
    layers, h = [g], g
    for _ in range(num_layers):
        h = dense.T @ h
        layers.append(h)
    torch.testing.assert_close(xf.grad.double(), torch.stack(layers).mean(0), rtol=1e-5, atol=1e-6)


def test_repeated_pairs_count_twice():
    g = random_graph(num_users=4, num_items=5, per_user=(1, 3), seed=2)
    ei = g[EDGE].edge_index
    g[EDGE].edge_index = torch.cat([ei, ei[:, :2]], 1)  # two pairs appear twice
    U, I = 4, 5
    A = torch.zeros(U + I, U + I, dtype=torch.float64)
    for u, i in g[EDGE].edge_index.T.tolist():
        A[u, U + i] += 1
        A[U + i, u] += 1
    inv = A.sum(1).clamp(min=1).rsqrt()
    adj = normalized_adjacency(g)
    torch.testing.assert_close(adj.to_dense().double(), inv[:, None] * A * inv[None, :])
    assert adj.values().numel() == 2 * ei.size(1)


def test_default_backend_and_unknown_backend():
    assert DEFAULT_BACKEND == "symmetric"
    assert isinstance(LightGCNEncoder(2).conv, LightGCNConv)
    with pytest.raises(GraphrecError, match="unknown backend"):
        lightgcn_adjacency(random_graph(num_users=3, num_items=4, seed=1), 4, "magic")


def test_zero_layers_is_lookup():
    x = torch.randn(19, 4)
    g = random_graph(num_users=7, num_items=12, seed=1)
    assert torch.equal(LightGCNEncoder(0)(x, normalized_adjacency(g)), x)


def test_layer_weights(graph):
    adj = normalized_adjacency(graph)
    x = torch.randn(19, 3)
    got = LightGCNEncoder(2, layer_weights=[0.0, 0.0, 1.0])(x, adj)
    torch.testing.assert_close(got, adj @ (adj @ x))


def test_symmetric_backward_equals_autograd_through_dense(graph):
    adj = normalized_adjacency(graph)
    x = torch.randn(19, 4, requires_grad=True)
    w = torch.randn(19, 4)
    (symmetric_spmm(adj, x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (adj.to_dense() @ x2 * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_matches_pyg_lgconv_on_edge_index(graph):
    """The peer: PyG's LGConv normalizing an undirected edge_index on every call."""
    U = graph["user"].num_nodes
    ei = graph[EDGE].edge_index
    edge_index = torch.cat([torch.stack([ei[0], ei[1] + U]), torch.stack([ei[1] + U, ei[0]])], 1)
    x = torch.randn(19, 6)
    torch.testing.assert_close(LightGCNConv()(x, normalized_adjacency(graph)),
                               LGConv()(x, edge_index), rtol=1e-5, atol=1e-6)


def test_bad_layer_weights():
    from graphrec.errors import GraphrecError
    with pytest.raises(GraphrecError, match="layer_weights needs 3"):
        LightGCNEncoder(2, layer_weights=[1.0])


# --------------------------------------------------------------------------------------------
# The layer is a PyG MessagePassing operator for every adjacency form


@pytest.mark.parametrize("backend", BACKENDS)
def test_propagate_is_always_the_entry(graph, backend, monkeypatch):
    """PyG's propagate hooks see every form, tiles included, and the tiles still go through
    graphrec's product (message_and_aggregate), not PyG's per-edge messages."""
    monkeypatch.setattr(propagation, "CPU_BLOCK_BYTES", 64)  # tiles on the toy graph
    adj = lightgcn_adjacency(graph, 4, backend)
    if backend == "symmetric":
        assert isinstance(adj, BlockedAdjacency) and adj.num_tiles > 1
    conv = LightGCNConv()
    calls = []
    conv.register_propagate_forward_hook(lambda module, inputs, out: calls.append(out.shape))
    fused = []
    conv.register_message_and_aggregate_forward_hook(lambda m, inputs, out: fused.append(1))
    x = torch.randn(19, 4)
    args = adj if isinstance(adj, tuple) else (adj,)
    out = conv(x, *args)
    torch.testing.assert_close(out.double(), dense_adjacency(graph) @ x.double(), rtol=1e-5,
                               atol=1e-6)
    assert calls == [torch.Size([19, 4])]
    assert fused == ([] if backend == "edge_index" else [1])


def _bipartite_inputs(graph):
    """Per-relation inputs for the user and item node types: the normalized weight of each
    (user, item) edge (full-graph degrees, as LightGCN's symmetric normalization)."""
    from graphrec.schema import REV_EDGE

    U, I = graph["user"].num_nodes, graph["item"].num_nodes
    ei = graph[EDGE].edge_index
    du = torch.bincount(ei[0], minlength=U).float().clamp(min=1)
    di = torch.bincount(ei[1], minlength=I).float().clamp(min=1)
    w = (du[ei[0]] * di[ei[1]]).rsqrt()
    return {EDGE: ei, REV_EDGE: ei.flip(0)}, {EDGE: w, REV_EDGE: w}


def test_runs_under_heteroconv(graph):
    """One HeteroConv layer over user->item and item->user with LightGCNConv equals the
    homogeneous layer over the normalized bipartite adjacency, split by node type, for
    edge_index inputs and for sparse adj_t inputs, gradients included."""
    from torch_geometric.nn import HeteroConv

    from graphrec.schema import REV_EDGE

    U = graph["user"].num_nodes
    x = torch.randn(19, 5, dtype=torch.float64).float()
    want = (dense_adjacency(graph) @ x.double()).float()
    edges, weights = _bipartite_inputs(graph)
    conv = HeteroConv({EDGE: LightGCNConv(), REV_EDGE: LightGCNConv()}, aggr="sum")
    xu, xi = x[:U].clone().requires_grad_(), x[U:].clone().requires_grad_()
    out = conv({"user": xu, "item": xi}, edges, edge_weight_dict=weights)
    torch.testing.assert_close(out["user"], want[:U], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["item"], want[U:], rtol=1e-5, atol=1e-6)
    g = torch.randn(19, 5)
    (out["user"] * g[:U]).sum().backward()
    (out["item"] * g[U:]).sum().backward()
    grad = (dense_adjacency(graph) @ g.double()).float()  # symmetric: A^T g = A g
    torch.testing.assert_close(torch.cat([xu.grad, xi.grad]), grad, rtol=1e-5, atol=1e-6)
    # sparse adj_t per relation ([dst, src]), as PyG's ToSparseTensor would give
    adj_t = {t: torch.sparse_coo_tensor(e.flip(0), weights[t],
                                        (19 - U, U) if t == EDGE else (U, 19 - U),
                                        check_invariants=True).to_sparse_csr()
             for t, e in edges.items()}
    out = conv({"user": x[:U], "item": x[U:]}, adj_t)
    torch.testing.assert_close(torch.cat([out["user"], out["item"]]), want, rtol=1e-5, atol=1e-6)


def test_runs_under_to_hetero(graph):
    """A homogeneous two-layer LightGCN-style GNN, turned heterogeneous by PyG's to_hetero over
    graphrec's schema, equals two dense propagation layers."""
    from torch_geometric.nn import to_hetero

    from graphrec.schema import ITEM, REV_EDGE, USER

    class TwoHops(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = LightGCNConv(), LightGCNConv()

        def forward(self, x, edge_index, edge_weight):
            return self.conv2(self.conv1(x, edge_index, edge_weight), edge_index, edge_weight)

    U = graph["user"].num_nodes
    edges, weights = _bipartite_inputs(graph)
    model = to_hetero(TwoHops(), ([USER, ITEM], [EDGE, REV_EDGE]), aggr="sum")
    x = torch.randn(19, 3)
    out = model({USER: x[:U], ITEM: x[U:]}, edges, weights)
    dense = dense_adjacency(graph)
    want = (dense @ dense @ x.double()).float()
    torch.testing.assert_close(torch.cat([out[USER], out[ITEM]]), want, rtol=1e-5, atol=1e-6)


def test_blocked_adjacency_refuses_what_it_cannot_do(graph):
    adj = normalized_adjacency(graph)
    general = BlockedAdjacency(adj, [0, 7, 19], [0, 7, 19])  # not marked symmetric
    x = torch.randn(19, 4, requires_grad=True)
    with pytest.raises(GraphrecError, match="symmetric"):
        LightGCNConv()(x, general)
    with torch.no_grad():  # forward only is fine
        torch.testing.assert_close(LightGCNConv()(x, general), adj @ x)
    with pytest.raises(GraphrecError, match="supports products"):
        general + 1
    with pytest.raises(GraphrecError, match="BlockedAdjacency"):
        BlockedAdjacency(adj.to_dense(), [0, 19], [0, 19])
