"""Pieces shared by the command-line entry points: argument groups, error handling, tables.

Only CLI modules print; library code logs or returns.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from graphrec.data.graph import DEDUP_POLICIES
from graphrec.data.readers import FORMATS
from graphrec.errors import GraphrecError, TrainingInterrupted


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that say how to read raw interactions (shared by convert and train)."""
    g = parser.add_argument_group("reading")
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="input format (default: detected from the file name)")
    g.add_argument("--user-col", default=None, help="user column (CSV/TSV/Parquet/atomic)")
    g.add_argument("--item-col", default=None, help="item column")
    g.add_argument("--rating-col", default=None, help="rating column (optional)")
    g.add_argument("--time-col", default=None, help="timestamp column (optional)")
    g.add_argument("--edge-type", default=None, metavar="SRC,REL,DST",
                   help="--format pyg: the interaction edge type, e.g. user,rates,movie "
                        "(default: the only edge type not named rev_*)")
    g.add_argument("--no-header", dest="header", action="store_false", default=None,
                   help="the CSV/TSV file has no header; columns are 0-based positions")
    g.add_argument("--min-rating", type=float, default=None,
                   help="keep interactions rated at least this (implicit threshold)")
    g.add_argument("--kcore", type=int, default=None,
                   help="drop users and items with fewer interactions, iterated (0 = off)")
    g.add_argument("--dedup", choices=DEDUP_POLICIES, default=None,
                   help="which of duplicate (user, item) interactions to keep (default: last)")


def add_index_set_argument(parser: Any) -> None:
    """``--index-set KEY=VALUE``, the item index's settings (shared by train and recommend)."""
    parser.add_argument("--index-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an index setting: nlist, nprobe, hnsw_m, ef_construction, "
                             "ef_search, pq_bytes, threads (repeatable)")


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI main: bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("graphrec").setLevel(logging.INFO)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # not its CPU-feature probing at INFO
    try:
        return main(argv)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.exit_code
    except GraphrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head and the like: stop quietly
        sys.stderr = open(os.devnull, "w")
        return 0
