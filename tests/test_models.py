"""The model contract, run by every registered model, and the baselines' own behaviour."""

from __future__ import annotations

import io

import pytest
import torch

from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import REGISTRY, build_model, model_config
from graphrec.schema import EDGE
from graphrec.split import SplitConfig, split


@pytest.fixture(scope="module")
def synthetic_split():
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract(name, synthetic_split):
    ds, parts = synthetic_split
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items)
    model.fit(parts.train)
    users = torch.tensor([0, 5, 17])
    scores = model.score(users)
    assert scores.shape == (3, ds.num_items) and torch.isfinite(scores).all()
    # Scores of a user do not depend on the batch it is in.
    torch.testing.assert_close(model.score(torch.tensor([5]))[0], scores[1])
    # State round trip through a weights-only load.
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = build_model(name, ds.num_users, ds.num_items)
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again.score(users), scores)
    # Determinism: a second fit under the same seed gives the same scores.
    torch.manual_seed(0)
    twin = build_model(name, ds.num_users, ds.num_items)
    twin.fit(parts.train)
    torch.testing.assert_close(twin.score(users), scores)


def test_pop_ranks_by_training_count(synthetic_split):
    ds, parts = synthetic_split
    model = build_model("pop", ds.num_users, ds.num_items)
    model.fit(parts.train)
    counts = torch.bincount(parts.train[EDGE].edge_index[1], minlength=ds.num_items)
    order = torch.argsort(model.score(torch.tensor([0]))[0], descending=True)
    assert (counts[order].diff() <= 0).all()  # non-increasing counts down the ranking


def test_pop_beats_random_and_predicts_item_means(synthetic_split):
    ds, parts = synthetic_split
    cfg = EvalConfig(ks=(20,), metrics=("recall", "ndcg"), progress=False)
    results = {}
    for name in ("pop", "random"):
        model = build_model(name, ds.num_users, ds.num_items)
        model.fit(parts.train)
        results[name] = evaluate(model, parts, "test", cfg)
    assert results["pop"]["ndcg@20"] > 1.5 * results["random"]["ndcg@20"]
    assert "rmse" in results["pop"] and "rmse" not in results["random"]
    # With damping 0 the prediction is exactly the training mean of the item.
    model = build_model("pop", ds.num_users, ds.num_items, model_config("pop", {"damping": 0.0}))
    model.fit(parts.train)
    ei, rating = parts.train[EDGE].edge_index, parts.train[EDGE].rating
    item = int(ei[1][0])
    want = rating[ei[1] == item].mean()
    torch.testing.assert_close(model.predict(torch.tensor([0]), torch.tensor([item]))[0], want)


def test_random_seed_changes_ranking():
    a = build_model("random", 4, 50, model_config("random", {"seed": 0})).score(torch.arange(4))
    b = build_model("random", 4, 50, model_config("random", {"seed": 1})).score(torch.arange(4))
    assert not torch.equal(a.argsort(1), b.argsort(1))
    assert not torch.equal(a[0].argsort(), a[1].argsort())  # users differ too


def test_unknown_model_and_option():
    with pytest.raises(GraphrecError, match="unknown model"):
        model_config("nope")
    with pytest.raises(GraphrecError, match="unknown option 'x'"):
        model_config("pop", {"x": 1})
    with pytest.raises(GraphrecError, match="does not predict ratings"):
        build_model("random", 2, 3).predict(torch.tensor([0]), torch.tensor([0]))
