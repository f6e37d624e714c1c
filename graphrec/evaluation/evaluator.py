"""Evaluation by full ranking: every item is scored for every evaluated user, the user's
training items (and validation items, when testing) are excluded, and the top K is compared
with the held-out items. Batched over users so memory stays bounded, on CPU or GPU.

The one evaluator serves every model through the model contract: it asks the model once per
evaluation for its :meth:`~graphrec.models.base.Recommender.scorer` (the graph family propagates
there, once), then calls ``scorer.score(users, history)`` batch by batch, ``[B, num_items]``;
rating models also answer ``predict(users, items)``. Models with ``uses_history`` get the
history of the moment. With an :class:`~graphrec.serve.index.ItemIndex`, a retriever's top K
comes from the index instead, so the metrics show what an approximate index costs. The
held-out and excluded items are moved to the scoring device once per evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm.auto import tqdm

from graphrec.batches import History
from graphrec.distributed import shard_range, world
from graphrec.errors import GraphrecError
from graphrec.evaluation.metrics import METRIC_FUNCTIONS, RANKING_METRICS, RATING_METRICS
from graphrec.per_user import PerUserMetrics
from graphrec.split import Interactions

if TYPE_CHECKING:
    from graphrec.serve.index import ItemIndex


class Scorer(Protocol):
    """What the evaluator needs of a model (or of what its ``scorer()`` returns)."""

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        ...  # [B] -> [B, num_items]


@dataclass
class EvalConfig:
    """Evaluation settings.

    Args:
        ks: cut-offs, e.g. ``(10, 20)``.
        metrics: ranking metric names from :data:`RANKING_METRICS`.
        batch_users: users scored at once; ``0`` picks a batch of about 32M scores.
        progress: show a progress bar.
        exclude_seen: never rank the user's training items (and validation items when
            testing); ``False`` ranks them too (they then count as misses).

    Scores are ranked on the device the model returns them on.
    """

    ks: tuple[int, ...] = (10, 20)
    metrics: tuple[str, ...] = RANKING_METRICS
    batch_users: int = 0
    progress: bool = True
    exclude_seen: bool = True

    def __post_init__(self) -> None:
        self.ks = tuple(int(k) for k in self.ks)
        self.metrics = tuple(self.metrics)
        if not self.ks or min(self.ks) < 1:
            raise GraphrecError(f"--k: cut-offs must be positive integers, got {list(self.ks)}")
        unknown = [m for m in self.metrics if m not in METRIC_FUNCTIONS]
        if unknown:
            raise GraphrecError(f"--metrics: unknown metric {unknown[0]!r}; choose from "
                                f"{', '.join(RANKING_METRICS)}")
        if self.batch_users < 0:
            raise GraphrecError(f"--eval-batch: must be >= 0, got {self.batch_users}")


def csr_rows(ptr: torch.Tensor, values: torch.Tensor, rows: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather CSR rows: returns ``(row_position, value)`` for every entry of ``rows``' rows,
    where ``row_position`` indexes into ``rows``. Vectorized, no Python loop."""
    start, end = ptr[rows], ptr[rows + 1]
    counts = end - start
    pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    idx = torch.repeat_interleave(start - offsets, counts) + torch.arange(int(counts.sum()), device=rows.device)
    return pos, values[idx]


