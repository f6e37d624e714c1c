"""Checkpoints and the recommend command: raw ids, never a seen item, weights-only loading."""

from __future__ import annotations

import json

import pytest
import torch

from graphrec import recommend, train
from graphrec.checkpoint import load_checkpoint
from graphrec.cli import run
from graphrec.data.readers import read

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
    (["--user", "zed"], "--user: unknown user 'zed'"),
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
