"""hybrid: scores are the closed form q_u . p_i + b_i of ID and feature embeddings, a cold item
is its features alone, WARP is the batched rank-weighted hinge, both losses learn, the cold
paths of the evaluator work, and bad input is a one-line error."""

from __future__ import annotations

import json

import pytest
import torch

from graphrec.batches import History, make_batches
from graphrec.data.graph import build, make_graph
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import Retriever, build_model, model_config
from graphrec.models.coldstart import NewUsers, check_new_items, fold_in
from graphrec.nn import losses
from graphrec.schema import ITEM, USER
from graphrec.split import SplitConfig, split

NU, NI, D = 5, 8, 4  # asymmetric; item 7 has no interaction


@pytest.fixture(scope="module")
def tiny():
    user = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 4, 4])
    item = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 2, 5])
    g = torch.Generator().manual_seed(0)
    users = {"age": torch.tensor([1, 2, 0, 1, 3]),  # token, 0: missing
             "score": torch.tensor([0.5, 1.0, -2.0, 3.0, 0.0])}  # float
    items = {"year": torch.tensor([1, 0, 2, 2, 1, 3, 0, 1]),
             "genre": torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0],
                                    [0, 1, 1], [0, 0, 0], [1, 0, 1]]).float(),  # multi-hot
             "text_emb": torch.randn(NI, 6, generator=g),  # a float matrix
             "price": torch.tensor([1.0, 2.0, 4.0, 8.0, 1.0, 0.5, 3.0, 2.0])}
    return make_graph(NU, NI, user, item, user_attrs=users, item_attrs=items)


def _fitted(graph, **options):
    torch.manual_seed(0)
    num_users, num_items = int(graph[USER].num_nodes), int(graph[ITEM].num_nodes)
    model = build_model("hybrid", num_users, num_items, model_config("hybrid", options))
    model.fit(graph)
    for p in model.parameters():  # away from the initialization: the biases count too
        p.data.add_(torch.randn_like(p) * 0.3)
    return model


def _standard(x):
    return (x - x.mean()) / x.std()


def test_scores_are_the_closed_form_of_id_and_feature_embeddings(tiny):
    model = _fitted(tiny, dim=D)
    enc, ids, s = model.encoders, model.ids, model.scales
    with torch.no_grad():
        age = tiny[USER]["age"]
        q = ids[USER].weight.clone()  # every user has an interaction
        q += enc[USER].maps["age"].weight[age] * (age > 0).unsqueeze(1)
        q += _standard(tiny[USER]["score"]).unsqueeze(1) * s["user_score"]
        year = tiny[ITEM]["year"]
        known = torch.tensor([1.0] * 7 + [0.0]).unsqueeze(1)
        p = ids[ITEM].weight * known  # [NI, D + 1], the last column the bias
        p += enc[ITEM].maps["year"].weight[year] * (year > 0).unsqueeze(1)
        p += tiny[ITEM]["genre"] @ enc[ITEM].maps["genre"].weight.T
        p += tiny[ITEM]["text_emb"] @ enc[ITEM].maps["text_emb"].weight.T
        p += _standard(tiny[ITEM]["price"]).unsqueeze(1) * s["item_price"]
        want = q @ p[:, :D].T + p[:, D]  # [NU, NI]
        users = torch.arange(NU)
        torch.testing.assert_close(model.score(users), want)
        torch.testing.assert_close(model.scorer().score(users), want)
        cand = torch.tensor([[7, 0], [3, 3], [1, 6], [0, 2], [5, 4]])
        torch.testing.assert_close(model.score_candidates(users, cand), want.gather(1, cand))
        # a retriever: [q, 1] . [p, b]
        assert isinstance(model, Retriever) and isinstance(model.scorer(), Retriever)
        for source in (model, model.scorer()):
            torch.testing.assert_close(source.user_vectors(users) @ source.item_vectors().T, want)
            assert source.user_vectors(users).shape == (NU, D + 1)
        # without biases the vectors are q_u and p_i alone
        plain = _fitted(tiny, dim=D, biases=False)
        vu, vi = plain.user_vectors(users), plain.item_vectors()
        assert vu.shape == (NU, D) and vi.shape == (NI, D)
        torch.testing.assert_close(plain.score(users), vu @ vi.T)


