"""``python -m graphrec.recommend --run RUN_DIR --user RAW_ID -k 10``: top-N unseen items.

Exact scoring over all items with the run's model; items the user has interacted with anywhere
in the data set are never recommended (``--include-seen`` keeps them). Raw ids in and out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from graphrec.checkpoint import Checkpoint, load_checkpoint
from graphrec.cli import format_table, run
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import device_of, topk_excluding
from graphrec.utils import resolve_device


@torch.no_grad()
def recommend(ckpt: Checkpoint, users: torch.Tensor, k: int = 10, include_seen: bool = False,
              batch: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` item indices and scores for dense ``users``: ``([B, k], [B, k])``.

    Seen items are excluded unless ``include_seen``; when a user has fewer than ``k`` unseen
    items, the list is shorter (those slots hold index -1 and score -inf).
    """
    if k < 1:
        raise GraphrecError(f"-k: must be at least 1, got {k}")
    items, scores = [], []
    empty = (torch.zeros(ckpt.model.num_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    exclude = empty if include_seen else ckpt.seen
    device = device_of(ckpt.model)
    for s in range(0, users.numel(), batch):
        u = users[s:s + batch]
        scores_b = ckpt.model.score(u.to(device)).float().clone()  # [B, I], ours to overwrite
        values, top = topk_excluding(scores_b, u.to(scores_b.device), exclude, k, inplace=True)
        top = top.cpu().where(torch.isfinite(values.cpu()), -1)
        items.append(top)
        scores.append(values.cpu())
    return torch.cat(items), torch.cat(scores)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m graphrec.recommend",
                                description="Recommend items for users of a trained run.")
    p.add_argument("--run", required=True, help="run folder written by graphrec.train (or its model.pt)")
    p.add_argument("--user", action="append", default=[], metavar="RAW_ID",
                   help="a user's raw id (repeatable)")
    p.add_argument("--users-file", help="a file with one raw user id per line (batch mode)")
    p.add_argument("-k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--include-seen", action="store_true", help="also recommend seen items")
    p.add_argument("--json", action="store_true", help="one JSON object per user instead of a table")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    raw_users = list(args.user)
    if args.users_file:
        path = Path(args.users_file)
        if not path.is_file():
            raise GraphrecError(f"--users-file: {path}: no such file")
        raw_users += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not raw_users:
        raise GraphrecError("give at least one --user or a --users-file")
    ckpt = load_checkpoint(args.run, resolve_device(args.device))
    try:
        index = ckpt.users.to_index(raw_users, "user")
    except GraphrecError as e:
        raise GraphrecError(f"--user: {e} (not in the run's data)") from None
    items, scores = recommend(ckpt, torch.as_tensor(index), args.k, args.include_seen)
    rows = []
    for raw, its, scs in zip(raw_users, items.tolist(), scores.tolist()):
        recs = [(rank + 1, ckpt.items.raw[i], s, ckpt.titles[i] if ckpt.titles else None)
                for rank, (i, s) in enumerate(zip(its, scs)) if i >= 0]
        if args.json:
            print(json.dumps({"user": raw, "items": [
                {"item": _plain(i), "score": s, **({"title": t} if t is not None else {})}
                for _, i, s, t in recs]}))
        else:
            rows += [[raw, r, i, f"{s:.4f}"] + ([t] if ckpt.titles else []) for r, i, s, t in recs]
    if not args.json:
        header = ["user", "rank", "item", "score"] + (["title"] if ckpt.titles else [])
        print(format_table(rows, header))
    return 0


def _plain(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    sys.exit(run(main))
