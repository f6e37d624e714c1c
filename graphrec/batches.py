"""Training batches, as tensor operations, for the one trainer.

A model says what its loss reads through ``batch_kind``; :func:`make_batches` builds the matching
source over the training graph. A source has ``num_examples`` and ``batch(idx, generator)``,
which turns indices into a shuffled epoch's slice into the keyword arguments of
``model.loss(**batch)``. The trainer owns the shuffling (so a resumed run replays the same
order); sources only gather and sample.

* ``pairs``: one example per training interaction: ``users [N]``, ``items [N]`` and
  ``negatives [N, M]`` sampled uniformly among the items the user has not interacted with.
* ``ratings``: ``users [N]``, ``items [N]``, ``ratings [N]`` (explicit feedback).
* ``sequences``: one example per user with at least two training items: ``seqs [N, L]``, the
  user's last ``L = model.window_length`` training items in time order, left-padded with
  ``model.pad`` (an index local to the sequence models); plus ``mask [N, L]`` (cloze positions,
  real ones only, at least one per window) when ``model.mask_prob > 0``, and ``negatives [N, M]``
  (items the user has not interacted with in training) when ``model.negatives_per_window > 0``.
  One window per user and epoch, its most recent items: the history before the window is not
  trained on (raise ``max_len`` for long histories).

Further kinds register in ``BATCH_KINDS``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.errors import GraphrecError
from graphrec.nn.transformer import tail_windows
from graphrec.sampling import NegativeSampler
from graphrec.schema import EDGE, ITEM, RATING, SEQ_ITEM, SEQ_PTR, USER


class Batches(Protocol):
    """A source of training batches over ``num_examples`` examples."""

    num_examples: int

    def batch(self, idx: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The loss arguments for examples ``idx [N]``."""
        ...


class PairBatches:
    """(user, positive item, sampled negatives) triples, one per training interaction."""

    def __init__(self, train: HeteroData, num_negatives: int = 1) -> None:
        store = train[EDGE]
        self.users, self.items = store.edge_index[0], store.edge_index[1]
        self.num_examples = int(self.users.numel())
        self.num_negatives = num_negatives
        self.sampler = NegativeSampler(train[USER][SEQ_PTR], train[USER][SEQ_ITEM],
                                       int(train[ITEM].num_nodes))

    def batch(self, idx: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        u = self.users[idx]
        return {"users": u, "items": self.items[idx],
                "negatives": self.sampler.sample(u, self.num_negatives, generator)}


class RatingBatches:
    """(user, item, rating) triples, one per training interaction."""

    def __init__(self, train: HeteroData) -> None:
        store = train[EDGE]
        if RATING not in store:
            raise GraphrecError("this model learns from ratings, and the data has none")
        self.users, self.items = store.edge_index[0], store.edge_index[1]
        self.ratings = store[RATING].float()
        self.num_examples = int(self.users.numel())

    def batch(self, idx: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return {"users": self.users[idx], "items": self.items[idx], "ratings": self.ratings[idx]}


class SequenceBatches:
    """The last ``length`` training items of each user with at least two, as gathered windows.

    Args:
        train: the training graph (its ``seq_ptr``/``seq_item``: training items only, so no
            held-out item can enter a window).
        length: window length.
        pad: the padding index.
        mask_prob: cloze masking rate (0: no masks).
        num_negatives: sampled negatives per window (0: none).
    """

    def __init__(self, train: HeteroData, length: int, pad: int, mask_prob: float = 0.0,
                 num_negatives: int = 0) -> None:
        self.ptr, self.items = train[USER][SEQ_PTR], train[USER][SEQ_ITEM]
        self.users = torch.nonzero(self.ptr.diff() >= 2).flatten()
        self.num_examples = int(self.users.numel())
        self.length, self.pad, self.mask_prob, self.num_negatives = length, pad, mask_prob, num_negatives
        self.sampler = (NegativeSampler(self.ptr, self.items, int(train[ITEM].num_nodes))
                        if num_negatives else None)

    def batch(self, idx: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        users = self.users[idx]
        seqs = tail_windows(self.ptr, self.items, users, self.length, self.pad)  # [N, L]
        out = {"seqs": seqs}
        if self.mask_prob > 0:
            real = seqs != self.pad
            mask = (torch.rand(seqs.shape, generator=generator) < self.mask_prob) & real
            mask[:, -1] |= ~mask.any(1)  # at least one per window; the last slot is always real
            out["mask"] = mask
        if self.sampler is not None:
            out["negatives"] = self.sampler.sample(users, self.num_negatives, generator)
        return out


#: batch kind -> factory(model, training graph, train config)
BATCH_KINDS: dict[str, Callable[[Any, HeteroData, Any], Batches]] = {
    "pairs": lambda model, train, cfg: PairBatches(train, cfg.num_negatives),
    "ratings": lambda model, train, cfg: RatingBatches(train),
    "sequences": lambda model, train, cfg: SequenceBatches(
        train, model.window_length, model.pad, getattr(model, "mask_prob", 0.0),
        getattr(model, "negatives_per_window", 0)),
}


def make_batches(model: Any, train: HeteroData, cfg: Any) -> Batches:
    """The batch source ``model.loss`` reads (``model.batch_kind``), over the CPU training graph."""
    kind = getattr(model, "batch_kind", "pairs")
    if kind not in BATCH_KINDS:
        raise GraphrecError(f"model {type(model).__name__}: unknown batch kind {kind!r}")
    return BATCH_KINDS[kind](model, train, cfg)


__all__ = ["Batches", "PairBatches", "RatingBatches", "SequenceBatches", "BATCH_KINDS", "make_batches"]
