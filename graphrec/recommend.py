"""``python -m graphrec.recommend --run RUN_DIR --user RAW_ID -k 10``: top-N unseen items.

Exact scoring over all items with the run's model (``--index exact``, the default), or, for
retrievers (models whose scores are inner products of user and item vectors: lightgcn, bpr,
mf, sasrec, bert4rec), a search of an item index: ``flat`` (faiss, exact), ``ivf``, ``ivfpq``
or ``hnsw`` (approximate; :mod:`graphrec.serve.index`). The index is saved in the run folder
the first time and reused while the model's item vectors stay the same. Models that are not
retrievers say so in one line and are scored exactly. Items the user has interacted with
anywhere in the data set are never recommended (``--include-seen`` keeps them). Raw ids in and
out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.cli import Parser, add_index_set_argument, format_table, run
from graphrec.errors import GraphrecError
from graphrec.names import INDEX_KINDS

if TYPE_CHECKING:
    import torch

#: ``--index``: ``faiss`` is the earlier name of ``flat``
INDEXES = INDEX_KINDS + ("faiss",)


def parser(prog: str = "python -m graphrec.recommend") -> argparse.ArgumentParser:
    """The command's arguments (no heavy imports: the model loads in :func:`main`)."""
    p = Parser(prog=prog,
                                description="Recommend items for users of a trained run.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="run folder written by graphrec.train (or its model.pt)")
    what.add_argument("--pipeline", metavar="PIPELINE.toml",
                      help="a pipeline file (graphrec.pipeline): retrieval, ranking, re-ranking")
    p.add_argument("--user", action="append", default=[], metavar="RAW_ID",
                   help="a user's raw id (repeatable)")
    p.add_argument("--users-file", help="a file with one raw user id per line (batch mode)")
    p.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--include-seen", action="store_true", help="also recommend seen items")
    p.add_argument("--index", choices=INDEXES, default="exact",
                   help="exact: score every item with the model (default); flat, ivf, ivfpq, "
                        "hnsw: search an item index of a retriever's vectors (lightgcn, bpr, mf, "
                        "sasrec, bert4rec; saved in the run folder); others score exactly")
    add_index_set_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object per user instead of a table")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m graphrec.recommend") -> int:
    """The command: load the run, print the top ``-k`` items of each user."""
    args = parser(prog).parse_args(argv)
    raw_users = [u.strip() for u in args.user]
    if any(not u for u in raw_users):
        raise GraphrecError("--user: an empty user id")
    if args.users_file:
        path = Path(args.users_file)
        if not path.is_file():
            raise GraphrecError(f"--users-file: {path}: no such file")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise GraphrecError(f"--users-file: {path}: not a text file (one raw user id per "
                                "line)") from None
        if "\0" in text:
            raise GraphrecError(f"--users-file: {path}: not a text file (binary data)")
        raw_users += [line.strip() for line in text.splitlines() if line.strip()]
    if not raw_users:
        raise GraphrecError("give at least one --user or a --users-file")
    import torch

    if args.pipeline:
        return _pipeline(args, raw_users)
    from graphrec.checkpoint import load_checkpoint
    from graphrec.serve.index import parse_index_options
    from graphrec.serve.recommend import recommend
    from graphrec.utils import resolve_device

    ckpt = load_checkpoint(args.run, resolve_device(args.device))
    try:
        dense = ckpt.users.to_index(raw_users, "user")
    except GraphrecError as e:
        raise GraphrecError(f"--user: {e} (not in the run's data)") from None
    kind = "flat" if args.index == "faiss" else args.index
    cfg = parse_index_options(kind, args.index_set) if kind != "exact" else None
    if args.index_set and kind == "exact":
        raise GraphrecError("--index-set: needs --index flat, ivf, ivfpq or hnsw")
    items, scores = recommend(ckpt, torch.as_tensor(dense), args.k, args.include_seen,
                              index=kind, index_config=cfg,
                              index_dir=ckpt.path.parent if ckpt.path else None)
    _print(raw_users, items, scores, ckpt.items.raw, ckpt.titles, args.json)
    return 0


def _print(raw_users: list[str], items: "torch.Tensor", scores: "torch.Tensor", item_ids: Any,
           titles: list[str] | None, as_json: bool) -> None:
    """The users' lists as a table, or one JSON object per user (``-1`` slots left out)."""
    rows = []
    for raw, its, scs in zip(raw_users, items.tolist(), scores.tolist()):
        recs = [(rank + 1, item_ids[i], s, titles[i] if titles else None)
                for rank, (i, s) in enumerate(zip(its, scs)) if i >= 0]
        if as_json:
            print(json.dumps({"user": raw, "items": [
                {"item": _plain(i), "score": s, **({"title": t} if t is not None else {})}
                for _, i, s, t in recs]}))
        else:
            rows += [[raw, r, i, f"{s:.4f}"] + ([t] if titles else []) for r, i, s, t in recs]
    if not as_json:
        header = ["user", "rank", "item", "score"] + (["title"] if titles else [])
        print(format_table(rows, header))


def _pipeline(args: argparse.Namespace, raw_users: list[str]) -> int:
    """``--pipeline``: every stage for the users, all their known interactions excluded."""
    import torch

    from graphrec.serve.pipeline import Pipeline, read_config

    if args.include_seen or args.index != "exact" or args.index_set:
        raise GraphrecError("--pipeline: --include-seen, --index and --index-set are for --run")
    cfg = read_config(args.pipeline)
    if args.k > cfg.n:
        raise GraphrecError(f"-k: {args.k} is more than the pipeline's n = {cfg.n} candidates")
    pipe = Pipeline(cfg, progress=False)
    if cfg.ranker is not None and pipe.ranker is None:
        raise GraphrecError(f"{cfg.where('ranker.run')}: no fitted ranker in {cfg.ranker.run}; "
                            "run python -m graphrec.pipeline --config FILE --fit first")
    try:
        dense = pipe.ds.users.to_index(raw_users, "user")
    except GraphrecError as e:
        raise GraphrecError(f"--user: {e} (not in the pipeline's data)") from None
    pipe.for_serving()
    items, scores = pipe.recommend(torch.as_tensor(dense), args.k)
    _print(raw_users, items, scores, pipe.ds.items.raw, pipe.titles, args.json)
    return 0


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    sys.exit(run(main))
