"""The Python API (graphrec/api.py) against the command line it shares its defaults with."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import graphrec as gr
from graphrec import recommend as recommend_cli
from graphrec import train as train_cli
from graphrec.cli import run
from graphrec.errors import GraphrecError

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny.csv"


def test_api_train_and_evaluate_match_the_command_line(tmp_path, capsys):
    """gr.train + gr.evaluate give the metrics `graphrec train` writes, on the same split."""
    assert run(train_cli.main, ["--model", "bpr", "--data", str(TINY), "--epochs", "4",
                                "--set", "dim=8", "--out", str(tmp_path / "r"),
                                "--no-progress"]) == 0
    cli = json.loads((tmp_path / "r" / "metrics.json").read_text())
    parts = gr.split(gr.load(TINY), "random", test_ratio=0.2, seed=0)
    model = gr.train("bpr", parts, epochs=4, dim=8, progress=False)
    api = gr.evaluate(model, parts)
    assert {k: api[k] for k in api} == {k: cli[k] for k in api}

    # recommend: the same lists as the command line serves from the run's checkpoint
    capsys.readouterr()
    assert run(recommend_cli.main, ["--run", str(tmp_path / "r"), "--user", "alice", "-k", "3",
                                    "--json"]) == 0
    served = json.loads(capsys.readouterr().out)
    assert [r["item"] for r in served["items"]] == model.recommend("alice", k=3)


def test_recommend_batch_scores_and_seen_items():
    data = gr.load(TINY)
    parts = gr.split(data)
    model = gr.train("graph-filter", parts)
    both = model.recommend(["alice", "bob"], k=3, scores=True)
    assert len(both) == 2 and all(isinstance(s, float) for _, s in both[0])
    assert [i for i, _ in both[0]] == model.recommend("alice", k=3)
    alice = data.users.to_index(["alice"])[0]
    seen = set(data.items.to_raw(data.graph["user", "interacts", "item"].edge_index[1][
        data.graph["user", "interacts", "item"].edge_index[0] == int(alice)].numpy()).tolist())
    assert not seen & set(model.recommend("alice", k=10))
    assert seen <= set(model.recommend("alice", k=10, filter_seen=False)) | seen


def test_save_and_load_model_round_trip(tmp_path):
    parts = gr.split(gr.load(TINY), "random", seed=1)
    model = gr.train("lightgcn", parts, epochs=2, dim=8, progress=False)
    gr.save(model, tmp_path / "m.pt")
    again = gr.load_model(tmp_path / "m.pt")
    assert again.name == "lightgcn"
    assert again.recommend(["alice", "carol"], k=3, scores=True) == \
        model.recommend(["alice", "carol"], k=3, scores=True)


def test_from_pandas_keeps_ids_and_checks_values():
    df = pd.DataFrame({"u": ["a", "a", "b", "c"], "i": [10, 11, 11, 12], "r": [5, 3, 4, 1]})
    data = gr.from_pandas(df, user="u", item="i", rating="r")
    assert (data.num_users, data.num_items) == (3, 3)
    assert list(data.items.to_raw([0, 1, 2])) == [10, 11, 12]
    bad = df.assign(r=[5, "x", 4, 1])
    with pytest.raises(GraphrecError, match="line 2"):
        gr.from_pandas(bad, user="u", item="i", rating="r")
    with pytest.raises(GraphrecError, match="no column 'user_id'"):
        gr.from_pandas(df, user="user_id", item="i")


def test_bad_options_are_one_line_errors():
    parts = gr.split(gr.load(TINY))
    with pytest.raises(GraphrecError, match="unknown option 'dims'"):
        gr.train("bpr", parts, dims=8)
    with pytest.raises(GraphrecError, match="epochs: expected an integer"):
        gr.train("bpr", parts, epochs="ten")
    with pytest.raises(GraphrecError, match="unknown option 'ratio'"):
        gr.split(gr.load(TINY), "random", ratio=0.3)
    with pytest.raises(GraphrecError, match="unknown option 'delimiter'"):
        gr.load(TINY, delimiter=";")
