"""The graph model family: zero hops is plain MF, K hops match a dense reference, losses match
hand computation, and the one trainer makes them learn."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_graph
from graphrec.batches import PairBatch, RatingBatch
from graphrec.data.graph import build
from graphrec.data.synthetic import make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model
from graphrec.models.lightgcn import LightGCN, LightGCNConfig
from graphrec.models.mf import MF, MFConfig
from graphrec.split import SplitConfig, split
from graphrec.trainer import TrainConfig, train_model
from test_propagation import dense_adjacency


def model_on(graph, **options) -> LightGCN:
    model = LightGCN(graph["user"].num_nodes, graph["item"].num_nodes, LightGCNConfig(**options))
    model.fit(graph)
    return model


def test_zero_hops_equals_plain_dot_product():
    g = random_graph(num_users=8, num_items=13, seed=1)
    torch.manual_seed(0)
    mf = build_model("bpr", 8, 13)
    mf.fit(g)
    light = model_on(g, num_layers=0)
    light.load_state_dict(mf.state_dict())
    users = torch.arange(8)
    w = mf.embedding.weight
    torch.testing.assert_close(light.score(users), w[:8] @ w[8:].T)
    torch.testing.assert_close(mf.score(users), light.score(users))


def test_three_hops_match_dense_reference():
    g = random_graph(num_users=8, num_items=13, seed=2)
    model = model_on(g, num_layers=3, dim=5)
    x = model.embedding.weight.detach().double()
    A = dense_adjacency(g)
    final = (x + A @ x + A @ A @ x + A @ A @ A @ x) / 4
    want = final[:8] @ final[8:].T
    torch.testing.assert_close(model.score(torch.arange(8)).double(), want, rtol=1e-5, atol=1e-6)


def test_bpr_loss_by_hand():
    g = random_graph(num_users=3, num_items=4, per_user=(1, 2), seed=3)
    model = model_on(g, num_layers=0, dim=2, l2=0.5)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0],
                                                   [0.5, 0.0], [0.0, 2.0], [1.0, -1.0], [0.0, 0.0]]))
    users, items, negs = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([[2], [3]])
    # user 0 = (1, 0): pos item 0 = (0.5, 0) -> 0.5; neg item 2 = (1, -1) -> 1.0
    # user 1 = (0, 1): pos item 1 = (0, 2) -> 2.0; neg item 3 = (0, 0) -> 0.0
    main = -(math.log(1 / (1 + math.exp(0.5))) + math.log(1 / (1 + math.exp(-2.0)))) / 2
    reg = (1 + 1) + (0.25 + 4) + (2 + 0)  # squared norms of users, positives, negatives
    want = main + 0.5 * reg / (2 * 2)
    assert model.loss(users, items, negs).item() == pytest.approx(want, rel=1e-6)


def test_table_l2_adds_half_the_squared_norm_of_the_whole_table():
    g = random_graph(num_users=3, num_items=4, per_user=(1, 2), seed=3)
    plain = model_on(g, num_layers=0, dim=2, l2=0.0)
    reg = model_on(g, num_layers=0, dim=2, l2=0.0, table_l2=0.3)
    reg.load_state_dict(plain.state_dict())
    users, items, negs = torch.tensor([0]), torch.tensor([1]), torch.tensor([[2]])
    # rows outside the batch count too: the whole table, every step
    want = plain.loss(users, items, negs).item() + 0.15 * plain.embedding.weight.pow(2).sum().item()
    assert reg.loss(users, items, negs).item() == pytest.approx(want, rel=1e-6)
    reg.loss(users, items, negs).backward()
    # row 1 (user 1) is not in the batch: its gradient is the regularizer's alone
    torch.testing.assert_close(reg.embedding.weight.grad[1], 0.3 * reg.embedding.weight[1].detach())
    with pytest.raises(GraphrecError, match="table_l2"):
        model_on(g, table_l2=-1.0)


def test_mse_loss_by_hand():
    g = random_graph(num_users=2, num_items=3, seed=4)
    model = MF(2, 3, MFConfig(dim=1, l2=0.0))
    model.fit(g)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.tensor([[1.0], [2.0], [3.0], [0.5], [1.0]]))
        model.bias.weight.copy_(torch.tensor([[0.1], [0.2], [0.0], [0.3], [0.0]]))
        model.global_bias.fill_(3.0)
    # (user 0, item 0): 3 + 0.1 + 0 + 1*3 = 6.1 vs 5; (user 1, item 1): 3 + 0.2 + 0.3 + 2*0.5 = 4.5 vs 4
    got = model.loss(torch.tensor([0, 1]), torch.tensor([0, 1]), ratings=torch.tensor([5.0, 4.0]))
    batch = RatingBatch(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([5.0, 4.0]))
    assert model(batch).item() == got.item()  # forward(batch) is the loss
    assert got.item() == pytest.approx((1.1 ** 2 + 0.5 ** 2) / 2, rel=1e-6)
    assert model.predict(torch.tensor([1]), torch.tensor([1])).item() == pytest.approx(4.5)


@pytest.fixture(scope="module")
def synthetic():
    ds = build(make_synthetic())
    return ds, split(ds.graph, SplitConfig("random", valid_ratio=0.1))


def fit(name, ds, parts, epochs=8, **train):
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items)
    model.fit(parts.train)
    cfg = TrainConfig(epochs=epochs, lr=0.01, batch_size=512, progress=False, **train)
    summary = train_model(model, parts, cfg, EvalConfig(ks=(20,), progress=False))
    return model, summary


def test_trained_models_beat_popularity(synthetic):
    ds, parts = synthetic
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    pop = build_model("pop", ds.num_users, ds.num_items)
    pop.fit(parts.train)
    base = evaluate(pop, parts, "test", cfg)["ndcg@20"]
    for name in ("bpr", "lightgcn"):
        model, _ = fit(name, ds, parts)
        assert evaluate(model, parts, "test", cfg)["ndcg@20"] > 3 * base, name


def test_loss_falls_and_training_is_deterministic(synthetic, tmp_path):
    ds, parts = synthetic
    a, _ = fit("lightgcn", ds, parts, epochs=3, patience=0)
    b, _ = fit("lightgcn", ds, parts, epochs=3, patience=0)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    torch.manual_seed(0)
    model = build_model("lightgcn", ds.num_users, ds.num_items)
    model.fit(parts.train)
    train_model(model, parts, TrainConfig(epochs=4, lr=0.01, batch_size=512, progress=False),
                EvalConfig(ks=(20,), progress=False), tmp_path)
    import json
    losses = [json.loads(line)["loss"] for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_early_stopping_keeps_the_best_state(synthetic):
    ds, parts = synthetic
    model, summary = fit("bpr", ds, parts, epochs=30, patience=2)
    assert summary["epochs"] < 30  # stopped early
    cfg = EvalConfig(ks=(20,), progress=False)
    assert evaluate(model, parts, "valid", cfg)["ndcg@20"] == pytest.approx(summary["best_valid"])


def test_rating_model_needs_ratings():
    from graphrec.errors import GraphrecError
    g = random_graph(num_users=6, num_items=9, with_rating=False, seed=5)
    parts = split(g, SplitConfig("random", test_ratio=0.3))
    model = build_model("mf", 6, 9)
    model.fit(parts.train)
    with pytest.raises(GraphrecError, match="ratings"):
        train_model(model, parts, TrainConfig(epochs=1, progress=False))


def test_scorer_holds_one_propagation_and_the_model_keeps_no_cache():
    """The caller's scorer propagates once; the model itself always scores its current
    weights, whatever the mode, and holds no propagated embeddings between calls."""
    g = random_graph(num_users=6, num_items=9, seed=4)
    torch.manual_seed(0)
    model = LightGCN(6, 9, LightGCNConfig(dim=4, num_layers=2))
    model.fit(g)
    model.eval()
    users = torch.arange(6)
    first = model.score(users)
    scorer = model.scorer()
    torch.testing.assert_close(scorer.score(users), first)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(PairBatch(users, torch.arange(6), torch.arange(6).view(6, 1) + 1)).backward()
    opt.step()  # an in-place update, in eval mode
    stepped = model.score(users)
    assert not torch.equal(stepped, first)
    u, i = model.embeddings()
    torch.testing.assert_close(stepped, u @ i.T)
    torch.testing.assert_close(scorer.score(users), first)  # the old round's scorer: old weights
    torch.testing.assert_close(model.scorer().score(users), stepped)
    tensors = {id(t) for t in list(model.parameters()) + list(model.buffers())}
    hidden = [k for k, v in vars(model).items() if isinstance(v, torch.Tensor) and id(v) not in tensors]
    assert hidden == ["adj"]  # beside the state: only the adjacency derived from train_edges
    other = LightGCN(6, 9, LightGCNConfig(dim=4, num_layers=2))
    other.fit(g)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.score(users), stepped)


def test_loss_options_are_checked():
    with pytest.raises(GraphrecError, match="loss must be one of"):
        LightGCN(3, 4, LightGCNConfig(loss="mse"))
    with pytest.raises(GraphrecError, match="loss must be 'mse'"):
        MF(3, 4, MFConfig(loss="bpr"))
    with pytest.raises(GraphrecError, match="propagation must be one of"):
        LightGCN(3, 4, LightGCNConfig(propagation="magic"))
