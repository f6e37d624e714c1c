"""Scoring users and items a model never trained on.

A user absent from training comes with the items they gave (an onboarding list, a session):
a :class:`~graphrec.batches.History`. What a model does with it is its class constant
``new_users``:

* ``"history"``: the model scores from the given history row itself (the sequence models read
  it as the sequence, the graph filter applies its formula to the row, the two-tower user
  tower aggregates it, content kNN sums the items' neighbours; popularity and random ignore it);
* ``"fold-in"``: a retriever without a user representation for the newcomer gets one from the
  item vectors of the history (:func:`fold_in`): their mean, or the ridge least-squares user
  vector ``u = (Q_H^T Q_H + reg I)^-1 Q_H^T 1`` that gives each history item a score of about
  one (the fold-in of Hu, Koren & Volinsky, ICDM 2008, with every given item a positive of
  confidence one and no unobserved-item term); dot-product models fold in their embeddings and
  add the global bias, so item biases still count and the newcomer's user bias is zero;
* ``"none"``: the model cannot serve a new user (NCF's MLP over a user ID embedding): a
  one-line error says so.

An item absent from training has no learned ID vector; only a model whose item scores come
from content can rank it (``serves_new_items()``): content kNN, the two-tower and hybrid models
when their item side reads features, and random (the floor; popularity has counted none of them). Others raise a one-line
error naming the model and what it needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from graphrec.batches import History
from graphrec.errors import GraphrecError

FOLD_IN = ("mean", "ls")


def _padded(vectors: Tensor, history: History) -> tuple[Tensor, Tensor]:
    """``[B, L, F]`` history item vectors (zeros past each row's end) and the row lengths."""
    counts = history.ptr.diff()
    B, L = counts.numel(), int(counts.max()) if counts.numel() else 0
    rows = torch.repeat_interleave(torch.arange(B, device=counts.device), counts)
    cols = torch.arange(history.items.numel(), device=counts.device) - history.ptr[:-1][rows]
    out = vectors.new_zeros(B, max(L, 1), vectors.size(1))
    out[rows, cols] = vectors[history.items.to(vectors.device)]
    return out, counts


def fold_in(vectors: Tensor, history: History, method: str = "mean", reg: float = 1.0) -> Tensor:
    """User vectors ``[B, F]`` of the ``B`` history rows from item vectors ``[I, F]``
    (module docstring); an empty row gives the zero vector."""
    if method not in FOLD_IN:
        raise GraphrecError(f"fold_in: method is one of {', '.join(FOLD_IN)}, got {method!r}")
    if not reg > 0:
        raise GraphrecError(f"fold_in: reg must be > 0, got {reg}")
    q, counts = _padded(vectors.float(), history)  # [B, L, F], [B]
    if method == "mean":
        return q.sum(1) / counts.clamp(min=1).unsqueeze(1).to(q)
    eye = torch.eye(q.size(2), dtype=q.dtype, device=q.device)
    gram = q.transpose(1, 2) @ q + reg * eye  # [B, F, F]
    rhs = q.sum(1, keepdim=True).transpose(1, 2)  # [B, F, 1]: Q_H^T 1
    return torch.linalg.solve(gram, rhs).squeeze(2)


class NewUsers:
    """A scorer for users outside training, from their given histories: ``score(users,
    history)`` and, for retrievers, ``user_vectors(users, history)`` / ``item_vectors()``.
    Their training rows are never read. ``users`` are nodes of the data (a cold-users split:
    a model may read their side features) or, with ``outside``, ids of nobody (a raw id the
    data never saw): a model whose user tower reads user nodes (two-tower) then folds in over
    its item vectors instead. ``scorer``: the model's ``scorer()`` when the caller holds one."""

    def __init__(self, model: Any, method: str = "mean", reg: float = 1.0, *,
                 outside: bool = False, scorer: Any = None) -> None:
        kind = getattr(model, "new_users", "none")
        if kind == "none":
            raise GraphrecError(f"model {type(model).__name__} cannot serve a user it was not "
                                "trained on: it needs a learned user ID embedding; use a model "
                                "that folds in or reads the history (mf, bpr, lightgcn, "
                                "graph-filter, sasrec, two-tower, content-knn, hybrid)")
        if method not in FOLD_IN:
            raise GraphrecError(f"--fold-in: one of {', '.join(FOLD_IN)}, got {method!r}")
        if outside and getattr(model, "reads_user_nodes", False):
            kind = "fold-in"
        self.model, self.kind, self.method, self.reg = model, kind, method, reg
        self.inner = model.scorer() if scorer is None else scorer
        self.device = getattr(model, "device", torch.device("cpu"))

    def scorer(self) -> "NewUsers":
        return self

    def _need(self, users: Tensor, history: History | None) -> History:
        if history is None or history.num_rows != users.numel():
            raise GraphrecError("new users: give one history row per user")
        return history

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F]`` query vectors folded in from the history rows."""
        history = self._need(users, history)
        if self.kind == "history":
            return self.inner.user_vectors(users, history)
        own = getattr(self.inner, "new_user_vectors", None)
        if own is not None:
            return own(history, self.method, self.reg)
        return fold_in(self.inner.item_vectors(), history, self.method, self.reg)

    def item_vectors(self) -> Tensor:
        """``[I, F]`` item vectors of the model."""
        return self.inner.item_vectors()

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, num_items]`` from the history rows."""
        history = self._need(users, history)
        if self.kind == "history":
            return self.inner.score(users, history)
        return self.user_vectors(users, history) @ self.item_vectors().T


def check_new_items(model: Any) -> None:
    """A one-line error unless ``model`` can rank items it never trained on."""
    serves = getattr(model, "serves_new_items", None)
    if serves is None or not serves():
        raise GraphrecError(f"model {type(model).__name__} cannot rank items it was not trained "
                            "on: it scores items by learned ID vectors; cold items need content "
                            "(content-knn, or two-tower or hybrid reading text_emb or side "
                            "features: convert with --text-cols)")


__all__ = ["FOLD_IN", "fold_in", "NewUsers", "check_new_items"]