def test_a_cold_item_is_its_features_alone(tiny):
    model = _fitted(tiny, dim=D)
    assert model.serves_new_items() and model.item_known.tolist() == [True] * 7 + [False]
    before = model.item_vectors()
    with torch.no_grad():
        model.ids[ITEM].weight[7] += 100.0  # its ID row is never read
        after = model.item_vectors()
        torch.testing.assert_close(after, before)
        enc = model.encoders[ITEM]
        feats = (enc.maps["year"].weight[1] + tiny[ITEM]["genre"][7] @ enc.maps["genre"].weight.T
                 + tiny[ITEM]["text_emb"][7] @ enc.maps["text_emb"].weight.T
                 + _standard(tiny[ITEM]["price"])[7] * model.scales["item_price"])
        torch.testing.assert_close(after[7], feats)
        # and an item with neither ID nor features has the zero vector
        ids_only = _fitted(tiny, dim=D, features="none")
        assert not ids_only.serves_new_items()
        assert not ids_only.item_vectors()[7].any() and ids_only.item_vectors()[0].any()
    with pytest.raises(GraphrecError, match="cannot rank items it was not trained on"):
        check_new_items(ids_only)


def test_unknown_token_codes_add_nothing(tiny):
    model = _fitted(tiny, dim=D, features="year")
    want = model.item_vectors()
    for code in (0, 4, 99, -1):  # missing, and never seen at fit
        model.feat_item_year[3] = code
        torch.testing.assert_close(model.item_vectors()[3], model.ids[ITEM].weight[3].detach())
    model.feat_item_year[3] = tiny[ITEM]["year"][3]
    torch.testing.assert_close(model.item_vectors(), want)


def test_warp_by_hand():
    pos = torch.tensor([2.0, 0.0, 5.0])
    neg = torch.tensor([[0.5, 1.5, 3.0], [-2.0, -0.5, 0.2], [0.0, 0.0, 0.0]])
    harmonic = lambda r: sum(1 / j for j in range(1, r + 1))  # noqa: E731
    # row 0: first violator (neg > pos - 1) at draw 2, rank floor(9 / 2) = 4, hardest 3.0
    # row 1: first at draw 2, rank 4, hardest 0.2; row 2: no violator
    want = (harmonic(4) * (1 - 2 + 3.0) + harmonic(4) * (1 - 0 + 0.2) + 0) / 3
    torch.testing.assert_close(losses.warp(pos, neg, 10), torch.tensor(want))
    # hits are no negatives: row 0 loses its first violator, row 1's first draw is not one
    hits = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    want = (harmonic(4) * (1 - 2 + 3.0) + harmonic(9) * (1 - 0 + 0.2)) / 3
    torch.testing.assert_close(losses.warp(pos, neg, 10, hits=hits), torch.tensor(want))
    # the gradient reaches the positive and the hardest violator only
    pos.requires_grad_(True)
    neg.requires_grad_(True)
    losses.warp(pos, neg, 10).backward()
    assert pos.grad.tolist() == pytest.approx([-harmonic(4) / 3, -harmonic(4) / 3, 0.0])
    assert (neg.grad != 0).tolist() == [[False, False, True], [False, False, True],
                                        [False, False, False]]


@pytest.fixture(scope="module")
def synth():
    return build(make_synthetic(SyntheticConfig(num_users=200, num_items=120, num_clusters=6)))


@pytest.mark.parametrize("options", [{"loss": "warp"}, {"loss": "bpr"},
                                     {"loss": "warp", "negatives": "shared"}])
