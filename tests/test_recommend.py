"""Checkpoints and the recommend command: raw ids, never a seen item, weights-only loading."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from graphrec import recommend, train
from graphrec.serve.recommend import recommend as recommend_items
from graphrec.checkpoint import load_checkpoint
from graphrec.cli import run
from graphrec.data.readers import read
from graphrec.errors import GraphrecError
from graphrec.models.base import Retriever

TINY = "data/tiny.csv"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    from pathlib import Path
    data = Path(__file__).resolve().parents[1] / TINY
    runs = {}
    for model in ("pop", "graph-filter", "random"):
        out = tmp_path_factory.mktemp(model)
        assert run(train.main, ["--model", model, "--data", str(data), "--out", str(out),
                                "--no-progress", "--test-ratio", "0.25"]) == 0
        runs[model] = out
    return data, runs


@pytest.mark.parametrize("model", ["pop", "graph-filter", "random"])
def test_never_recommends_seen_items_and_speaks_raw_ids(model, tiny_runs, capsys):
    data, runs = tiny_runs
    frame = read(data).frame
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(runs[model]), "--user", "alice", "--user", "dave",
                                "-k", "5", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["user"] for entry in lines] == ["alice", "dave"]
    for entry in lines:
        seen = set(frame.item[frame.user == entry["user"]])  # train and test alike
        recommended = [x["item"] for x in entry["items"]]
        assert recommended and not seen & set(recommended)
        assert set(recommended) <= set(frame.item)
        # 6 items, 4 seen: only 2 can be offered although 5 were asked for
        assert len(recommended) == 6 - len(seen)
        assert [x["score"] for x in entry["items"]] == sorted((x["score"] for x in entry["items"]),
                                                              reverse=True)


def test_include_seen_and_users_file(tiny_runs, tmp_path, capsys):
    _, runs = tiny_runs
    users = tmp_path / "users.txt"
    users.write_text("bob\n\ncarol\n")
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(runs["pop"]), "--users-file", str(users), "-k", "6",
                                "--include-seen", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["user"] for e in lines] == ["bob", "carol"] and all(len(e["items"]) == 6 for e in lines)


def test_checkpoint_loads_weights_only_and_reproduces_scores(tiny_runs):
    _, runs = tiny_runs
    blob = torch.load(runs["graph-filter"] / "model.pt", weights_only=True)
    assert blob["model"] == "graph-filter"
    ckpt = load_checkpoint(runs["graph-filter"])
    assert list(ckpt.users.raw) == ["alice", "bob", "carol", "dave", "erin"]
    scores = ckpt.model.score(torch.arange(5))
    assert scores.shape == (5, 6) and torch.isfinite(scores).all()


@pytest.mark.parametrize("argv,message", [
    (["--items", "nope,nada"], "--items: none of the 2 items is in the run's data"),
    (["--items", "i1", "--user", "a", "--user", "b"], "--items: the items of one user"),
    ([], "give at least one --user"),
    (["--user", "bob", "-k", "0"], "-k: must be at least 1"),
    (["--users-file", "/no/such"], "--users-file: /no/such: no such file"),
])
def test_bad_input_is_one_line(argv, message, tiny_runs, capsys):
    _, runs = tiny_runs
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(runs["pop"])] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_run_folder(tmp_path, capsys):
    assert run(recommend.main, ["--run", str(tmp_path), "--user", "x"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# --index faiss: the same top k as exact scoring for dot-product models, exact for the others

NUM_USERS, NUM_ITEMS, HEAVY = 30, 45, 4  # users 0..3 have seen all but 5 items


@pytest.fixture(scope="module")
def dot_runs(tmp_path_factory):
    """Checkpoints of random-initialized bpr, lightgcn and mf (random biases) models on an
    asymmetric synthetic graph with string user ids and integer item ids that are not indices."""
    import pandas as pd

    from graphrec.checkpoint import save_checkpoint
    from graphrec.data.graph import build
    from graphrec.models import build_model, model_config

    g = torch.Generator().manual_seed(3)
    rows = []
    for u in range(NUM_USERS):
        n = NUM_ITEMS - 5 if u < HEAVY else int(torch.randint(2, 11, (1,), generator=g))
        for t, i in enumerate(torch.randperm(NUM_ITEMS, generator=g)[:n].tolist()):
            rows.append((f"u{u:02d}", 1000 + 7 * i, int(torch.randint(1, 6, (1,), generator=g)), t))
    folder = tmp_path_factory.mktemp("dot")
    csv = folder / "interactions.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(csv, index=False)
    ds = build(read(csv))
    assert (ds.num_users, ds.num_items) == (NUM_USERS, NUM_ITEMS)
    runs = {}
    for name in ("bpr", "lightgcn", "mf"):
        torch.manual_seed(0)
        cfg = model_config(name, {"dim": 8, "init_std": 0.5})
        model = build_model(name, ds.num_users, ds.num_items, cfg)
        model.fit(ds.graph)
        if cfg.biases:
            with torch.no_grad():
                model.bias.weight.normal_(0.0, 1.0)
        runs[name] = folder / name
        save_checkpoint(runs[name] / "model.pt", name, cfg, model, ds, {"model": name})
    return csv, runs


def seen_of(ckpt, user: int) -> set[int]:
    ptr, items = ckpt.seen
    return set(items[ptr[user]:ptr[user + 1]].tolist())


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "mf"])
@pytest.mark.parametrize("index", ["faiss", "flat", "hnsw", "ivf"])
@pytest.mark.parametrize("k", [1, 5, 12])
def test_index_agrees_with_exact(model, index, k, dot_runs, caplog):
    """On this small catalogue every index finds the exact top k (HNSW's candidate list and
    IVF's one list cover all 45 items); heavy users exercise the over-fetch."""
    ckpt = load_checkpoint(dot_runs[1][model] / "model.pt")
    users = torch.tensor([0, 1, 2, 3, 4, 9, 17, 29])  # the heavy users 0..3 first
    exact_items, exact_scores = recommend_items(ckpt, users, k, index="exact")
    with caplog.at_level("WARNING", logger="graphrec.recommend"):
        items, scores = recommend_items(ckpt, users, k, index=index, batch=3)
    assert not caplog.records  # served by the index: mf's biases folded in, no fallback
    assert items.shape == exact_items.shape
    for row, user in enumerate(users.tolist()):
        unseen = NUM_ITEMS - len(seen_of(ckpt, user))
        expected = [i for i in exact_items[row].tolist() if i >= 0]
        got = [i for i in items[row].tolist() if i >= 0]
        assert len(expected) == min(k, unseen)  # heavy users: only 5 to offer
        assert set(got) == set(expected) and not set(got) & seen_of(ckpt, user)
        assert torch.allclose(scores[row], exact_scores[row], rtol=1e-5, atol=1e-5)
        assert (items[row] < 0).tolist() == (exact_items[row] < 0).tolist()


def test_ivfpq_returns_k_unseen_items_with_exact_scores(dot_runs):
    """Product quantization is lossy, but what comes back is k unseen items (heavy users
    included) scored exactly, best first."""
    ckpt = load_checkpoint(dot_runs[1]["mf"])
    users = torch.tensor([0, 1, 5, 9])
    items, scores = recommend_items(ckpt, users, 6, index="ivfpq")
    full = ckpt.model.score(users)
    for row, user in enumerate(users.tolist()):
        got = [i for i in items[row].tolist() if i >= 0]
        assert len(got) == min(6, NUM_ITEMS - len(seen_of(ckpt, user)))
        assert not set(got) & seen_of(ckpt, user) and len(set(got)) == len(got)
        torch.testing.assert_close(scores[row, :len(got)], full[row, got], rtol=1e-5, atol=1e-5)
        assert scores[row, :len(got)].tolist() == sorted(scores[row, :len(got)].tolist(), reverse=True)


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "mf"])
def test_retriever_vectors_reproduce_scores(model, dot_runs):
    ckpt = load_checkpoint(dot_runs[1][model])
    users = torch.arange(NUM_USERS)
    for source in (ckpt.model, ckpt.model.scorer()):
        assert isinstance(source, Retriever)
        user_vecs, item_vecs = source.user_vectors(users), source.item_vectors()
        assert user_vecs.shape[0] == NUM_USERS and item_vecs.shape[0] == NUM_ITEMS
        assert user_vecs.shape[1] == item_vecs.shape[1] == 8 + (2 if model == "mf" else 0)
        expected = ckpt.model.score(users)
        assert torch.allclose(user_vecs @ item_vecs.T, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["bpr", "lightgcn", "mf"])
