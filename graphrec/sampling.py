"""Negative sampling as tensor operations: uniform over items or by weight (popularity),
never a training positive.

Rejection sampling against the sorted keys ``user * num_items + item`` of the positives: draw
uniformly, test membership with one ``searchsorted``, redraw only the rejected entries. Each
round is vectorized; the expected number of rounds is small unless a user has interacted with
nearly every item (a user with every item is an error: there is nothing to sample).

Shared pools (one set of negatives for a whole batch, as in-batch and mixed negatives use) are
checked the other way round: :meth:`NegativeSampler.hits` walks the batch users' positives
once and marks the pool columns they hold, ``O(their positives + pool)`` instead of a search
per (user, pool item) pair.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphrec.errors import GraphrecError


class NegativeSampler:
    """Negatives for (user, positive) pairs, excluding each user's training positives: uniform
    over items, or in proportion to ``weights`` (e.g. training popularity to a power, as
    word2vec's 0.75), drawn by a binary search of uniform numbers in their cumulative sum.

    Args:
        ptr, items: the training positives as CSR, ``ptr [U + 1]`` and ``items [E]``.
        num_items: number of items.
        weights: ``[num_items]`` non-negative sampling weights (default: uniform). Items of
            weight 0 are never drawn.
    """

    def __init__(self, ptr: Tensor, items: Tensor, num_items: int,
                 weights: Tensor | None = None) -> None:
        counts = ptr.diff()
        if counts.numel() and int(counts.max()) >= num_items:
            user = int(torch.nonzero(counts >= num_items)[0])
            raise GraphrecError(f"negative sampling: user {user} has interacted with every item")
        self.num_items = int(num_items)
        user = torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)
        self.keys = torch.sort(user * self.num_items + items)[0]  # [E] sorted positive keys
        self.ptr = ptr  # user u's positives are keys[ptr[u]:ptr[u + 1]] (keys sort by user)
        self.cdf: Tensor | None = None
        if weights is not None:
            weights = weights.double()
            if weights.shape != (self.num_items,) or not bool(torch.isfinite(weights).all()) \
                    or bool((weights < 0).any()) or float(weights.sum()) <= 0:
                raise GraphrecError("negative sampling: weights must be one finite, non-negative "
                                    "value per item, not all zero")
            self.probs = weights / weights.sum()
            self.cdf = torch.cumsum(self.probs, 0)
            self.cdf[-1] = 1.0  # no draw past the end from rounding

    @property
    def weighted(self) -> bool:
        """Whether negatives are drawn by weight rather than uniformly."""
        return self.cdf is not None

    def log_prob(self, items: Tensor) -> Tensor:
        """``log q(item)``, the probability that one draw (before rejecting positives) is each
        item: what sampled softmax's logQ correction subtracts."""
        if self.cdf is None:
            return torch.full(items.shape, -math.log(self.num_items), device=items.device)
        return self.probs.log().to(items.device)[items].float()

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> Tensor:
        """Items drawn from the sampling distribution (uniform or by weight), positives not
        rejected: a shared pool, whose positives :meth:`hits` marks per user."""
        if self.cdf is None:
            return torch.randint(self.num_items, shape, generator=generator, device=device)
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        # right side: an item whose cumulative sum does not move (weight 0) is never drawn
        return torch.searchsorted(self.cdf.to(device), u, right=True).clamp(max=self.num_items - 1)

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """Whether each (user, item) pair is a training positive."""
        key = users * self.num_items + items
        idx = torch.searchsorted(self.keys, key).clamp(max=max(self.keys.numel() - 1, 0))
        return self.keys[idx] == key if self.keys.numel() else torch.zeros_like(key, dtype=torch.bool)

    def hits(self, users: Tensor, pool: Tensor) -> Tensor:
        """``[N, M]``: whether ``pool[j]`` is a training positive of ``users[i]``; equal to
        ``is_positive`` on every pair, computed from each distinct user's positives once."""
        uq, inv = torch.unique(users, return_inverse=True)
        pq, pool_inv = torch.unique(pool, return_inverse=True)
        column = torch.full((self.num_items,), -1, dtype=torch.long, device=pool.device)
        column[pq] = torch.arange(pq.numel(), device=pool.device)
        start, counts = self.ptr[uq], self.ptr[uq + 1] - self.ptr[uq]
        total = int(counts.sum())
        row = torch.repeat_interleave(torch.arange(uq.numel(), device=users.device), counts,
                                      output_size=total)
        first = torch.zeros_like(counts)
        first[1:] = counts.cumsum(0)[:-1]
        entry = start[row] + torch.arange(total, device=users.device) - first[row]
        col = column[self.keys[entry] % self.num_items]
        held = torch.zeros(uq.numel(), pq.numel(), dtype=torch.bool, device=users.device)
        keep = col >= 0
        held[row[keep], col[keep]] = True
        return held[inv][:, pool_inv]

    def sample(self, users: Tensor, num_negatives: int = 1,
               generator: torch.Generator | None = None) -> Tensor:
        """``[N, num_negatives]`` items drawn uniformly among those ``users [N]`` have not seen."""
        if num_negatives < 1:
            raise GraphrecError(f"num_negatives must be at least 1, got {num_negatives}")
        users = users.unsqueeze(1).expand(-1, num_negatives)  # [N, M]
        out = self.draw(tuple(users.shape), generator, users.device)
        bad = self.is_positive(users, out)
        rounds = 0
        while bad.any():  # rounds, not interactions: each redraws all rejected entries at once
            out[bad] = self.draw((int(bad.sum()),), generator, users.device)
            bad = self.is_positive(users, out)
            rounds += 1
            if rounds == 1000 and self.cdf is not None:
                raise GraphrecError("negative sampling: a user's positives hold nearly all the "
                                    "sampling weight; use uniform negatives")
        return out
