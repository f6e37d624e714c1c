"""What SASRec and BERT4Rec share: a user's history as the model's input.

A sequence model scores a user from the user's time-ordered items, not from a user embedding.
``fit(train)`` takes the training sequences (``seq_ptr``/``seq_item`` of the training graph's
user store) as the default history; the evaluator and ``recommend`` hand over the history that
fits the moment they score for with :meth:`set_history` (see :func:`graphrec.models.base.history`):
the training items when validating, training plus validation items when testing, every known
interaction when recommending. The history is a buffer, so a saved model scores as it did.

Item indices ``0..num_items-1`` are the graph's; ``pad = num_items`` (and BERT4Rec's mask token
``num_items + 1``) exist only inside these models.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.nn.transformer import SequenceEncoder, tail_windows
from graphrec.schema import SEQ_ITEM, SEQ_PTR, USER


class SequenceRecommender(Recommender):
    """Base of the sequence models: history buffers, windows, scoring from the last position.

    Subclasses set ``self.encoder`` (a :class:`SequenceEncoder`), ``self.max_len`` and
    implement :meth:`query_windows` and ``loss``.
    """

    trainable = True
    uses_history = True
    batch_kind = "sequences"
    #: per-model training defaults (Klenitskiy & Vasilev, RecSys 2023), under file and flags
    train_defaults = {"batch_size": 128, "lr": 1e-3, "patience": 10, "metric": "ndcg@10",
                      "epochs": 200}
    #: what the ``sequences`` batches carry: window length, cloze mask rate, negatives per window
    window_length: int
    mask_prob: float = 0.0
    negatives_per_window: int = 0
    encoder: SequenceEncoder

    def __init__(self, num_users: int, num_items: int, max_len: int) -> None:
        super().__init__(num_users, num_items)
        if max_len < 2:
            raise GraphrecError(f"{type(self).__name__.lower()}: max_len must be at least 2, got {max_len}")
        self.max_len = max_len
        self.pad = num_items
        self.register_buffer("history_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("history_items", torch.zeros(0, dtype=torch.long))

    def fit(self, train: HeteroData) -> None:
        """Take the training sequences as the default history."""
        self.set_history(train[USER][SEQ_PTR], train[USER][SEQ_ITEM])

    def set_history(self, ptr: Tensor, items: Tensor) -> None:
        """Score from these per-user, time-ordered items: CSR ``ptr [U + 1]``, ``items``."""
        if ptr.numel() != self.num_users + 1:
            raise GraphrecError(f"history: expected {self.num_users + 1} row pointers, got {ptr.numel()}")
        device = self.history_ptr.device
        self.history_ptr, self.history_items = ptr.to(device), items.to(device)

    def get_history(self) -> tuple[Tensor, Tensor]:
        return self.history_ptr, self.history_items

    def item_weights(self) -> Tensor:
        """The output layer, tied to the item embeddings: ``[num_items, F]``."""
        return self.encoder.item.weight[: self.num_items]

    def windows(self, users: Tensor, length: int) -> Tensor:
        """The last ``length`` history items of ``users``, left-padded: ``[B, length]``."""
        return tail_windows(self.history_ptr, self.history_items, users, length, self.pad)

    @abstractmethod
    def query_windows(self, users: Tensor) -> Tensor:
        """The windows whose last position predicts the next item: ``[B, L]``."""

    def score(self, users: Tensor) -> Tensor:
        """Scores of all items from the hidden state at the last position; never with dropout."""
        was_training = self.training
        self.eval()
        try:
            h = self.encoder(self.query_windows(users))[:, -1]  # [B, F]
            return h @ self.item_weights().T  # [B, I]
        finally:
            self.train(was_training)


__all__ = ["SequenceRecommender"]
