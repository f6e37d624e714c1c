"""The command lines: convert and train end to end, config files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared
from graphrec import convert, train
from graphrec.cli import run
from graphrec.data.graph import load

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny.csv"


def run_main(main, argv, capsys):
    code = run(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def write_lightgcn(folder):
    folder.mkdir()
    (folder / "train.txt").write_text("0 0 1 2\n1 1 2 3\n2 0 3\n3 2 4 1\n")
    (folder / "test.txt").write_text("0 3\n1 0\n2 4 1\n3 0\n")
    return folder


def test_main_job_defaults_train_lightgcn_with_early_stopping(tmp_path, capsys):
    """The README's main job, no flags: LightGCN on the synthetic data, a validation part carved
    by default, early stopping on it, popularity's metrics printed beside and beaten."""
    out = tmp_path / "run"
    code, stdout, _ = run_main(train.main, ["--out", str(out), "--no-progress"], capsys)
    assert code == 0 and "pop @20" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert {"recall@20", "ndcg@20", "recall@10"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    assert config["model"] == "lightgcn" and config["split"]["method"] == "random"
    assert config["split"]["valid_ratio"] == 0.1 and config["train"]["patience"] > 0
    from graphrec.config import model_train_defaults  # lightgcn's own, not bpr's (one class)
    assert model_train_defaults("lightgcn") != model_train_defaults("bpr")
    for key, value in model_train_defaults("lightgcn").items():
        assert config["train"][key] == value
    assert config["eval"]["ks"] == [10, 20]
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert all("valid" in h for h in history)  # validated every epoch
    stopped_early = len(history) < config["train"]["epochs"]
    assert stopped_early, f"ran all {len(history)} epochs: early stopping never fired"
    assert (out / "valid_metrics.json").exists()
    pop = json.loads((out / "pop_metrics.json").read_text())
    assert metrics["recall@20"] > 2 * pop["recall@20"] and metrics["ndcg@20"] > 2 * pop["ndcg@20"]


def test_training_free_model_keeps_every_training_interaction(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_main(train.main, ["--model", "pop", "--out", str(out), "--no-progress"],
                               capsys)
    assert code == 0 and "pop @20" not in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["split"]["valid_ratio"] == 0.0 and not (out / "valid_metrics.json").exists()
    assert {"rmse", "mae"} <= set(json.loads((out / "metrics.json").read_text()))


def test_train_on_lightgcn_folder_uses_given_split(tmp_path, capsys):
    data = write_lightgcn(tmp_path / "lg")
    out = tmp_path / "run"
    code, _, _ = run_main(train.main, ["--model", "pop", "--data", str(data), "--out", str(out),
                                       "--no-progress", "--k", "2"], capsys)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert config["split"]["method"] == "given"
    # Popularity counts in train: item 2 (3), items 0, 1, 3 (2 each), 4 (1); ties by lower id.
    # User 0 (seen 0,1,2) gets [3, 4]: hit 3 -> recall 1. User 1 (seen 1,2,3) gets [0, 4]: hit 0.
    # User 2 (seen 0,3) gets [2, 1]: hits 1 of {4, 1} -> 0.5. User 3 (seen 2,4,1) gets [0, 3]: hit.
    assert metrics["recall@2"] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert metrics["users"] == 4


def test_convert_then_train_on_graph_file(tmp_path, capsys):
    csv = tmp_path / "inter.csv"
    csv.write_text("user,item,rating\nann,x,5\nann,y,3\nbob,x,4\nbob,z,2\ncy,y,5\ncy,z,1\n"
                   "dee,x,3\ndee,y,4\ndee,z,5\n")
    graph = tmp_path / "g.pt"
    code, stdout, _ = run_main(convert.main, [str(csv), "-o", str(graph)], capsys)
    assert code == 0 and "interactions" in stdout and "9" in stdout
    ds = load(graph)
    assert list(ds.users.raw) == ["ann", "bob", "cy", "dee"]
    assert ds.num_items == 3 and ds.num_interactions == 9
    code, _, _ = run_main(train.main, ["--model", "pop", "--data", str(graph), "--out",
                                       str(tmp_path / "r"), "--test-ratio", "0.4", "--no-progress"],
                          capsys)
    assert code == 0


def test_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "random"\n[split]\ntest_ratio = 0.3\n[eval]\nks = [5]\n'
                   '[model_options]\nseed = 3\n')
    out = tmp_path / "run"
    code, _, _ = run_main(train.main, ["--config", str(cfg), "--out", str(out), "--k", "7",
                                       "--no-progress"], capsys)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "random" and config["split"]["test_ratio"] == 0.3
    assert config["eval"]["ks"] == [7]  # the flag wins over the file
    assert config["model_options"] == {"seed": 3}


@pytest.mark.parametrize("argv,message", [
    (["--model", "nope"], "--model: unknown model 'nope'"),
    (["--set", "bogus=1"], "unknown option 'bogus'"),
    (["--data", "/no/such/file.csv"], "/no/such/file.csv: no such file"),
    (["--test-ratio", "1.5"], "--test-ratio: must lie in (0, 1)"),
    (["--split", "given"], "no predefined test part"),
    (["--k", "0"], "--k: cut-offs must be positive"),
])
def test_train_bad_input_is_one_line(argv, message, tmp_path, capsys):
    code, _, err = run_main(train.main, argv + ["--out", str(tmp_path / "r"), "--no-progress"],
                            capsys)
    assert code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in err


def test_config_file_unknown_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[split]\ntest_ration = 0.3\n")
    code, _, err = run_main(train.main, ["--config", str(cfg)], capsys)
    assert code == 2 and "unknown key 'test_ration'" in err


def test_convert_bad_output_name(tmp_path, capsys):
    csv = tmp_path / "a.csv"
    csv.write_text("user,item\n1,2\n")
    code, _, err = run_main(convert.main, [str(csv), "-o", str(tmp_path / "g.bin")], capsys)
    assert code == 2 and "must end in .pt" in err


def test_module_entry_point_runs(tmp_path):
    """``python -m graphrec.convert`` as a user runs it: exit code 2, one line, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "graphrec.convert", str(tmp_path / "x.csv"),
                           "-o", str(tmp_path / "g.pt")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error:") and "Traceback" not in proc.stderr


def test_ml100k_pop(tmp_path, capsys):
    data = shared("ml-100k", "u.data")
    out = tmp_path / "run"
    code, _, _ = run_main(train.main, ["--model", "pop", "--data", str(data), "--out", str(out),
                                       "--no-progress"], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["users"] == 943
    assert 0.1 < metrics["recall@20"] < 0.3  # popularity is strong on MovieLens


def test_gowalla_pop_matches_independent_protocol(tmp_path, capsys):
    """Popularity on the Gowalla split, against the protocol written out in plain Python."""
    folder = shared("gowalla")
    out = tmp_path / "run"
    code, _, _ = run_main(train.main, ["--model", "pop", "--data", str(folder), "--out", str(out), "--k", "20",
                                       "--no-progress"], capsys)
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())

    def read(path):
        rows = {}
        for line in open(path):
            t = [int(x) for x in line.split()]
            if t:
                rows[t[0]] = t[1:]
        return rows

    tr, te = read(folder / "train.txt"), read(folder / "test.txt")
    counts = np.bincount([i for v in tr.values() for i in v], minlength=40981)
    order = np.argsort(-counts, kind="stable")  # most popular first, ties by lower id
    recall = ndcg = 0.0
    for u, test_items in te.items():
        seen, relevant = set(tr[u]), set(test_items)
        top = []
        for i in order:  # walk the global ranking, skipping the user's training items
            if i not in seen:
                top.append(int(i))
                if len(top) == 20:
                    break
        hits = [i in relevant for i in top]
        recall += sum(hits) / len(relevant)
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        ndcg += dcg / sum(1 / np.log2(r + 2) for r in range(min(len(relevant), 20)))
    assert metrics["users"] == len(te) == 29858
    assert metrics["recall@20"] == pytest.approx(recall / len(te), abs=1e-6)
    assert metrics["ndcg@20"] == pytest.approx(ndcg / len(te), abs=1e-6)


# --- one command line: `graphrec COMMAND`, console scripts, one error handler ---------------

ENTRIES = [
    [sys.executable, "-m", "graphrec.train"],
    [sys.executable, "-m", "graphrec.convert"],
    [sys.executable, "-m", "graphrec.recommend"],
    [sys.executable, "-m", "graphrec"],
    [sys.executable, "-m", "graphrec", "train"],
    [sys.executable, "-m", "graphrec", "convert"],
    [sys.executable, "-m", "graphrec", "recommend"],
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: " ".join(e[2:]))
def test_help_answers_without_importing_torch(entry):
    """--help builds the parsers only: torch, PyG and pandas stay unimported."""
    code = ("import runpy, sys\n"
            f"sys.argv = {entry[2:3] + entry[3:] + ['--help']!r}\n"
            "try:\n"
            f"    runpy.run_module({entry[2]!r}, run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print(sorted(m for m in ('torch', 'torch_geometric', 'pandas', 'numpy') "
            "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "usage:" in proc.stdout


def _console(name):
    import shutil
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"console script {name} not installed (pip install -e .)")
    return path


@pytest.mark.parametrize("argv,message", [
    (["graphrec", "train", "--model", "bpr", "--set", "dim=abc"], "dim: expected an integer"),
    (["graphrec-train", "--model", "bpr", "--set", "num_layers=2.5"], "num_layers: expected an integer"),
    (["graphrec-train", "--epochs", "x"], "--epochs: invalid int value"),
    (["graphrec", "convert", "/no/such.csv", "-o", "g.pt"], "/no/such.csv"),
    (["graphrec-convert", "/no/such.csv", "-o", "g.pt"], "/no/such.csv"),
    (["graphrec", "recommend", "--run", "/no/run", "--user", "a"], "/no/run"),
    (["graphrec-recommend", "--run", "/no/run", "--user", "a"], "/no/run"),
    (["graphrec", "bogus"], "unknown command 'bogus'"),
])
def test_user_errors_are_one_line_with_exit_code_2(argv, message, tmp_path):
    """Every entry, console scripts included: one stderr line, exit code 2, no traceback."""
    proc = subprocess.run([_console(argv[0])] + argv[1:], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("INFO:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_logs_and_trains(tmp_path):
    """graphrec-train goes through the same handler as python -m graphrec.train: INFO lines."""
    proc = subprocess.run([_console("graphrec-train"), "--model", "pop", "--no-progress",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "INFO: data:" in proc.stderr and "run folder:" in proc.stdout


def test_internal_error_is_one_line_naming_the_traceback_file(capsys):
    def buggy(argv):
        return {}["missing"]
    code = run(buggy, [])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("internal error: KeyError") and "Traceback" not in err
    path = Path(err.split("the traceback is in ")[1].split(",")[0])
    try:
        text = path.read_text()
        assert "Traceback (most recent call last)" in text and "buggy" in text
    finally:
        path.unlink()


def test_config_json_reproduces_the_run(tmp_path, capsys):
    """config.json holds every resolved value, model options included; training from it alone
    gives the same metrics."""
    first = tmp_path / "a"
    code, _, err = run_main(train.main, ["--model", "bpr", "--data", str(TINY), "--epochs", "3",
                                         "--set", "dim=8", "--out", str(first), "--no-progress"],
                            capsys)
    assert code == 0, err
    saved = json.loads((first / "config.json").read_text())
    assert saved["model_options"]["dim"] == 8 and "num_layers" in saved["model_options"]
    again = tmp_path / "b"
    code, _, err = run_main(train.main, ["--config", str(first / "config.json"), "--out",
                                         str(again)], capsys)
    assert code == 0, err
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (first, again))
    for m in (a, b):
        m.pop("fit_seconds"), m.pop("eval_seconds")
    assert a == b
    assert json.loads((again / "config.json").read_text())["model_options"] == saved["model_options"]


def test_predefined_split_files_through_train_and_convert(tmp_path, capsys):
    """--data train.csv --test-data test.csv: the given split, policies counted and printed."""
    (tmp_path / "train.csv").write_text("user,item\na,1\na,2\nb,2\nb,3\nc,3\nc,1\n")
    (tmp_path / "test.csv").write_text("user,item\na,3\nb,1\nz,1\nc,3\n")
    base = ["--data", str(tmp_path / "train.csv"), "--test-data", str(tmp_path / "test.csv")]
    code, _, err = run_main(train.main, ["--model", "pop", *base, "--out", str(tmp_path / "r0"),
                                         "--no-progress"], capsys)
    assert code == 2 and "user 'z' does not occur in the training file" in err
    policies = ["--unseen-test", "drop", "--overlap", "drop-from-test"]
    code, out, err = run_main(train.main, ["--model", "pop", *base, *policies, "--out",
                                           str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 0, err
    assert "(given split)" in out and "test users = 2" in out
    code, out, err = run_main(convert.main, [str(tmp_path / "train.csv"), "--test-data",
                                             str(tmp_path / "test.csv"), *policies, "-o",
                                             str(tmp_path / "g.pt")], capsys)
    assert code == 0, err
    assert "test dropped unseen" in out and "test dropped overlap" in out
    ds = load(tmp_path / "g.pt")
    assert ds.meta["test_dropped_unseen"] == 1 and ds.meta["test_dropped_overlap"] == 1
