"""itemknn, userknn and ease against slow, obviously correct references (brute-force loops over a
tiny asymmetric graph, EASE's closed form in dense float64), their size guard, and their
accuracy against random on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_graph

from graphrec.batches import History
from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model, model_config
from graphrec.schema import EDGE, ITEM, USER
from graphrec.split import SplitConfig, split

U, I = 11, 17  # asymmetric: a transposition fails loudly


def dense(graph) -> np.ndarray:
    R = np.zeros((graph[USER].num_nodes, graph[ITEM].num_nodes))
    ei = graph[EDGE].edge_index.numpy()
    R[ei[0], ei[1]] = 1.0
    return R


def fitted(name: str, graph, **options):
    model = build_model(name, graph[USER].num_nodes, graph[ITEM].num_nodes,
                        model_config(name, options))
    model.fit(graph)
    return model


def shrunk_cosine(a: np.ndarray, b: np.ndarray, shrink: float) -> float:
    """One pair, written out."""
    dot = sum(x * y for x, y in zip(a, b))
    denom = np.sqrt(sum(x * x for x in a)) * np.sqrt(sum(y * y for y in b)) + shrink
    return dot / denom if denom > 0 else 0.0


def check_neighbourhood(kept: dict[int, float], sims: dict[int, float], k: int) -> None:
    """``kept`` (neighbour -> similarity) is a right top-``k`` of ``sims``: its similarities are
    the reference's, it has ``min(k, #positive)`` members, and nobody left out is more similar
    than anyone kept (equal similarities at the k-th place may go either way)."""
    positive = {n: s for n, s in sims.items() if s > 0}
    assert len(kept) == min(k, len(positive))
    for n, s in kept.items():
        assert abs(s - positive[n]) < 1e-6
    if kept:
        assert all(s <= min(kept.values()) + 1e-6 for n, s in positive.items() if n not in kept)


@pytest.mark.parametrize("k,shrink", [(3, 0.5), (5, 2.0), (100, 0.0)])
def test_itemknn_matches_brute_force(k, shrink):
    g = random_graph(num_users=U, num_items=I, per_user=(2, 9), seed=5)
    model, R = fitted("itemknn", g, k=k, shrink=shrink, block=4), dense(g)  # 5 blocks
    S = np.zeros((I, I))
    S[model.nbr.numpy(), model.target.numpy()] = model.sim.numpy()
    for j in range(I):  # each column a right neighbourhood of item j, itself left out
        sims = {i: shrunk_cosine(R[:, i], R[:, j], shrink) for i in range(I) if i != j}
        check_neighbourhood({i: S[i, j] for i in np.flatnonzero(S[:, j])}, sims, k)
    got = model.score(torch.arange(U)).double().numpy()
    np.testing.assert_allclose(got, R @ S, rtol=1e-5, atol=1e-6)  # s_u = r_u S
    if k >= I - 1:  # nothing pruned: the whole shrunk-cosine matrix, written out
        full = np.array([[shrunk_cosine(R[:, i], R[:, j], shrink) if i != j else 0.0
                          for j in range(I)] for i in range(I)])
        np.testing.assert_allclose(got, R @ full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,shrink", [(3, 0.5), (4, 2.0), (100, 0.0)])
def test_userknn_matches_brute_force(k, shrink):
    g = random_graph(num_users=U, num_items=I, per_user=(2, 9), seed=5)
    model, R = fitted("userknn", g, k=k, shrink=shrink), dense(g)
    # Training users (a user is not its own neighbour), then two new rows under user 0's id,
    # as recommend passes outsiders: one unlike user 0's row (user 0 is a neighbour), one
    # equal to it (user 0 is left out, being that user).
    given = [[0, 3, 5, 11], [int(i) for i in np.flatnonzero(R[0])]]
    cases = [(torch.arange(U), None, R, list(range(U))),
             (torch.tensor([0, 0]), History.from_lists(given), None, [None, 0])]
    for users, history, rows, selves in cases:
        if rows is None:
            rows = np.zeros((len(given), I))
            for b, r in enumerate(given):
                rows[b, r] = 1.0
        idx, sim = model.neighbours(users, history)
        want = np.zeros((len(rows), I))
        for b, (row, me) in enumerate(zip(rows, selves)):
            kept = {int(v): float(s) for v, s in zip(idx[b], sim[b]) if s > 0}
            sims = {v: shrunk_cosine(row, R[v], shrink) for v in range(U) if v != me}
            check_neighbourhood(kept, sims, k)
            for v, s in kept.items():
                want[b] += s * R[v]  # s_u = sum_v sim(u, v) x_v
            if k >= U:  # nothing pruned: every positive similarity counts
                np.testing.assert_allclose(want[b], sum(s * R[v] for v, s in sims.items()
                                                        if s > 0), rtol=1e-5, atol=1e-6)
        got = model.score(users, history).double().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("l2", [0.5, 3.0, 50.0])
def test_ease_matches_closed_form(l2):
    g = random_graph(num_users=U, num_items=I, per_user=(2, 9), seed=6)
    model, R = fitted("ease", g, l2=l2, block=5), dense(g)
    P = np.linalg.inv(R.T @ R + l2 * np.eye(I))  # dense float64
    B = np.eye(I) - P @ np.diag(1 / np.diag(P))
    np.testing.assert_allclose(model.weights.double().numpy(), B, rtol=1e-5, atol=1e-6)
    assert (model.weights.diagonal() == 0).all()  # no item predicts itself
    assert not torch.allclose(model.weights, model.weights.T)  # B is not symmetric
    np.testing.assert_allclose(model.score(torch.arange(U)).double().numpy(), R @ B,
                               rtol=1e-5, atol=1e-6)
    # The float32 path (the one big catalogues take) agrees too.
    from graphrec.data.graph import user_sequences
    from graphrec.models.ease import ease_weights
    from graphrec.models.knn import binary_matrix

    b32 = ease_weights(binary_matrix(*user_sequences(g), I), l2, np.float32, block=3)
    np.testing.assert_allclose(b32, B, rtol=1e-3, atol=1e-4)


def test_ease_refuses_a_catalogue_too_big():
    # refused when built, before any data is read, saying how big and what the limit is
    with pytest.raises(GraphrecError, match=r"^ease: 17 items need two dense 17 x 17 float32 "
                                            r"matrices, 2\.15e-06 GiB, over option "
                                            r"max_memory_gb=1e-06; raise it"):
        build_model("ease", U, I, model_config("ease", {"max_memory_gb": 1e-6}))
    with pytest.raises(GraphrecError, match=r"40,981 items .* 12\.5 GiB, over option "
                                            r"max_memory_gb=8;"):
        build_model("ease", 3, 40_981, model_config("ease", {"max_memory_gb": 8.0}))
    build_model("ease", 3, 40_981)  # Gowalla's catalogue fits the default 16 GiB


@pytest.mark.parametrize("name,options", [("itemknn", {"k": 0}), ("userknn", {"shrink": -1.0}),
                                          ("ease", {"l2": 0.0})])
def test_bad_options(name, options):
    with pytest.raises(GraphrecError, match=f"{name}: option {next(iter(options))}"):
        build_model(name, 3, 4, model_config(name, options))


def test_each_beats_random_on_synthetic_data():
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8)))
    parts = split(ds.graph, SplitConfig("random", seed=0))
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    floor = evaluate(fitted("random", parts.train), parts, "test", cfg)["ndcg@20"]
    for name in ("itemknn", "userknn", "ease", "slim"):
        got = evaluate(fitted(name, parts.train), parts, "test", cfg)["ndcg@20"]
        assert got > 2 * floor, (name, got, floor)


@pytest.mark.parametrize("l1,l2", [(0.3, 0.7), (2.0, 5.0)])
def test_slim_matches_one_elastic_net_per_column(l1, l2):
    """Each column of W is the paper's non-negative elastic net of that item on the others,
    solved here by scikit-learn's coordinate descent (its loss divided by the user count)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    g = random_graph(num_users=U, num_items=I, per_user=(2, 9), seed=6)
    model, R = fitted("slim", g, l1=l1, l2=l2, iterations=600, tol=1e-9), dense(g)
    W = np.zeros((I, I))
    W[model.nbr.numpy(), model.target.numpy()] = model.sim.numpy()
    want = np.zeros((I, I))
    for j in range(I):
        others = R.copy()
        others[:, j] = 0.0  # diag(W) = 0: item j does not predict itself
        net = linear_model.ElasticNet(alpha=(l1 + l2) / U, l1_ratio=l1 / (l1 + l2), positive=True,
                                      fit_intercept=False, tol=1e-12, max_iter=100_000)
        want[:, j] = net.fit(others, R[:, j]).coef_
    np.testing.assert_allclose(W, want, atol=1e-5)
    assert 0 < (W > 0).sum() < I * (I - 1)  # sparse, not empty
    np.testing.assert_allclose(model.score(torch.arange(U)).double().numpy(), R @ W, atol=1e-5)


def test_slim_refuses_a_catalogue_too_big():
    with pytest.raises(GraphrecError, match=r"^slim: 40,981 items need 4 dense .* 25 GiB, "
                                            r"over option max_memory_gb=8;"):
        build_model("slim", 3, 40_981)


def test_new_users_scored_from_their_onboarding_items():
    """A cold-users split: each cold user is scored from the onboarding items alone (the
    evaluator's new-user path), and well above popularity, which cannot personalise."""
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8)))
    parts = split(ds.graph, SplitConfig("cold-users", seed=0))
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    floor = evaluate(fitted("pop", parts.train), parts, "test", cfg)["ndcg@20"]
    for name in ("itemknn", "userknn", "ease"):
        assert build_model(name, 2, 3).new_users == "history"
        got = evaluate(fitted(name, parts.train), parts, "test", cfg)["ndcg@20"]
        assert got > 2 * floor, (name, got, floor)
