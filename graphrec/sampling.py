"""Negative sampling as tensor operations: uniform over items, never a training positive.

Rejection sampling against the sorted keys ``user * num_items + item`` of the positives: draw
uniformly, test membership with one ``searchsorted``, redraw only the rejected entries. Each
round is vectorized; the expected number of rounds is small unless a user has interacted with
nearly every item (a user with every item is an error: there is nothing to sample).
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphrec.errors import GraphrecError


class NegativeSampler:
    """Uniform negatives for (user, positive) pairs, excluding each user's training positives.

    Args:
        ptr, items: the training positives as CSR, ``ptr [U + 1]`` and ``items [E]``.
        num_items: number of items.
    """

    def __init__(self, ptr: Tensor, items: Tensor, num_items: int) -> None:
        counts = ptr.diff()
        if counts.numel() and int(counts.max()) >= num_items:
            user = int(torch.nonzero(counts >= num_items)[0])
            raise GraphrecError(f"negative sampling: user {user} has interacted with every item")
        self.num_items = int(num_items)
        user = torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)
        self.keys = torch.sort(user * self.num_items + items)[0]  # [E] sorted positive keys

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (user, item) pair is a training positive."""
        key = users * self.num_items + items
        idx = torch.searchsorted(self.keys, key).clamp(max=max(self.keys.numel() - 1, 0))
        return self.keys[idx] == key if self.keys.numel() else torch.zeros_like(key, dtype=torch.bool)

    def sample(self, users: Tensor, num_negatives: int = 1,
               generator: torch.Generator | None = None) -> Tensor:
        """``[N, num_negatives]`` items drawn uniformly among those ``users [N]`` have not seen."""
        if num_negatives < 1:
            raise GraphrecError(f"num_negatives must be at least 1, got {num_negatives}")
        users = users.unsqueeze(1).expand(-1, num_negatives)  # [N, M]
        out = torch.randint(self.num_items, users.shape, generator=generator, device=users.device)
        bad = self.is_positive(users, out)
        while bad.any():  # rounds, not interactions: each redraws all rejected entries at once
            out[bad] = torch.randint(self.num_items, (int(bad.sum()),), generator=generator,
                                     device=users.device)
            bad = self.is_positive(users, out)
        return out
