"""graphrec.nn.losses against hand computations, and the models that use them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from graphrec.errors import GraphrecError
from graphrec.models import build_model, model_config
from graphrec.nn import losses


def test_bpr_by_hand():
    got = losses.bpr(torch.tensor([2.0]), torch.tensor([[1.0, 3.0]]))
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2  # -log s(1), -log s(-1)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_bce_by_hand():
    # -log s(0) = ln 2 for the positive; -log(1 - s(0)) = ln 2 and -log(1 - s(ln 3)) = ln 4
    got = losses.bce(torch.tensor([0.0]), torch.tensor([[0.0, math.log(3.0)]]))
    assert got.item() == pytest.approx(4 * math.log(2) / 3, rel=1e-6)
    pos, neg = torch.randn(5), torch.randn(5, 3)
    logits = torch.cat([pos[:, None], neg], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    assert losses.bce(pos, neg).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, labels).item(), rel=1e-6)


def test_sampled_softmax_by_hand_and_the_logq_shift():
    pos, neg = torch.tensor([math.log(2.0)]), torch.tensor([[0.0, 0.0]])
    assert losses.sampled_softmax(pos, neg).item() == pytest.approx(math.log(2), rel=1e-6)
    # temperature 0.5: logits [2 ln 2, 0, 0], softmax of the positive 4 / 6
    assert losses.sampled_softmax(pos, neg, 0.5).item() == pytest.approx(math.log(1.5), rel=1e-6)
    # logQ: the positive drawn with probability 2 (relative) cancels its lead: ln 3
    got = losses.sampled_softmax(pos, neg, log_q_pos=torch.tensor([math.log(2.0)]),
                                 log_q_neg=torch.zeros(1, 2))
    assert got.item() == pytest.approx(math.log(3), rel=1e-6)
    # the correction is exactly a shift of each logit by its log-probability
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(6, generator=g), torch.randn(6, 4, generator=g)
    lq_pos, lq_neg = torch.randn(6, generator=g), torch.randn(6, 4, generator=g)
    assert torch.allclose(losses.sampled_softmax(pos, neg, 1.0, lq_pos, lq_neg),
                          losses.sampled_softmax(pos - lq_pos, neg - lq_neg))


def test_in_batch_softmax_masks_accidental_hits_and_shifts_by_logq():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    items = torch.tensor([5, 7, 5])  # rows 0 and 2 share their positive
    logits = losses.in_batch_logits(u, v, items)
    assert logits[0, 2] == -math.inf and logits[2, 0] == -math.inf
    assert logits[1].tolist() == [0.0, 2.0, 0.0]
    e = math.e
    want = (-math.log(e / (e + 1)) - math.log(e**2 / (e**2 + 2)) - math.log(e / (e**2 + e))) / 3
    assert losses.in_batch_softmax(logits).item() == pytest.approx(want, rel=1e-6)
    log_q = torch.zeros(8)
    log_q[7] = math.log(0.5)
    shifted = losses.in_batch_logits(u, v, items, log_q=log_q)
    assert torch.equal(shifted[:, 1], logits[:, 1] - math.log(0.5))
    assert torch.equal(shifted[:, [0, 2]], logits[:, [0, 2]])
    # mixed negatives: sampled columns appended
    extra = torch.tensor([[0.0], [0.0], [0.0]])
    mixed = losses.in_batch_softmax(logits, extra)
    want = (-math.log(e / (e + 2)) - math.log(e**2 / (e**2 + 3))
            - math.log(e / (e**2 + e + 1))) / 3
    assert mixed.item() == pytest.approx(want, rel=1e-6)


def test_ccl_by_hand():
    got = losses.ccl(torch.tensor([0.8]), torch.tensor([[0.95, 0.5]]), margin=0.9, neg_weight=2)
    assert got.item() == pytest.approx(0.2 + 2 * 0.05 / 2, rel=1e-5)


@pytest.mark.parametrize("call,match", [
    (lambda: losses.bpr(torch.zeros(2), torch.zeros(2, 0)), "needs negatives"),
    (lambda: losses.sampled_softmax(torch.zeros(2), torch.zeros(2, 1), 0.0), "temperature"),
    (lambda: losses.in_batch_logits(torch.zeros(2, 1), torch.zeros(2, 1), torch.arange(2), -1),
     "temperature"),
    (lambda: losses.ccl(torch.zeros(1), torch.zeros(1, 1), margin=2.0), "margin"),
])
def test_bad_settings_are_one_line_errors(call, match):
    with pytest.raises(GraphrecError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name,loss,function", [
    ("lightgcn", "bpr", losses.bpr), ("lightgcn", "bce", losses.bce),
    ("bpr", "softmax", losses.sampled_softmax), ("ncf", "bce", losses.bce),
    ("ncf", "bpr", losses.bpr), ("ncf", "softmax", losses.sampled_softmax)])
def test_models_train_on_the_loss_they_are_given(name, loss, function, tiny_graph):
    options = {"loss": loss, "l2": 0.0}
    model = build_model(name, 4, 6, model_config(name, options))
    model.fit(tiny_graph)
    model.eval()  # no dropout: the logits below are the loss's
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])
    negatives = torch.tensor([[4, 5], [0, 5], [4, 0]])
    got = model.loss(users, items, negatives)
    with torch.no_grad():
        scores = model.score_candidates(users, torch.cat([items[:, None], negatives], 1))
    assert got.item() == pytest.approx(function(scores[:, 0], scores[:, 1:]).item(), rel=1e-5)


def test_unknown_loss_is_a_one_line_error():
    for name in ("lightgcn", "ncf"):
        with pytest.raises(GraphrecError, match="loss must be one of"):
            build_model(name, 3, 4, model_config(name, {"loss": "hinge"}))


@pytest.fixture
def tiny_graph():
    from graphrec.data.graph import make_graph

    user = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    item = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4])
    return make_graph(4, 6, user, item)


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_lightgcn_trained_on_another_loss_beats_popularity(loss, tmp_path):
    import json

    from graphrec import train
    from graphrec.cli import run

    out = tmp_path / "run"
    assert run(train.main, ["--set", f"loss={loss}", "--epochs", "8", "--no-progress",
                            "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pop = json.loads((out / "pop_metrics.json").read_text())
    assert metrics["ndcg@20"] > 2 * pop["ndcg@20"], (metrics["ndcg@20"], pop["ndcg@20"])


def test_popularity_negatives_carry_log_probabilities_into_the_softmax(tiny_graph):
    from graphrec.batches import make_batches

    model = build_model("lightgcn", 4, 6, model_config(
        "lightgcn", {"loss": "softmax", "negatives": "popularity", "l2": 0.0}))
    model.fit(tiny_graph)
    source = make_batches(model.batch_spec(), tiny_graph, num_negatives=3)
    batch = source.batch(torch.arange(8), torch.Generator().manual_seed(0))
    degree = torch.bincount(tiny_graph["user", "interacts", "item"].edge_index[1],
                            minlength=6).double() ** 0.75
    q = degree / degree.sum()
    assert torch.allclose(batch.log_q_neg.double(), q.log()[batch.negatives], atol=1e-6)
    assert bool((degree[batch.negatives] > 0).all())  # an item never seen is never drawn
    with torch.no_grad():
        scores = model.score_candidates(batch.users,
                                        torch.cat([batch.items[:, None], batch.negatives], 1))
    want = losses.sampled_softmax(scores[:, 0], scores[:, 1:], 1.0, batch.log_q_pos,
                                  batch.log_q_neg)
    assert model(batch).item() == pytest.approx(want.item(), rel=1e-5)
    uniform = build_model("lightgcn", 4, 6, model_config("lightgcn", {"loss": "softmax"}))
    assert uniform.batch_spec().popularity is None
    with pytest.raises(GraphrecError, match="negatives must be"):
        build_model("lightgcn", 4, 6, model_config("lightgcn", {"negatives": "hard"}))


def test_lightgcn_with_popularity_negatives_beats_popularity(tmp_path):
    import json

    from graphrec import train
    from graphrec.cli import run

    out = tmp_path / "run"
    assert run(train.main, ["--set", "loss=softmax", "--set", "negatives=popularity",
                            "--epochs", "8", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    pop = json.loads((out / "pop_metrics.json").read_text())
    assert metrics["ndcg@20"] > 2 * pop["ndcg@20"], (metrics["ndcg@20"], pop["ndcg@20"])


@pytest.mark.parametrize("loss,function", [("bpr", losses.bpr), ("softmax", losses.sampled_softmax)])
def test_lightgcn_on_a_shared_pool_scores_each_row_against_the_pool_minus_its_hits(
        loss, function, tiny_graph):
    from graphrec.batches import make_batches

    model = build_model("lightgcn", 4, 6, model_config("lightgcn", {"loss": loss, "l2": 0.0,
                                                                    "negatives": "mixed"}))
    model.fit(tiny_graph)
    batch = make_batches(model.batch_spec(), tiny_graph, 3).batch(
        torch.arange(8), torch.Generator().manual_seed(0))
    assert batch.negatives.shape == (11,) and batch.hits.shape == (8, 11)
    got = model(batch)
    with torch.no_grad():
        pool = batch.negatives.expand(8, -1)
        scores = model.score_candidates(batch.users, torch.cat([batch.items[:, None], pool], 1))
    extra = {"log_q_pos": batch.log_q_pos, "log_q_neg": batch.log_q_neg} if loss == "softmax" else {}
    want = function(scores[:, 0], scores[:, 1:], hits=batch.hits, **extra)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
