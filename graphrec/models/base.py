"""The model contract every graphrec model follows, and the capabilities that make it a stage.

* ``fit(train)``: closed-form models (popularity, graph filters) compute what they need from the
  training graph; every model keeps from it what scoring needs (the graph family its
  propagation adjacency, the sequence models the training histories). The graph stays where
  the caller keeps it (the CPU); the model copies what it needs to its own device.
* ``forward(batch) -> loss``: trainable models only. The trainer calls the module itself
  (``loss = model(batch)``), so DistributedDataParallel, ``torch.compile`` and module hooks see
  the work. ``batch_spec()`` declares which typed batch ``forward`` reads
  (:mod:`graphrec.batches`).
* ``score(users, history=None) -> [B, num_items]``: scores of every item, higher is better.
  ``history`` (:class:`~graphrec.batches.History`, one row per user) is the time-ordered items
  the caller scores from; models with ``uses_history`` read it (``None``: the training
  histories), the others ignore it. Nothing is swapped into the model.
* ``predict(users, items) -> [N]``: rating predictions, only where ``predicts_ratings``.
* ``scorer()``: what a caller holds for one round of scoring: the model itself, or, where every
  call would repeat the same work (the graph family's propagation over the whole graph), an
  object that did it once and answers the same methods. The caller owns it and drops it; the
  model keeps no cache.

Capabilities (:class:`Retriever`, :class:`Ranker`) are protocols, checked with ``isinstance``:
a retriever's scores are inner products of user and item vectors, so faiss indexes
(:mod:`graphrec.serve.index`) can serve it; a ranker scores given candidates.

Flags are class constants and never change per instance: ``trainable``, ``predicts_ratings``,
``uses_history``, ``train_defaults``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import Batch, BatchSpec, History
from graphrec.errors import GraphrecError


@runtime_checkable
class Retriever(Protocol):
    """Scores are inner products: ``score(users, history) == user_vectors(users, history) @
    item_vectors().T``. The model folds its own biases into the vectors, so no caller reaches
    into its parameters."""

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F]`` query vectors of ``users [B]``."""
        ...

    def item_vectors(self) -> Tensor:
        """``[num_items, F]`` vectors of every item."""
        ...


@runtime_checkable
class Ranker(Protocol):
    """Scores given candidates: ``score_candidates(users [B], items [B, C]) -> [B, C]``."""

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        """Scores of ``items [B, C]`` for ``users [B]``: ``[B, C]``."""
        ...


class Recommender(torch.nn.Module, ABC):
    """Base class: a model over ``num_users`` users and ``num_items`` items."""

    #: whether the trainer optimizes ``forward``'s loss after ``fit``
    trainable: ClassVar[bool] = False
    #: whether ``predict`` gives ratings (rating metrics are reported only then)
    predicts_ratings: ClassVar[bool] = False
    #: whether ``score`` reads the users' histories: the evaluator and ``recommend`` then pass
    #: the history of the moment (training items for validation, training plus validation items
    #: for test, every known item when recommending)
    uses_history: ClassVar[bool] = False
    #: per-model training defaults (TrainConfig fields), under the config file and flags
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: ``graphrec tune``'s default search space: option name (a config field, or
    #: ``train.FIELD`` for a TrainConfig field) -> ``{"type": "float"|"int", "low", "high",
    #: "log"}`` or ``{"type": "choice", "values": [...]}``; a config class may carry its own
    #: (``bpr`` beside ``lightgcn``), which replaces the model class's
    search_space: ClassVar[dict[str, dict[str, Any]]] = {}
    #: how the model serves a user it was not trained on (:mod:`graphrec.models.coldstart`):
    #: ``"history"`` (scores from the given history), ``"fold-in"`` (a retriever: a user vector
    #: from the history's item vectors) or ``"none"``
    new_users: ClassVar[str] = "none"
    #: buffers added after checkpoints were first written: a saved state without them loads
    #: with their initial values
    optional_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.register_load_state_dict_post_hook(lambda module, keys: module.derive())

    @property
    def device(self) -> torch.device:
        """Where the model keeps its tensors (its first parameter or buffer; else the CPU)."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        for name in self.optional_state:
            if prefix + name not in state_dict and self._buffers.get(name) is not None:
                state_dict[prefix + name] = self._buffers[name]
        # Closed-form models size their buffers from the training data, so a fresh instance
        # cannot know the shapes yet: take them from the saved state.
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        before = self.device
        out = super()._apply(fn, recurse)
        if self.device != before:
            self.derive()  # structures built for one device are rebuilt for the new one
        return out

    def derive(self) -> None:
        """Rebuild what is derived from the saved state (the graph family's adjacency, the
        graph filter's Gram matrix) for the model's current device. Called after ``fit``, after
        ``load_state_dict`` and after a move to another device; a no-op for most models."""

    def fit(self, train: HeteroData) -> None:
        """Keep or compute what scoring needs from the training graph."""

    def batch_spec(self) -> BatchSpec:
        """The typed batch ``forward`` reads (trainable models)."""
        raise GraphrecError(f"model {type(self).__name__} is not trained by a loss")

    def forward(self, batch: Batch) -> Tensor:  # type: ignore[override]
        """The training loss of one batch (trainable models)."""
        raise GraphrecError(f"model {type(self).__name__} is not trained by a loss")

    @abstractmethod
    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores of all items for ``users [B]``: ``[B, num_items]``."""

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        """Scores of candidates ``items [B, C]`` for ``users [B]``: ``[B, C]``. This default
        gathers from :meth:`score`; models that can score pairs directly override it."""
        return self.score(users, history).gather(1, items)

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Rating predictions for pairs ``(users [N], items [N])``: ``[N]``."""
        raise GraphrecError(f"model {type(self).__name__} does not predict ratings")

    def scorer(self) -> Any:
        """What to hold for one round of scoring (see the module docstring): ``self`` here."""
        return self

    def serves_new_items(self) -> bool:
        """Whether the model can rank items it was not trained on (from their content)."""
        return False


def check_history(model: Recommender, users: Tensor, history: History | None) -> None:
    """A one-line error when ``history`` does not have one row per user."""
    if history is not None and history.num_rows != users.numel():
        raise GraphrecError(f"{type(model).__name__}: history has {history.num_rows} rows for "
                            f"{users.numel()} users")


__all__ = ["Recommender", "Retriever", "Ranker", "check_history"]
