"""The README's examples run as written (those that need no shared data set)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    found = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("python -m graphrec") and "../shared" not in line:
                found.append(line)
    return found


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "data").symlink_to(ROOT / "data")
    return tmp_path


@pytest.fixture(scope="module")
def shared_workdir(tmp_path_factory):
    """One folder for all README commands, run in order: later ones use earlier runs."""
    path = tmp_path_factory.mktemp("readme")
    (path / "data").symlink_to(ROOT / "data")
    return path


def test_readme_has_examples():
    assert len(commands()) >= 4 and blocks("python") and blocks("toml")


@pytest.mark.parametrize("number,command", list(enumerate(commands())))
def test_command_runs(number, command, shared_workdir):
    argv = shlex.split(command)
    argv[0] = sys.executable
    if "graphrec.train" in command:  # a run folder of its own: reuse needs --overwrite
        argv += ["--no-progress"] + ([] if "--out" in argv else ["--out", f"run-{number}"])
    proc = subprocess.run(argv, cwd=shared_workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_python_api_example_runs(workdir):
    """The notebook example: load, split, train, evaluate, recommend, save and load back."""
    code = blocks("python")[0] + "\nassert set(metrics) >= {'recall@1', 'ndcg@3', 'users'}\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "tiny-lightgcn.pt").exists()


def test_python_example_runs(workdir):
    # The comment in the example says what to_raw gives; check it.
    code = blocks("python")[1] + "\nassert list(ds.users.to_raw([0, 1])) == ['alice', 'bob']\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_toml_example_runs(workdir):
    (workdir / "run.toml").write_text(blocks("toml")[0])
    proc = subprocess.run([sys.executable, "-m", "graphrec.train", "--config", "run.toml",
                           "--out", "run", "--no-progress"], cwd=workdir, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "run" / "metrics.json").exists()
