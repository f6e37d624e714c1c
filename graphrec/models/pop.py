"""Popularity: rank items by how many training interactions they have.

The simplest baseline every recommender must beat. Ties are broken by the lower item index, so
the ranking is deterministic. With explicit ratings it also predicts an item's damped mean
rating, ``(sum + d * global_mean) / (count + d)``, the classic non-personalized rating baseline;
fitted on data without ratings, ``predict`` is an error (the ``rated`` buffer says which, so a
reloaded model behaves the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.schema import EDGE, RATING


@dataclass
class PopConfig:
    """Args:
        damping: pseudo-count pulling an item's mean rating towards the global mean.
    """

    damping: float = 5.0

    def __post_init__(self) -> None:
        if not self.damping >= 0:
            raise GraphrecError(f"pop: damping must be >= 0, got {self.damping}")


class Popularity(Recommender):
    """Most-popular items first, for every user."""

    predicts_ratings = True

    def __init__(self, num_users: int, num_items: int, cfg: PopConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg or PopConfig()
        self.register_buffer("item_score", torch.zeros(num_items))  # [I] distinct, higher = more popular
        self.register_buffer("item_rating", torch.zeros(num_items))  # [I] damped mean rating
        self.register_buffer("rated", torch.tensor(False))  # fitted on ratings

    def fit(self, train: HeteroData) -> None:
        items = train[EDGE].edge_index[1].to(self.item_score.device)
        counts = torch.bincount(items, minlength=self.num_items)
        # Distinct integer scores by rank (ties: lower index first) make top-K deterministic.
        order = torch.argsort(-counts, stable=True)
        score = torch.empty(self.num_items, device=items.device)
        score[order] = torch.arange(self.num_items, 0, -1, dtype=torch.float32, device=items.device)
        self.item_score.copy_(score)
        if RATING in train[EDGE]:
            ratings = train[EDGE][RATING].to(items.device).double()
            mean = ratings.mean()
            sums = torch.zeros(self.num_items, dtype=torch.double,
                               device=items.device).index_add_(0, items, ratings)
            d = self.cfg.damping
            self.item_rating.copy_(((sums + d * mean) / (counts + d)).float())
        self.rated.fill_(RATING in train[EDGE])

    new_users = "history"  # the same list for everyone

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        return self.item_score.unsqueeze(0).expand(users.numel(), -1)  # [B, I]

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if not bool(self.rated):
            raise GraphrecError("pop: fitted on data without ratings, so it predicts none")
        return self.item_rating[items.to(self.item_rating.device)]  # [N]
