"""``graphrec tune``: the study on disk, resuming a killed search, best.toml reproducing the best
trial, search-space errors, every model's default space."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from graphrec import train, tune  # noqa: E402
from graphrec.cli import run  # noqa: E402
from graphrec.config import resolve  # noqa: E402
from graphrec.models import REGISTRY  # noqa: E402
from graphrec.trainer import TrainConfig  # noqa: E402

GF_SPACE = """
[alpha]
type = "float"
low = 0.0
high = 1.0

[k]
type = "int"
low = 2
high = 8
"""

BPR_SPACE = """
["train.lr"]
type = "float"
low = 1e-3
high = 5e-2
log = true

[l2]
type = "float"
low = 1e-6
high = 1e-2
log = true
"""


@pytest.fixture
def data(tmp_path):
    """60 users x 40 items, 6 to 14 random interactions each (asymmetric, no duplicates)."""
    rng = np.random.default_rng(0)
    lines = ["user,item,rating"]
    for u in range(60):  # writing a fixture file, not a hot path
        for i in rng.choice(40, size=int(rng.integers(6, 15)), replace=False):
            lines.append(f"u{u},i{i},{int(rng.integers(1, 6))}")
    path = tmp_path / "inter.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def space_file(tmp_path, text, name="space.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def run_main(main, argv, capsys):
    code = run(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def trials_of(folder):
    return [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]


def load(folder):
    return optuna.load_study(study_name=tune.STUDY_NAME, storage=f"sqlite:///{folder / 'study.db'}")


def test_search_writes_study_and_best_toml_reproduces_the_best_trial(tmp_path, data, capsys):
    """A training-free model: one-shot trials, selected on the validation part (never test);
    study.db is a real optuna SQLite study; best.toml trains the same validation figure."""
    out = tmp_path / "tune"
    space = space_file(tmp_path, GF_SPACE)
    argv = ["--model", "graph-filter", "--data", str(data), "--trials", "3", "--space",
            str(space), "--out", str(out)]
    code, stdout, err = run_main(tune.main, argv, capsys)
    assert code == 0, err
    study = load(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    records = trials_of(out)
    assert [r["number"] for r in records] == [0, 1, 2]
    for r in records:  # each trial's value is its run folder's validation metric
        valid = json.loads((out / r["folder"] / "valid_metrics.json").read_text())
        assert r["value"] == valid["ndcg@20"]
        assert 0 <= r["params"]["alpha"] <= 1 and 2 <= r["params"]["k"] <= 8
    best = json.loads((out / "best.json").read_text())
    values = [r["value"] for r in records]
    assert best["valid"] == max(values) and best["trial"] == int(np.argmax(values))
    test = json.loads((out / best["folder"] / "metrics.json").read_text())
    assert best["test"]["ndcg@20"] == test["ndcg@20"] and "test metrics" in stdout
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"

    run_dir = tmp_path / "again"
    code, _, err = run_main(train.main, ["--config", str(out / "best.toml"), "--out",
                                          str(run_dir), "--no-progress"], capsys)
    assert code == 0, err
    again = json.loads((run_dir / "valid_metrics.json").read_text())
    assert again["ndcg@20"] == best["valid"]
    assert json.loads((run_dir / "metrics.json").read_text())["ndcg@20"] == test["ndcg@20"]

    # the same folder with another base configuration: refused, not mixed into the study
    code, _, err = run_main(tune.main, argv + ["--set", "niter=2"], capsys)
    assert code == 2 and "holds a study of another search" in err and "niter" in err
    assert len(load(out).trials) == 3


def test_a_stopped_search_resumes_from_its_sqlite_study(tmp_path, data, capsys):
    """--trials 2, then --trials 4 into the same folder: 4 trials in all, the first 2 untouched;
    each trained trial reported its validation curve (the trainer's on_eval hook)."""
    out = tmp_path / "tune"
    space = space_file(tmp_path, BPR_SPACE)
    base = ["--model", "bpr", "--data", str(data), "--epochs", "2", "--set", "dim=8",
            "--space", str(space), "--out", str(out), "--no-progress"]
    code, _, err = run_main(tune.main, base + ["--trials", "2"], capsys)
    assert code == 0, err
    first = trials_of(out)
    assert len(first) == 2
    code, _, err = run_main(tune.main, base + ["--trials", "4"], capsys)
    assert code == 0, err
    records = trials_of(out)
    assert [r["number"] for r in records] == [0, 1, 2, 3]
    assert records[:2] == first
    # a resumed sampler does not repeat the first trials' draws
    assert records[2]["params"] != records[0]["params"]
    study = load(out)
    for t in study.trials:
        history = [json.loads(line) for line in
                   (out / t.user_attrs["folder"] / "history.jsonl").read_text().splitlines()]
        assert t.intermediate_values == {h["epoch"]: h["valid"]["ndcg@20"] for h in history}
    # asking again for 4: nothing to do, nothing changes
    code, _, err = run_main(tune.main, base + ["--trials", "4"], capsys)
    assert code == 0, err
    assert trials_of(out) == records


def test_a_trial_left_running_by_a_kill_is_failed_and_run_again(tmp_path, data, capsys):
    """A kill -9 mid-trial leaves it RUNNING in the database: on resumption it is marked failed
    and run again with the same parameters, and does not count towards --trials."""
    out = tmp_path / "tune"
    space = space_file(tmp_path, GF_SPACE)
    argv = ["--model", "graph-filter", "--data", str(data), "--space", str(space),
            "--out", str(out)]
    assert run_main(tune.main, argv + ["--trials", "1"], capsys)[0] == 0
    study = load(out)  # what a killed process leaves: a trial begun, never told
    cut = study.ask()
    cut.suggest_float("alpha", 0.0, 1.0)
    cut.suggest_int("k", 2, 8)
    assert [t.state.name for t in load(out).trials] == ["COMPLETE", "RUNNING"]
    code, _, err = run_main(tune.main, argv + ["--trials", "2"], capsys)
    assert code == 0, err
    trials = load(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    # the retry was run once: a further resumption does not queue it again
    assert run_main(tune.main, argv + ["--trials", "2"], capsys)[0] == 0
    assert len(load(out).trials) == 3


def test_a_trial_stopped_by_sigterm_stops_the_search_and_runs_again(tmp_path, data, capsys,
                                                                   monkeypatch):
    """SIGTERM / Ctrl-C inside a trial (the trainer's TrainingInterrupted): the search stops with
    the signal's exit code and a message saying how to resume; the trial runs again then."""
    from graphrec import train as train_module
    from graphrec.errors import TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("SIGTERM during epoch 1: resumable state saved", 143)

    out = tmp_path / "tune"
    argv = ["--model", "graph-filter", "--data", str(data), "--space",
            str(space_file(tmp_path, GF_SPACE)), "--out", str(out), "--trials", "1"]
    with monkeypatch.context() as m:
        m.setattr(train_module, "train", interrupted)
        code, _, err = run_main(tune.main, argv, capsys)
    assert code == 143 and "SIGTERM during trial 0" in err and "rerun the same graphrec tune" in err
    assert [t.state.name for t in load(out).trials] == ["FAIL"]
    assert run_main(tune.main, argv, capsys)[0] == 0
    trials = load(out).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].params == trials[0].params and trials[1].user_attrs["retry_of"] == 0


def test_trainer_on_eval_hook_sees_each_validation_and_can_stop_training(tmp_path):
    """The trainer calls on_eval(epoch, valid metrics) after each validation, with the values
    history.jsonl records, and an exception it raises ends training there (a pruned trial)."""
    import torch

    from conftest import random_graph
    from graphrec.models import build_model, model_config
    from graphrec.split import SplitConfig, split
    from graphrec.trainer import train_model

    parts = split(random_graph(40, 30, (6, 14)), SplitConfig(valid_ratio=0.2))
    seen = []

    class Stop(Exception):
        pass

    def on_eval(epoch, valid):
        seen.append((epoch, valid["ndcg@20"]))
        if epoch == 2:
            raise Stop

    torch.manual_seed(0)
    model = build_model("bpr", 40, 30, model_config("bpr", {"dim": 8}))
    model.fit(parts.train)
    with pytest.raises(Stop):
        train_model(model, parts, TrainConfig(epochs=5, eval_every=1, progress=False),
                    out=tmp_path, on_eval=on_eval)
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert seen == [(h["epoch"], h["valid"]["ndcg@20"]) for h in history] and len(seen) == 2


def test_median_pruning_stops_a_trial_below_the_median(tmp_path, data, capsys):
    """With 2 startup trials and no warm-up, a trial whose first validation is below the
    median of the earlier trials' at that epoch is pruned there; its folder has that epoch."""
    out = tmp_path / "tune"
    code, _, err = run_main(tune.main, [
        "--model", "bpr", "--data", str(data), "--epochs", "3", "--set", "dim=8", "--space",
        str(space_file(tmp_path, BPR_SPACE)), "--out", str(out), "--trials", "3",
        "--prune-startup", "2", "--prune-warmup", "0", "--no-progress"], capsys)
    assert code == 0, err
    records = trials_of(out)
    assert [r["state"] for r in records] == ["COMPLETE", "COMPLETE", "PRUNED"]  # seeded
    study = load(out)
    for r in records:
        history = (out / r["folder"] / "history.jsonl").read_text().splitlines()
        assert len(history) == (r["epochs"] if r["state"] == "PRUNED" else 3)
    pruned = records[2]
    assert pruned["value"] is None and pruned["epochs"] == 1
    earlier = [t.intermediate_values[1] for t in study.trials[:2]]
    assert pruned["last_reported"] < float(np.median(earlier))


@pytest.mark.parametrize("text, message", [
    ('[width]\ntype = "int"\nlow = 1\nhigh = 4\n', "[width]: model bpr has no option 'width'"),
    ('["train.speed"]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n',
     "[\"train.speed\"]: no training setting 'speed'"),
    ('[dim]\ntype = "int"\nlow = 64\nhigh = 64\n', "[dim]: empty range (low 64 >= high 64)"),
    ('[dim]\ntype = "int"\nlow = 64\nhigh = 16\n', "[dim]: empty range"),
    ('[dim]\ntype = "integer"\nlow = 1\nhigh = 4\n', "[dim]: type must be one of int, float"),
    ('[l2]\ntype = "float"\nlow = "small"\nhigh = 1.0\n', "[l2]: low must be a number"),
    ('[dim]\ntype = "int"\nlow = 1.5\nhigh = 4\n', "[dim]: low of an int range must be an integer"),
    ('[l2]\ntype = "float"\nlow = 0.0\nhigh = 1.0\nlog = true\n', "[l2]: a log range needs low > 0"),
    ('[loss]\ntype = "choice"\nvalues = []\n', "[loss]: values must be a non-empty list"),
    ('[loss]\ntype = "choice"\nvalues = ["bpr", "hinge-ish"]\n', "[loss]: value 'hinge-ish' is refused"),
    ('["train.lr"]\ntype = "float"\nlow = 0.0\nhigh = 0.1\n', "[\"train.lr\"]: value 0.0 is refused"),
    ('[dim]\ntype = "int"\nhigh = 4\n', "[dim]: missing low"),
    ('[dim]\ntype = "int"\nlow = 1\nhigh = 4\nstep = 2\n', "[dim]: unknown key 'step'"),
    ('dim = 4\n', "[dim]: must be a table"),
    ('[dim\n', "space.toml"),
])
def test_space_errors_are_one_line_naming_the_file_and_key(tmp_path, data, capsys, text, message):
    space = space_file(tmp_path, text)
    code, _, err = run_main(tune.main, ["--model", "bpr", "--data", str(data), "--space",
                                         str(space), "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"--space {space}" in err or str(space) in err
    assert message in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("argv, message", [
    (["--model", "pop"], "model pop has no hyper-parameters to tune"),
    (["--model", "bpr", "--trials", "0"], "--trials: must be at least 1"),
    (["--model", "bpr", "--space", "missing.toml"], "--space: missing.toml: no such file"),
    (["--model", "bpr", "--metric", "rmse"], "--metric: rmse is not among the validation metrics"),
    (["--model", "bpr", "--folds", "3"], "--folds: not with tune"),
    (["--model", "bpr", "--resume", "x"], "--resume: not with tune"),
])
def test_command_errors(tmp_path, data, capsys, argv, message):
    code, _, err = run_main(tune.main, argv + ["--data", str(data), "--out", str(tmp_path / "t")],
                            capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_without_optuna_the_command_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    code, _, err = run_main(tune.main, ["--model", "bpr", "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "pip install graphrec[tune]" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_default_space_names_real_options(name):
    """Each registered model's default space: keys are its config fields or train.FIELD,
    ranges non-empty, and each bound a value the option accepts (check_space with a base)."""
    space = tune.default_space(name)
    if name in ("pop", "random"):
        assert space == {}
        return
    assert space, f"{name} ships no default search space"
    fields = {f.name for f in dataclasses.fields(REGISTRY[name][1])}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, entry in space.items():
        assert (key[len("train."):] in train_fields if key.startswith("train.") else key in fields)
        if entry["type"] != "choice":
            assert entry["low"] < entry["high"]
    assert tune.check_space(space, name, name, resolve({"model": name}, {})).keys() == space.keys()


def test_bpr_and_lightgcn_spaces_differ_though_one_class():
    """bpr has no propagation: its space does not vary num_layers (its config's own space)."""
    assert "num_layers" in tune.default_space("lightgcn")
    assert "num_layers" not in tune.default_space("bpr")
