"""The explicit-rating baselines (``baseline-only``, ``svd``, ``svdpp``, ``knn-baseline``)
against slow loop references of their formulas, on a tiny case with more items than users."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.data.graph import build, make_graph
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.models import build_model, model_config
from graphrec.schema import EDGE, RATING
from graphrec.split import SplitConfig, split

# 4 users, 6 items (item 5 never rated): (user, item, rating)
TRIPLES = [(0, 0, 5), (0, 1, 3), (0, 2, 4), (0, 4, 1), (1, 0, 4), (1, 1, 2), (1, 3, 5),
           (2, 0, 1), (2, 2, 2), (2, 3, 4), (2, 4, 5), (3, 1, 4), (3, 2, 5), (3, 4, 2),
           (3, 0, 3)]
NU, NI = 4, 6


def tiny_graph():
    u, i, r = (torch.tensor(c) for c in zip(*TRIPLES))
    return make_graph(NU, NI, u, i, {RATING: r.float()})


def ref_baselines(reg_u: float, reg_i: float, epochs: int):
    """Surprise's ``baseline_als``, loop for loop."""
    mu = np.mean([r for _, _, r in TRIPLES])
    bu, bi = np.zeros(NU), np.zeros(NI)
    for _ in range(epochs):
        for i in range(NI):
            rated = [(u, r) for u, j, r in TRIPLES if j == i]
            bi[i] = sum(r - mu - bu[u] for u, r in rated) / (reg_i + len(rated))
        for u in range(NU):
            rated = [(i, r) for v, i, r in TRIPLES if v == u]
            bu[u] = sum(r - mu - bi[i] for i, r in rated) / (reg_u + len(rated))
    return mu, bu, bi


def test_baseline_only_als_matches_the_loops():
    model = build_model("baseline-only", NU, NI,
                        model_config("baseline-only", {"reg_u": 2.0, "reg_i": 3.0, "epochs": 4}))
    model.fit(tiny_graph())
    mu, bu, bi = ref_baselines(2.0, 3.0, 4)
    torch.testing.assert_close(model.user_bias.double(), torch.from_numpy(bu), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.item_bias.double(), torch.from_numpy(bi), atol=1e-6, rtol=0)
    want = mu + bu[:, None] + bi[None, :]
    torch.testing.assert_close(model.score(torch.arange(NU)).double(), torch.from_numpy(want),
                               atol=1e-5, rtol=0)
    # predictions are clipped to the training range [1, 5]
    assert float(model.predict(torch.tensor([0]), torch.tensor([0]))) <= 5.0


def ref_knn(k: int, min_k: int, shrinkage: float):
    """Surprise's item-based KNNBaseline with pearson_baseline similarity, brute force."""
    mu, bu, bi = ref_baselines(15.0, 10.0, 10)
    r = {(u, i): float(x) for u, i, x in TRIPLES}
    d = {(u, i): x - mu - bu[u] - bi[i] for (u, i), x in r.items()}
    sim = np.zeros((NI, NI))
    for i in range(NI):
        for j in range(NI):
            common = [u for u in range(NU) if (u, i) in r and (u, j) in r]
            if i == j:
                sim[i, j] = 1.0
            elif len(common) >= 2:
                num = sum(d[u, i] * d[u, j] for u in common)
                den = math.sqrt(sum(d[u, i] ** 2 for u in common)
                                * sum(d[u, j] ** 2 for u in common))
                rho = num / den if den > 0 else 0.0
                sim[i, j] = rho * (len(common) - 1) / (len(common) - 1 + shrinkage)
    est = np.zeros((NU, NI))
    for u in range(NU):
        for i in range(NI):
            rated = sorted((j for j in range(NI) if (u, j) in r), key=lambda j: -sim[i, j])[:k]
            used = [j for j in rated if sim[i, j] > 0]
            adj = 0.0
            if len(used) >= min_k and used:
                adj = sum(sim[i, j] * d[u, j] for j in used) / sum(sim[i, j] for j in used)
            est[u, i] = mu + bu[u] + bi[i] + adj
    return sim, est


@pytest.mark.parametrize("k,min_k,shrinkage", [(2, 1, 1.0), (40, 1, 100.0), (3, 2, 0.0)])
def test_knn_baseline_matches_brute_force(k, min_k, shrinkage):
    cfg = model_config("knn-baseline", {"k": k, "min_k": min_k, "shrinkage": shrinkage})
    model = build_model("knn-baseline", NU, NI, cfg)
    model.fit(tiny_graph())
    sim, est = ref_knn(k, min_k, shrinkage)
    torch.testing.assert_close(model.sim.double(), torch.from_numpy(sim), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.score(torch.arange(NU)).double(), torch.from_numpy(est),
                               atol=1e-4, rtol=0)
    # the neighbours matter in this case: the estimate is not the baseline everywhere
    base = model.bounds[0] + model.user_bias[:, None] + model.item_bias[None, :]
    assert (model.score(torch.arange(NU)) - base).abs().max() > 0.05
    pairs = torch.tensor([3, 1, 0]), torch.tensor([3, 5, 2])
    want = torch.from_numpy(est[pairs[0].numpy(), pairs[1].numpy()]).float().clamp(1, 5)
    torch.testing.assert_close(model.predict(*pairs), want, atol=1e-4, rtol=0)


