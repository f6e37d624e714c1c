"""The trainer: a run stopped by a signal and resumed ends exactly where an unbroken run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from graphrec.batches import make_batches
from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError, TrainingInterrupted
from graphrec.models import REGISTRY, build_model
from graphrec.split import SplitConfig, split
from graphrec.trainer import HISTORY_NAME, TrainConfig, build_optimizer, train_model

RESUMABLE = [name for name in ("lightgcn", "mf", "ncf", "sasrec", "bert4rec", "two-tower") if name in REGISTRY]
SEQUENTIAL = ("sasrec", "bert4rec")  # trained on leave-one-out, as they are meant to be


@pytest.fixture(scope="module")
def parts():
    ds = build(make_synthetic(SyntheticConfig(num_users=200, num_items=120, num_clusters=6)))
    return ds, split(ds.graph, SplitConfig("random", valid_ratio=0.1, seed=0)), \
        split(ds.graph, SplitConfig("leave-one-out"))


def _cfg(name: str) -> TrainConfig:
    metric = "rmse" if name == "mf" else "ndcg@20"
    return TrainConfig(epochs=4, batch_size=64 if name in SEQUENTIAL else 256, lr=0.01, schedule="cosine", metric=metric,
                       patience=0, seed=3, progress=False)


def _model(name, ds, parts, seed):
    torch.manual_seed(seed)
    model = build_model(name, ds.num_users, ds.num_items)
    model.fit(parts.train)
    return model


def _history(path):
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "elapsed")}
            for line in (path / HISTORY_NAME).read_text().splitlines()]


@pytest.mark.parametrize("name", RESUMABLE)
def test_resume_after_signal_equals_unbroken_run(name, parts, tmp_path):
    ds, sp, loo = parts
    sp = loo if name in SEQUENTIAL else sp
    cfg = _cfg(name)
    torch.manual_seed(0)
    unbroken = _model(name, ds, sp, seed=0)
    train_model(unbroken, sp, cfg, out=tmp_path / "a")

    torch.manual_seed(0)
    broken = _model(name, ds, sp, seed=0)
    calls = {"n": 0}
    per_epoch = -(-make_batches(broken.batch_spec(), sp.train).num_examples // cfg.batch_size)

    def signal_midway(module, args):  # a module hook: the trainer calls the module itself
        calls["n"] += 1
        if calls["n"] == per_epoch + per_epoch // 2:  # mid-way through the second epoch
            os.kill(os.getpid(), signal.SIGINT)

    broken.register_forward_pre_hook(signal_midway)
    with pytest.raises(TrainingInterrupted) as info:
        train_model(broken, sp, cfg, out=tmp_path / "b")
    assert info.value.exit_code == 130
    assert f"continue with: python -m graphrec.train --resume {tmp_path / 'b'}" in str(info.value)
    assert len(_history(tmp_path / "b")) == 1

    torch.manual_seed(99)  # a different start: everything must come from the saved state
    resumed = _model(name, ds, sp, seed=99)
    train_model(resumed, sp, cfg, out=tmp_path / "b", resume=True)
    for key, value in unbroken.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert _history(tmp_path / "b") == _history(tmp_path / "a")


def test_resume_refuses_other_settings_and_data(parts, tmp_path):
    ds, sp, _ = parts
    cfg = _cfg("lightgcn")
    cfg.epochs = 1
    train_model(_model("lightgcn", ds, sp, 0), sp, cfg, out=tmp_path)
    cfg.lr = 0.02
    with pytest.raises(GraphrecError, match="lr"):
        train_model(_model("lightgcn", ds, sp, 0), sp, cfg, out=tmp_path, resume=True)
    cfg.lr = 0.01
    other = split(ds.graph, SplitConfig("random", valid_ratio=0.1, seed=1))
    with pytest.raises(GraphrecError, match="data or split differ"):
        train_model(_model("lightgcn", ds, other, 0), other, cfg, out=tmp_path, resume=True)
    with pytest.raises(GraphrecError, match="not found"):
        train_model(_model("lightgcn", ds, sp, 0), sp, cfg, out=tmp_path / "none", resume=True)


def test_finished_run_resumed_with_more_epochs_equals_the_longer_run(parts, tmp_path):
    """Only ``cosine`` depends on the epoch count: elsewhere a run may be extended."""
    ds, sp, _ = parts
    cfg = TrainConfig(epochs=3, batch_size=256, lr=0.01, metric="ndcg@20", patience=0, seed=3,
                      progress=False)
    longer = _model("bpr", ds, sp, 0)
    train_model(longer, sp, cfg, out=tmp_path / "a")
    cfg.epochs = 1
    train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path / "b")
    cfg.epochs = 3
    extended = _model("bpr", ds, sp, 99)
    assert train_model(extended, sp, cfg, out=tmp_path / "b", resume=True)["epochs"] == 3
    for key, value in longer.state_dict().items():
        torch.testing.assert_close(extended.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert _history(tmp_path / "b") == _history(tmp_path / "a")
    cfg.schedule, cfg.epochs = "cosine", 1
    train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path / "c")
    cfg.epochs = 3
    with pytest.raises(GraphrecError, match="epochs is 3 here but 1"):
        train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path / "c", resume=True)


def test_resuming_an_early_stopped_run_says_there_is_nothing_to_train(parts, tmp_path, caplog):
    ds, sp, _ = parts
    cfg = TrainConfig(epochs=30, batch_size=256, lr=0.05, metric="ndcg@20", patience=1,
                      progress=False)
    done = train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path)
    assert done["epochs"] < 30  # the premise: patience ended it
    cfg.epochs = 40
    with caplog.at_level("WARNING", logger="graphrec.trainer"):
        again = train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path, resume=True)
    assert again["epochs"] == done["epochs"]
    assert f"stopped early at epoch {done['epochs']}" in caplog.text


def _train_cmd(*extra):
    return [sys.executable, "-m", "graphrec.train", "--model", "bpr", "--no-progress",
            "--epochs", "8", "--patience", "0", "--lr", "0.01", "--batch-size", "256", *extra]


def test_cli_sigterm_then_resume_matches_unbroken(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_train_cmd("--out", str(tmp_path / "a")), check=True, capture_output=True,
                   env=env, timeout=300)
    run_b = tmp_path / "b"
    proc = subprocess.Popen(_train_cmd("--out", str(run_b)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    history = run_b / HISTORY_NAME
    deadline = time.time() + 120
    while time.time() < deadline and (not history.exists() or not history.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "--resume" in err and err.count("\n") < 40
    done = len(history.read_text().splitlines())
    assert 1 <= done < 8
    again = subprocess.run([sys.executable, "-m", "graphrec.train", "--resume", str(run_b),
                            "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in again.stderr
    metrics_a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    metrics_b = json.loads((run_b / "metrics.json").read_text())
    for key in ("recall@20", "ndcg@20", "precision@10"):
        assert metrics_b[key] == metrics_a[key], key
    # a flag that changes the saved config is refused, in one line
    bad = subprocess.run([sys.executable, "-m", "graphrec.train", "--resume", str(run_b),
                          "--lr", "0.5"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --resume: train.lr")


def test_plateau_schedule_cuts_lr_after_patience(parts, tmp_path, monkeypatch):
    """``plateau``: lr x 0.1 once ``plateau_patience`` evaluations bring nothing better."""
    import graphrec.trainer as trainer

    ds, sp, _ = parts
    scores = iter([0.5, 0.4, 0.6, 0.6, 0.6, 0.6])  # better, worse, better, then flat
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: {"ndcg@20": next(scores)})
    cfg = TrainConfig(epochs=6, batch_size=256, lr=0.01, schedule="plateau", plateau_patience=2,
                      patience=0, progress=False)
    train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path)
    lrs = [h["lr"] for h in _history(tmp_path)]
    # the lr each epoch trained at: evaluations 4 and 5 bring nothing better than 3 (a tie is
    # not better), so the cut comes after evaluation 5 and epoch 6 trains at 1e-3
    assert lrs == pytest.approx([0.01] * 5 + [0.001])


def test_plateau_schedule_needs_validation(parts):
    ds, sp, loo = parts
    no_valid = split(ds.graph, SplitConfig("random", seed=0))
    cfg = TrainConfig(epochs=1, schedule="plateau", progress=False)
    with pytest.raises(GraphrecError, match="validation part"):
        train_model(_model("bpr", ds, no_valid, 0), no_valid, cfg)


def test_resume_takes_settings_added_later_as_defaults(parts, tmp_path):
    """A state saved before a training setting existed resumes when that setting is default."""
    from graphrec.trainer import STATE_NAME

    ds, sp, _ = parts
    cfg = TrainConfig(epochs=1, batch_size=256, patience=0, progress=False)
    train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path)
    path = tmp_path / STATE_NAME
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    del config["plateau_patience"]
    state["config"] = json.dumps(config)
    torch.save(state, path)
    assert train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path, resume=True)["epochs"] == 1
    cfg.plateau_patience = 3  # not the default: a real difference
    with pytest.raises(GraphrecError, match="plateau_patience"):
        train_model(_model("bpr", ds, sp, 0), sp, cfg, out=tmp_path, resume=True)


def test_optimizer_is_the_fused_kernel_where_torch_has_it():
    model = build_model("bpr", 5, 7)
    opt = build_optimizer(model, TrainConfig(lr=0.01, weight_decay=0.1))
    assert type(opt) is torch.optim.Adam
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 0.1
    # torch >= 2.4 fuses on CPU; older versions fall back to the default kernel
    new_torch = tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 4)
    assert bool(opt.param_groups[0].get("fused")) == new_torch
    assert type(build_optimizer(model, TrainConfig(optimizer="adamw"))) is torch.optim.AdamW
