"""The model contract every graphrec model follows.

* ``fit(train)``: closed-form models (popularity, graph filters) compute what they need from the
  training graph; trained models keep the default, which does nothing, and learn by ``loss``.
* ``score(users) -> [B, num_items]``: scores of every item for a batch of users, used by the
  evaluator and by recommend. Higher is better.
* ``predict(users, items) -> [N]``: rating predictions, only where ``predicts_ratings`` is set.
* ``loss(**batch) -> scalar``: trainable models only. ``batch_kind`` names the batches the
  trainer builds for it (:mod:`graphrec.batches`): ``"pairs"`` (``users``, ``items``,
  ``negatives``), ``"ratings"`` (``users``, ``items``, ``ratings``), ``"sequences"``.
* History (sequence models, ``uses_history = True``): ``score`` reads each user's time-ordered
  items, not a user embedding. ``fit(train)`` takes the training sequences; whoever scores for
  another moment hands over the right history first with ``set_history(ptr, items)`` (CSR over
  all users) and puts the old one back after (``get_history()``; :func:`history` does both):
  the evaluator gives the training items for the validation part and training plus validation
  items (in that order) for the test part; ``recommend`` gives every known interaction.
* ``train_defaults``: training settings (:class:`graphrec.trainer.TrainConfig` fields) that
  suit the model better than the graph models' defaults; resolved under the config file and
  flags.

Models never build their own graph or read files: they get the training graph from the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator

import torch
from torch_geometric.data import HeteroData

from graphrec.errors import GraphrecError


class Recommender(torch.nn.Module, ABC):
    """Base class: a model over ``num_users`` users and ``num_items`` items."""

    #: whether ``predict`` gives ratings (rating metrics are reported only then)
    predicts_ratings: ClassVar[bool] = False
    #: whether the trainer optimizes ``loss`` after ``fit`` (closed-form models need no trainer)
    trainable: ClassVar[bool] = False
    #: the batches ``loss`` reads, see :mod:`graphrec.batches`
    batch_kind: str = "pairs"
    #: whether ``score`` reads the users' histories (``set_history``/``get_history``)
    uses_history: ClassVar[bool] = False
    #: per-model training defaults (TrainConfig fields), under the config file and flags
    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = int(num_users)
        self.num_items = int(num_items)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # Closed-form models size their buffers from the training data, so a fresh instance
        # cannot know the shapes yet: take them from the saved state.
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and saved.shape != buf.shape:
                self._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def fit(self, train: HeteroData) -> None:
        """Compute closed-form state from the training graph (no-op for trained models)."""

    @abstractmethod
    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of all items for ``users [B]``: ``[B, num_items]``."""

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rating predictions for pairs ``(users [N], items [N])``: ``[N]``."""
        raise GraphrecError(f"model {type(self).__name__} does not predict ratings")

    def loss(self, **batch: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (trainable models)."""
        raise GraphrecError(f"model {type(self).__name__} is not trained by a loss")


@contextmanager
def history(model: object, ptr: torch.Tensor, items: torch.Tensor) -> Iterator[None]:
    """Score ``model`` from the CSR history ``(ptr, items)`` inside the block, then put its own
    history back. Does nothing for models without ``uses_history``."""
    if not getattr(model, "uses_history", False):
        yield
        return
    saved = model.get_history()  # type: ignore[attr-defined]
    model.set_history(ptr, items)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        model.set_history(*saved)  # type: ignore[attr-defined]