def test_knn_baseline_refuses_a_huge_catalogue():
    with pytest.raises(GraphrecError, match="knn-baseline: 30,000 items .* GiB.*max_items"):
        build_model("knn-baseline", 5, 30_000)


def hand_step(params, lr, reg, implicit: bool):
    """One full-batch step by Surprise's per-rating update rule (each from the same old
    parameters), averaged over the ratings: what a mean-loss SGD step must give."""
    mu = np.mean([r for _, _, r in TRIPLES])
    bu, bi, p, q = (params[k].copy() for k in ("bu", "bi", "p", "q"))
    y = params["y"].copy() if implicit else None
    delta = {k: np.zeros_like(v) for k, v in params.items()}
    n = len(TRIPLES)
    for u, i, r in TRIPLES:
        items_u = [j for v, j, _ in TRIPLES if v == u]
        norm = len(items_u) ** -0.5
        z = p[u] + (norm * y[items_u].sum(0) if implicit else 0)
        err = r - (mu + bu[u] + bi[i] + q[i] @ z)
        delta["bu"][u] += lr * (err - reg * bu[u]) / n
        delta["bi"][i] += lr * (err - reg * bi[i]) / n
        delta["p"][u] += lr * (err * q[i] - reg * p[u]) / n
        delta["q"][i] += lr * (err * z - reg * q[i]) / n
        if implicit:
            for j in items_u:
                delta["y"][j] += lr * (err * norm * q[i] - reg * y[j]) / n
    return {k: v + delta[k] for k, v in params.items()}


def _params(model, implicit):
    out = {"bu": model.user_bias, "bi": model.item_bias, "p": model.user_factors,
           "q": model.item_factors}
    if implicit:
        out["y"] = model.implicit
    return {k: v.detach().double().numpy().copy() for k, v in out.items()}


@pytest.mark.parametrize("name", ["svdpp", "svd"])
def test_one_sgd_step_by_hand(name):
    implicit = name == "svdpp"
    opts = {"optimizer": "sgd", "lr": 0.3, "reg": 0.05, "dim": 3, "batch_size": 100,
            "init_std": 0.5, "seed": 3}
    before = build_model(name, NU, NI, model_config(name, {**opts, "epochs": 0}))
    before.fit(tiny_graph())  # the initialization alone
    after = build_model(name, NU, NI, model_config(name, {**opts, "epochs": 1}))
    after.fit(tiny_graph())  # the same initialization, then one full-batch step
    start = _params(before, implicit)
    assert np.abs(start["q"][5]).max() == 0  # an item never rated starts (and stays) at 0
    want = hand_step(start, 0.3, 0.05, implicit)
    got = _params(after, implicit)
    for key in want:
        assert np.abs(got[key] - start[key]).max() > 1e-4, key  # the step moved it
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def synthetic_ratings():
    """The synthetic graph's edges with planted ratings: rounded ``3.5 + b_u + b_i + p_u . q_i
    + noise`` in [1, 5], so biases and factors both carry signal."""
    raw = make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8))
    rng = np.random.default_rng(0)
    frame = raw.frame
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    bu, bi = rng.normal(0, 0.5, users.max() + 1), rng.normal(0, 0.5, items.max() + 1)
    p, q = rng.normal(0, 0.6, (users.max() + 1, 4)), rng.normal(0, 0.6, (items.max() + 1, 4))
    est = 3.5 + bu[users] + bi[items] + (p[users] * q[items]).sum(1) + rng.normal(0, 0.5, len(users))
    raw.frame = frame.assign(rating=np.clip(np.round(est), 1, 5).astype(np.float32))
    ds = build(raw)
    return ds, split(ds.graph, SplitConfig("random", seed=0))


@pytest.mark.parametrize("name,opts", [("baseline-only", {}), ("svd", {"dim": 16, "epochs": 10}),
                                       ("svdpp", {"dim": 16, "epochs": 10}),
                                       ("knn-baseline", {})])
def test_beats_the_global_mean(name, opts, synthetic_ratings):
    ds, parts = synthetic_ratings
    model = build_model(name, ds.num_users, ds.num_items, model_config(name, opts))
    model.fit(parts.train)
    test = parts.test
    rmse = float((model.predict(test.user, test.item) - test.rating).pow(2).mean().sqrt())
    mean = float(parts.train[EDGE][RATING].mean())
    base = float((test.rating - mean).pow(2).mean().sqrt())
    assert rmse < 0.9 * base, (rmse, base)


@pytest.mark.parametrize("name", ["baseline-only", "svd", "svdpp", "knn-baseline"])
def test_implicit_data_is_refused_naming_the_model(name):
    g = tiny_graph()
    del g[EDGE].rating
    with pytest.raises(GraphrecError, match=f"^{name}: this model learns from ratings"):
        build_model(name, NU, NI).fit(g)
