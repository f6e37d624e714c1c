"""Random: every user gets an independent random order of the items.

The floor any model should clear by a wide margin. Scores come from an integer hash of
(seed, user, item), so a user's list is the same whatever the batch it is scored in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphrec.batches import History
from graphrec.models.base import Recommender

_M = (1 << 31) - 1


@dataclass
class RandomConfig:
    """Args:
        seed: changes every user's random order.
    """

    seed: int = 0


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 31-bit integer hash (xorshift-multiply rounds), vectorized in int64."""
    x = x & _M
    for _ in range(2):
        x = ((x >> 16) ^ x) * 0x45D9F3B & _M
    return (x >> 16) ^ x


class RandomRecommender(Recommender):
    """Uniformly random rankings, deterministic given the seed."""

    def __init__(self, num_users: int, num_items: int, cfg: RandomConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg or RandomConfig()

    new_users = "history"  # random for everyone

    def serves_new_items(self) -> bool:
        """Yes: random scores need nothing."""
        return True

    def score(self, users: torch.Tensor, history: History | None = None) -> torch.Tensor:
        items = torch.arange(self.num_items, device=users.device)
        key = _mix(users.long().unsqueeze(1) * 1_000_003 + _mix(items + self.cfg.seed * 7919).unsqueeze(0))
        return key.float() / _M  # [B, I] in [0, 1)
