"""Splits: pure functions of the graph into a training graph and held-out interaction sets.

Every split first assigns each interaction exactly one part (train, valid, test, or dropped), so
no interaction can land in two parts and together they cover the graph; then the training graph
is rebuilt from the training edges only, so message passing never sees held-out edges.

Rules for small users (documented in the README):

* ``random`` / ``temporal``: a user with ``n`` interactions holds out ``round(n * test_ratio)``
  for test and ``round(n * valid_ratio)`` for validation, but always keeps at least one
  training interaction; a user too small for that keeps everything in training.
* ``leave-one-out``: the last interaction is test and the second-to-last validation; users with
  two interactions give only a test item, users with one keep it in training.
* ``time-cut``: interactions at or after the cut are held out; held-out interactions of users
  with no training interaction cannot be ranked by a collaborative model and are dropped (counted
  in :attr:`Split.dropped`).
* ``given``: the predefined parts of a LightGCN train/test pair; ``valid_ratio`` holds out a
  random per-user part of the training file for validation.
* ``cold-items``: ``test_ratio`` of the items (drawn by ``seed``) are held out with all their
  interactions, which become the test part; those items keep their nodes and side features
  but no training edge. Test interactions of users left with no training interaction are
  dropped (nothing to recommend from). Validation: ``valid_ratio`` of each user's remaining
  (warm) interactions, at random.
* ``cold-users``: ``test_ratio`` of the users with more than ``onboard`` interactions (drawn by
  ``seed``) are held out whole: each one's first ``onboard`` interactions in time (file order
  without timestamps) are the onboarding history (:attr:`Split.onboard`, what the user gives
  when signing up), the rest the test part. No interaction of theirs is a training edge.
  Validation: ``valid_ratio`` of each warm user's interactions, at random.

k-fold cross-validation (``folds`` >= 2, ``random`` only): each user's interactions are dealt
at random to ``folds`` disjoint folds of ``floor(n / k)`` or ``ceil(n / k)`` each (stratified
by user, as the random split is per user); fold ``fold`` is the test part, so across the folds
every interaction is tested exactly once. ``folds`` may not exceed the smallest user's
interaction count, so every user has a test item in every fold and keeps a training one.

In both cold splits the held-out users or items are listed in :attr:`Split.cold_users` /
:attr:`Split.cold_items`, and the evaluator ranks a cold-items test among the cold items only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch_geometric.data import HeteroData

from graphrec.data.graph import check_schema, edge_subgraph
from graphrec._callable import make_callable
from graphrec.errors import GraphrecError
from graphrec.names import SPLIT_METHODS
from graphrec.schema import EDGE, ITEM, PART, PART_TEST, PART_TRAIN, PART_VALID, RATING, TIME, USER

log = logging.getLogger(__name__)

DROPPED = 3  # part code of held-out interactions that cannot be evaluated (cold users)
ONBOARD = 4  # part code of a cold user's onboarding interactions (cold-users)


@dataclass
class SplitConfig:
    """How to split.

    Args:
        method: one of :data:`SPLIT_METHODS`.
        test_ratio: fraction held out for test (``random``, ``temporal``, ``time-cut``).
        valid_ratio: fraction held out for validation. ``None``: the commands and
            :func:`graphrec.split` (the API) resolve it with :func:`default_valid_ratio` (10%
            for a trained model); here, below them, a one-item validation part for
            ``leave-one-out`` and none otherwise. For
            ``leave-one-out`` any value above 0 turns the validation item on, 0 turns it off.
        time_cut: ``time-cut`` only: Unix seconds; interactions at or after it are test.
            ``None`` puts the cut at the ``1 - test_ratio`` quantile of all times.
        seed: random seed (``random``, the cold splits, and validation of ``given``).
        onboard: ``cold-users`` only: interactions each cold user gives as onboarding history.
        folds: k-fold cross-validation (``random`` only) with this many folds; ``0`` for none.
            ``test_ratio`` is then unused: fold ``fold`` is the test part.
        fold: with ``folds``: the fold held out for test, ``0 <= fold < folds``; ``None`` in a
            k-fold parent run's config (``graphrec train --folds`` runs every fold).
    """

    method: str = "random"
    test_ratio: float = 0.2
    valid_ratio: float | None = None
    time_cut: int | None = None
    seed: int = 0
    onboard: int = 5
    folds: int = 0
    fold: int | None = None


@dataclass
class Interactions:
    """A held-out set of (user, item[, rating]) pairs in dense indices, sorted by user."""

    user: torch.Tensor
    item: torch.Tensor
    rating: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.user.numel())

    def csr(self, num_users: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ptr [num_users + 1], item [len])``: each user's items as a CSR row."""
        counts = torch.bincount(self.user, minlength=num_users)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        order = torch.argsort(self.user, stable=True)
        return ptr, self.item[order]


