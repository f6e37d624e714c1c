"""The ``graphrec`` command line: its subcommands, and the pieces every entry point shares
(argument groups, the one error handler, tables).

Only CLI modules print; library code logs or returns. This module and the parsers of the
commands import nothing heavy, so that ``--help`` and argument errors answer without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from graphrec.errors import GraphrecError, TrainingInterrupted
from graphrec.names import DEDUP_POLICIES, FORMATS, OVERLAP_POLICIES, UNSEEN_POLICIES

#: ``graphrec COMMAND``: the module whose ``parser()`` and ``main(argv)`` implement it
COMMANDS = {
    "train": ("graphrec.train", "train and evaluate a model, writing a run folder"),
    "convert": ("graphrec.convert", "read raw interactions once into a graph file (.pt)"),
    "recommend": ("graphrec.recommend", "top-k items for users of a trained run"),
    "pipeline": ("graphrec.pipeline", "fit, evaluate and run a retrieval -> ranking -> re-ranking pipeline"),
    "serve": ("graphrec.serve.__main__", "serve a trained run over HTTP (needs graphrec[serve])"),
    "plot": ("graphrec.plot", "plots of a trained run: plot embeddings (needs graphrec[plot])"),
    "compare": ("graphrec.compare", "paired significance tests of two runs, user by user"),
    "tune": ("graphrec.tune", "hyper-parameter search with Optuna, resumable (needs graphrec[tune])"),
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``, exit code 2."""

    def error(self, message: str) -> Any:  # argparse's own prints the usage block first
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    g.add_argument("--sep", default=None, metavar="CHAR",
                   help="field delimiter of a delimited file, which then reads as csv whatever "
                        "its name: --sep ' ' for space-separated 'user item' lines, '\\t' for tabs")
    g.add_argument("--no-header", dest="header", action="store_false", default=None,
                   help="the CSV/TSV file has no header; columns are 0-based positions")
    g.add_argument("--test-data", default=None, metavar="FILE",
                   help="a predefined split: the test part, in the training file's format "
                        "(--data is then the training part)")
    g.add_argument("--valid-data", default=None, metavar="FILE",
                   help="with --test-data: the validation part")
    g.add_argument("--unseen-test", choices=UNSEEN_POLICIES, default=None,
                   help="held-out rows whose user or item never occurs in training: error "
                        "(default) or drop them (counted in the summary)")
    g.add_argument("--overlap", choices=OVERLAP_POLICIES, default=None,
                   help="held-out (user, item) pairs that are training pairs too: error "
                        "(default) or drop-from-test (counted in the summary)")
    g.add_argument("--min-rating", type=float, default=None,
                   help="keep interactions rated at least this (implicit threshold)")
    g.add_argument("--kcore", type=int, default=None,
                   help="drop users and items with fewer interactions, iterated (0 = off)")
    g.add_argument("--dedup", choices=DEDUP_POLICIES, default=None,
                   help="which of duplicate (user, item) interactions to keep (default: last)")
    t = parser.add_argument_group("item text embeddings (pip install -e \".[text]\")")
    t.add_argument("--text-cols", type=_columns, default=None, metavar="COL,COL",
                   help="encode these item columns (e.g. movie_title,class) with a "
                        "sentence-transformers model into the item attribute text_emb")
    t.add_argument("--text-model", default=None, metavar="PATH",
                   help="a local sentence-transformers model folder (default: the packaged "
                        "all-MiniLM-L6-v2)")
    t.add_argument("--text-dtype", choices=("float32", "float16"), default=None,
                   help="storage of text_emb (default: float32)")


def _columns(value: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in value.split(",") if c.strip())
    if not cols:
        raise argparse.ArgumentTypeError("name at least one column")
    return cols


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
    """Run a CLI main under the one error handler.

    Bad input (a :class:`GraphrecError`) becomes one line on stderr and exit code 2 (1 for a run
    that diverged); an unexpected error, a bug, becomes one line that says where its full
    traceback was written, and exit code 1.
    """
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
    except Exception as e:  # noqa: BLE001 - a bug: keep the traceback for the report
        path = write_traceback()
        print(f"internal error: {type(e).__name__}: {_first_line(e)} (a bug in graphrec; the "
              f"traceback is in {path}, please include it in a report)", file=sys.stderr)
        return 1


def write_traceback() -> str:
    """The current exception's traceback in a new temp file; returns its path."""
    fd, path = tempfile.mkstemp(prefix="graphrec-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"graphrec command: {' '.join(sys.argv)}\n")
        traceback.print_exc(file=f)
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def command(name: str) -> Callable[[], int]:
    """The console-script entry of ``graphrec-NAME``: that command under :func:`run`."""
    def entry() -> int:
        module = importlib.import_module(COMMANDS[name][0])
        return run(module.main, sys.argv[1:])
    return entry


train_command = command("train")
convert_command = command("convert")
recommend_command = command("recommend")


def main(argv: list[str] | None = None) -> int:
    """``graphrec COMMAND [OPTIONS]``: dispatch to a command's ``main`` under :func:`run`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    lines = [f"  {n:<10} {d}" for n, (_, d) in COMMANDS.items()]
    usage = ("usage: graphrec COMMAND [OPTIONS]   (graphrec COMMAND --help for its options)\n\n"
             "commands:\n" + "\n".join(lines) + "\n")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from graphrec import __version__
        print(f"graphrec {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"graphrec: error: unknown command {argv[0]!r} (one of {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return run(lambda a: module.main(a, prog=f"graphrec {argv[0]}"), argv[1:])