def test_faiss_include_seen_is_the_plain_top_k(model, dot_runs):
    ckpt = load_checkpoint(dot_runs[1][model])
    users = torch.tensor([0, 5])
    items, scores = recommend_items(ckpt, users, 8, include_seen=True, index="faiss")
    full = ckpt.model.score(users)
    expected_scores, expected = torch.topk(full, 8, dim=1)
    assert [set(r) for r in items.tolist()] == [set(r) for r in expected.tolist()]
    assert torch.allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


def test_faiss_cli_never_recommends_seen_items_and_speaks_raw_ids(dot_runs, capsys, caplog):
    csv, runs = dot_runs
    frame = read(csv).frame
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="graphrec.recommend"):
        assert run(recommend.main, ["--run", str(runs["lightgcn"]), "--user", "u00", "--user",
                                    "u07", "-k", "10", "--index", "faiss", "--json"]) == 0
    assert not caplog.records  # served by faiss, no fallback
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["user"] for entry in lines] == ["u00", "u07"]
    for entry in lines:
        seen = set(frame.item[frame.user == entry["user"]])
        recommended = [x["item"] for x in entry["items"]]
        assert recommended and not seen & set(recommended)
        assert set(recommended) <= set(frame.item)  # raw ids (1000 + 7 i), not indices
        assert len(recommended) == min(10, NUM_ITEMS - len(seen))
    assert len(lines[0]["items"]) == 5  # u00 is a heavy user


