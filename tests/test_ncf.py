"""NCF and the MLP rating regressor: losses and scores against hand computation, batched scoring
against pair-by-pair prediction, the rating range, and training that learns."""

from __future__ import annotations

import io
import math

import pytest
import torch

import graphrec.models.ncf as ncf_module
from conftest import random_graph
from graphrec.batches import PairBatch, PairSpec, RatingSpec
from graphrec.data.graph import build, make_graph
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model, model_config
from graphrec.models.ncf import NCF, MLPRating, MLPRatingConfig, NCFConfig
from graphrec.split import SplitConfig, split
from graphrec.trainer import TrainConfig, train_model

NUM_USERS, NUM_ITEMS = 5, 11  # asymmetric, so a transposition fails


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_bce_loss_by_hand():
    model = NCF(3, 4, NCFConfig(gmf_dim=2, mlp_dim=1, mlp_layers=(2,), l2=0.5))
    P, Q = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [[0.5, 0.0], [0.0, 2.0], [1.0, -1.0], [0.0, 0.0]]
    PM, QM = [[1.0], [-1.0], [2.0]], [[0.5], [1.0], [-2.0], [0.0]]
    W1, B1 = [[1.0, -1.0], [0.5, 2.0]], [0.1, -0.2]  # tower layer over [user, item]
    WO, BO = [0.3, -0.4, 0.6, 0.2], -0.1  # output over [gmf0, gmf1, h0, h1]
    with torch.no_grad():
        # one table of the graph family: users then items, GMF columns then MLP columns
        model.embedding.weight.copy_(torch.cat([torch.tensor(P + Q), torch.tensor(PM + QM)], 1))
        model.tower.layers[0].weight.copy_(torch.tensor(W1))
        model.tower.layers[0].bias.copy_(torch.tensor(B1))
        model.output.weight.copy_(torch.tensor([WO]))
        model.output.bias.fill_(BO)

    def logit(u: int, i: int) -> float:
        gmf = [P[u][k] * Q[i][k] for k in range(2)]
        h = [max(0.0, W1[j][0] * PM[u][0] + W1[j][1] * QM[i][0] + B1[j]) for j in range(2)]
        return sum(w * x for w, x in zip(WO, gmf + h)) + BO

    users, items, negs = [0, 2], [1, 3], [[2, 3], [0, 1]]
    terms, reg = [], 0.0
    for u, i, ns in zip(users, items, negs):  # every pair, one at a time
        terms.append(-math.log(sigmoid(logit(u, i))))
        terms += [-math.log(1.0 - sigmoid(logit(u, n))) for n in ns]
        reg += sum(x * x for x in P[u] + Q[i] + PM[u] + QM[i])
        reg += sum(x * x for n in ns for x in Q[n] + QM[n]) / len(ns)
    want = sum(terms) / len(terms) + 0.5 * reg / (2 * len(users))  # mean over N * (1 + M) pairs
    got = model.loss(torch.tensor(users), torch.tensor(items), torch.tensor(negs))
    assert got.item() == pytest.approx(want, rel=1e-6)
    batch = PairBatch(torch.tensor(users), torch.tensor(items), torch.tensor(negs))
    assert model(batch).item() == got.item()  # forward(batch) is the loss
    with pytest.raises(GraphrecError, match="negatives"):
        model.loss(torch.tensor(users), torch.tensor(items))


def test_gmf_score_is_the_weighted_product():
    torch.manual_seed(0)
    model = NCF(NUM_USERS, NUM_ITEMS, NCFConfig(variant="gmf", gmf_dim=3, mlp_layers=()))
    assert not hasattr(model, "tower") and model.output.in_features == 3
    assert model.embedding.weight.shape == (NUM_USERS + NUM_ITEMS, 3)
    p, q = model.embedding.weight[:NUM_USERS], model.embedding.weight[NUM_USERS:]
    w, b = model.output.weight[0], model.output.bias
    want = torch.einsum("uk,ik,k->ui", p, q, w) + b  # h^T (p_u * q_i) + b
    torch.testing.assert_close(model.score(torch.arange(NUM_USERS)), want)


@pytest.mark.parametrize("variant", ["neumf", "gmf", "mlp"])
@pytest.mark.parametrize("chunk_floats", [1 << 26, 50])  # one chunk; many uneven chunks
def test_score_matches_each_pair(variant, chunk_floats, monkeypatch):
    monkeypatch.setattr(ncf_module, "CHUNK_FLOATS", chunk_floats)
    torch.manual_seed(1)
    model = NCF(NUM_USERS, NUM_ITEMS, NCFConfig(variant=variant, gmf_dim=4, mlp_dim=3,
                                                mlp_layers=(6, 5), dropout=0.5, init_std=0.5))
    users = torch.tensor([3, 0, 4])
    want = torch.stack([torch.stack([model.logits(torch.tensor(u), torch.tensor(i))
                                     for i in range(NUM_ITEMS)]) for u in users.tolist()])
    torch.testing.assert_close(model.score(users), want)  # dropout never acts when scoring


