"""Training curves: a real PNG with matplotlib, a note and no file without it."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from graphrec import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_history(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def fake_history(epochs: int = 12, every: int = 2, rating: bool = False) -> list[dict]:
    records = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "loss": 0.7 / e, "seconds": 0.5, "lr": 1e-3}
        if e % every == 0:
            record["valid"] = {"recall@10": 0.1 + e / 100, "recall@20": 0.15 + e / 100,
                               "ndcg@10": 0.05 + e / 200, "ndcg@20": 0.07 + e / 200,
                               "hit@20": 0.5, "users": 943}
            if rating:
                record["valid"].update(rmse=1.2 - e / 100, mae=0.9 - e / 100)
        records.append(record)
    return records


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("rating", [False, True])
def test_writes_a_png(tmp_path, rating):
    pytest.importorskip("matplotlib")
    history = tmp_path / "history.jsonl"
    write_history(history, fake_history(rating=rating))
    png = tmp_path / "curves.png"
    assert plots.write_curves(history, png) is None
    assert png.stat().st_size > 10_000  # two panels of lines, not an empty canvas
    width, height = png_size(png)
    assert width > height > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "history.jsonl"]  # no temp left


def test_without_validation_and_with_a_cut_line(tmp_path):
    pytest.importorskip("matplotlib")
    history = tmp_path / "history.jsonl"
    write_history(history, [{"epoch": e, "loss": 1.0 / e, "seconds": 0.1, "lr": 0.01}
                            for e in range(1, 4)])
    with history.open("a") as fh:
        fh.write('{"epoch": 4, "lo')  # a crash in the middle of a line
    png = tmp_path / "curves.png"
    assert plots.write_curves(history, png) is None
    png_size(png)


def test_reads_only_the_last_of_appended_runs(tmp_path):
    history = tmp_path / "history.jsonl"
    write_history(history, fake_history(epochs=5) + fake_history(epochs=3))
    records = plots.read_history(history)
    assert [r["epoch"] for r in records] == [1, 2, 3]


def test_metric_choice():
    records = fake_history(rating=True)
    assert plots._metric_names(records, None) == ["recall@10", "recall@20", "ndcg@10", "ndcg@20",
                                                 "rmse", "mae"]
    assert plots._metric_names(records, ["ndcg@20", "hit"]) == ["ndcg@20", "hit@20"]
    only_map = [{"epoch": 1, "loss": 1.0, "valid": {"map@5": 0.2, "users": 3}}]
    assert plots._metric_names(only_map, None) == ["map@5"]  # nothing default: all but users


def test_without_matplotlib_returns_a_note_and_writes_nothing(tmp_path, monkeypatch):
    history = tmp_path / "history.jsonl"
    write_history(history, fake_history())
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    png = tmp_path / "curves.png"
    note = plots.write_curves(history, png)
    assert note == plots.NO_MATPLOTLIB and "pip install graphrec[plot]" in note
    assert "\n" not in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl"]


def test_missing_or_empty_history_is_a_note(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert "no such file" in plots.write_curves(tmp_path / "history.jsonl", png)
    (tmp_path / "history.jsonl").write_text("")
    assert "no epochs" in plots.write_curves(tmp_path / "history.jsonl", png)
    assert not png.exists()
