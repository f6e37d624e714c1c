"""two-tower: towers read exactly the declared features, vectors reproduce scores, shared pools
never count a positive as a negative, bad input is a one-line error, and it learns."""

from __future__ import annotations

import json

import pytest
import torch

from graphrec.batches import History, PairSpec, make_batches
from graphrec.checkpoint import load_checkpoint
from graphrec.data.graph import build, user_sequences
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.models import Retriever, build_model, model_config
from graphrec.nn import losses
from graphrec.sampling import NegativeSampler
from graphrec.schema import EDGE, ITEM, USER
from graphrec.split import SplitConfig, split


@pytest.fixture(scope="module")
def data():
    ds = build(make_synthetic(SyntheticConfig(num_users=120, num_items=80, num_clusters=4)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


def _fitted(train, **options):
    torch.manual_seed(0)
    model = build_model("two-tower", int(train[USER].num_nodes), int(train[ITEM].num_nodes),
                        model_config("two-tower", {"layers": (16,), **options}))
    model.fit(train)
    for p in model.parameters():  # away from the initialization, so every input matters
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def _with(train, node, name, value):
    other = train.clone()
    other[node][name] = value
    return other


def test_towers_read_exactly_the_declared_features(data):
    _, parts = data
    train = parts.train
    users = torch.arange(20)
    model = _fitted(train, features="age,price")
    scores = model.score(users)
    # an attribute the towers do not read changes nothing ...
    shuffled = train[USER]["region"][torch.randperm(train[USER].num_nodes)]
    same = _fitted(_with(train, USER, "region", shuffled), features="age,price")
    torch.testing.assert_close(same.score(users), scores, rtol=0, atol=0)
    regenre = _fitted(_with(train, ITEM, "genre", torch.zeros_like(train[ITEM]["genre"])),
                      features="age,price")
    torch.testing.assert_close(regenre.score(users), scores, rtol=0, atol=0)
    # ... and each one they read changes the scores
    ages = (train[USER]["age"] % 4) + 1
    assert not torch.allclose(_fitted(_with(train, USER, "age", ages), features="age,price")
                              .score(users), scores)
    prices = train[ITEM]["price"].flip(0)
    assert not torch.allclose(_fitted(_with(train, ITEM, "price", prices), features="age,price")
                              .score(users), scores)
    # features=none is the ID-only model on any graph: no feature table is kept
    ids_only = _fitted(train, features="none")
    assert not [k for k in ids_only.state_dict() if k.startswith("feat_")]


@pytest.mark.parametrize("options", [{}, {"num_layers": 2}, {"history": False},
                                     {"learn_temperature": True, "loss": "softmax"}])
def test_vectors_reproduce_scores_and_a_weights_only_load_restores_the_towers(data, options):
    ds, parts = data
    model = _fitted(parts.train, **options)
    assert isinstance(model, Retriever) and isinstance(model.scorer(), Retriever)
    users = torch.tensor([0, 3, 7, 50])
    scores = model.score(users)
    with torch.no_grad():
        torch.testing.assert_close(model.user_vectors(users) @ model.item_vectors().T, scores,
                                   rtol=1e-5, atol=1e-5)
        history = History.from_lists([[1, 2], [], [5], [9, 10, 11]])
        torch.testing.assert_close(model.scorer().score(users, history), model.score(users, history))
    blob = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = build_model("two-tower", ds.num_users, ds.num_items,
                        model_config("two-tower", {"layers": (16,), **options}))
    fresh.load_state_dict(blob)
    torch.testing.assert_close(fresh.score(users), scores)


def test_unknown_token_codes_fall_in_the_unknown_bucket(data):
    _, parts = data
    model = _fitted(parts.train, features="age")
    vocab = model.layout[USER][0]["vocab"]
    users = torch.tensor([4])
    want = model.score(users)
    table = model.encoders[USER].maps["age"].weight
    with torch.no_grad():  # give the unknown bucket the row of user 4's code
        table[vocab] = table[int(model.feat_user_age[4])]
    for code in (vocab, vocab + 7, -3):  # never seen at fit: all one row
        model.feat_user_age[4] = code
        torch.testing.assert_close(model.score(users), want)


def test_shared_pools_mark_exactly_the_positives_and_carry_log_q(data):
    _, parts = data
    train = parts.train
    ptr, items = user_sequences(train)
    sampler = NegativeSampler(ptr, items, int(train[ITEM].num_nodes))
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(int(train[USER].num_nodes), (64,), generator=gen)
    pool = torch.cat([sampler.draw((50,), gen), items[:10], items[:3]])  # duplicates too
    want = sampler.is_positive(users.unsqueeze(1).expand(-1, pool.numel()),
                               pool.unsqueeze(0).expand(users.numel(), -1))
    assert torch.equal(sampler.hits(users, pool), want) and want.any()
    for pool_kind, size in (("uniform", 30), ("in-batch", 32), ("mixed", 62)):
        batch = make_batches(PairSpec(pool=pool_kind), train, 30).batch(torch.arange(32), gen)
        assert batch.negatives.shape == (size,) and batch.hits.shape == (32, size)
        truth = sampler.is_positive(batch.users.unsqueeze(1).expand(-1, size),
                                    batch.negatives.unsqueeze(0).expand(32, -1))
        assert torch.equal(batch.hits, truth)
        if pool_kind == "in-batch":  # each row's own positive is in the pool, and is a hit
            assert batch.hits[torch.arange(32), torch.arange(32)].all()
    # log q is the log expected count of the item in the pool
    batch = make_batches(PairSpec(pool="mixed"), train, 30).batch(torch.arange(32), gen)
    share = torch.bincount(train[EDGE].edge_index[1], minlength=int(train[ITEM].num_nodes)).double() \
        / train[EDGE].edge_index.size(1)
    expect = (32 * share + 30 / int(train[ITEM].num_nodes)).log().float()
    torch.testing.assert_close(batch.log_q_neg, expect[batch.negatives])
    torch.testing.assert_close(batch.log_q_pos, expect[batch.items])


def test_masked_losses_by_hand():
    pos = torch.tensor([0.5, -0.2])
    neg = torch.tensor([[0.1, 0.9, 0.3], [0.4, -0.1, 0.95]])
    hits = torch.tensor([[False, True, False], [False, False, False]])
    keep = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]
    sig = lambda x: 1 / (1 + torch.exp(-x))  # noqa: E731
    bpr = sum(-torch.log(sig(pos[r] - neg[r, c])) for r, c in keep) / 5
    torch.testing.assert_close(losses.bpr(pos, neg, hits), bpr)
    bce = (-torch.log(sig(pos)).sum() - sum(torch.log(1 - sig(neg[r, c])) for r, c in keep)) / 7
    torch.testing.assert_close(losses.bce(pos, neg, hits), bce)
    row0 = -torch.log(torch.exp(pos[0]) / (torch.exp(pos[0]) + torch.exp(neg[0, 0]) + torch.exp(neg[0, 2])))
    row1 = -torch.log(torch.exp(pos[1]) / (torch.exp(pos[1]) + torch.exp(neg[1]).sum()))
    torch.testing.assert_close(losses.sampled_softmax(pos, neg, hits=hits), (row0 + row1) / 2)
    m, w = 0.2, 3.0
    c0 = (1 - pos[0]) + w * (max(0.1 - m, 0) + max(0.3 - m, 0)) / 2
    c1 = (1 - pos[1]) + w * (max(0.4 - m, 0) + 0 + max(0.95 - m, 0)) / 3
    torch.testing.assert_close(losses.ccl(pos, neg, m, w, hits), (c0 + c1) / 2)


@pytest.mark.parametrize("options, match", [
    ({"features": "nope"}, "feature 'nope' is not a node attribute"),
    ({"features": "user.nope"}, "feature 'user.nope' is not a node attribute"),
    ({"features": "other.age"}, "prefix must be user. or item."),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"loss": "hinge"}, "loss must be one of"),
    ({"negatives": "hard"}, "negatives must be one of"),
    ({"margin": 2.0}, "margin must lie in"),
])
def test_bad_options_are_one_line_errors(data, options, match):
    ds, parts = data
    with pytest.raises(GraphrecError, match=match) as info:
        model = build_model("two-tower", ds.num_users, ds.num_items, model_config("two-tower", options))
        model.fit(parts.train)
    assert "\n" not in str(info.value)


