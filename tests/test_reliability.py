"""Nothing lost, nothing poisoned: numeric guards, owned run folders, symlink-safe writes,
one-line errors, and metrics that do not depend on the evaluation batch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphrec import convert, recommend, train
from graphrec.cli import run
from graphrec.errors import GraphrecError
from graphrec.runfolder import LOCK_NAME, RunFolder

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny.csv"


def one_line_error(capsys, code, expected: str) -> str:
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return err


def csv_file(tmp_path: Path, body: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def train_argv(out: Path, *extra: str, data: Path = TINY) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--no-progress", "--test-ratio", "0.25",
            *extra]


# --------------------------------------------------------------------------------------------
# Numeric guards


def test_a_rating_beyond_float32_is_refused_with_its_line(tmp_path, capsys):
    path = csv_file(tmp_path, "user,item,rating\na,x,4\nb,y,1e40\nc,z,3\n")
    assert run(convert.main, [str(path), "-o", str(tmp_path / "g.pt")]) == 2
    one_line_error(capsys, 2, "line 3: rating '1e40' is beyond float32")
    assert not (tmp_path / "g.pt").exists()


def test_a_timestamp_beyond_int64_seconds_is_refused(tmp_path, capsys):
    path = csv_file(tmp_path, "user,item,timestamp\na,x,10\nb,y,1e30\n")
    assert run(convert.main, [str(path), "-o", str(tmp_path / "g.pt")]) == 2
    one_line_error(capsys, 2, "line 3: timestamp '1e30' is outside int64 seconds")
    assert not (tmp_path / "g.pt").exists()


@pytest.mark.parametrize("flag", [["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "-1"],
                                  ["--patience", "-1"], ["--set", "l2=inf"]])
def test_float_options_are_finite_and_in_range(flag, tmp_path, capsys):
    assert run(train.main, train_argv(tmp_path / "r", "--model", "bpr", *flag)) == 2
    one_line_error(capsys, 2, flag[0] if flag[0] != "--set" else "l2")


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_state(tmp_path, capsys):
    out = tmp_path / "mf"
    code = run(train.main, train_argv(out, "--model", "mf", "--lr", "1e30", "--epochs", "4"))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "non-finite loss" in err and "epoch 2, batch 1" in err and "--lr" in err
    assert "last good state (after epoch 1)" in err
    assert (out / "trainer_state.pt").exists()  # epoch 1's, finite
    state = torch.load(out / "trainer_state.pt", weights_only=True)
    assert state["epoch"] == 1 and all(bool(torch.isfinite(v).all())
                                       for v in state["model"].values() if v.is_floating_point())
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()
    for line in (out / "history.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def test_metrics_files_are_strict_json(tmp_path):
    from graphrec.utils import atomic_write_json

    atomic_write_json(tmp_path / "m.json", {"rmse": math.nan, "ndcg@20": 0.5, "x": [math.inf]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text) == {"rmse": None, "ndcg@20": 0.5, "x": [None]}
    assert "NaN" not in text and "Infinity" not in text


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path):
    from graphrec.checkpoint import save_checkpoint
    from graphrec.data.graph import build
    from graphrec.data.readers import read
    from graphrec.models import build_model, model_config

    ds = build(read(TINY))
    model = build_model("bpr", ds.num_users, ds.num_items)
    with torch.no_grad():
        model.embedding.weight[0, 0] = math.nan
    with pytest.raises(GraphrecError, match="non-finite"):
        save_checkpoint(tmp_path / "model.pt", "bpr", model_config("bpr"), model, ds, {})
    assert not (tmp_path / "model.pt").exists()


# --------------------------------------------------------------------------------------------
# Run folders are owned


def test_a_second_writer_fails_at_once_and_a_dead_owner_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from graphrec.runfolder import RunFolder; "
         "f = RunFolder(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(60)",
         str(out)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.perf_counter()
        assert run(train.main, train_argv(out, "--model", "pop")) == 2
        assert time.perf_counter() - start < 10  # at once, no waiting
        one_line_error(capsys, 2, f"is in use by another graphrec run (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # left by the killed owner
    assert run(train.main, train_argv(out, "--model", "pop")) == 0  # the kernel released it
    capsys.readouterr()


def test_the_lock_holds_within_one_process_too(tmp_path, capsys):
    out = tmp_path / "run"
    with RunFolder(out):
        assert run(train.main, train_argv(out, "--model", "pop")) == 2
        one_line_error(capsys, 2, "in use by another graphrec run")


def test_reuse_needs_overwrite_which_empties_the_old_run_first(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train.main, train_argv(out, "--model", "bpr", "--epochs", "2")) == 0
    assert (out / "trainer_state.pt").exists() and (out / "history.jsonl").exists()
    (out / "notes.txt").write_text("mine")  # not a run file: never touched
    capsys.readouterr()
    assert run(train.main, train_argv(out, "--model", "pop")) == 2
    one_line_error(capsys, 2, "already holds a run")
    assert run(train.main, train_argv(out, "--model", "pop", "--overwrite")) == 0
    names = {p.name for p in out.iterdir()}
    assert "trainer_state.pt" not in names and "history.jsonl" not in names  # the old run's
    assert {"config.json", "metrics.json", "model.pt", "notes.txt"} <= names
    assert json.loads((out / "config.json").read_text())["model"] == "pop"
    capsys.readouterr()
    assert run(train.main, ["--resume", str(out), "--overwrite"]) == 2
    one_line_error(capsys, 2, "--overwrite: not with --resume")


def test_resume_never_writes_through_a_symlinked_history(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train.main, train_argv(out, "--model", "bpr", "--epochs", "2")) == 0
    target = tmp_path / "precious.txt"
    target.write_text("do not touch\n")
    (out / "history.jsonl").unlink()
    (out / "history.jsonl").symlink_to(target)
    capsys.readouterr()
    assert run(train.main, ["--resume", str(out), "--epochs", "3", "--no-progress"]) == 2
    one_line_error(capsys, 2, "history.jsonl is a symbolic link")
    assert target.read_text() == "do not touch\n"


def test_resume_hygiene_stray_temp_files_and_a_half_written_history_line(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert run(train.main, train_argv(out, "--model", "bpr", "--epochs", "2")) == 0
    stray = out / ".trainer_state.pt.abc123.tmp"
    stray.write_bytes(b"half a save")
    with open(out / "history.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "lo')  # killed mid-line
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert run(train.main, ["--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert not stray.exists() and "temporary file" in caplog.text
    assert "half-written last line" in caplog.text
    lines = (out / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# One-line errors, exit code 2


def _toml(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "run.toml"
    path.write_text(f'[data]\npath = "{TINY}"\n' + body)
    return ["--config", str(path)]


CASES = [
    ("not-a-folder-parent", lambda t: train_argv(t / "file.txt" / "run", "--model", "pop"),
     "--out: cannot create"),
    ("toml-test-ratio", lambda t: _toml(t, '[split]\ntest_ratio = "abc"\n') + ["--out", str(t / "r")],
     "[split] test_ratio: expected a number, got 'abc'"),
    ("toml-ks", lambda t: _toml(t, '[eval]\nks = "ten"\n') + ["--out", str(t / "r")],
     "[eval] ks: expected a list, got 'ten'"),
    ("set-type", lambda t: train_argv(t / "r", "--model", "bpr", "--set", "dim=abc"),
     "option dim: expected an integer, got 'abc'"),
    ("set-int", lambda t: train_argv(t / "r", "--model", "lightgcn", "--set", "num_layers=2.5"),
     "option num_layers: expected an integer, got 2.5"),
    ("device-tpu", lambda t: train_argv(t / "r", "--model", "pop", "--device", "tpu"),
     "--device: unknown device 'tpu'"),
    ("device-cuda", lambda t: train_argv(t / "r", "--model", "pop", "--device", "cuda"),
     "--device cuda:"),
    ("huge-seed", lambda t: train_argv(t / "r", "--model", "pop", "--seed", str(2**64)),
     "does not fit a 64-bit integer"),
    ("negative-damping", lambda t: train_argv(t / "r", "--model", "pop", "--set", "damping=-1"),
     "damping must be >= 0"),
    ("graph-with-reading-flags", None, "--dedup: "),
]


@pytest.mark.parametrize("name,argv,message", CASES, ids=[c[0] for c in CASES])
def test_train_bad_input_is_one_line(name, argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    if name == "graph-with-reading-flags":
        assert run(convert.main, [str(TINY), "-o", str(tmp_path / "g.pt")]) == 0
        argv = lambda t: ["--data", str(t / "g.pt"), "--dedup", "first", "--out", str(t / "r")]  # noqa: E731
    if name == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    capsys.readouterr()
    assert run(train.main, argv(tmp_path)) == 2
    one_line_error(capsys, 2, message)


def test_convert_and_recommend_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "out.pt").mkdir()
    assert run(convert.main, [str(TINY), "-o", str(tmp_path / "out.pt")]) == 2
    one_line_error(capsys, 2, "is a folder")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("user,item\nalice,caf\xe9\n".encode("latin-1"))
    assert run(convert.main, [str(latin), "-o", str(tmp_path / "g.pt")]) == 2
    one_line_error(capsys, 2, "not UTF-8 text (byte 0xe9 at line 2")
    out = tmp_path / "run"
    assert run(train.main, train_argv(out, "--model", "pop")) == 0
    binary = tmp_path / "users.bin"
    binary.write_bytes(bytes(range(256)))
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(out), "--users-file", str(binary)]) == 2
    one_line_error(capsys, 2, "--users-file")
    capsys.readouterr()
    assert run(recommend.main, ["--run", str(out), "--user", " alice ", "--json", "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["user"] == "alice"  # stripped, as file lines are


def test_lightgcn_files_hold_integer_ids_and_say_what_is_wrong(tmp_path, capsys):
    from graphrec.data.readers import read_lightgcn

    (tmp_path / "a.txt").write_text("0 1 2\n1 2 x\n")
    with pytest.raises(GraphrecError, match="line 2: item id 'x' is not a 64-bit integer"):
        read_lightgcn(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("0\n1\n")
    with pytest.raises(GraphrecError, match="every line holds a user id without items"):
        read_lightgcn(tmp_path / "b.txt")
    (tmp_path / "c.txt").write_text("")
    with pytest.raises(GraphrecError, match="empty file"):
        read_lightgcn(tmp_path / "c.txt")


def test_one_and_one_point_zero_are_the_same_id(tmp_path):
    from graphrec.data.graph import build
    from graphrec.data.readers import read

    ds = build(read(csv_file(tmp_path, "user,item\n1,5\n1.0,6\n2,5.0\n")))
    assert ds.users.raw.tolist() == [1, 2] and ds.items.raw.tolist() == [5, 6]
    assert ds.num_interactions == 3


# --------------------------------------------------------------------------------------------
# Metrics identical at any evaluation batch size


@pytest.mark.parametrize("name", ["graph-filter", "bpr"])
def test_metrics_identical_at_batch_sizes_1_7_and_1024(name, tmp_path):
    from graphrec.data.graph import build
    from graphrec.data.synthetic import SyntheticConfig, make_synthetic
    from graphrec.evaluation.evaluator import EvalConfig, evaluate
    from graphrec.models import build_model, model_config
    from graphrec.split import SplitConfig, split
    from graphrec.trainer import TrainConfig, train_model

    ds = build(make_synthetic(SyntheticConfig(num_users=200, num_items=120)))
    parts = split(ds.graph, SplitConfig("random", valid_ratio=0.1))
    torch.manual_seed(0)
    options = {"k": 32} if name == "graph-filter" else {}
    model = build_model(name, ds.num_users, ds.num_items, model_config(name, options))
    model.fit(parts.train)
    if model.trainable:
        train_model(model, parts, TrainConfig(epochs=3, lr=0.01, progress=False))
    got = [evaluate(model, parts, "test", EvalConfig(batch_users=b, progress=False))
           for b in (1, 7, 1024)]
    assert got[0] == got[1] == got[2]  # every digit