def test_regressor_score_matches_predict_and_stays_in_range(monkeypatch):
    monkeypatch.setattr(ncf_module, "CHUNK_FLOATS", 40)
    g = random_graph(NUM_USERS, NUM_ITEMS, seed=3)
    torch.manual_seed(2)
    model = MLPRating(NUM_USERS, NUM_ITEMS, MLPRatingConfig(dim=3, layers=(4,), init_std=2.0))
    model.fit(g)
    rating = g["user", "interacts", "item"].rating
    assert (model.r_min.item(), model.r_max.item()) == (rating.min().item(), rating.max().item())
    assert model.r_min.item() == 1.0 and model.r_max.item() == 5.0  # the fixture's range
    with torch.no_grad():
        model.output.weight.mul_(100.0)  # saturate the sigmoid: outputs reach the bounds
    users = torch.arange(NUM_USERS)
    scores = model.score(users)
    assert scores.min() >= 1.0 and scores.max() <= 5.0
    assert scores.min() < 1.01 and scores.max() > 4.99  # the whole range is reachable
    pairs_u, pairs_i = users.repeat_interleave(NUM_ITEMS), torch.arange(NUM_ITEMS).repeat(NUM_USERS)
    torch.testing.assert_close(scores, model.predict(pairs_u, pairs_i).view(NUM_USERS, NUM_ITEMS))
    # Rescaling: with a zero output weight the prediction is r_min + (r_max - r_min) sigmoid(b).
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.fill_(0.3)
    assert model.predict(torch.tensor([0]), torch.tensor([0])).item() == pytest.approx(
        1.0 + 4.0 * sigmoid(0.3), rel=1e-6)