@dataclass
class Split:
    """The result of a split: a training graph and the held-out parts."""

    train: HeteroData
    test: Interactions
    valid: Interactions | None = None
    dropped: int = 0  # held-out interactions of users with no training data (time-cut)
    parts: torch.Tensor | None = None  # [E] int8 part code of every interaction of the input
    onboard: Interactions | None = None  # cold-users: the cold users' onboarding interactions
    cold_users: torch.Tensor | None = None  # cold-users: the held-out users, sorted
    cold_items: torch.Tensor | None = None  # cold-items: the held-out items, sorted


def _check_ratio(name: str, value: float, low_open: bool) -> None:
    ok = (0 < value < 1) if low_open else (0 <= value < 1)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise GraphrecError(f"--{name.replace('_', '-')}: must lie in {interval}, got {value}")


def _rank_within_user(user: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Position of each edge among its user's edges when they are ordered by ``key``."""
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(user[order], stable=True)]
    counts = torch.bincount(user)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - start[user[order]]
    return rank


def _holdout_by_rank(user: torch.Tensor, rank: torch.Tensor, n: torch.Tensor, n_test: torch.Tensor,
                     n_valid: torch.Tensor) -> torch.Tensor:
    """Parts from per-user ranks: the ``n_test`` lowest ranks test, the next ``n_valid`` valid."""
    n_test = torch.minimum(n_test, (n - 1).clamp(min=0))
    n_valid = torch.minimum(n_valid, (n - 1 - n_test).clamp(min=0))
    part = torch.full_like(user, PART_TRAIN, dtype=torch.int8)
    part[rank < n_test[user]] = PART_TEST
    part[(rank >= n_test[user]) & (rank < (n_test + n_valid)[user])] = PART_VALID
    return part


