"""Training batches, as tensor operations, for the one trainer.

A model says what its loss reads through ``batch_kind``; :func:`make_batches` builds the matching
source over the training graph. A source has ``num_examples`` and ``batch(idx, generator)``,
which turns indices into a shuffled epoch's slice into the keyword arguments of
``model.loss(**batch)``. The trainer owns the shuffling (so a resumed run replays the same
order); sources only gather and sample.

* ``pairs``: one example per training interaction: ``users [N]``, ``items [N]`` and
  ``negatives [N, M]`` sampled uniformly among the items the user has not interacted with.
* ``ratings``: ``users [N]``, ``items [N]``, ``ratings [N]`` (explicit feedback).

Further kinds (the sequence windows of the sequential models) register in ``BATCH_KINDS``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.errors import GraphrecError
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


#: batch kind -> factory(model, training graph, train config)
BATCH_KINDS: dict[str, Callable[[Any, HeteroData, Any], Batches]] = {
    "pairs": lambda model, train, cfg: PairBatches(train, cfg.num_negatives),
    "ratings": lambda model, train, cfg: RatingBatches(train),
}


def make_batches(model: Any, train: HeteroData, cfg: Any) -> Batches:
    """The batch source ``model.loss`` reads (``model.batch_kind``), over the CPU training graph."""
    kind = getattr(model, "batch_kind", "pairs")
    if kind not in BATCH_KINDS:
        raise GraphrecError(f"model {type(model).__name__}: unknown batch kind {kind!r}")
    return BATCH_KINDS[kind](model, train, cfg)


__all__ = ["Batches", "PairBatches", "RatingBatches", "BATCH_KINDS", "make_batches"]
