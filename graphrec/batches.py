"""Typed batches for the one trainer, and the per-user histories models score from.

A trainable model declares the batches its ``forward`` reads with :meth:`batch_spec` (a
:data:`BatchSpec`); :func:`make_batches` builds the matching source over the training graph. A
source has ``num_examples`` and ``batch(idx, generator)``, which turns indices into a shuffled
epoch's slice into one typed batch (:class:`PairBatch`, :class:`RatingBatch`,
:class:`SequenceBatch`), all tensor gathers and vectorized sampling. The trainer owns the
shuffling (so a resumed run replays the same order) and moves each batch with ``.to(device)``;
sources only gather and sample, on the CPU.

* :class:`PairSpec`: one example per training interaction: ``users [N]``, ``items [N]`` and
  ``negatives [N, M]`` sampled uniformly among the items the user has not interacted with
  (``M``: the trainer's ``num_negatives``).
* :class:`RatingSpec`: ``users [N]``, ``items [N]``, ``ratings [N]`` (explicit feedback).
* :class:`SequenceSpec`: one example per user with at least two training items: ``seqs [N, L]``,
  the user's last ``L`` training items in time order, left-padded with ``pad`` (an index local
  to the sequence models); plus ``mask [N, L]`` (cloze positions, real ones only, at least one
  per window) when ``mask_prob > 0``, and ``negatives [N, M]`` (items the user has not
  interacted with in training) when ``num_negatives > 0``. One window per user and epoch, its
  most recent items: the history before the window is not trained on.

:class:`History` is what ``score(users, history)`` reads: each batch row's time-ordered items as
a CSR over the batch's rows, passed in by the caller (the evaluator, ``recommend``), never
swapped into the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.nn.transformer import tail_windows
from graphrec.sampling import NegativeSampler
from graphrec.schema import EDGE, ITEM, RATING

T = TypeVar("T")


class _Tensors:
    """``.to(device)`` for a dataclass of tensors (``None`` fields stay ``None``)."""

    def to(self: T, device: torch.device | str, non_blocking: bool = False) -> T:
        """The same batch with every tensor on ``device``."""
        return dataclasses.replace(self, **{  # type: ignore[type-var]
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v)
            for f in dataclasses.fields(self) for v in [getattr(self, f.name)]})  # type: ignore[arg-type]


@dataclass
class PairBatch(_Tensors):
    """(user, positive item, sampled negatives): ``users [N]``, ``items [N]``, ``negatives [N, M]``;
    with popularity negatives also ``log_q_pos [N]`` and ``log_q_neg [N, M]``, the log
    probability of one draw of each item (for the logQ correction of sampled softmax).

    With a shared pool (:attr:`PairSpec.pool`) ``negatives [M]`` is one pool for the whole
    batch, ``hits [N, M]`` marks the pool items that are training positives of the row's user
    (the loss leaves them out: they are not negatives), and ``log_q_pos [N]``, ``log_q_neg [M]``
    are the log expected count of each item in the pool."""

    users: Tensor
    items: Tensor
    negatives: Tensor
    log_q_pos: Tensor | None = None
    log_q_neg: Tensor | None = None
    hits: Tensor | None = None


@dataclass
class RatingBatch(_Tensors):
    """Explicit feedback: ``users [N]``, ``items [N]``, ``ratings [N]`` (float32)."""

    users: Tensor
    items: Tensor
    ratings: Tensor


@dataclass
class SequenceBatch(_Tensors):
    """Left-padded windows ``seqs [N, L]``; cloze ``mask [N, L]`` and ``negatives [N, M]`` where
    the spec asks for them."""

    seqs: Tensor
    mask: Tensor | None = None
    negatives: Tensor | None = None


Batch = Union[PairBatch, RatingBatch, SequenceBatch]


#: shared negative pools of :class:`PairSpec`: ``uniform`` (``num_negatives`` items drawn
#: once per batch), ``in-batch`` (the batch's positives: popularity-distributed, free),
#: ``mixed`` (both, Yang et al., WWW 2020)
POOLS = ("uniform", "in-batch", "mixed")


@dataclass(frozen=True)
class PairSpec:
    """Pairs with sampled negatives; how many per positive is the trainer's ``num_negatives``.

    Args:
        popularity: ``None`` for uniform negatives; else negatives are drawn in proportion to
            each item's training degree to this power (0.75: word2vec's), and batches carry
            their log-probabilities.
        pool: ``None``: ``num_negatives`` negatives per example, never a positive of its user.
            Else one pool per batch (:data:`POOLS`), shared by all its examples: ``M`` scores
            per example cost one ``[N, F] @ [F, M]`` product instead of ``N * M`` gathered
            rows, which is what makes hundreds of negatives affordable on a CPU. Pool items
            that are positives of a row's user are marked in ``hits``.
    """

    popularity: float | None = None
    pool: str | None = None

    def __post_init__(self) -> None:
        if self.pool is not None and self.pool not in POOLS:
            raise GraphrecError(f"negatives pool must be one of {', '.join(POOLS)}, got {self.pool!r}")


#: the ``negatives`` option of pair-trained models: per example ``uniform`` or ``popularity``
#: (degree to a power), or a pool shared by the batch: ``shared`` (uniform), ``in-batch``,
#: ``mixed`` (see :data:`POOLS`)
NEGATIVES = ("uniform", "popularity", "shared", "in-batch", "mixed")


def pair_spec(negatives: str, power: float = 0.75, what: str = "model") -> PairSpec:
    """The :class:`PairSpec` of a model's ``negatives`` option (:data:`NEGATIVES`);
    ``power``: the popularity exponent of ``popularity``."""
    if negatives not in NEGATIVES:
        raise GraphrecError(f"{what}: negatives must be one of {', '.join(NEGATIVES)}, "
                            f"got {negatives!r}")
    if negatives == "popularity":
        if not power >= 0:
            raise GraphrecError(f"{what}: negatives_power must be >= 0, got {power}")
        return PairSpec(popularity=power)
    if negatives == "uniform":
        return PairSpec()
    return PairSpec(pool="uniform" if negatives == "shared" else negatives)


@dataclass(frozen=True)
class RatingSpec:
    """(user, item, rating) triples; the data must have ratings."""


@dataclass(frozen=True)
class SequenceSpec:
    """Args:
        length: window length ``L``.
        pad: the padding index (the model's own, never a graph node).
        mask_prob: cloze masking rate (0: no masks).
        num_negatives: sampled negatives per window (0: none).
    """

    length: int
    pad: int
    mask_prob: float = 0.0
    num_negatives: int = 0


BatchSpec = Union[PairSpec, RatingSpec, SequenceSpec]


@dataclass
class History(_Tensors):
    """Time-ordered items of a batch of users: row ``b`` holds ``items[ptr[b]:ptr[b + 1]]``.

    ``ptr [B + 1]`` (int64, starting at 0) and ``items [N]`` (int64 item indices), aligned with
    the ``users [B]`` passed next to it. A row may be empty.
    """

    ptr: Tensor
    items: Tensor

    def __post_init__(self) -> None:
        if self.ptr.dim() != 1 or self.ptr.numel() < 1:
            raise GraphrecError("history: ptr must be a 1-d tensor of B + 1 row pointers")

    @property
    def num_rows(self) -> int:
        """``B``, the number of rows."""
        return self.ptr.numel() - 1

    @classmethod
    def of(cls, ptr: Tensor, items: Tensor, users: Tensor) -> "History":
        """Rows ``users [B]`` of a CSR over all users, ``(ptr [U + 1], items)``, gathered by
        index arithmetic (no per-user loop), on ``users``' device."""
        dev = users.device
        ptr, items = ptr.to(dev), items.to(dev)
        start, counts = ptr[users], ptr[users + 1] - ptr[users]
        out = torch.zeros(users.numel() + 1, dtype=torch.long, device=dev)
        out[1:] = counts.cumsum(0)
        total = int(out[-1])
        offset = torch.repeat_interleave(start - out[:-1], counts, output_size=total)
        return cls(out, items[offset + torch.arange(total, device=dev)])

    @classmethod
    def from_lists(cls, rows: list[list[int]], device: torch.device | str = "cpu") -> "History":
        """From Python lists of item indices, one per row (for a handful of users at a time)."""
        counts = torch.tensor([len(r) for r in rows], dtype=torch.long)
        ptr = torch.zeros(len(rows) + 1, dtype=torch.long)
        ptr[1:] = counts.cumsum(0)
        items = torch.tensor([i for r in rows for i in r], dtype=torch.long)
        return cls(ptr.to(device), items.to(device))

    def windows(self, length: int, pad: int) -> Tensor:
        """The last ``length`` items of every row, left-padded with ``pad``: ``[B, length]``."""
        rows = torch.arange(self.num_rows, device=self.ptr.device)
        return tail_windows(self.ptr, self.items, rows, length, pad)


class Batches(Protocol):
    """A source of training batches over ``num_examples`` examples."""

    num_examples: int

    def batch(self, idx: Tensor, generator: torch.Generator) -> Batch:
        """The batch of examples ``idx [N]``."""
        ...


class PairBatches:
    """(user, positive item, sampled negatives) triples, one per training interaction."""

    def __init__(self, train: HeteroData, num_negatives: int = 1,
                 popularity: float | None = None, pool: str | None = None) -> None:
        store = train[EDGE]
        self.users, self.items = store.edge_index[0], store.edge_index[1]
        self.num_examples = int(self.users.numel())
        self.num_negatives = num_negatives
        num_items = int(train[ITEM].num_nodes)
        weights = None
        if popularity is not None:
            if popularity < 0:
                raise GraphrecError(f"popularity negatives: the power must be >= 0, got {popularity}")
            weights = torch.bincount(self.items, minlength=num_items).double() ** popularity
        self.sampler = NegativeSampler(*user_sequences(train), num_items, weights)
        self.pool = pool
        if pool is not None:  # each item's share of the training positives: in-batch's q
            self.pop_share = torch.bincount(self.items, minlength=num_items).double() \
                / max(1, self.num_examples)

    def _pooled(self, u: Tensor, items: Tensor, generator: torch.Generator) -> PairBatch:
        """One shared pool; ``log q`` of an item is the log of its expected count in the pool:
        ``N * share(i)`` from the in-batch part plus ``M * q(i)`` from the drawn part."""
        parts, expected = [], torch.zeros_like(self.pop_share)
        if self.pool in ("in-batch", "mixed"):
            parts.append(items)
            expected = expected + items.numel() * self.pop_share
        if self.pool in ("uniform", "mixed"):
            parts.append(self.sampler.draw((self.num_negatives,), generator, u.device))
            q = (self.sampler.probs if self.sampler.weighted
                 else torch.full_like(expected, 1.0 / expected.numel()))
            expected = expected + self.num_negatives * q
        pool = torch.cat(parts)
        log_q = expected.clamp_min(1e-30).log().float()
        return PairBatch(u, items, pool, log_q[items], log_q[pool], self.sampler.hits(u, pool))

    def batch(self, idx: Tensor, generator: torch.Generator) -> PairBatch:
        u, items = self.users[idx], self.items[idx]
        if self.pool is not None:
            return self._pooled(u, items, generator)
        negatives = self.sampler.sample(u, self.num_negatives, generator)
        if not self.sampler.weighted:
            return PairBatch(u, items, negatives)
        return PairBatch(u, items, negatives, self.sampler.log_prob(items),
                         self.sampler.log_prob(negatives))


class RatingBatches:
    """(user, item, rating) triples, one per training interaction."""

    def __init__(self, train: HeteroData) -> None:
        store = train[EDGE]
        if RATING not in store:
            raise GraphrecError("this model learns from ratings, and the data has none")
        self.users, self.items = store.edge_index[0], store.edge_index[1]
        self.ratings = store[RATING].float()
        self.num_examples = int(self.users.numel())

    def batch(self, idx: Tensor, generator: torch.Generator) -> RatingBatch:
        return RatingBatch(self.users[idx], self.items[idx], self.ratings[idx])


class SequenceBatches:
    """The last ``length`` training items of each user with at least two, as gathered windows.

    Args:
        train: the training graph (its edges: training items only, so no held-out item can
            enter a window).
        length: window length.
        pad: the padding index.
        mask_prob: cloze masking rate (0: no masks).
        num_negatives: sampled negatives per window (0: none).
    """

    def __init__(self, train: HeteroData, length: int, pad: int, mask_prob: float = 0.0,
                 num_negatives: int = 0) -> None:
        self.ptr, self.items = user_sequences(train)
        self.users = torch.nonzero(self.ptr.diff() >= 2).flatten()
        self.num_examples = int(self.users.numel())
        self.length, self.pad, self.mask_prob, self.num_negatives = length, pad, mask_prob, num_negatives
        self.sampler = (NegativeSampler(self.ptr, self.items, int(train[ITEM].num_nodes))
                        if num_negatives else None)

    def batch(self, idx: Tensor, generator: torch.Generator) -> SequenceBatch:
        users = self.users[idx]
        seqs = tail_windows(self.ptr, self.items, users, self.length, self.pad)  # [N, L]
        out = SequenceBatch(seqs)
        if self.mask_prob > 0:
            real = seqs != self.pad
            mask = (torch.rand(seqs.shape, generator=generator) < self.mask_prob) & real
            mask[:, -1] |= ~mask.any(1)  # at least one per window; the last slot is always real
            out.mask = mask
        if self.sampler is not None:
            out.negatives = self.sampler.sample(users, self.num_negatives, generator)
        return out


#: spec type -> factory(spec, training graph, negatives per positive)
SOURCES: dict[type, Callable[[object, HeteroData, int], Batches]] = {
    PairSpec: lambda spec, train, num_negatives: PairBatches(
        train, num_negatives, spec.popularity, spec.pool),  # type: ignore[attr-defined]
    RatingSpec: lambda spec, train, num_negatives: RatingBatches(train),
    SequenceSpec: lambda spec, train, num_negatives: SequenceBatches(
        train, spec.length, spec.pad, spec.mask_prob, spec.num_negatives),  # type: ignore[attr-defined]
}


def make_batches(spec: BatchSpec, train: HeteroData, num_negatives: int = 1) -> Batches:
    """The batch source for ``spec`` over the (CPU) training graph; ``num_negatives``: negatives
    per positive of :class:`PairSpec` batches."""
    factory = SOURCES.get(type(spec))
    if factory is None:
        raise GraphrecError(f"unknown batch spec {spec!r}")
    return factory(spec, train, num_negatives)


__all__ = ["PairBatch", "RatingBatch", "SequenceBatch", "Batch", "PairSpec", "RatingSpec",
           "SequenceSpec", "BatchSpec", "POOLS", "NEGATIVES", "pair_spec", "History", "Batches", "PairBatches", "RatingBatches",
           "SequenceBatches", "SOURCES", "make_batches"]
