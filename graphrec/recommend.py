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
import logging
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.cli import Parser, add_index_set_argument, format_table, run
from graphrec.errors import GraphrecError
from graphrec.names import INDEX_KINDS

if TYPE_CHECKING:
    import torch

log = logging.getLogger("graphrec.recommend")

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
    p.add_argument("--items", default=None, metavar="RAW_ID,RAW_ID",
                   help="a new user's items (raw ids, comma separated): recommendations for a "
                        "user the run was not trained on (--user names them; unknown items are "
                        "dropped with a warning); an empty string gives the onboarding list")
    p.add_argument("--fold-in", choices=("mean", "ls"), default="mean",
                   help="--items with an embedding model: the new user's vector is the mean "
                        "of the items' vectors (default) or a ridge least-squares fit")
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
    if args.items is not None:
        return _new_user(args, raw_users)
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
    dense = ckpt.users.lookup(raw_users)
    if (dense < 0).any():  # nothing known of them: the onboarding list, said so
        unknown = [u for u, d in zip(raw_users, dense) if d < 0]
        log.warning("--user: %s not in the run's data: the onboarding list (popular, diversified);"
                    " --items gives a new user's items", ", ".join(map(repr, unknown)))
    kind = "flat" if args.index == "faiss" else args.index
    cfg = parse_index_options(kind, args.index_set) if kind != "exact" else None
    if args.index_set and kind == "exact":
        raise GraphrecError("--index-set: needs --index flat, ivf, ivfpq or hnsw")
    known = torch.as_tensor(dense) >= 0
    items = torch.full((len(raw_users), args.k), -1, dtype=torch.long)
    scores = torch.full((len(raw_users), args.k), float("-inf"))
    if known.any():  # (fewer than k columns when the data has fewer items)
        got, vals = recommend(
            ckpt, torch.as_tensor(dense)[known], args.k, args.include_seen, index=kind,
            index_config=cfg, index_dir=ckpt.path.parent if ckpt.path else None)
        items[known, :got.size(1)], scores[known, :got.size(1)] = got, vals
    if not known.all():
        from graphrec.serve.recommend import onboarding

        top, values = onboarding(ckpt, args.k)
        items[~known, :top.numel()], scores[~known, :top.numel()] = top, values
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


def _new_user(args: argparse.Namespace, raw_users: list[str]) -> int:
    """``--items``: one user the run was not trained on, from the items given."""
    from graphrec.batches import History
    from graphrec.checkpoint import load_checkpoint
    from graphrec.serve.recommend import recommend_new
    from graphrec.utils import resolve_device

    if args.pipeline or args.index != "exact" or args.index_set or args.include_seen:
        raise GraphrecError("--items: scores exactly from a --run; --pipeline, --index, "
                            "--index-set and --include-seen do not apply")
    if len(raw_users) > 1:
        raise GraphrecError("--items: the items of one user; name at most one --user")
    ckpt = load_checkpoint(args.run, resolve_device(args.device))
    raw_items = [i.strip() for i in args.items.split(",") if i.strip()]
    index = ckpt.items.lookup(raw_items) if raw_items else []
    unknown = [r for r, i in zip(raw_items, index) if i < 0]
    if unknown:
        log.warning("--items: dropped %s: not in the run's data", ", ".join(map(repr, unknown)))
        if len(unknown) == len(raw_items):
            raise GraphrecError(f"--items: none of the {len(raw_items)} items is in the run's "
                                "data")
    rows = [[int(i) for i in index if i >= 0]]
    items, scores = recommend_new(ckpt, History.from_lists(rows), args.k, args.fold_in)
    _print(raw_users or ["(new user)"], items, scores, ckpt.items.raw, ckpt.titles, args.json)
    return 0


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