def test_mistyped_and_text_features_are_named(data):
    ds, parts = data
    model = build_model("two-tower", ds.num_users, ds.num_items, model_config("two-tower", {"features": "age"}))
    bad = _with(parts.train, USER, "age", parts.train[USER]["age"].to(torch.int32))
    with pytest.raises(GraphrecError, match="feature user.age: the towers read int64"):
        model.fit(bad)
    text = _with(parts.train, ITEM, "title", [f"t{i}" for i in range(ds.num_items)])
    model = build_model("two-tower", ds.num_users, ds.num_items, model_config("two-tower", {"features": "title"}))
    with pytest.raises(GraphrecError, match="feature item.title is text"):
        model.fit(text)
    model = build_model("two-tower", ds.num_users, ds.num_items)
    model.fit(text)  # "all" leaves text out
    assert "title" not in {f["name"] for f in model.layout[ITEM]}


def test_zero_negatives_is_a_one_line_error(data):
    ds, parts = data
    model = _fitted(parts.train, negatives="uniform")
    batch = make_batches(model.batch_spec(), parts.train, 1).batch(torch.arange(8), torch.Generator())
    batch.negatives = batch.negatives[:, :0]
    with pytest.raises(GraphrecError, match="needs negatives"):
        model(batch)


@pytest.mark.parametrize("options", [{}, {"loss": "softmax", "negatives": "mixed"},
                                     {"features": "none", "num_layers": 1}])
def test_beats_popularity_and_saves_a_weights_only_checkpoint(options, tmp_path):
    from graphrec import train
    from graphrec.cli import run

    out = tmp_path / "run"
    flags = [a for k, v in options.items() for a in ("--set", f"{k}={v}")]
    assert run(train.main, ["--model", "two-tower", "--epochs", "12", "--num-negatives", "64",
                            "--no-progress", "--out", str(out), *flags]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pop = json.loads((out / "pop_metrics.json").read_text())
    assert metrics["ndcg@20"] > 1.5 * pop["ndcg@20"], (metrics["ndcg@20"], pop["ndcg@20"])
    ckpt = load_checkpoint(out)  # torch.load(weights_only=True) inside
    users = torch.arange(5)
    assert torch.isfinite(ckpt.model.score(users)).all()
    if options.get("features") != "none":
        assert ckpt.model.layout[ITEM] and ckpt.features["item"]["year"]["vocab"]
