"""``nmf`` and ``gcmc``: one multiplicative update and the GC-MC encoder/decoder against dense
references on tiny asymmetric graphs, and both beat the global mean on synthetic ratings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import random_graph

from graphrec.batches import RatingBatch
from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.models.gcmc import GCMC, GCMCConfig
from graphrec.models.nmf import NMF, NMFConfig, sgd_bias
from graphrec.schema import EDGE
from graphrec.split import SplitConfig, split


@pytest.fixture(scope="module")
def synthetic_parts():
    ds = build(make_synthetic(SyntheticConfig(num_users=120, num_items=70, num_clusters=4)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


def dense(graph):
    """Observed mask ``M [U, I]`` and ratings ``R [U, I]`` (0 where unobserved), numpy."""
    u, i = graph[EDGE].edge_index.numpy()
    shape = (int(graph["user"].num_nodes), int(graph["item"].num_nodes))
    mask, ratings = np.zeros(shape), np.zeros(shape)
    mask[u, i], ratings[u, i] = 1.0, graph[EDGE].rating.numpy()
    return mask, ratings


def rmse_of(predict, parts) -> tuple[float, float]:
    """RMSE of ``predict`` and of the global training mean on the test part."""
    t = parts.test
    with torch.no_grad():
        err = predict(t.user, t.item) - t.rating
    mean = parts.train[EDGE].rating.mean()
    return float(err.pow(2).mean().sqrt()), float((t.rating - mean).pow(2).mean().sqrt())


# -- nmf -------------------------------------------------------------------------------------
def test_nmf_one_update_matches_the_dense_formula():
    graph = random_graph(num_users=5, num_items=7, per_user=(1, 5), seed=3)
    mask, r = dense(graph)
    cfg = NMFConfig(dim=3, epochs=1, reg_pu=0.1, reg_qi=0.03, seed=4)
    model = NMF(5, 7, cfg)
    model.fit(graph)
    gen = torch.Generator().manual_seed(4)  # the model's initialization
    p = torch.rand(5, 3, generator=gen).double().numpy()
    q = torch.rand(7, 3, generator=gen).double().numpy()
    est = mask * (p @ q.T)  # estimates on observed cells only
    n_u, n_i = mask.sum(1, keepdims=True), mask.sum(0)[:, None]
    want_p = p * ((mask * r) @ q) / (est @ q + n_u * 0.1 * p)
    want_q = q * ((mask * r).T @ p) / (est.T @ p + n_i * 0.03 * q)
    np.testing.assert_allclose(model.user_factors.numpy(), want_p, rtol=1e-5)
    np.testing.assert_allclose(model.item_factors.numpy(), want_q, rtol=1e-5)


def test_nmf_stays_non_negative_and_beats_the_mean(synthetic_parts):
    ds, parts = synthetic_parts
    for biases in (False, True):  # Surprise's 15 factors overfit 14 ratings a user: 4 here
        model = NMF(ds.num_users, ds.num_items, NMFConfig(dim=4, reg_pu=0.3, reg_qi=0.3,
                                                          biases=biases))
        model.fit(parts.train)
        assert (model.user_factors >= 0).all() and (model.item_factors >= 0).all()
        got, mean = rmse_of(model.predict, parts)
        # the biased variant is prone to overfitting (as Surprise's docs warn): finite only
        assert got < (0.95 * mean if not biases else 1.2 * mean), (biases, got, mean)
        pred = model.predict(parts.test.user, parts.test.item)
        assert pred.min() >= 1 and pred.max() <= 5  # clipped to the training range


def test_nmf_bias_steps_are_sequential_sgd_with_the_mean_error():
    err = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.3])
    index = torch.tensor([0, 0, 0, 2, 2])  # bias 1 has no rating: it stays
    b = torch.tensor([0.2, -0.4, 0.1])
    got = sgd_bias(b, err, index, torch.bincount(index, minlength=3).float(), 0.1, 0.5)
    want = b.clone()
    for k in range(3):  # Surprise's steps, one rating at a time, from the mean error
        mean = err[index == k].mean() if (index == k).any() else 0.0
        for _ in range(int((index == k).sum())):
            moved = mean - (want[k] - b[k])  # the error after the bias moved so far
            want[k] = want[k] + 0.1 * (moved - 0.5 * want[k])
    torch.testing.assert_close(got, want)


def test_nmf_needs_ratings():
    graph = random_graph(with_rating=False)
    with pytest.raises(GraphrecError, match="nmf: needs explicit ratings"):
        NMF(13, 29).fit(graph)


# -- gcmc ------------------------------------------------------------------------------------
def reference_hidden(model: GCMC, graph, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The convolution's output ``[U + I, ...]`` from dense per-level adjacency matrices,
    differentiable with respect to the model's tables."""
    mask, r = (torch.tensor(a, dtype=dtype) for a in dense(graph))
    U = mask.shape[0]
    du, di = mask.sum(1), mask.sum(0)
    w = model.tables.to(dtype)
    w = w.cumsum(0) if model.cfg.ordinal else w  # [R, U + I, h]
    users, items = [], []
    for k, level in enumerate(model.levels.tolist()):  # a handful of levels in a test
        a = mask * (r == level)  # [U, I] edges of relation k
        if model.cfg.norm == "symmetric":
            a_u = a_i = a / torch.sqrt(du[:, None] * di[None, :]).clamp_min(1e-12)
        else:  # left: divided by the receiving node's degree
            a_u, a_i = a / du[:, None].clamp_min(1), a / di[None, :].clamp_min(1)
        users.append(a_u @ w[k, U:])  # users receive from items
        items.append(a_i.T @ w[k, :U])
    if model.cfg.accumulation == "stack":
        return torch.cat([torch.cat(users, 1), torch.cat(items, 1)])
    return torch.cat([sum(users), sum(items)])


