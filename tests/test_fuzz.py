"""A bounded fuzz of the readers and the command line.

Random malformed CSV, LightGCN and TOML inputs (a fixed seed, so every run tries the same
cases), each run in-process through ``convert`` or ``train``: none may end in a traceback (an
exception escaping the command line fails the test), every refusal is one line with exit code
2, and none may exit 0 with non-finite output. ``CASES`` is the count quoted in the README's
reliability section.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from graphrec import convert, train
from graphrec.cli import run

CASES = {"csv": 120, "lightgcn": 80, "toml": 80}
TOKENS = ["1", "2", "17", "0", "-3", "007", "1.0", "2.5", "1e40", "-1e40", "1e30", "nan", "NaN",
          "inf", "-inf", "", " ", "abc", "é", "日本", '"', '"quoted"', "a,b", "2**70",
          "123456789012345678901234567890", "2020-01-01", "2020-13-45", "  7  ", "\t", "None",
          "true", "0x1f", "1_000", "+5", "--", "∞"]


def _token(rng: random.Random) -> str:
    return rng.choice(TOKENS) if rng.random() < 0.7 else str(rng.randint(-5, 40))


def _maybe_bad(rng: random.Random, good: str) -> str:
    """``good``, or now and then a random token from the bad list."""
    return _token(rng) if rng.random() < 0.08 else good


def fuzz_csv(rng: random.Random) -> bytes:
    header = (["user", "item", "rating", "timestamp"] if rng.random() < 0.7 else
              rng.choice([["user", "item"], ["user_id", "item_id", "rating"],
                          ["user", "user", "item"], ["item", "rating"], ["u", "i"], []]))
    lines = [",".join(header)] if header else []
    width = len(header) or 3
    good = [lambda: str(rng.randint(0, 8)), lambda: rng.choice("abcdefgh"),
            lambda: f"{rng.uniform(1, 5):.1f}", lambda: str(rng.randint(0, 10**9))]
    for _ in range(rng.randint(1, 14)):
        n = width if rng.random() < 0.95 else rng.randint(0, width + 2)
        cells = [_maybe_bad(rng, good[min(j, 3)]()) for j in range(n)]
        lines.append(",".join(cells) if rng.random() > 0.03 else "")
    data = "\n".join(lines).encode()
    if rng.random() < 0.05:
        data += b"\nx,\xe9\xff,3"  # not UTF-8
    if rng.random() < 0.03:
        data = bytes(rng.randrange(256) for _ in range(64))  # binary
    return data


def fuzz_lightgcn(rng: random.Random) -> bytes:
    lines = []
    for user in range(rng.randint(1, 10)):
        items = [str(rng.randint(0, 15)) for _ in range(rng.randint(0, 6))]
        lines.append(" ".join(_maybe_bad(rng, t) for t in [str(user)] + items))
    if rng.random() < 0.1:
        lines.insert(rng.randint(0, len(lines)), "")
    data = "\n".join(lines).encode()
    if rng.random() < 0.05:
        data += b"\n3 \xe9"
    return data


def fuzz_toml(rng: random.Random, data: Path) -> str:
    bad = ['"abc"', "-1", "1e400", "nan", "inf", "[]", "{}", '["ten"]', "9999999999999999999",
           '"tpu"', "true", "1.5"]
    keys = {"split": {"method": '"random"', "test_ratio": "0.25", "valid_ratio": "0.0",
                      "seed": "3", "bogus": "1"},
            "eval": {"ks": "[1, 3]", "metrics": '["ndcg", "recall"]', "batch_users": "2",
                     "exclude_seen": "true"},
            "train": {"epochs": "2", "lr": "0.01", "patience": "1", "seed": "1"},
            "model_options": {"damping": "2.0", "x": "1"},
            "index": {"kind": '"exact"', "nprobe": "4"}}
    lines = ['model = "pop"', "[data]", f'path = "{data}"']
    for section in rng.sample(sorted(keys), rng.randint(1, 3)):
        lines.append(f"[{section}]")
        for key in rng.sample(sorted(keys[section]), rng.randint(1, 2)):
            value = keys[section][key] if rng.random() < 0.6 else rng.choice(bad)
            lines.append(f"{key} = {value}")
    if rng.random() < 0.05:
        lines.append("this is = not = toml")
    if rng.random() < 0.05:
        lines.insert(0, rng.choice(['device = "tpu"', "seed = -5", 'top = "level"']))
    return "\n".join(lines) + "\n"


def _check(code: int, err: str, case: str) -> None:
    assert code in (0, 2), f"{case}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{case}:\n{err}"
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"{case}: not one line\n{err}"


def _finite(path: Path) -> bool:
    from graphrec.data.graph import load

    store = load(path).graph["user", "interacts", "item"]
    return all(bool(torch.isfinite(store[k].float()).all()) for k in ("rating", "time")
               if k in store)


def test_fuzzed_inputs_never_give_a_traceback_or_a_poisoned_success(tmp_path, capsys):
    rng = random.Random(20261201)
    tried = {kind: 0 for kind in CASES}
    accepted = 0
    for kind, count in CASES.items():
        for n in range(count):
            folder = tmp_path / f"{kind}-{n}"
            folder.mkdir()
            if kind == "toml":
                config = folder / "run.toml"
                config.write_text(fuzz_toml(rng, Path(__file__).resolve().parents[1] / "data" / "tiny.csv"))
                argv = ["--config", str(config), "--out", str(folder / "run"), "--no-progress"]
                code = run(train.main, argv)
                _check(code, capsys.readouterr().err, f"{kind} {n}: {config.read_text()}")
                if code == 0:
                    metrics = json.loads((folder / "run" / "metrics.json").read_text(),
                                         parse_constant=lambda c: pytest.fail(f"{c} in metrics"))
                    assert all(v is None or math.isfinite(v) for v in metrics.values()
                               if isinstance(v, float))
            else:
                name = "data.csv" if kind == "csv" else "train.txt"
                source = folder / name
                source.write_bytes(fuzz_csv(rng) if kind == "csv" else fuzz_lightgcn(rng))
                argv = [str(source), "-o", str(folder / "g.pt")]
                if kind == "lightgcn":
                    argv += ["--format", "lightgcn"]
                code = run(convert.main, argv)
                _check(code, capsys.readouterr().err, f"{kind} {n}: {source.read_bytes()!r}")
                if code == 0:
                    assert _finite(folder / "g.pt"), f"{kind} {n}: non-finite values accepted"
            tried[kind] += 1
            accepted += code == 0
    assert tried == CASES and sum(tried.values()) == 280
    assert 0 < accepted < sum(tried.values())  # the fuzz reaches both outcomes