def test_both_losses_decrease(synth, options):
    parts = split(synth.graph, SplitConfig("random", seed=0))
    torch.manual_seed(0)
    model = build_model("hybrid", synth.num_users, synth.num_items, model_config("hybrid", options))
    model.fit(parts.train)
    source = make_batches(model.batch_spec(), parts.train, 16)
    gen = torch.Generator().manual_seed(0)
    fixed = source.batch(torch.arange(512), torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = float(model(fixed))
    for _ in range(20):
        loss = model(source.batch(torch.randint(source.num_examples, (256,), generator=gen), gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(model(fixed)) < 0.7 * start


def test_new_users_fold_in_and_the_evaluator_cold_paths(synth):
    parts = split(synth.graph, SplitConfig("cold-users", valid_ratio=0.0, seed=0))
    model = _fitted(parts.train)
    assert model.new_users == "fold-in" and not model.user_known[parts.cold_users].any()
    history = History.from_lists([[0, 3, 5], [7]])
    users = parts.cold_users[:2]
    with torch.no_grad():
        items = model.item_vectors()
        q = torch.cat([fold_in(items[:, :-1], history), torch.ones(2, 1)], 1)
        for source in (NewUsers(model), NewUsers(model, outside=True)):
            torch.testing.assert_close(source.score(users, history), q @ items.T)
    cfg = EvalConfig(ks=(20,), metrics=("ndcg",), progress=False)
    assert 0 <= evaluate(model, parts, "test", cfg)["ndcg@20"] <= 1
    cold = split(synth.graph, SplitConfig("cold-items", valid_ratio=0.0, seed=0))
    assert 0 <= evaluate(_fitted(cold.train), cold, "test", cfg)["ndcg@20"] <= 1
    with pytest.raises(GraphrecError, match="cannot rank items") as info:
        evaluate(_fitted(cold.train, features="none"), cold, "test", cfg)
    assert "\n" not in str(info.value)


def test_trained_on_cold_items_it_beats_random(tmp_path):
    from graphrec import train
    from graphrec.cli import run

    got = {}
    for model in ("hybrid", "random"):
        out = tmp_path / model
        assert run(train.main, ["--model", model, "--split", "cold-items", "--epochs", "4",
                                "--no-progress", "--out", str(out)]) == 0
        got[model] = json.loads((out / "metrics.json").read_text())["ndcg@20"]
    assert got["hybrid"] > 2 * got["random"], got


@pytest.mark.parametrize("options, match", [
    ({"loss": "hinge"}, "hybrid: loss must be one of bpr, warp"),
    ({"dim": 0}, "hybrid: need dim >= 1"),
    ({"margin": -1.0}, "margin >= 0"),
    ({"negatives": "hard"}, "hybrid: negatives must be one of"),
    ({"features": "nope"}, "hybrid: feature 'nope' is not a node attribute"),
    ({"id_dropout": 1.0}, "id_dropout must lie in"),
])
def test_bad_options_are_one_line_errors(tiny, options, match):
    with pytest.raises(GraphrecError, match=match) as info:
        model = build_model("hybrid", NU, NI, model_config("hybrid", options))
        model.fit(tiny)
    assert "\n" not in str(info.value)


def test_id_dropout_acts_in_training_only(tiny):
    model = _fitted(tiny, id_dropout=0.5)
    batch = make_batches(model.batch_spec(), tiny, 3).batch(torch.arange(10), torch.Generator())
    model.eval()
    with torch.no_grad():
        plain = float(model(batch))
        assert float(model(batch)) == plain
        model.train()
        torch.manual_seed(0)
        assert float(model(batch)) != plain


def test_zero_negatives_and_bad_warp_input_are_one_line_errors(tiny):
    model = _fitted(tiny)
    batch = make_batches(model.batch_spec(), tiny, 1).batch(torch.arange(4), torch.Generator())
    batch.negatives = batch.negatives[:, :0]
    with pytest.raises(GraphrecError, match="needs negatives"):
        model(batch)
    with pytest.raises(GraphrecError, match="at least 2 items"):
        losses.warp(torch.zeros(2), torch.zeros(2, 3), 1)
