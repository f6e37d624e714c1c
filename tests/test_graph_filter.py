"""The graph filter (GF-CF) against a dense numpy reference of its formula, and its behaviour."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from conftest import random_graph
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate, topk_excluding
from graphrec.models import build_model, model_config
from graphrec.models.filters import ItemGraph
from graphrec.models.graph_filter import GraphFilter, GraphFilterConfig
from graphrec.data.graph import user_sequences
from graphrec.schema import EDGE, USER
from graphrec.split import SplitConfig, split


def dense_reference(graph, alpha: float, k: int) -> np.ndarray:
    """s = R R~^T R~ + alpha R D_I^-1/2 V V^T D_I^1/2, every matrix dense, exact SVD."""
    U, I = graph[USER].num_nodes, graph["item"].num_nodes
    R = np.zeros((U, I))
    ei = graph[EDGE].edge_index.numpy()
    R[ei[0], ei[1]] = 1.0
    du, di = R.sum(1), R.sum(0)
    inv = lambda d: np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-12)), 0.0)  # noqa: E731
    Rn = np.diag(inv(du)) @ R @ np.diag(inv(di))
    scores = R @ Rn.T @ Rn
    if k:
        V = np.linalg.svd(Rn)[2][:k].T
        scores += alpha * R @ np.diag(inv(di)) @ V @ V.T @ np.diag(np.sqrt(di))
    return scores


def fitted(graph, **options) -> GraphFilter:
    options.setdefault("dtype", "float32")  # the references are compared at float32
    model = GraphFilter(graph[USER].num_nodes, graph["item"].num_nodes, GraphFilterConfig(**options))
    model.fit(graph)
    return model


@pytest.mark.parametrize("alpha,k", [(0.3, 4), (1.0, 7), (0.0, 5), (0.5, 0)])
def test_matches_dense_reference(alpha, k):
    g = random_graph(num_users=11, num_items=17, per_user=(1, 9), seed=2)  # asymmetric
    model = fitted(g, alpha=alpha, k=k, svd="exact")
    got = model.score(torch.arange(11)).double().numpy()
    np.testing.assert_allclose(got, dense_reference(g, alpha, k), rtol=1e-4, atol=1e-5)


def test_alpha_zero_is_the_linear_filter():
    g = random_graph(num_users=11, num_items=17, seed=3)
    users = torch.arange(11)
    torch.testing.assert_close(fitted(g, alpha=0.0, k=5, svd="exact").score(users),
                               fitted(g, alpha=0.7, k=0).score(users))


def test_randomized_svd_close_to_exact_and_deterministic():
    g = random_graph(num_users=40, num_items=60, per_user=(3, 20), seed=4)
    users = torch.arange(40)
    exact = fitted(g, k=6, svd="exact").score(users)
    a = fitted(g, k=6, seed=1).score(users)
    b = fitted(g, k=6, seed=1).score(users)
    assert torch.equal(a, b)  # deterministic given the seed
    torch.testing.assert_close(a, exact, rtol=1e-3, atol=1e-3)


def test_torch_sparse_path_matches_scipy_path():
    """The path used on GPUs (torch sparse products) gives the CPU path's scores."""
    g = random_graph(num_users=12, num_items=19, seed=5)
    model = fitted(g, k=4, svd="exact")
    users = torch.tensor([3, 0, 7])
    cpu = model.score(users)
    for gram in ("sparse", "dense"):
        model.graph = ItemGraph(model.user_ptr, model.user_items, 19,
                                dataclasses.replace(model.cfg, gram=gram), scipy_products=False)
        model.prepare(model.graph)
        assert not model.graph.scipy_products and model.graph.mode == gram
        torch.testing.assert_close(model.score(users), cpu, rtol=1e-5, atol=1e-6)


def test_training_items_never_recommended_and_cold_users_get_popularity():
    g = random_graph(num_users=10, num_items=30, per_user=(2, 8), seed=6)
    parts = split(g, SplitConfig("random", test_ratio=0.3))
    train = parts.train
    # A cold user: drop every training edge of user 0.
    keep = train[EDGE].edge_index[0] != 0
    from graphrec.data.graph import edge_subgraph
    cold_train = edge_subgraph(train, keep)
    model = fitted(cold_train, k=3)
    users = torch.arange(10)
    exclude = user_sequences(cold_train)
    _, top = topk_excluding(model.score(users), users, exclude, 10)
    for u in range(10):
        seen = set(exclude[1][exclude[0][u]:exclude[0][u + 1]].tolist())
        assert not seen & set(top[u].tolist())
    counts = torch.bincount(cold_train[EDGE].edge_index[1], minlength=30).float()
    torch.testing.assert_close(model.score(torch.tensor([0]))[0], counts / counts.max())


def test_state_round_trip_rebuilds_the_item_matrix():
    g = random_graph(num_users=9, num_items=14, seed=7)
    model = fitted(g, k=3)
    users = torch.arange(9)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = build_model("gfcf", 9, 14, model_config("graph-filter", {"k": 3, "dtype": "float32"}))
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again.score(users), model.score(users))


def test_beats_popularity_on_synthetic():
    from graphrec.data.graph import build
    from graphrec.data.synthetic import make_synthetic
    ds = build(make_synthetic())
    parts = split(ds.graph, SplitConfig("random"))
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    results = {}
    for name in ("pop", "graph-filter"):
        model = build_model(name, ds.num_users, ds.num_items,
                            model_config(name, {"k": 32} if name == "graph-filter" else {}))
        model.fit(parts.train)
        results[name] = evaluate(model, parts, "test", cfg)["ndcg@20"]
    assert results["graph-filter"] > 2 * results["pop"]


def test_bad_config():
    with pytest.raises(GraphrecError, match="graph-filter"):
        GraphFilter(3, 4, GraphFilterConfig(svd="qr"))

def test_k_beyond_the_rank_is_an_error_naming_k():
    g = random_graph(num_users=5, num_items=8, seed=1)
    with pytest.raises(GraphrecError, match=r"graph-filter: k=50 .* rank bound .* = 5"):
        fitted(g, k=50, svd="exact")
    fitted(g, k=5, svd="exact")  # the bound itself is fine


def test_default_k_follows_the_graph_size():
    """k = min(users, items) / 32 as a power of two in [16, 256]; never more than the graph has."""
    from graphrec.models.graph_filter import GraphFilterConfig, auto_k

    assert GraphFilterConfig().k is None
    assert [auto_k(943, 1682), auto_k(29858, 40981), auto_k(5, 6), auto_k(10**6, 10**6)] == \
        [32, 256, 16, 256]
    assert auto_k(3000, 100000) == 128  # 93.75 -> 128: the nearer power of two in log space