@pytest.mark.parametrize("accumulation,norm,ordinal", [("stack", "symmetric", True),
                                                       ("sum", "left", False),
                                                       ("stack", "left", False)])
def test_gcmc_encoder_matches_dense_reference(accumulation, norm, ordinal):
    graph = random_graph(num_users=6, num_items=9, per_user=(1, 6), seed=1)
    torch.manual_seed(0)
    model = GCMC(6, 9, GCMCConfig(hidden=10, dim=4, accumulation=accumulation, norm=norm,
                                  ordinal=ordinal, dropout=0.5))
    model.fit(graph)
    assert model.levels.tolist() == sorted(set(graph[EDGE].rating.tolist()))
    want = reference_hidden(model, graph).detach()
    torch.testing.assert_close(model.hidden().double(), want, rtol=1e-5, atol=1e-6)
    # PyG's gather-scale-scatter over the message edges gives the same convolution
    src, target, w_e = model.message_edges()
    r, n, h = model.tables.shape
    tables = model.tables.cumsum(0) if ordinal else model.tables
    edge = model.conv(tables.reshape(r * n, h), torch.stack([src, target]), norm=w_e,
                      num_out=model.adj[0].shape[0])
    torch.testing.assert_close(edge.view(n, -1), model.hidden(), rtol=1e-5, atol=1e-6)
    # the CSR product's own backward (A^T G) is autograd's through the dense reference
    weight = torch.randn_like(want.float())
    (model.hidden() * weight).sum().backward()
    got = model.tables.grad.clone()
    model.tables.grad = None
    (reference_hidden(model, graph, torch.float32) * weight).sum().backward()
    torch.testing.assert_close(got, model.tables.grad, rtol=1e-4, atol=1e-5)
    # z = relu(h) W: users and items through their own dense weights
    zu, zi = model.embeddings()
    for z, h, w in ((zu, want[:6], model.w_user), (zi, want[6:], model.w_item)):
        torch.testing.assert_close(z.double(), h.relu() @ w.double(), rtol=1e-4, atol=1e-5)