def test_pop_with_faiss_falls_back_to_exact(tiny_runs, capsys, caplog):
    _, runs = tiny_runs
    outputs, notes = {}, {}
    for index in ("exact", "faiss"):
        capsys.readouterr()
        caplog.clear()
        with caplog.at_level("WARNING", logger="graphrec.recommend"):
            assert run(recommend.main, ["--run", str(runs["pop"]), "--user", "alice", "--user",
                                        "bob", "-k", "3", "--json", "--index", index]) == 0
        outputs[index] = capsys.readouterr().out
        notes[index] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert outputs["faiss"] == outputs["exact"] and len(outputs["exact"].splitlines()) == 2
    assert notes["exact"] == [] and len(notes["faiss"]) == 1
    assert "pop" in notes["faiss"][0] and "exact scoring" in notes["faiss"][0]


def test_non_retrievers_fall_back_to_exact_scoring(dot_runs, caplog):
    """NCF is a graph-family model with embeddings, but its NeuMF scores are no inner product:
    it is not a Retriever, and an index request scores it exactly."""
    from graphrec.models import build_model

    ckpt = load_checkpoint(dot_runs[1]["bpr"])
    torch.manual_seed(0)
    ncf = build_model("ncf", NUM_USERS, NUM_ITEMS)
    ncf.fit(ckpt.model and _graph_of(ckpt))
    assert not isinstance(ncf, Retriever) and not isinstance(ncf.scorer(), Retriever)
    odd = dataclasses.replace(ckpt, model=ncf, model_name="ncf")
    users = torch.arange(6)
    with caplog.at_level("WARNING", logger="graphrec.recommend"):
        items, scores = recommend_items(odd, users, 4, index="hnsw")
    assert "exact scoring" in caplog.text
    exact_items, exact_scores = recommend_items(odd, users, 4, index="exact")
    assert torch.equal(items, exact_items) and torch.equal(scores, exact_scores)


def _graph_of(ckpt):
    """The checkpoint's known interactions as a schema graph."""
    from graphrec.data.graph import make_graph

    ptr, items = ckpt.seen
    users = torch.repeat_interleave(torch.arange(ptr.numel() - 1), ptr.diff())
    return make_graph(ptr.numel() - 1, NUM_ITEMS, users, items)