def merge_csr(num_users: int, parts: list[tuple[torch.Tensor, torch.Tensor]]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate several CSR sets of per-user items into one CSR (rows keep all items)."""
    users = [torch.repeat_interleave(torch.arange(num_users), p.diff()) for p, _ in parts]
    user = torch.cat(users)
    item = torch.cat([v for _, v in parts])
    order = torch.argsort(user, stable=True)
    counts = torch.bincount(user, minlength=num_users)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]), item[order]


def topk_excluding(scores: torch.Tensor, users: torch.Tensor, exclude: tuple[torch.Tensor, torch.Tensor],
                   k: int, inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` items per row of ``scores [B, I]`` after setting the CSR ``exclude`` items of
    ``users`` to -inf. Returns ``(values, indices)``, each ``[B, min(k, I)]``; excluded items
    can only appear with value -inf, when fewer than ``k`` items remain. ``inplace`` writes the
    -inf into ``scores`` itself, saving a copy of the batch's scores."""
    ptr, items = exclude
    pos, cols = csr_rows(ptr.to(users.device), items.to(users.device), users)
    minus_inf = torch.tensor(-math.inf, device=scores.device)
    scores = scores.index_put_((pos, cols), minus_inf) if inplace else scores.index_put((pos, cols), minus_inf)
    return torch.topk(scores, min(k, scores.size(1)), dim=1)


def shares_memory_with(tensor: torch.Tensor, model: object) -> bool:
    """Whether ``tensor`` lives in the storage of one of ``model``'s parameters or buffers (a
    view such as ``buffer.expand(...)``), so writing into it would change the model."""
    if not isinstance(model, torch.nn.Module):
        return True  # unknown owner: never write in place
    ptr = tensor.untyped_storage().data_ptr()
    return any(t.untyped_storage().data_ptr() == ptr
               for t in list(model.parameters()) + list(model.buffers()))


def device_of(model: object) -> torch.device:
    """Where a model keeps its tensors (its first parameter or buffer, or the ``device`` of a
    wrapper such as :class:`~graphrec.models.coldstart.NewUsers`), else the CPU."""
    if not isinstance(model, torch.nn.Module) and isinstance(getattr(model, "device", None),
                                                              torch.device):
        return model.device
    if isinstance(model, torch.nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device("cpu")


def evaluate_ranking(
    model: Scorer,
    num_items: int,
    heldout: Interactions,
    exclude: tuple[torch.Tensor, torch.Tensor],
    cfg: EvalConfig | None = None,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
    index: "ItemIndex | None" = None,
    candidates: torch.Tensor | None = None,
) -> dict[str, float]:
    """Full-ranking top-K metrics averaged over users with at least one held-out item (the
    mean of :func:`ranking_per_user`'s values; arguments as there).

    Returns:
        ``{"recall@20": ..., "ndcg@20": ..., ..., "users": n}``.
    """
    users, values = ranking_per_user(model, num_items, heldout, exclude, cfg, history, index,
                                     candidates)
    return _averages(users, values)


def _averages(users: torch.Tensor, values: dict[str, torch.Tensor]) -> dict[str, float]:
    # per-user values in user order, summed once in float64: the same result at any batch size
    out = {key: float(v.sum()) / users.numel() for key, v in values.items()}
    out["users"] = int(users.numel())
    return out


@torch.no_grad()
def ranking_per_user(
    model: Scorer,
    num_items: int,
    heldout: Interactions,
    exclude: tuple[torch.Tensor, torch.Tensor],
    cfg: EvalConfig | None = None,
    history: tuple[torch.Tensor, torch.Tensor] | None = None,
    index: "ItemIndex | None" = None,
    candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Full-ranking top-K metrics of each user with at least one held-out item.

    Args:
        model: a model (its ``scorer()`` is asked for once), or anything with
            ``score(users, history) -> [B, num_items]``.
        num_items: number of items.
        heldout: the relevant (user, item) pairs.
        exclude: CSR ``(ptr [num_users + 1], items)`` of items never to rank for each user
            (training items, plus validation items when testing).
        cfg: cut-offs, metrics and batching.
        history: CSR over all users of the histories to score from (models with
            ``uses_history``), or ``None``.
        index: rank through this index over the model's item vectors (a retriever's) instead
            of scoring every item.
        candidates: ``[num_items]`` bool: rank only these items (a cold-items test ranks the
            cold items), or ``None`` for all.

    Returns:
        ``(users [U], {"recall@20": [U] float64, ...})``: the evaluated users, ascending, and
        each metric's value per user.
    """
    cfg = cfg or EvalConfig()
    num_users = exclude[0].numel() - 1
    rel_ptr, rel_items = heldout.csr(num_users)
    users = torch.nonzero(rel_ptr.diff() > 0).flatten()
    if users.numel() == 0:
        raise GraphrecError("evaluation: no user has a held-out item")
    kmax = max(cfg.ks)
    batch = cfg.batch_users or max(1, (1 << 25) // max(1, num_items))
    # per-user values in user order, summed once at the end in float64: the same result at any
    # batch size (per-batch float sums would differ in the last digits)
    per_user: dict[str, list[torch.Tensor]] = {f"{m}@{k}": [] for m in cfg.metrics for k in cfg.ks}
    # data-parallel runs (graphrec.distributed): each rank scores a contiguous share of the
    # users and the shares are gathered in rank order, which is user order: the same values
    rank, size = world()
    first, last = shard_range(users.numel(), rank, size)
    mine = users[first:last]
    bar = tqdm(total=mine.numel(), desc="evaluating", unit="user", disable=not cfg.progress,
               leave=False)
    dev = device_of(model)
    scorer = model.scorer() if hasattr(model, "scorer") else model  # once per evaluation
    # once per evaluation, on the scoring device
    rel_ptr, rel_items = rel_ptr.to(dev), rel_items.to(dev)
    ex_ptr, ex_items = exclude[0].to(dev), exclude[1].to(dev)
    hist = (history[0].to(dev), history[1].to(dev)) if history is not None else None
    if candidates is not None and index is not None:
        raise GraphrecError("evaluation: an item index ranks every item; a candidate subset "
                            "(a cold-items split) is ranked exactly")
    outside = ~candidates.to(dev) if candidates is not None else None
    for start in range(0, mine.numel(), batch):
        u = mine[start:start + batch].to(dev)
        h = History.of(*hist, u) if hist is not None else None
        if index is not None:
            values, top = index.search(scorer.user_vectors(u, h), kmax,
                                       History.of(ex_ptr, ex_items, u))  # [B, K]
        else:
            scores = scorer.score(u) if h is None else scorer.score(u, h)  # [B, I]
            # The batch's scores are ours to overwrite unless they are the model's own memory.
            inplace = scores.dtype == torch.float32 and not shares_memory_with(scores, model)
            if outside is not None:
                scores = scores.float().masked_fill(outside.to(scores.device), -math.inf)
                inplace = True  # a copy of ours now
            values, top = topk_excluding(scores.float(), u.to(scores.device), (ex_ptr, ex_items),
                                         kmax, inplace)  # [B, K]
        values, top = values.to(dev), top.to(dev)
        pos, cols = csr_rows(rel_ptr, rel_items, u)
        relevant = torch.zeros(u.numel(), num_items, dtype=torch.bool, device=dev)
        relevant[pos, cols] = True
        hits = relevant.gather(1, top.clamp(min=0)) & torch.isfinite(values)  # [B, K]
        n_rel = rel_ptr[u + 1] - rel_ptr[u]
        for m in cfg.metrics:
            for k in cfg.ks:
                per_user[f"{m}@{k}"].append(METRIC_FUNCTIONS[m](hits, n_rel, k).double().cpu())
        bar.update(u.numel())
    bar.close()
    empty = torch.zeros(0, dtype=torch.float64)
    values = {key: torch.cat(v) if v else empty for key, v in per_user.items()}
    if size > 1:
        shares: list[Any] = [None] * size
        torch.distributed.all_gather_object(shares, values)
        values = {key: torch.cat([share[key] for share in shares]) for key in values}
    return users, values


def evaluate_rating(model, heldout: Interactions, batch: int = 1 << 16) -> dict[str, float]:
    """RMSE and MAE of ``model.predict(users, items)`` on held-out ratings."""
    num_users = int(heldout.user.max()) + 1 if len(heldout) else 0
    return _rating_totals(rating_per_user(model, heldout, num_users, batch))


def _rating_totals(errors: dict[str, torch.Tensor]) -> dict[str, float]:
    n = max(1, int(errors["n"].sum()))
    return {"rmse": math.sqrt(float(errors["se"].sum()) / n), "mae": float(errors["ae"].sum()) / n}


@torch.no_grad()
def rating_per_user(model, heldout: Interactions, num_users: int, batch: int = 1 << 16
                    ) -> dict[str, torch.Tensor]:
    """Each user's rating errors on the held-out ratings, as sums (so that RMSE and MAE over
    any set of users follow from them): ``{"se": [num_users] float64 (sum of squared errors),
    "ae": [num_users] float64 (sum of absolute errors), "n": [num_users] int64 (ratings)}``."""
    if heldout.rating is None:
        raise GraphrecError("rating metrics need held-out ratings; the data has none")
    se = torch.zeros(num_users, dtype=torch.float64)
    ae = torch.zeros(num_users, dtype=torch.float64)
    dev = device_of(model)
    scorer = model.scorer() if hasattr(model, "scorer") else model
    for s in range(0, len(heldout), batch):
        u = heldout.user[s:s + batch]
        pred = scorer.predict(u.to(dev), heldout.item[s:s + batch].to(dev)).double().cpu()
        err = pred - heldout.rating[s:s + batch].double()
        se.index_add_(0, u, err * err)
        ae.index_add_(0, u, err.abs())
    return {"se": se, "ae": ae, "n": torch.bincount(heldout.user, minlength=num_users)}


__all__ = ["EvalConfig", "evaluate", "evaluate_detailed", "evaluate_ranking", "evaluate_rating",
           "ranking_per_user", "rating_per_user", "topk_excluding", "csr_rows", "merge_csr",
           "RANKING_METRICS", "RATING_METRICS"]



def evaluate(model, split, part: str = "test", cfg: EvalConfig | None = None,
             index: "ItemIndex | None" = None, fold_in: str = "mean") -> dict[str, float]:
    """The averaged metrics of :func:`evaluate_detailed` (arguments as there)."""
    return evaluate_detailed(model, split, part, cfg, index, fold_in)[0]


def evaluate_detailed(model, split, part: str = "test", cfg: EvalConfig | None = None,
                      index: "ItemIndex | None" = None, fold_in: str = "mean"
                      ) -> tuple[dict[str, float], "PerUserMetrics"]:
    """Evaluate ``model`` on ``split.test`` (excluding training and validation items) or
    ``split.valid`` (excluding training items): ranking metrics, plus RMSE/MAE when the model
    predicts ratings and the held-out part has them. Returns ``(metrics, per_user)``: the
    averages, and each evaluated user's values
    (:class:`~graphrec.per_user.PerUserMetrics`, what ``graphrec compare`` tests). ``index``: rank through this index of the
    model's item vectors (see :func:`evaluate_ranking`).

    Models with ``uses_history`` score from the user's items before the held-out part: the
    training items for ``valid``, training then validation items for ``test``.

    Cold splits (:mod:`graphrec.split`), test part: a ``cold-items`` test ranks the cold items
    only, through models that serve new items; a ``cold-users`` test scores each cold user from
    the onboarding items alone (excluded from the ranking), through the model's new-user path
    (:class:`~graphrec.models.coldstart.NewUsers`, ``fold_in`` its method for retrievers)."""
    from graphrec.data.graph import user_sequences
    from graphrec.schema import ITEM, USER

    heldout = split.test if part == "test" else split.valid
    if heldout is None:
        raise GraphrecError(f"evaluation: the split has no {part} part")
    train = split.train
    num_users, num_items = int(train[USER].num_nodes), int(train[ITEM].num_nodes)
    seen = user_sequences(train)
    if part == "test" and split.valid is not None:
        seen = merge_csr(num_users, [seen, split.valid.csr(num_users)])
    exclude = seen
    if cfg is not None and not cfg.exclude_seen:
        exclude = (torch.zeros(num_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    history = seen if getattr(model, "uses_history", False) else None
    candidates = None
    if part == "test" and getattr(split, "cold_items", None) is not None:
        from graphrec.models.coldstart import check_new_items

        check_new_items(model)
        candidates = torch.zeros(num_items, dtype=torch.bool)
        candidates[split.cold_items] = True
    if part == "test" and getattr(split, "onboard", None) is not None:
        from graphrec.models.coldstart import NewUsers

        model = NewUsers(model, fold_in)
        exclude = history = split.onboard.csr(num_users)
    users, values = ranking_per_user(model, num_items, heldout, exclude, cfg, history, index,
                                     candidates)
    out = _averages(users, values)
    errors = None
    if getattr(model, "predicts_ratings", False) and heldout.rating is not None:
        errors = rating_per_user(model, heldout, num_users)
        out.update(_rating_totals(errors))
        errors = {k: v[users].numpy() for k, v in errors.items()}
    return out, PerUserMetrics(users.numpy(), {k: v.numpy() for k, v in values.items()}, errors)