def test_gcmc_decoder_is_a_distribution_over_levels():
    graph = random_graph(num_users=6, num_items=9, per_user=(2, 6), seed=2)
    torch.manual_seed(0)
    model = GCMC(6, 9, GCMCConfig(hidden=10, dim=4, num_basis=2))
    model.fit(graph)
    zu, zi = (torch.randn(6, 4), torch.randn(9, 4))
    users, items = torch.tensor([0, 5, 3, 3]), torch.tensor([8, 0, 2, 7])
    q = torch.einsum("rs,sde->rde", model.coeff, model.basis)  # Q_r = sum_s a_rs P_s
    want = torch.stack([(zu[users] @ q[k] * zi[items]).sum(1) for k in range(q.size(0))], 1)
    torch.testing.assert_close(model.pair_logits(zu, zi, users, items), want)  # gathered rows
    grid = torch.cartesian_prod(torch.arange(6), torch.arange(9))  # 54 pairs >= U I / d
    torch.testing.assert_close(model.pair_logits(zu, zi, grid[:, 0], grid[:, 1]),
                               torch.stack([(zu[grid[:, 0]] @ q[k] * zi[grid[:, 1]]).sum(1)
                                            for k in range(q.size(0))], 1), rtol=1e-5, atol=1e-5)
    logits = model.all_logits(zu, zi, users)  # [B, R, I]
    probs = logits.softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones(4, 9))
    expected = model.expected(logits, 1)
    low, high = graph[EDGE].rating.min(), graph[EDGE].rating.max()
    assert (expected >= low).all() and (expected <= high).all()
    torch.testing.assert_close(expected, (probs * model.levels.view(1, -1, 1)).sum(1))
    torch.testing.assert_close(expected.gather(1, items.view(-1, 1)).squeeze(1),
                               model.expected(want, 1))


def test_gcmc_beats_the_mean_and_reloads(synthetic_parts):
    ds, parts = synthetic_parts
    torch.manual_seed(0)
    model = GCMC(ds.num_users, ds.num_items, GCMCConfig(hidden=60, dim=16, dropout=0.3))
    model.fit(parts.train)
    store = parts.train[EDGE]
    batch = RatingBatch(store.edge_index[0], store.edge_index[1], store.rating)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(60):  # full batch, as the defaults
        opt.zero_grad()
        model(batch).backward()
        opt.step()
    model.eval()
    got, mean = rmse_of(model.scorer().predict, parts)
    assert got < 0.95 * mean, (got, mean)
    # dropout is a training-time thing: scoring twice gives the same
    torch.testing.assert_close(model.score(torch.tensor([1, 2])), model.score(torch.tensor([1, 2])))
    # three levels: the parameters take the saved shapes on load
    small = random_graph(num_users=6, num_items=9, seed=5)
    small[EDGE].rating = small[EDGE].rating.clamp(2, 4)
    three = GCMC(6, 9, GCMCConfig(hidden=12, dim=4))
    three.fit(small)
    assert three.levels.tolist() == [2.0, 3.0, 4.0] and three.tables.shape[0] == 3
    buf = io.BytesIO()
    torch.save(three.state_dict(), buf)
    buf.seek(0)
    again = GCMC(6, 9, GCMCConfig(hidden=12, dim=4))
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again.score(torch.arange(6)), three.score(torch.arange(6)))


def test_gcmc_refuses_implicit_and_continuous_ratings():
    with pytest.raises(GraphrecError, match="gcmc: needs explicit ratings"):
        GCMC(13, 29).fit(random_graph(with_rating=False))
    graph = random_graph()
    graph[EDGE].rating = torch.rand(graph[EDGE].num_edges) * 5
    with pytest.raises(GraphrecError, match="gcmc: .* distinct values; at most 20"):
        GCMC(13, 29).fit(graph)
    with pytest.raises(GraphrecError, match="gcmc: accumulation"):
        GCMCConfig(accumulation="mean")