def test_saved_index_is_reused_checked_and_rebuilt(dot_runs, tmp_path):
    """recommend saves the index beside the checkpoint (faiss's format plus JSON, no pickle),
    reuses it while the vectors are the same, rebuilds it for new vectors, and refuses one
    of another shape."""
    import faiss

    from graphrec.serve.index import IndexConfig, ItemIndex, index_path

    ckpt = load_checkpoint(dot_runs[1]["lightgcn"])
    users = torch.arange(10)
    first = recommend_items(ckpt, users, 5, index="hnsw", index_dir=tmp_path)
    path = index_path(tmp_path, "hnsw")
    assert path.with_suffix(".faiss").exists() and path.with_suffix(".json").exists()
    assert faiss.read_index(str(path.with_suffix(".faiss"))).ntotal == NUM_ITEMS
    stamp = path.with_suffix(".faiss").stat().st_mtime_ns
    again = recommend_items(ckpt, users, 5, index="hnsw", index_dir=tmp_path)
    assert torch.equal(first[0], again[0]) and path.with_suffix(".faiss").stat().st_mtime_ns == stamp
    vectors = ckpt.model.scorer().item_vectors()
    loaded = ItemIndex.load(path, vectors, IndexConfig("hnsw", ef_search=64))
    assert loaded is not None and loaded.cfg.ef_search == 64  # search settings may differ
    assert ItemIndex.load(path, vectors, IndexConfig("hnsw", hnsw_m=8)) is None  # build ones not
    assert ItemIndex.load(path, vectors + 1.0, IndexConfig("hnsw")) is None  # other vectors
    with pytest.raises(GraphrecError, match="belongs to another run"):
        ItemIndex.load(path, vectors[:-1], IndexConfig("hnsw"))


@pytest.mark.parametrize("options,message", [
    (["nlist=100"], "nlist: 100 lists for 45 items"),
    (["pq_bytes=3"], "pq_bytes: 3 does not divide the vectors' dimension 8"),
    (["nprobe=-1"], "nprobe: must be >= 0"),
    (["magic=1"], "--index-set: expected KEY=VALUE"),
    (["ef_search=abc"], "ef_search must be an integer"),
])
def test_bad_index_settings_are_one_line(options, message, dot_runs, capsys):
    kind = "ivfpq" if "pq_bytes" in options[0] else "ivf"
    argv = ["--run", str(dot_runs[1]["bpr"]), "--user", "u05", "--index", kind]
    for option in options:
        argv += ["--index-set", option]
    capsys.readouterr()
    assert run(recommend.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_index_is_an_error(dot_runs):
    ckpt = load_checkpoint(dot_runs[1]["bpr"])
    with pytest.raises(GraphrecError, match="--index: unknown index 'annoy'"):
        recommend_items(ckpt, torch.tensor([0]), 3, index="annoy")


def test_train_evaluates_through_an_index_and_recommend_reuses_it(tmp_path, capsys, caplog):
    """``train --index hnsw`` writes the metrics through the index beside the exact ones (on
    this tiny catalogue they agree) and saves the index, which ``recommend`` then serves from;
    a model that is not a retriever gets exact metrics only, with a note."""
    from pathlib import Path

    from graphrec.serve.index import index_path

    data = Path(__file__).resolve().parents[1] / TINY
    out = tmp_path / "bpr"
    capsys.readouterr()
    assert run(train.main, ["--model", "bpr", "--data", str(data), "--out", str(out), "--epochs",
                            "2", "--no-progress", "--test-ratio", "0.25", "--index", "hnsw",
                            "--index-set", "ef_search=16"]) == 0
    printed = capsys.readouterr().out
    assert "through the hnsw index (against exact)" in printed
    exact = json.loads((out / "metrics.json").read_text())
    through = json.loads((out / "index_metrics.json").read_text())
    assert through["index"] == "hnsw" and through["recall@10"] == exact["recall@10"]
    config = json.loads((out / "config.json").read_text())
    assert config["index"]["kind"] == "hnsw" and config["index"]["ef_search"] == 16
    assert index_path(out, "hnsw").with_suffix(".faiss").exists()
    stamp = index_path(out, "hnsw").with_suffix(".faiss").stat().st_mtime_ns
    assert run(recommend.main, ["--run", str(out), "--user", "alice", "-k", "2", "--index", "hnsw",
                                "--index-set", "ef_search=16"]) == 0
    assert index_path(out, "hnsw").with_suffix(".faiss").stat().st_mtime_ns == stamp  # reused
    gf = tmp_path / "gf"
    with caplog.at_level("WARNING"):
        assert run(train.main, ["--model", "graph-filter", "--data", str(data), "--out", str(gf),
                                "--no-progress", "--test-ratio", "0.25", "--index", "hnsw"]) == 0
    assert "does not score by inner products" in caplog.text
    assert not (gf / "index_metrics.json").exists() and (gf / "metrics.json").exists()
