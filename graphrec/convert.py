"""``python -m graphrec.convert INPUT... -o OUTPUT``: raw interactions -> one graph file.

The output holds the bipartite graph, the id maps and the metadata, and loads back with
``graphrec.data.load`` (``torch.load(weights_only=True)``: no pickled code runs).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from graphrec.cli import Parser, add_data_arguments, run
from graphrec.errors import GraphrecError


def parser(prog: str = "python -m graphrec.convert") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports: the readers load in :func:`main`)."""
    p = Parser(
        prog=prog,
        description="Convert interaction files into one graphrec graph file.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a file, a folder, or a LightGCN train.txt test.txt pair")
    p.add_argument("-o", "--output", required=True, help="output graph file (.pt)")
    add_data_arguments(p)
    return p


def _show(key: str, value: object) -> str:
    if key.startswith("time_"):
        try:
            return datetime.fromtimestamp(int(value), tz=timezone.utc).strftime(
                "%Y-%m-%d %H:%M:%S UTC")
        except (OverflowError, OSError, ValueError):  # beyond the calendar datetime knows
            return f"{int(value):,} s"
    if key == "density":
        return f"{value:.6f}"
    if isinstance(value, float):
        return f"{value:.1f}" if key.startswith("seq_") else f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.convert") -> int:
    """The command: read the inputs, build the graph, save it, print its summary."""
    args = parser(prog).parse_args(argv)
    from graphrec.data.graph import build, save, summary

    out = Path(args.output)
    if out.suffix != ".pt":
        raise GraphrecError(f"--output: {out} must end in .pt")
    if out.is_dir():
        raise GraphrecError(f"--output: {out} is a folder; name the graph file to write")
    start = time.perf_counter()
    from graphrec.data.source import DataConfig, read_parts

    cfg = DataConfig(format=args.format, user_col=args.user_col, item_col=args.item_col,
                     rating_col=args.rating_col, time_col=args.time_col,
                     header=args.header if args.header is not None else True,
                     edge_type=args.edge_type, sep=args.sep, test_path=args.test_data,
                     valid_path=args.valid_data, unseen_test=args.unseen_test or "error",
                     overlap=args.overlap or "error")
    raw = read_parts(args.inputs, cfg)
    ds = build(raw, args.dedup or "last", args.min_rating, args.kcore or 0)
    if args.text_cols:
        from graphrec.data.text import add_text_embeddings

        add_text_embeddings(ds, args.text_cols, args.text_model, args.text_dtype or "float32")
    elif args.text_model:
        raise GraphrecError("--text-model: needs --text-cols (the item columns to encode)")
    save(ds, out)
    stats = summary(ds)
    print(f"converted {raw.source} ({raw.format}) -> {out} in {time.perf_counter() - start:.2f} s")
    width = max(len(k) for k in stats)
    for key, value in stats.items():
        print(f"  {key.replace('_', ' '):<{width}}  {_show(key, value)}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