def _recency_rank(graph: HeteroData, user: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """0 for each user's latest interaction, 1 for the one before, ...: by time, ties and
    untimed edges in edge order (a later edge counts as more recent)."""
    store = graph[EDGE]
    key = store[TIME] if TIME in store else torch.zeros_like(user)
    return n[user] - 1 - _rank_within_user(user, key)


def _ratio_counts(n: torch.Tensor, ratio: float) -> torch.Tensor:
    return torch.floor(n.double() * ratio + 0.5).long()  # round half up, same on every platform


def assign_parts(graph: HeteroData, cfg: SplitConfig) -> torch.Tensor:
    """The part code (0 train, 1 valid, 2 test, 3 dropped) of every interaction, as ``[E]`` int8.

    Deterministic given ``cfg.seed``.
    """
    if cfg.method not in SPLIT_METHODS:
        raise GraphrecError(f"--split: unknown method {cfg.method!r}; choose one of "
                            f"{', '.join(SPLIT_METHODS)}")
    check_schema(graph, "split")
    store = graph[EDGE]
    user = store.edge_index[0]
    num_users = int(graph[USER].num_nodes)
    n = torch.bincount(user, minlength=num_users)
    gen = torch.Generator().manual_seed(cfg.seed)
    valid_ratio = cfg.valid_ratio

    if cfg.folds:
        return _fold_parts(user, n, cfg, gen)

    if cfg.method in ("random", "temporal"):
        _check_ratio("test_ratio", cfg.test_ratio, True)
        valid_ratio = valid_ratio or 0.0
        _check_ratio("valid_ratio", valid_ratio, False)
        if cfg.test_ratio + valid_ratio >= 1:
            raise GraphrecError("--test-ratio plus --valid-ratio must be below 1")
        if cfg.method == "random":
            rank = _rank_within_user(user, torch.rand(user.numel(), generator=gen))
        else:
            if TIME not in store:
                log.warning("the data has no timestamps: the temporal split uses file order")
            rank = _recency_rank(graph, user, n)
        return _holdout_by_rank(user, rank, n, _ratio_counts(n, cfg.test_ratio),
                                _ratio_counts(n, valid_ratio))

    if cfg.method == "leave-one-out":
        if TIME not in store:
            log.warning("the data has no timestamps: leave-one-out takes the last item in file order")
        rank = _recency_rank(graph, user, n)
        with_valid = valid_ratio is None or valid_ratio > 0
        return _holdout_by_rank(user, rank, n, torch.ones_like(n),
                                torch.full_like(n, int(with_valid)))

    if cfg.method == "time-cut":
        if TIME not in store:
            raise GraphrecError("--split time-cut: the data has no timestamps")
        time = store[TIME]
        valid_ratio = valid_ratio or 0.0
        _check_ratio("valid_ratio", valid_ratio, False)
        if cfg.time_cut is not None:
            test_cut = torch.tensor(int(cfg.time_cut))
            valid_cut = test_cut
            if valid_ratio > 0:
                raise GraphrecError("--valid-ratio: with an explicit --time-cut there is no "
                                    "validation cut; leave --valid-ratio out")
        else:
            _check_ratio("test_ratio", cfg.test_ratio, True)
            if cfg.test_ratio + valid_ratio >= 1:
                raise GraphrecError("--test-ratio plus --valid-ratio must be below 1")
            t = time.double()
            test_cut = torch.quantile(t, 1 - cfg.test_ratio, interpolation="higher")
            valid_cut = torch.quantile(t, 1 - cfg.test_ratio - valid_ratio, interpolation="higher")
        part = torch.full_like(user, PART_TRAIN, dtype=torch.int8)
        part[time >= valid_cut] = PART_VALID
        part[time >= test_cut] = PART_TEST
        has_train = torch.bincount(user[part == PART_TRAIN], minlength=num_users) > 0
        part[(part != PART_TRAIN) & ~has_train[user]] = DROPPED
        return part

    if cfg.method in ("cold-items", "cold-users"):
        return _cold_parts(graph, cfg, user, n, gen)

    # given
    if PART not in store or not (store[PART] == PART_TEST).any():
        raise GraphrecError("--split given: the data has no predefined test part (it comes with "
                            "a LightGCN train.txt/test.txt pair)")
    part = store[PART].clone().to(torch.int8)
    valid_ratio = valid_ratio or 0.0
    _check_ratio("valid_ratio", valid_ratio, False)
    if valid_ratio > 0:
        train = part == PART_TRAIN
        rank = _rank_within_user(user[train], torch.rand(int(train.sum()), generator=gen))
        n_train = torch.bincount(user[train], minlength=num_users)
        sub = _holdout_by_rank(user[train], rank, n_train, torch.zeros_like(n_train),
                               _ratio_counts(n_train, valid_ratio))
        part[train] = sub
    return part


#: split methods with k-fold cross-validation
FOLD_METHODS = ("random",)


def check_folds(folds: int, method: str) -> None:
    """One-line errors for a ``--folds`` value that no data could satisfy."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise GraphrecError(f"--folds: must be an integer >= 2, got {folds!r}")
    if method not in FOLD_METHODS:
        raise GraphrecError(f"--folds: the {method} split has no folds; k-fold cross-validation "
                            f"works with --split {' or '.join(FOLD_METHODS)}")


def _fold_parts(user: torch.Tensor, n: torch.Tensor, cfg: SplitConfig,
                gen: torch.Generator) -> torch.Tensor:
    """Per-user k-fold parts: each user's interactions, in a random order, are dealt to the
    folds in turn from a random first fold, so fold ``f`` holds ``floor(n / k)`` or
    ``ceil(n / k)`` of every user's ``n`` interactions and the folds are disjoint and cover
    the data. Fold ``cfg.fold`` is the test part; ``valid_ratio`` of each user's remaining
    interactions, at random, is the validation part."""
    k = cfg.folds
    check_folds(k, cfg.method)
    if cfg.fold is None or isinstance(cfg.fold, bool) or not 0 <= cfg.fold < k:
        raise GraphrecError(f"--fold: must lie in [0, {k}) with --folds {k}, got {cfg.fold!r}")
    smallest = int(n[n > 0].min())
    if k > smallest:
        raise GraphrecError(f"--folds: {k} is above the smallest user's interaction count "
                            f"({smallest}); per-user folds need every user in every fold")
    valid_ratio = cfg.valid_ratio or 0.0
    _check_ratio("valid_ratio", valid_ratio, False)
    rank = _rank_within_user(user, torch.rand(user.numel(), generator=gen))
    first = torch.randint(k, (n.numel(),), generator=gen)  # balances fold sizes over users
    fold = (rank + first[user]) % k  # [E]
    # the validation draw depends on the fold, so fold f's validation part is its own
    vgen = torch.Generator().manual_seed(cfg.seed * 1000003 + cfg.fold + 1)
    part = torch.full_like(user, PART_TEST, dtype=torch.int8)
    rest = fold != cfg.fold
    n_rest = torch.bincount(user[rest], minlength=n.numel())
    vrank = _rank_within_user(user[rest], torch.rand(int(rest.sum()), generator=vgen))
    part[rest] = _holdout_by_rank(user[rest], vrank, n_rest, torch.zeros_like(n_rest),
                                  _ratio_counts(n_rest, valid_ratio))
    return part


def cold_members(graph: HeteroData, cfg: SplitConfig) -> torch.Tensor:
    """The held-out users (``cold-users``) or items (``cold-items``) of ``cfg``, sorted: a
    ``round(test_ratio * eligible)`` draw by ``cfg.seed`` (eligible: every item; the users with
    more than ``onboard`` interactions)."""
    _check_ratio("test_ratio", cfg.test_ratio, True)
    user, item = graph[EDGE].edge_index
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.method == "cold-items":
        pool = torch.arange(int(graph[ITEM].num_nodes))
    else:
        if isinstance(cfg.onboard, bool) or not isinstance(cfg.onboard, int) or cfg.onboard < 0:
            raise GraphrecError(f"--onboard: must be an integer >= 0, got {cfg.onboard!r}")
        n = torch.bincount(user, minlength=int(graph[USER].num_nodes))
        pool = torch.nonzero(n > cfg.onboard).flatten()
        if pool.numel() == 0:
            raise GraphrecError(f"--split cold-users: no user has more than --onboard "
                                f"{cfg.onboard} interactions")
    count = int(_ratio_counts(torch.tensor([pool.numel()]), cfg.test_ratio)[0])
    if count == 0:
        raise GraphrecError(f"--split {cfg.method}: --test-ratio {cfg.test_ratio} of "
                            f"{pool.numel()} holds out nothing")
    if count >= pool.numel() and cfg.method == "cold-items":
        raise GraphrecError(f"--split cold-items: --test-ratio {cfg.test_ratio} holds out every "
                            "item and leaves no training data")
    return pool[torch.randperm(pool.numel(), generator=gen)[:count]].sort().values


def _cold_parts(graph: HeteroData, cfg: SplitConfig, user: torch.Tensor, n: torch.Tensor,
                gen: torch.Generator) -> torch.Tensor:
    valid_ratio = cfg.valid_ratio or 0.0
    _check_ratio("valid_ratio", valid_ratio, False)
    members = cold_members(graph, cfg)
    store = graph[EDGE]
    node = store.edge_index[1] if cfg.method == "cold-items" else user
    size = int(graph[ITEM if cfg.method == "cold-items" else USER].num_nodes)
    is_cold = torch.zeros(size, dtype=torch.bool)
    is_cold[members] = True
    cold = is_cold[node]  # [E] the held-out interactions
    part = torch.full_like(user, PART_TRAIN, dtype=torch.int8)
    if cfg.method == "cold-items":
        part[cold] = PART_TEST
        warm_n = torch.bincount(user[~cold], minlength=n.numel())
        part[cold & (warm_n[user] == 0)] = DROPPED
    else:
        if cfg.onboard > 0 and TIME not in store:
            log.warning("the data has no timestamps: cold-users onboard with the first items "
                        "in file order")
        first = (n[user] - 1 - _recency_rank(graph, user, n)) < cfg.onboard  # oldest first
        part[cold] = PART_TEST
        part[cold & first] = ONBOARD
    if valid_ratio > 0:  # a warm validation part, for early stopping
        warm = ~cold
        rank = _rank_within_user(user[warm], torch.rand(int(warm.sum()), generator=gen))
        n_warm = torch.bincount(user[warm], minlength=n.numel())
        part[warm] = _holdout_by_rank(user[warm], rank, n_warm, torch.zeros_like(n_warm),
                                      _ratio_counts(n_warm, valid_ratio))
    return part


#: the validation fraction a trained model's run carves from the training data by default
DEFAULT_VALID_RATIO = 0.1


def default_valid_ratio(graph: HeteroData, cfg: SplitConfig, trainable: bool = True) -> float | None:
    """What ``valid_ratio=None`` means for a run: a validation part for early stopping when the
    model is trained and the split has none of its own (:data:`DEFAULT_VALID_RATIO` of each
    user's interactions; ``None``, the one-item default, for ``leave-one-out``), else 0 (a
    training-free model keeps every training interaction; an explicit ``--time-cut`` and a
    predefined validation part leave nothing to carve)."""
    store = graph[EDGE]
    has_valid = PART in store and bool((store[PART] == PART_VALID).any())
    if not trainable or (cfg.method == "given" and has_valid) or (
            cfg.method == "time-cut" and cfg.time_cut is not None):
        return 0.0
    return None if cfg.method == "leave-one-out" else DEFAULT_VALID_RATIO


def default_method(graph: HeteroData) -> str:
    """``given`` when ``graph`` carries a predefined test part, else ``random``."""
    store = graph[EDGE]
    return "given" if PART in store and bool((store[PART] == PART_TEST).any()) else "random"


def split(graph: HeteroData, cfg: SplitConfig) -> Split:
    """Split ``graph`` by ``cfg`` into a training graph (training edges only, sequences rebuilt)
    and held-out test and validation interactions."""
    part = assign_parts(graph, cfg)
    if not (part == PART_TRAIN).any():
        raise GraphrecError(f"--split {cfg.method}: the split leaves no training data")
    if not (part == PART_TEST).any():
        raise GraphrecError(f"--split {cfg.method}: the split leaves no test data "
                            "(too few interactions per user for this ratio?)")
    dropped = int((part == DROPPED).sum())
    if dropped:
        log.warning("%d held-out interactions belong to users with no training data and are "
                    "left out of evaluation", dropped)
    store = graph[EDGE]

    def held(code: int) -> Interactions:
        mask = part == code
        rating = store[RATING][mask] if RATING in store else None
        return Interactions(store.edge_index[0][mask], store.edge_index[1][mask], rating)

    valid = held(PART_VALID) if (part == PART_VALID).any() else None
    out = Split(edge_subgraph(graph, part == PART_TRAIN), held(PART_TEST), valid, dropped, part)
    if cfg.method == "cold-users":
        out.onboard = held(ONBOARD)
        out.cold_users = cold_members(graph, cfg)
    elif cfg.method == "cold-items":
        out.cold_items = cold_members(graph, cfg)
    return out


__all__ = ["SPLIT_METHODS", "FOLD_METHODS", "SplitConfig", "check_folds", "Interactions", "Split", "assign_parts",
           "cold_members", "default_method", "split"]

# ``gr.split(...)``: this module, called, is graphrec.api.split (graphrec/_callable.py)
make_callable(__name__)