def test_regressor_loss_is_mse():
    model = MLPRating(2, 3, MLPRatingConfig(dim=1, layers=(1,), dropout=0.0))
    model.r_min.fill_(1.0)
    model.r_max.fill_(5.0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.output.bias.fill_(1.0)  # every prediction 1 + 4 sigmoid(1)
    pred = 1.0 + 4.0 * sigmoid(1.0)
    got = model.loss(torch.tensor([0, 1]), torch.tensor([2, 0]), torch.tensor([5.0, 2.0]))
    assert got.item() == pytest.approx(((5.0 - pred) ** 2 + (2.0 - pred) ** 2) / 2, rel=1e-6)


@pytest.mark.parametrize("name, options", [("ncf", {"variant": "gmf"}), ("ncf", {"variant": "mlp"}),
                                           ("ncf", {}), ("mlp-rating", {})])
def test_state_round_trip(name, options):
    g = random_graph(NUM_USERS, NUM_ITEMS, seed=4)
    g["user", "interacts", "item"].rating += 10.0  # a range the defaults cannot know
    torch.manual_seed(3)
    model = build_model(name, NUM_USERS, NUM_ITEMS, model_config(name, options))
    model.fit(g)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(4)
    again = build_model(name, NUM_USERS, NUM_ITEMS, model_config(name, options))
    again.load_state_dict(torch.load(buf, weights_only=True))
    users = torch.arange(NUM_USERS)
    assert not torch.allclose(build_model(name, NUM_USERS, NUM_ITEMS, model_config(
        name, options)).score(users), model.score(users))  # a fresh model differs
    torch.testing.assert_close(again.score(users), model.score(users))


def test_bad_options_and_missing_ratings():
    with pytest.raises(GraphrecError, match="variant"):
        NCF(2, 3, NCFConfig(variant="deep"))
    with pytest.raises(GraphrecError, match="mlp_layers"):
        NCF(2, 3, NCFConfig(variant="mlp", mlp_layers=()))
    with pytest.raises(GraphrecError, match="mlp_layers"):
        NCF(2, 3, NCFConfig(mlp_layers=()))  # neumf uses the tower too
    with pytest.raises(GraphrecError, match="layers"):
        MLPRating(2, 3, MLPRatingConfig(layers=()))
    assert model_config("ncf", {"mlp_layers": [8, 4]}).mlp_layers == (8, 4)  # TOML gives lists
    g = random_graph(NUM_USERS, NUM_ITEMS, with_rating=False, seed=5)
    with pytest.raises(GraphrecError, match="learns from ratings, and the data has none"):
        build_model("mlp-rating", NUM_USERS, NUM_ITEMS).fit(g)
    assert NCF(2, 3).batch_spec() == PairSpec() and MLPRating(2, 3).batch_spec() == RatingSpec()
    assert MLPRating.predicts_ratings and not NCF.predicts_ratings


@pytest.fixture(scope="module")
def synthetic():
    ds = build(make_synthetic(SyntheticConfig(num_users=400, num_items=200, num_clusters=8)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


def trained(name, ds, parts, **train):
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items)
    model.fit(parts.train)
    train_model(model, parts, TrainConfig(progress=False, **train))
    return model


def test_ncf_learns_more_than_popularity(synthetic):
    ds, parts = synthetic
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    pop = build_model("pop", ds.num_users, ds.num_items)
    pop.fit(parts.train)
    base = evaluate(pop, parts, "test", cfg)["ndcg@20"]
    model = trained("ncf", ds, parts, epochs=6, lr=0.01, batch_size=512, num_negatives=4)
    assert evaluate(model, parts, "test", cfg)["ndcg@20"] > 3 * base  # about 5.5x when written


def test_mlp_rating_learns_the_planted_interaction():
    # Users and items each in one of 3 groups; a rating is 5 within the group and 1 outside it
    # (plus noise), so an item's mean rating knows nothing of the user: only the interaction can.
    g = torch.Generator().manual_seed(0)
    num_users, num_items = 150, 60
    ug, ig = torch.arange(num_users) % 3, torch.arange(num_items) % 3
    seen = torch.rand(num_users, num_items, generator=g) < 0.4
    user, item = seen.nonzero(as_tuple=True)
    rating = torch.where(ug[user] == ig[item], 5.0, 1.0) + 0.3 * torch.randn(user.numel(), generator=g)
    parts = split(make_graph(num_users, num_items, user, item, {"rating": rating.clamp(1, 5)}),
                  SplitConfig("random", seed=0))
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    pop = build_model("pop", num_users, num_items)  # damped item means
    pop.fit(parts.train)
    base = evaluate(pop, parts, "test", cfg)["rmse"]
    torch.manual_seed(0)
    model = build_model("mlp-rating", num_users, num_items)
    model.fit(parts.train)
    train_model(model, parts, TrainConfig(epochs=10, lr=0.01, batch_size=256, progress=False))
    assert evaluate(model, parts, "test", cfg)["rmse"] < 0.5 * base


def neumf_reference(model: NCF, users: torch.Tensor) -> torch.Tensor:
    """NeuMF as He et al. write it, pair by pair, from the layer-0 table: separate GMF and MLP
    embeddings (the table's column blocks), ReLU tower over [p_u, q_i], one output layer."""
    w = model.embedding.weight
    U, g = model.num_users, model.gmf_dim
    out = torch.empty(users.numel(), model.num_items)
    for row, u in enumerate(users.tolist()):
        for i in range(model.num_items):
            pu, qi = w[u], w[U + i]
            h = torch.cat([pu[g:], qi[g:]])
            for layer in model.tower.layers:
                h = torch.relu(layer(h))
            out[row, i] = model.output(torch.cat([pu[:g] * qi[:g], h])).squeeze()
    return out


def test_zero_hops_is_neumf_and_hops_propagate_first():
    g = random_graph(NUM_USERS, NUM_ITEMS, seed=7)
    torch.manual_seed(5)
    flat = NCF(NUM_USERS, NUM_ITEMS, NCFConfig(gmf_dim=3, mlp_dim=2, mlp_layers=(4, 3),
                                               init_std=0.5))
    flat.fit(g)
    users = torch.tensor([4, 0, 2])
    with torch.no_grad():
        want = neumf_reference(flat, users)
        torch.testing.assert_close(flat.score(users), want)
        torch.testing.assert_close(flat.scorer().score(users), want)
    # K hops: the same scorer over LightGCN-propagated embeddings of the same table
    deep = NCF(NUM_USERS, NUM_ITEMS, NCFConfig(gmf_dim=3, mlp_dim=2, mlp_layers=(4, 3),
                                               num_layers=2))
    deep.fit(g)
    deep.load_state_dict({k: v for k, v in flat.state_dict().items()
                          if not k.startswith("encoder.")}, strict=False)  # not its layer weights
    from test_propagation import dense_adjacency
    A = dense_adjacency(g).float()
    x = flat.embedding.weight.detach()
    propagated = (x + A @ x + A @ A @ x) / 3
    with torch.no_grad():
        flat.embedding.weight.copy_(propagated)
        torch.testing.assert_close(deep.score(users), flat.score(users), rtol=1e-5, atol=1e-5)
    # scoring candidates equals gathering from the full scores
    items = torch.tensor([[0, 3, 10], [5, 5, 1], [9, 2, 4]])
    torch.testing.assert_close(deep.score_candidates(users, items),
                               deep.score(users).gather(1, items), rtol=1e-5, atol=1e-6)
