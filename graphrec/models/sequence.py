"""What SASRec and BERT4Rec share: a user's history as the model's input.

A sequence model scores a user from the user's time-ordered items, not from a user embedding:
``score(users, history)`` reads the :class:`~graphrec.batches.History` it is given, one row per
user. The evaluator and ``recommend`` pass the history of the moment they score for (the
training items when validating, training plus validation items when testing, every known
interaction when recommending). ``fit(train)`` keeps the training sequences as the history used
when none is given; they are buffers, so a saved model scores as it did. Nothing is swapped.

Item indices ``0..num_items-1`` are the graph's; ``pad = num_items`` (and BERT4Rec's mask token
``num_items + 1``) exist only inside these models.

Both are retrievers: the hidden state at the predicting position is the user vector and the
(tied) item embeddings are the item vectors, so faiss indexes serve them.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History, SequenceBatch, SequenceSpec
from graphrec.data.graph import user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history
from graphrec.nn.transformer import SequenceEncoder


class SequenceRecommender(Recommender):
    """Base of the sequence models: training histories, windows, scoring from the last position.

    Subclasses set ``self.encoder`` (a :class:`SequenceEncoder`), ``self.max_len``,
    ``self.window_length`` and implement :meth:`query_windows`, ``batch_spec`` and ``loss``.
    """

    trainable = True
    uses_history = True
    new_users = "history"  # the given items are the sequence
    #: per-model training defaults (Klenitskiy & Vasilev, RecSys 2023), under file and flags
    train_defaults = {"batch_size": 128, "lr": 1e-3, "patience": 10, "metric": "ndcg@10",
                      "epochs": 200}
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
        """Keep the training sequences as the default history."""
        ptr, items = user_sequences(train)
        self.history_ptr = ptr.to(self.history_ptr.device)
        self.history_items = items.to(self.history_ptr.device).clone()

    def item_weights(self) -> Tensor:
        """The output layer, tied to the item embeddings: ``[num_items, F]``."""
        return self.encoder.item.weight[: self.num_items]

    def history_of(self, users: Tensor, history: History | None) -> History:
        """``history``, or the users' training histories when it is ``None``."""
        check_history(self, users, history)
        if history is None:
            return History.of(self.history_ptr, self.history_items, users)
        return history.to(users.device)

    @abstractmethod
    def query_windows(self, history: History) -> Tensor:
        """The windows whose last position predicts the next item: ``[B, L]``."""

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """The hidden state at the predicting position, ``[B, F]``; never with dropout."""
        was_training = self.training
        self.eval()
        try:
            return self.encoder(self.query_windows(self.history_of(users, history)))[:, -1]
        finally:
            self.train(was_training)

    def item_vectors(self) -> Tensor:
        """The tied item embeddings, ``[num_items, F]``."""
        return self.item_weights()

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores of all items from the hidden state at the last position: ``[B, I]``."""
        return self.user_vectors(users, history) @ self.item_weights().T

    def forward(self, batch: SequenceBatch) -> Tensor:  # type: ignore[override]
        """The training loss of a batch of windows."""
        return self.loss(batch.seqs, **{k: v for k, v in (("mask", batch.mask),
                                                           ("negatives", batch.negatives))
                                        if v is not None})

    @abstractmethod
    def batch_spec(self) -> SequenceSpec: ...

    @abstractmethod
    def loss(self, seqs: Tensor, **extra: Tensor) -> Tensor: ...


__all__ = ["SequenceRecommender"]
