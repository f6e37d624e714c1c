"""The model contract, run by every registered model, and the baselines' own behaviour."""

from __future__ import annotations

import io

import pytest
import torch

from graphrec.batches import History, make_batches
from graphrec.data.graph import build, user_sequences
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import REGISTRY, Retriever, build_model, model_config
from graphrec.serve.index import IndexConfig, ItemIndex
from graphrec.schema import EDGE
from graphrec.split import SplitConfig, split


@pytest.fixture(scope="module")
def synthetic_split():
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


FLAGS = ("trainable", "predicts_ratings", "uses_history", "train_defaults")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_contract(name, synthetic_split):
    ds, parts = synthetic_split
    torch.manual_seed(0)
    model = build_model(name, ds.num_users, ds.num_items)
    graph_tensors = [(t, t.data_ptr()) for t in parts.train[EDGE].values()
                     if isinstance(t, torch.Tensor)]
    model.fit(parts.train)
    # fit leaves the caller's graph where and as it was
    assert all(t.data_ptr() == ptr and t.device.type == "cpu" for t, ptr in graph_tensors)
    # flags are class constants, never set per instance
    assert not set(FLAGS) & set(vars(model)), name
    users = torch.tensor([0, 5, 17])
    scores = model.score(users)
    assert scores.shape == (3, ds.num_items) and torch.isfinite(scores).all()
    # Scores of a user do not depend on the batch it is in.
    torch.testing.assert_close(model.score(torch.tensor([5]))[0], scores[1])
    # the caller's scorer answers as the model does; candidates are gathered scores
    with torch.no_grad():
        torch.testing.assert_close(model.scorer().score(users), scores)
    items = torch.tensor([[0, 3, 7], [1, 1, 150], [9, 8, 2]])
    torch.testing.assert_close(model.score_candidates(users, items), scores.gather(1, items),
                               rtol=1e-5, atol=1e-5)
    # history: the training histories give the scores of no history; the model keeps nothing
    ptr, seq = user_sequences(parts.train)
    train_history = History.of(ptr, seq, users)
    torch.testing.assert_close(model.score(users, train_history), scores)
    if model.uses_history:
        other = History(torch.tensor([0, 2, 2, 3]), torch.tensor([4, 9, 11]))
        changed = model.score(users, other)
        assert not torch.allclose(changed, scores)
        torch.testing.assert_close(model.score(users), scores)  # nothing was swapped in
    # forward(batch) is the loss of trainable models, through the module
    if model.trainable:
        batch = make_batches(model.batch_spec(), parts.train, 2).batch(
            torch.arange(32), torch.Generator().manual_seed(0))
        loss = model(batch)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert any(p.grad is not None for p in model.parameters())
        model.zero_grad(set_to_none=True)
    else:
        with pytest.raises(GraphrecError, match="not trained by a loss"):
            model.batch_spec()
    if model.predicts_ratings:
        assert torch.isfinite(model.predict(users, torch.tensor([1, 2, 3]))).all()
    # retrievers: vectors reproduce the scores, and an index gives the exact top k
    if isinstance(model, Retriever):
        with torch.no_grad():
            for source in (model, model.scorer()):
                assert isinstance(source, Retriever)
                torch.testing.assert_close(source.user_vectors(users) @ source.item_vectors().T,
                                           scores, rtol=1e-4, atol=1e-4)
            vectors, queries = model.item_vectors(), model.user_vectors(users)
            want = scores.topk(10, dim=1).indices
            for kind in ("exact", "flat", "hnsw"):
                got = ItemIndex(vectors, IndexConfig(kind)).search(queries, 10)[1]
                assert [set(r) for r in got.tolist()] == [set(r) for r in want.tolist()], kind
    else:
        assert not isinstance(model.scorer(), Retriever)
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


def test_every_model_is_named_for_what_it_is():
    names = {name: REGISTRY[name][0].__name__ for name in REGISTRY}
    assert names["lightgcn"] == names["bpr"] == "LightGCN" and names["mf"] == "MF"
    assert names["ncf"] == "NCF" and names["sasrec"] == "SASRec" and names["bert4rec"] == "BERT4Rec"
    from graphrec.models.graph import GraphModel
    assert all(issubclass(REGISTRY[n][0], GraphModel) for n in ("lightgcn", "bpr", "mf", "ncf"))


def test_pop_predicts_only_when_fitted_on_ratings():
    g = build(make_synthetic(SyntheticConfig(num_users=30, num_items=20, num_clusters=2))).graph
    del g[EDGE].rating
    model = build_model("pop", 30, 20)
    model.fit(g)
    with pytest.raises(GraphrecError, match="without ratings"):
        model.predict(torch.tensor([0]), torch.tensor([1]))
    again = build_model("pop", 30, 20)
    again.load_state_dict(model.state_dict())  # the reloaded model knows it too
    with pytest.raises(GraphrecError, match="without ratings"):
        again.predict(torch.tensor([0]), torch.tensor([1]))


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
