"""``python -m graphrec.recommend --run RUN_DIR --user RAW_ID -k 10``: top-N unseen items.

Exact scoring over all items with the run's model (``--index exact``, the default), or, for
dot-product models, a faiss inner-product search over the item embeddings (``--index faiss``).
Items the user has interacted with anywhere in the data set are never recommended
(``--include-seen`` keeps them). Raw ids in and out.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch

from graphrec.checkpoint import Checkpoint, load_checkpoint
from graphrec.cli import format_table, run
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import csr_rows, device_of, topk_excluding
from graphrec.models.base import history
from graphrec.utils import resolve_device

log = logging.getLogger(__name__)

#: ``recommend(index=...)`` and ``--index``: exact scoring of all items, or faiss search
INDEXES = ("exact", "faiss")
#: registered models that expose ``embeddings()`` but do not score by their inner product
NOT_DOT_PRODUCT = frozenset({"ncf"})


@torch.no_grad()
def recommend(ckpt: Checkpoint, users: torch.Tensor, k: int = 10, include_seen: bool = False,
              batch: int = 1024, index: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` item indices and scores for dense ``users``: ``([B, k], [B, k])``.

    Sequence models score from the user's every known interaction, in time order (the
    checkpoint's seen items). Seen items are excluded unless ``include_seen``; when a user has fewer than ``k`` unseen
    items, the list is shorter (those slots hold index -1 and score -inf).

    Args:
        ckpt: a loaded checkpoint.
        users: dense user indices ``[B]``.
        k: items per user.
        include_seen: also recommend items the user has interacted with.
        batch: users scored (or searched) at once.
        index: ``"exact"`` scores every item with ``model.score``; ``"faiss"`` searches the
            item embeddings of a dot-product model with a ``faiss.IndexFlatIP`` (exact inner
            product, so the same top ``k`` up to ties and float rounding). Models that are not
            dot products fall back to exact scoring with a warning.
    """
    if k < 1:
        raise GraphrecError(f"-k: must be at least 1, got {k}")
    if index not in INDEXES:
        raise GraphrecError(f"--index: unknown index {index!r}; choose one of {', '.join(INDEXES)}")
    empty = (torch.zeros(ckpt.model.num_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    exclude = empty if include_seen else ckpt.seen
    if index == "faiss":
        factors = dot_product_factors(ckpt.model, ckpt.model_name, users[:4])
        if factors is not None:
            return _recommend_faiss(factors, users, k, exclude, batch)
        log.warning("--index faiss: model %s does not score by an inner product of embeddings; "
                    "using exact scoring", ckpt.model_name)
    items, scores = [], []
    device = device_of(ckpt.model)
    with history(ckpt.model, *ckpt.seen):  # sequence models: next items after all known ones
        for s in range(0, users.numel(), batch):
            u = users[s:s + batch]
            scores_b = ckpt.model.score(u.to(device)).float().clone()  # [B, I], ours to overwrite
            values, top = topk_excluding(scores_b, u.to(scores_b.device), exclude, k, inplace=True)
            top = top.cpu().where(torch.isfinite(values.cpu()), -1)
            items.append(top)
            scores.append(values.cpu())
    return torch.cat(items), torch.cat(scores)


@torch.no_grad()
def dot_product_factors(model: object, model_name: str, probe: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """User ``[U, F']`` and item ``[I, F']`` float32 CPU vectors whose inner products are the
    model's scores, or ``None`` when the model is not such a dot-product model.

    A model qualifies when it has ``embeddings()`` (final user and item embeddings) and is not
    one of :data:`NOT_DOT_PRODUCT`. Biases (``cfg.biases``: global, user and item) are folded
    in: users get the columns ``[global + user bias, 1]``, items ``[1, item bias]``. When
    ``probe`` users are given, their scores are checked against ``model.score`` so that a model
    which has embeddings but scores otherwise is never served from them.
    """
    embeddings = getattr(model, "embeddings", None)
    if model_name in NOT_DOT_PRODUCT or not callable(embeddings):
        return None
    user_emb, item_emb = embeddings()
    if getattr(getattr(model, "cfg", None), "biases", False):
        bias, global_bias = getattr(model, "bias", None), getattr(model, "global_bias", None)
        if bias is None or global_bias is None:
            return None
        b = bias.weight.squeeze(1)  # [U + I]: users, then items
        num_users = user_emb.size(0)
        ones_u = torch.ones(num_users, 1, dtype=user_emb.dtype, device=user_emb.device)
        ones_i = torch.ones(item_emb.size(0), 1, dtype=item_emb.dtype, device=item_emb.device)
        user_emb = torch.cat([user_emb, (global_bias + b[:num_users]).unsqueeze(1), ones_u], 1)
        item_emb = torch.cat([item_emb, ones_i, b[num_users:].unsqueeze(1)], 1)
    user_emb, item_emb = user_emb.detach().float().cpu(), item_emb.detach().float().cpu()
    if probe is not None and probe.numel():
        expected = model.score(probe.to(device_of(model))).float().cpu()  # [P, I]
        if not torch.allclose(user_emb[probe.cpu()] @ item_emb.T, expected, rtol=1e-4, atol=1e-4):
            return None
    return user_emb, item_emb


def _recommend_faiss(factors: tuple[torch.Tensor, torch.Tensor], users: torch.Tensor, k: int,
                     exclude: tuple[torch.Tensor, torch.Tensor], batch: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` by a faiss inner-product search that over-fetches by the batch's largest
    number of excluded items, so at least ``k`` candidates survive dropping them.

    ``IndexFlatIP`` is exact (brute force on faiss' kernels); an IVF or HNSW index over the same
    vectors would be the choice once the catalogue outgrows a flat scan.
    """
    import faiss  # a dependency, imported here so that exact serving never pays for it

    user_emb, item_emb = factors
    num_items = item_emb.size(0)
    flat = faiss.IndexFlatIP(item_emb.size(1))
    flat.add(item_emb.contiguous().numpy())
    ptr, seen = exclude[0].cpu(), exclude[1].cpu()
    items, scores = [], []
    for s in range(0, users.numel(), batch):
        u = users[s:s + batch].cpu()
        most_seen = int((ptr[u + 1] - ptr[u]).max())
        fetch = min(num_items, k + most_seen)
        dist, labels = flat.search(user_emb[u].contiguous().numpy(), fetch)  # [B, fetch] each
        values, labels = torch.from_numpy(dist), torch.from_numpy(labels)
        pos, cols = csr_rows(ptr, seen, u)
        row = torch.arange(u.numel()).unsqueeze(1)  # [B, 1]
        dropped = torch.isin(row * num_items + labels, pos * num_items + cols) | (labels < 0)
        values = values.masked_fill(dropped, -math.inf)
        values, order = torch.topk(values, min(k, fetch), dim=1)
        items.append(labels.gather(1, order).where(torch.isfinite(values), -1))
        scores.append(values)
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
    p.add_argument("--index", choices=INDEXES, default="exact",
                   help="exact: score every item (default); faiss: inner-product search over the "
                        "item embeddings of dot-product models (lightgcn, bpr, mf), others fall "
                        "back to exact")
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
    logging.getLogger("faiss").setLevel(logging.WARNING)  # not its CPU-feature probing at INFO
    ckpt = load_checkpoint(args.run, resolve_device(args.device))
    try:
        dense = ckpt.users.to_index(raw_users, "user")
    except GraphrecError as e:
        raise GraphrecError(f"--user: {e} (not in the run's data)") from None
    items, scores = recommend(ckpt, torch.as_tensor(dense), args.k, args.include_seen,
                              index=args.index)
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
