"""Training curves of a run folder as a PNG: loss and validation metrics per epoch.

matplotlib is optional (``pip install graphrec[plot]``): without it :func:`write_curves` returns
a one-line note and writes nothing. Figures are drawn with matplotlib's object API on the Agg
canvas, so no pyplot state and no global backend switch are involved, and the PNG is written
atomically (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphrec.utils import atomic_write_bytes

#: what :func:`write_curves` returns when matplotlib cannot be imported
NO_MATPLOTLIB = "matplotlib not installed: no curves.png (pip install graphrec[plot])"
#: validation metrics drawn by default (``name@K`` for every cut-off K), when present
DEFAULT_METRICS = ("ndcg", "recall", "rmse", "mae")
#: error metrics, drawn dashed
LOWER_IS_BETTER = ("rmse", "mae")


def read_history(history_path: Path) -> list[dict[str, Any]]:
    """The epoch records of a ``history.jsonl``, one JSON object per line.

    Blank or unreadable lines (a line cut short by a crash, say) are skipped. When a record's
    epoch is not after the previous one, a new run was appended to the same file, and only the
    last run's records are kept.
    """
    records: list[dict[str, Any]] = []
    for line in Path(history_path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), (int, float)):
            continue
        if records and record["epoch"] <= records[-1]["epoch"]:
            records = []
        records.append(record)
    return records


def _metric_names(records: list[dict[str, Any]], metrics: Sequence[str] | None) -> list[str]:
    """Validation metrics to draw, in first-seen order: ``metrics`` (``name`` or ``name@K``),
    by default :data:`DEFAULT_METRICS`, else every numeric one but the user count."""
    seen: dict[str, None] = {}
    for record in records:
        for name, value in (record.get("valid") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "users":
                seen.setdefault(name, None)
    wanted = DEFAULT_METRICS if metrics is None else tuple(metrics)
    chosen = [n for n in seen if n in wanted or n.split("@")[0] in wanted]
    return chosen if chosen or metrics is not None else list(seen)


def write_curves(history_path: Path, png_path: Path, *,
                 metrics: Sequence[str] | None = None) -> str | None:
    """Draw a run's training curves into a PNG.

    Two panels: the mean training loss per epoch, and the validation metrics per validated
    epoch (by default ``ndcg@K`` and ``recall@K`` for every cut-off, plus ``rmse``/``mae`` for
    rating models).

    Args:
        history_path: the run folder's ``history.jsonl``: one JSON object per epoch with
            ``epoch``, ``loss``, ``seconds``, ``lr`` and, in validated epochs, ``valid``
            (metric name -> value).
        png_path: where the PNG goes, e.g. ``RUN/curves.png``; written atomically.
        metrics: validation metrics to draw, as ``name`` (every cut-off) or ``name@K``.

    Returns:
        ``None`` when the PNG was written; otherwise a one-line note saying why not
        (:data:`NO_MATPLOTLIB` when matplotlib is missing, or no history to draw), and
        nothing is written.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return NO_MATPLOTLIB
    history_path, png_path = Path(history_path), Path(png_path)
    if not history_path.is_file():
        return f"{history_path}: no such file: no {png_path.name}"
    records = read_history(history_path)
    if not records:
        return f"{history_path}: no epochs recorded: no {png_path.name}"

    fig = Figure(figsize=(11, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, valid_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in records]
    losses = [_number(r.get("loss")) for r in records]
    loss_ax.plot(epochs, losses, marker="o" if len(epochs) < 30 else None, markersize=3)
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="mean loss per example")
    loss_ax.grid(alpha=0.3)

    names = _metric_names(records, metrics)
    for name in names:
        points = [(r["epoch"], _number(r["valid"][name])) for r in records
                  if isinstance(r.get("valid"), dict) and name in r["valid"]]
        lower_is_better = name.split("@")[0] in LOWER_IS_BETTER
        valid_ax.plot([e for e, _ in points], [v for _, v in points], marker="o", markersize=3,
                      linestyle="--" if lower_is_better else "-",
                      label=f"{name} (lower is better)" if lower_is_better else name)
    valid_ax.set(title="validation", xlabel="epoch")
    valid_ax.grid(alpha=0.3)
    if names:
        valid_ax.legend(fontsize="small")
    else:
        valid_ax.text(0.5, 0.5, "no validation metrics", ha="center", va="center",
                      transform=valid_ax.transAxes, color="gray")
    fig.suptitle(history_path.parent.name or str(history_path))

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(png_path, buffer.getvalue())
    return None


def _number(value: Any) -> float:
    """A plotted value: numbers as floats, anything else as a gap (NaN)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


__all__ = ["NO_MATPLOTLIB", "DEFAULT_METRICS", "read_history", "write_curves"]
