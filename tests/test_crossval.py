"""k-fold cross-validation: disjoint per-user folds that cover the data, the parent's mean and
std, and the one-line errors of ``--folds``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_graph
from graphrec import train
from graphrec.cli import run
from graphrec.crossval import summarize
from graphrec.per_user import load_per_user
from graphrec.schema import PART_TEST, PART_TRAIN, PART_VALID
from graphrec.split import SplitConfig, assign_parts, split


def run_main(main, argv, capsys):
    code = run(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("k", [2, 3, 4])
def test_folds_are_disjoint_cover_every_interaction_and_split_each_user_evenly(k):
    g = random_graph(num_users=11, num_items=23, per_user=(4, 12), seed=5)  # asymmetric
    user, item = g["user", "interacts", "item"].edge_index
    n = torch.bincount(user)
    assert int(n.min()) >= k
    parts = [assign_parts(g, SplitConfig("random", valid_ratio=0.25, seed=2, folds=k, fold=f))
             for f in range(k)]
    tested = torch.stack([p == PART_TEST for p in parts])  # [K, E]
    assert torch.equal(tested.sum(0), torch.ones(user.numel(), dtype=torch.long))  # once each
    pairs = {(int(u), int(i)) for u, i in zip(user, item)}
    union: set[tuple[int, int]] = set()
    for f in range(k):
        fold_pairs = {(int(u), int(i)) for u, i in zip(user[tested[f]], item[tested[f]])}
        assert not union & fold_pairs  # disjoint from the folds before
        union |= fold_pairs
    assert union == pairs
    for p in parts:
        t = torch.bincount(user[p == PART_TEST], minlength=n.numel())
        assert bool(((t == n // k) | (t == (n + k - 1) // k)).all())  # floor or ceil of n / k
        v = torch.bincount(user[p == PART_VALID], minlength=n.numel())
        rest = n - t
        assert torch.equal(v, torch.minimum(torch.floor(rest * 0.25 + 0.5).long(), rest - 1))
        assert bool((torch.bincount(user[p == PART_TRAIN], minlength=n.numel()) >= 1).all())
    # the fold sizes are balanced over users (a random first fold per user)
    sizes = tested.sum(1)
    assert int(sizes.max() - sizes.min()) <= max(2, user.numel() // (2 * k))


def test_fold_training_graph_holds_no_test_edge():
    g = random_graph(num_users=9, num_items=17, per_user=(3, 9), seed=1)
    s = split(g, SplitConfig("random", folds=3, fold=1))
    train_pairs = set(map(tuple, s.train["user", "interacts", "item"].edge_index.T.tolist()))
    test_pairs = set(zip(s.test.user.tolist(), s.test.item.tolist()))
    assert train_pairs and test_pairs and not train_pairs & test_pairs


def test_summarize_is_the_mean_and_sample_std_of_the_folds():
    folds = [{"ndcg@20": 0.1, "users": 5}, {"ndcg@20": 0.4, "users": 5}, {"ndcg@20": 0.25, "users": 5}]
    s = summarize(folds)
    assert s["ndcg@20"]["mean"] == pytest.approx(0.25)
    assert s["ndcg@20"]["std"] == pytest.approx(0.15)  # sqrt(((.15)^2 + (.15)^2 + 0) / 2)
    assert s["ndcg@20"]["folds"] == [0.1, 0.4, 0.25] and s["users"]["std"] == 0.0


def test_train_folds_writes_one_run_per_fold_and_the_mean_and_std(tmp_path, capsys):
    out = tmp_path / "cv"
    code, stdout, err = run_main(train.main, ["--model", "pop", "--folds", "3", "--out", str(out),
                                              "--no-progress", "--k", "10"], capsys)
    assert code == 0, err
    assert "mean ± std" in stdout and "fold 2" in stdout
    summary = json.loads((out / "metrics.json").read_text())
    cv = json.loads((out / "cv.json").read_text())
    assert cv["runs"] == ["fold-0", "fold-1", "fold-2"] and cv["wall_seconds"] > 0
    folds = [json.loads((out / r / "metrics.json").read_text()) for r in cv["runs"]]
    assert {"ndcg@10", "recall@10", "rmse", "users"} <= set(summary)
    for key, s in summary.items():
        values = np.array([f[key] for f in folds], dtype=np.float64)
        assert s["folds"] == pytest.approx(values.tolist())
        assert s["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert s["std"] == pytest.approx(values.std(ddof=1), rel=1e-12, abs=1e-15)
    assert summary["ndcg@10"]["std"] > 0  # the folds differ
    fingerprints = set()
    for f, r in enumerate(cv["runs"]):
        config = json.loads((out / r / "config.json").read_text())
        assert config["split"]["folds"] == 3 and config["split"]["fold"] == f
        per_user = load_per_user(out / r)
        assert per_user.users.size == folds[f]["users"] == 1000  # every user, every fold
        assert float(per_user.values["ndcg@10"].mean()) == pytest.approx(folds[f]["ndcg@10"],
                                                                         rel=1e-6)
        fingerprints.add(per_user.test_fingerprint)
    assert len(fingerprints) == 3
    parent = json.loads((out / "config.json").read_text())
    assert parent["split"]["fold"] is None and parent["split"]["method"] == "random"


@pytest.mark.parametrize("argv,message", [
    (["--folds", "1"], "--folds: must be an integer >= 2, got 1"),
    (["--folds", "0"], "--folds: must be an integer >= 2, got 0"),
    (["--folds", "9"], "--folds: 9 is above the smallest user's interaction count (8)"),
    (["--folds", "3", "--split", "temporal"], "--folds: the temporal split has no folds"),
    (["--folds", "3", "--split", "leave-one-out"], "--folds: the leave-one-out split has no folds"),
    (["--folds", "3", "--test-ratio", "0.3"], "--test-ratio: not with --folds"),
    (["--folds", "3", "--fold", "3"], "--fold: must lie in [0, 3) with --folds 3, got 3"),
    (["--fold", "1"], "--fold: needs --folds K"),
])
def test_fold_errors_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = run_main(train.main, ["--model", "pop", "--out", str(tmp_path / "r"),
                                         "--no-progress"] + argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith("INFO")]
    assert len(lines) == 1 and message in lines[0], err


def test_resume_of_a_parent_is_refused(tmp_path, capsys):
    out = tmp_path / "cv"
    assert run_main(train.main, ["--model", "pop", "--folds", "2", "--out", str(out),
                                 "--no-progress"], capsys)[0] == 0
    code, _, err = run_main(train.main, ["--resume", str(out)], capsys)
    assert code == 2 and "is a k-fold parent; resume one of its folds" in err
