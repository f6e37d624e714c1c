"""The multi-stage pipeline: fusion, candidate features, the leak-free ranker data, per-stage
metrics against brute force, config errors, and the pipeline beating its retrievers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec import pipeline as pipeline_cli
from graphrec import train
from graphrec.cli import run
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.schema import EDGE
from graphrec.serve.candidates import fuse, retrieve
from graphrec.serve.features import FeatureBuilder, layout_of, parse_groups
from graphrec.serve.pipeline import Pipeline, parse_config

from conftest import random_graph


def slow_fuse(lists, quotas, n):
    """Round robin over positions, then lists; first appearance kept."""
    out_items, out_src = [], []
    for b in range(lists[0].size(0)):
        seen, row, src = set(), [], []
        depth = max(q for q in quotas)
        for p in range(depth):
            for r, (top, q) in enumerate(zip(lists, quotas)):
                if p < min(q, top.size(1)):
                    i = int(top[b, p])
                    if i >= 0 and i not in seen and len(row) < n:
                        seen.add(i)
                        row.append(i)
                        src.append(r)
        out_items.append(row + [-1] * (n - len(row)))
        out_src.append(src + [-1] * (n - len(src)))
    return torch.tensor(out_items), torch.tensor(out_src)


@pytest.mark.parametrize("quotas,n", [([5, 5, 5], 9), ([2, 7, 3], 12), ([6, 1, 4], 4), ([3, 3, 3], 20)])
def test_fuse_matches_round_robin_reference(quotas, n):
    g = torch.Generator().manual_seed(1)
    lists = []
    for _ in range(3):
        rows = torch.stack([torch.randperm(11, generator=g)[:7] for _ in range(6)])
        rows[0, 5:] = -1  # a short list
        lists.append(rows)
    items, src = fuse(lists, quotas, n)
    ref_items, ref_src = slow_fuse(lists, quotas, n)
    assert torch.equal(items, ref_items)
    assert torch.equal(src, ref_src)


class Dense:
    """A scorer with fixed scores."""

    uses_history = False

    def __init__(self, scores):
        self.scores = scores

    def score(self, users, history=None):
        return self.scores[users]


def test_retrieve_scores_ranks_and_exclusion():
    g = torch.Generator().manual_seed(0)
    U, N_ITEMS = 5, 13
    a, b = torch.rand(U, N_ITEMS, generator=g), torch.rand(U, N_ITEMS, generator=g)
    ptr = torch.tensor([0, 2, 2, 5, 6, 6])
    seen = torch.tensor([0, 3, 1, 2, 4, 12])
    users = torch.tensor([3, 0, 2])
    cand = retrieve([Dense(a), Dense(b)], users, (ptr, seen), [4, 4], 6)
    for row, u in enumerate(users.tolist()):
        excluded = set(seen[ptr[u]:ptr[u + 1]].tolist())
        for r, s in enumerate((a, b)):
            order = [i for i in torch.argsort(s[u], descending=True).tolist() if i not in excluded]
            for c, i in enumerate(cand.items[row].tolist()):
                assert i not in excluded
                assert cand.scores[row, c, r] == pytest.approx(float(s[u, i]))
                rank = order.index(i)
                assert cand.ranks[row, c, r] == (rank if rank < cand.depth else cand.depth)


def test_features_against_brute_force():
    graph = random_graph(num_users=9, num_items=21, per_user=(2, 10), seed=4)
    graph["item"].genre = (torch.rand(21, 4, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    graph["item"].year = torch.randint(0, 5, (21,), generator=torch.Generator().manual_seed(3))
    graph["user"].age = torch.randint(0, 3, (9,), generator=torch.Generator().manual_seed(5))
    lay = layout_of(graph, parse_groups("all"), 1, strict=False)
    builder = FeatureBuilder(lay, graph)
    users = torch.tensor([4, 0, 7])
    cand = retrieve([Dense(torch.rand(9, 21, generator=torch.Generator().manual_seed(6)))], users,
                    (torch.zeros(10, dtype=torch.long), torch.zeros(0, dtype=torch.long)), [8], 8)
    dense, tokens = builder.build(users, cand)
    assert dense.shape == (3, 8, len(lay.dense_names))
    col = {name: j for j, name in enumerate(lay.dense_names)}
    ei = graph[EDGE].edge_index
    R = np.zeros((9, 21))
    R[ei[0].numpy(), ei[1].numpy()] = 1
    C = R.T @ R
    du, di = np.maximum(R.sum(1), 1), np.maximum(R.sum(0), 1)
    Rn = R / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    G = Rn.T @ Rn
    order = torch.argsort(graph[EDGE].time[ei[0] == 0], stable=True)  # not needed: per user below
    del order
    for b, u in enumerate(users.tolist()):
        hist = np.nonzero(R[u])[0]
        times = {int(i): int(t) for i, t, uu in zip(ei[1], graph[EDGE].time, ei[0]) if int(uu) == u}
        last = sorted(hist, key=lambda i: times[int(i)])[-5:]
        profile = graph["item"].genre[hist].mean(0).numpy()
        for c, i in enumerate(cand.items[b].tolist()):
            d = dense[b, c]
            assert d[col["pair.log_cooccurring"]] == pytest.approx(math.log1p(sum(C[j, i] > 0 for j in hist)), abs=1e-5)
            assert d[col["pair.two_hop"]] == pytest.approx(G[hist, i].sum(), abs=1e-5)
            assert d[col["item.log_degree"]] == pytest.approx(math.log1p(R[:, i].sum()), abs=1e-5)
            assert d[col["affinity.year"]] == pytest.approx(
                np.mean([int(graph["item"].year[j]) == int(graph["item"].year[i]) for j in hist]), abs=1e-5)
            gi = graph["item"].genre[i].numpy()
            cos = gi @ profile / max(np.linalg.norm(gi) * np.linalg.norm(profile), 1e-9)
            assert d[col["affinity.genre"]] == pytest.approx(cos, abs=1e-5)
            sims = [C[j, i] / math.sqrt(max(C[j, j], 1) * max(C[i, i], 1)) for j in last]
            assert d[col["sequence.last_items"]] == pytest.approx(np.mean(sims), abs=1e-5)
            assert tokens[b, c, 0] == graph["user"].age[u]  # user tokens first
            assert tokens[b, c, 1] == graph["item"].year[i]


def test_named_feature_the_data_lacks_is_an_error():
    graph = random_graph(with_time=False)
    with pytest.raises(GraphrecError, match="'sequence' is not available"):
        layout_of(graph, parse_groups("retrievers,sequence"), 1, strict=True)
    with pytest.raises(GraphrecError, match="unknown feature group 'colour'"):
        parse_groups("colour")


# ---- pipelines over real runs ------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    """bpr and graph-filter runs on the built-in synthetic data, one split."""
    folder = tmp_path_factory.mktemp("pipeline")
    runs = {}
    for model, extra in (("graph-filter", []), ("bpr", ["--epochs", "10", "--lr", "0.01"])):
        out = folder / model
        assert run(train.main, ["--model", model, "--out", str(out), "--no-progress", *extra]) == 0
        runs[model] = out
    return folder, runs


def write_config(folder: Path, runs: dict, body: str = "", name: str = "pipeline.toml") -> Path:
    text = "".join(f'[[retriever]]\nrun = "{runs[m]}"\n' for m in ("graph-filter", "bpr"))
    path = folder / name
    path.write_text(body + text)  # top-level keys before the first table
    return path


def pairs(user, item):
    return set(zip(user.tolist(), item.tolist()))


def test_ranker_data_never_sees_a_test_interaction(synthetic_runs):
    folder, runs = synthetic_runs
    cfg = parse_config({"retriever": [{"run": str(runs["graph-filter"])}, {"run": str(runs["bpr"])}],
                        "n": 50, "k": 10, "ranker": {"run": str(folder / "ranker"), "kind": "dcn-v2",
                                                         "folds": 2}})
    pipe = Pipeline(cfg, progress=False)
    data = pipe.ranker_data()
    test = pairs(pipe.parts.test.user, pipe.parts.test.item)
    ei = pipe.ds.graph[EDGE].edge_index
    assert len(test) == len(pipe.parts.test) and test <= pairs(ei[0], ei[1])
    assert len(data["folds"]) == 2
    holdouts = []
    for fold in data["folds"]:
        holdout = pairs(fold["holdout"].user, fold["holdout"].item)
        holdouts.append(holdout)
        retrained = pairs(*fold["inner"].train[EDGE].edge_index)
        known = pairs(*fold["known"][EDGE].edge_index)
        assert holdout and not holdout & test  # H is carved from T
        assert not retrained & test and not retrained & holdout
        assert not known & test and not known & holdout  # features and histories: T \ H only
        rows = fold["rows"]
        users, items, mask = data["users"][rows], data["items"][rows], data["mask"][rows]
        b, c = torch.nonzero(data["labels"][rows].bool(), as_tuple=True)
        positives = pairs(users[b], items[b, c])
        assert positives and positives <= holdout
        cand = pairs(users[:, None].expand_as(items)[mask], items[mask])
        assert not cand & known  # known interactions are never candidates
        assert not (cand & test) & positives  # test items among candidates are never labels
    assert holdouts[0] != holdouts[1]


def test_stage_metrics_match_brute_force(synthetic_runs):
    folder, runs = synthetic_runs
    cfg = parse_config({"retriever": [{"run": str(runs["graph-filter"]), "quota": 20},
                                      {"run": str(runs["bpr"]), "quota": 20}], "n": 30, "k": 10})
    pipe = Pipeline(cfg, progress=False)
    metrics = pipe.evaluate()
    test = pipe.parts.test
    users = torch.unique(test.user)
    res = pipe.run(users)
    rel = {}
    for u, i in zip(test.user.tolist(), test.item.tolist()):
        rel.setdefault(u, set()).add(i)
    recall_c, recall_k, ndcg_k = [], [], []
    for row, u in enumerate(users.tolist()):
        cands = [i for i in res["candidates"][row].tolist() if i >= 0]
        recall_c.append(len(rel[u] & set(cands)) / len(rel[u]))
        top = res["final"][row, :10].tolist()
        hits = [1.0 if i in rel[u] else 0.0 for i in top]
        recall_k.append(sum(hits) / len(rel[u]))
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        ideal = sum(1 / math.log2(p + 2) for p in range(min(len(rel[u]), 10)))
        ndcg_k.append(dcg / ideal)
    assert metrics["candidates.recall@30"] == pytest.approx(np.mean(recall_c))
    assert metrics["final.recall@10"] == pytest.approx(np.mean(recall_k))
    assert metrics["final.ndcg@10"] == pytest.approx(np.mean(ndcg_k))
    # one retriever with quota n alone is that run's own top n
    solo = Pipeline(parse_config({"retriever": [{"run": str(runs["graph-filter"])}], "n": 20, "k": 20}),
                    progress=False).evaluate()
    saved = json.loads((runs["graph-filter"] / "metrics.json").read_text())
    assert solo["final.recall@20"] == pytest.approx(saved["recall@20"], abs=1e-6)
    assert solo["final.ndcg@20"] == pytest.approx(saved["ndcg@20"], abs=1e-6)


def test_pipeline_beats_its_best_single_model_on_synthetic_data(synthetic_runs, capsys):
    folder, runs = synthetic_runs
    body = (f'n = 100\nk = 20\n[ranker]\nrun = "{folder / "ranker-fit"}"\nkind = "dcn-v2"\n'
            'folds = 1\n')  # one holdout: seconds, and already far ahead here
    path = write_config(folder, runs, body, "fit.toml")
    out = folder / "metrics.json"
    assert run(pipeline_cli.main, ["--config", str(path), "--fit", "--evaluate", "--out", str(out),
                                   "--no-progress"]) == 0
    metrics = json.loads(out.read_text())
    best = max(json.loads((r / "metrics.json").read_text())["ndcg@20"] for r in runs.values())
    assert metrics["final.ndcg@20"] > best * 1.02, (metrics, best)
    # the fitted ranker loads (weights only) and gives the same metrics
    assert run(pipeline_cli.main, ["--config", str(path), "--evaluate", "--out", str(out),
                                   "--no-progress"]) == 0
    again = json.loads(out.read_text())
    assert again["final.ndcg@20"] == pytest.approx(metrics["final.ndcg@20"])


@pytest.mark.parametrize("body,message", [
    ("n = 10\nk = 20\n", "n: 10 candidates cannot fill k = 20"),
    ("[rerank]\nmethod = \"mmr\"\nlam = 1.5\n", "rerank.lam: must lie in \\[0, 1\\]"),
    ("colour = 3\n", "colour: unknown key"),
    ("[rerank]\nmetod = \"mmr\"\n", "rerank.metod: unknown key"),
    ("[ranker]\nrun = \"x\"\nkind = \"xgboost\"\n", "ranker"),
])
def test_bad_config_is_one_line_naming_file_and_key(body, message, synthetic_runs, capsys):
    folder, runs = synthetic_runs
    path = write_config(folder, runs, body, "bad.toml")
    assert run(pipeline_cli.main, ["--config", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.toml" in err
    assert __import__("re").search(message, err), err


def test_runs_on_other_data_are_refused(synthetic_runs, tmp_path, capsys):
    folder, runs = synthetic_runs
    data = Path(__file__).resolve().parents[1] / "data" / "tiny.csv"
    other = tmp_path / "tiny-pop"
    assert run(train.main, ["--model", "pop", "--data", str(data), "--out", str(other), "--no-progress"]) == 0
    path = tmp_path / "mixed.toml"
    path.write_text(f'k = 2\nn = 2\n[[retriever]]\nrun = "{runs["bpr"]}"\n[[retriever]]\nrun = "{other}"\n')
    assert run(pipeline_cli.main, ["--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert "mixed.toml: retriever[1].run" in err and "other data" in err


def test_retrieve_through_an_index_matches_exact(synthetic_runs):
    from graphrec.checkpoint import load_checkpoint
    from graphrec.serve.index import IndexConfig, ItemIndex

    _, runs = synthetic_runs
    model = load_checkpoint(runs["bpr"] / "model.pt").model.eval()
    seen = (torch.zeros(model.num_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    users = torch.arange(0, 40, 3)
    with torch.no_grad():
        exact = retrieve([model], users, seen, [30], 30)
        flat = retrieve([model], users, seen, [30], 30,
                        indexes=[ItemIndex(model.item_vectors(), IndexConfig(kind="flat"))])
    assert torch.equal(exact.items, flat.items)
    assert torch.allclose(exact.scores, flat.scores, atol=1e-5)
    assert torch.equal(exact.ranks, flat.ranks)


def test_pipeline_served_over_http(synthetic_runs, tmp_path):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from graphrec.serve.http import ServerThread
    from graphrec.serve.pipeline import PipelineService

    folder, runs = synthetic_runs
    path = write_config(tmp_path, runs, 'n = 40\nk = 10\n[rerank]\nmethod = "mmr"\nlam = 0.8\n'
                        'similarity = "cooccurrence"\n')
    service = PipelineService.from_config(path)
    pipe = service.pipe
    with ServerThread(service) as s, httpx.Client(base_url=s.url, timeout=30) as client:
        for dense in (0, 7, 123):
            raw = str(pipe.ds.users.raw[dense])
            body = client.get("/recommend", params={"user": raw, "k": 10}).json()
            items, _ = pipe.recommend(torch.tensor([dense]), 10)
            assert body["fallback"] is None
            assert [r["item"] for r in body["items"]] == [pipe.ds.items.raw[i].item() for i in items[0].tolist()]
            ptr, seen = user_sequences(pipe.ds.graph)
            assert not set(items[0].tolist()) & set(seen[ptr[dense]:ptr[dense + 1]].tolist())
        unknown = client.get("/recommend", params={"user": "nobody", "k": 5}).json()
        assert unknown["fallback"] == "popularity" and len(unknown["items"]) == 5
        assert client.get("/recommend", params={"user": raw, "k": "x"}).status_code == 422
        assert client.get("/recommend", params={"user": raw, "k": 41}).status_code == 400
        assert client.get("/info").json()["model"] == "pipeline"
