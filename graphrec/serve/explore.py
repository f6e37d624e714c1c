r"""Exploration policies over any model's scores: epsilon-greedy, UCB and Thompson sampling.

A policy picks ``k`` of the ``C`` candidates of each of ``B`` users from the model's scores
``[B, C]`` and keeps per-item statistics of what it was shown to have earned: ``pulls[i]``, the
number of rewards observed for item ``i``, and ``reward_sum[i]``, their sum (float64, one entry
per catalogue item). :meth:`Policy.select` returns positions ``[B, k]`` into the candidates
(``-1`` where a row has fewer than ``k`` valid candidates); :meth:`Policy.update` adds observed
``(item, reward)`` pairs to the statistics. A candidate is invalid where ``mask`` is ``False`` or
its score is not finite, and is never picked. Candidates name their items through
``items [B, C]`` (catalogue indices); without it the ``C`` positions are the items themselves
(``C == num_items``, e.g. full-catalogue scores).

Every policy ranks the valid candidates of a row by a per-policy index and returns the top
``k``; ties go to the higher model score, then to the earlier position. Each step is vectorized
over users and candidates. Randomness comes from the policy's own ``torch.Generator`` (CPU,
seeded by ``seed``), so a policy given the same seed, scores and updates picks the same items on
any device; each :meth:`select` call draws the same amount of randomness whatever the data.

**Epsilon-greedy** (:class:`EpsilonGreedy`): with probability ``epsilon`` a row explores and its
``k`` picks are a uniformly random subset of its valid candidates; otherwise it exploits: the top
``k`` by the model's score. One coin per row (the whole list explores or not). The model's score
is the only estimate: :meth:`~Policy.update` keeps the statistics but never changes the choices.
``epsilon = 0`` is the greedy policy, ``epsilon = 1`` the uniformly random one.

**UCB** (:class:`UCB`), with ``t = sum(pulls)`` the rewards observed so far, in one of two forms:

* ``prior_strength=None`` (a count bonus on top of the model's score, UCB1-style,
  Auer et al. 2002):

  .. math:: \mathrm{index}_i = s_i + c \sqrt{\ln(1 + t) / (1 + n_i)}

  Rewards do not enter, only how often an item was observed; any score scale works, and ``c``
  is in the units of the score. ``c = 0`` is greedy.
* ``prior_strength=w`` (a number ``>= 0``: the model's score as the prior mean, worth ``w``
  pseudo-observations):

  .. math:: \mathrm{index}_i = \frac{w s_i + r_i}{w + n_i} + c \sqrt{\ln(1 + t) / (w + n_i)}

  with ``r_i`` the item's reward sum; the score must then be on the reward's scale (e.g. a
  predicted click or like probability). ``w = 0`` is plain UCB1 on the observed means, where an
  item never observed has an infinite index (among those, the model's score decides).

**Thompson sampling** (:class:`ThompsonSampling`, Beta-Bernoulli; Chapelle & Li, NIPS 2011):
each item's reward probability has the prior ``Beta(w p_i, w (1 - p_i))`` where ``p_i`` is the
model's score clipped to ``[1e-3, 1 - 1e-3]`` and ``w = prior_strength``: the model's score is
the prior mean, worth ``w`` pseudo-observations. The posterior after ``n_i`` rewards summing to
``r_i`` is ``Beta(w p_i + r_i, w (1 - p_i) + n_i - r_i)``; each select draws one sample per
candidate and ranks by it. Scores of valid candidates must lie in ``[0, 1]`` and rewards too
(fractional rewards are the usual Bernoulli-trick relaxation). Large ``w`` trusts the model
(``w -> inf`` is greedy); small ``w`` explores.

Note the priors are per (item, row): with personalized scores the same item has a different
prior for each user, while the observed statistics are pooled over users (non-contextual
bandits on top of a contextual model).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from graphrec.errors import GraphrecError

__all__ = ["Policy", "EpsilonGreedy", "UCB", "ThompsonSampling"]

_CLIP = 1e-3  # Thompson sampling's clip of the prior mean, so both Beta parameters stay > 0


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Policy:
    """The shared part of the exploration policies: settings checks, statistics, top-``k``.

    Args:
        num_items: catalogue size (statistics have one entry per item).
        seed: seed of the policy's ``torch.Generator``.
        device: where the statistics live (the device of the scores passed to :meth:`select`).
    """

    name = "policy"

    def __init__(self, num_items: int, *, seed: int = 0, device: str | torch.device = "cpu") -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items <= 0:
            raise GraphrecError(f"{self.name}: num_items must be a positive integer, got {num_items!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise GraphrecError(f"{self.name}: seed must be an integer, got {seed!r}")
        self.num_items = num_items
        self.seed = seed
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget the statistics and restart the random stream from ``seed``."""
        self.generator = torch.Generator().manual_seed(self.seed)
        self.pulls = torch.zeros(self.num_items, dtype=torch.float64, device=self.device)  # [I]
        self.reward_sum = torch.zeros(self.num_items, dtype=torch.float64, device=self.device)  # [I]

    @property
    def settings(self) -> dict[str, Any]:
        """The policy's name and keyword settings (for result records)."""
        return {"policy": self.name, "seed": self.seed}

    def select(self, scores: Tensor, mask: Tensor | None = None, k: int = 1, *,
               items: Tensor | None = None) -> Tensor:
        """Pick ``k`` candidates per row.

        Args:
            scores: ``[B, C]`` model scores; non-finite scores (``-inf`` padding) are invalid.
            mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
            k: picks per row.
            items: ``[B, C]`` int64 catalogue indices of the candidates (keyword only); ``None``
                when the positions are the items (``C == num_items``). Entries of invalid
                candidates are ignored.

        Returns:
            ``[B, k]`` int64 positions into the candidates, best first, ``-1`` where a row ran
            out of valid candidates.
        """
        if scores.dim() != 2:
            raise GraphrecError(f"{self.name}: scores must be [B, C], got shape {list(scores.shape)}")
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise GraphrecError(f"{self.name}: k must be a positive integer, got {k!r}")
        B, C = scores.shape
        if mask is not None and (mask.shape != (B, C) or mask.dtype != torch.bool):
            raise GraphrecError(f"{self.name}: mask must be a bool [B, C] = [{B}, {C}] tensor, "
                                f"got {mask.dtype} of shape {list(mask.shape)}")
        valid = torch.isfinite(scores)
        if mask is not None:
            valid &= mask.to(scores.device)
        if items is None:
            if C != self.num_items:
                raise GraphrecError(f"{self.name}: without items the {C} candidates must be the "
                                    f"{self.num_items} catalogue items")
            items = torch.arange(C, device=scores.device).expand(B, C)
        else:
            if items.shape != (B, C) or items.is_floating_point() or items.dtype == torch.bool:
                raise GraphrecError(f"{self.name}: items must be integer [B, C] = [{B}, {C}], "
                                    f"got {items.dtype} of shape {list(items.shape)}")
            items = items.to(scores.device).long()
            if bool(((items < 0) | (items >= self.num_items))[valid].any()):
                raise GraphrecError(f"{self.name}: candidate items must lie in [0, {self.num_items})")
            items = items.clamp(0, self.num_items - 1)  # invalid slots may hold padding ids
        s = scores.double().masked_fill(~valid, 0.0)  # [B, C] finite, so index arithmetic stays finite
        index = self._index(s, valid, items)
        return _top(index, s, valid, k)

    def _index(self, scores: Tensor, valid: Tensor, items: Tensor) -> Tensor:
        """``[B, C]`` float64 ranking index of the candidates (only valid entries matter)."""
        raise NotImplementedError

    def _stats(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(pulls, reward_sum)`` of the candidates, ``[B, C]`` each."""
        dev = self.pulls.device
        idx = items.to(dev)
        return self.pulls[idx].to(items.device), self.reward_sum[idx].to(items.device)

    def update(self, items: Tensor, rewards: Tensor) -> None:
        """Add observed rewards to the statistics: ``pulls[i] += 1`` and
        ``reward_sum[i] += reward`` for each pair (repeated items count each time).

        Args:
            items: ``[N]`` int64 catalogue indices; ``-1`` entries (no pick) are skipped.
            rewards: ``[N]`` rewards, finite.
        """
        if items.dim() != 1 or items.shape != rewards.shape:
            raise GraphrecError(f"{self.name}: items and rewards must be [N] tensors of one shape, "
                                f"got {list(items.shape)} and {list(rewards.shape)}")
        if items.is_floating_point() or items.dtype == torch.bool:
            raise GraphrecError(f"{self.name}: items must hold integer item indices, got {items.dtype}")
        keep = items >= 0
        items, rewards = items[keep].to(self.device).long(), rewards[keep].to(self.device).double()
        if items.numel() and int(items.max()) >= self.num_items:
            raise GraphrecError(f"{self.name}: items must lie in [0, {self.num_items}) or be -1")
        if not bool(torch.isfinite(rewards).all()):
            raise GraphrecError(f"{self.name}: rewards must be finite")
        self._check_rewards(rewards)
        self.pulls.index_add_(0, items, torch.ones_like(rewards))
        self.reward_sum.index_add_(0, items, rewards)

    def _check_rewards(self, rewards: Tensor) -> None:
        pass

    def _uniform(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Uniform [0, 1) float64 draws from the policy's CPU generator, moved to ``device``."""
        return torch.rand(shape, generator=self.generator, dtype=torch.float64).to(device)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings.items() if k != "policy")
        return f"{type(self).__name__}(num_items={self.num_items}, {args})"


def _top(index: Tensor, scores: Tensor, valid: Tensor, k: int) -> Tensor:
    """The top ``k`` valid candidates by ``index``, ties to the higher score, then the lower
    position: two stable sorts, the tie-breaker first."""
    by_score = torch.argsort(scores.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True)
    key = index.masked_fill(~valid, -math.inf).gather(1, by_score)  # valid +inf (UCB1) ranks first
    order = by_score.gather(1, torch.argsort(key, dim=1, descending=True, stable=True))[:, :k]
    order = order.masked_fill(~valid.gather(1, order), -1)
    if order.size(1) < k:  # k beyond the number of candidates
        order = torch.nn.functional.pad(order, (0, k - order.size(1)), value=-1)
    return order


class EpsilonGreedy(Policy):
    """Epsilon-greedy over the model's scores: a row explores (``k`` uniformly random valid
    candidates) with probability ``epsilon``, else takes the top ``k`` by score.

    Args:
        num_items: catalogue size.
        epsilon: exploration rate in ``[0, 1]`` (0: greedy, 1: uniformly random).
        seed: seed of the policy's generator.
        device: where the statistics live.
    """

    name = "epsilon-greedy"

    def __init__(self, num_items: int, *, epsilon: float = 0.1, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if not _finite_number(epsilon) or not 0.0 <= epsilon <= 1.0:
            raise GraphrecError(f"{self.name}: epsilon must lie in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        super().__init__(num_items, seed=seed, device=device)

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "epsilon": self.epsilon}

    def _index(self, scores: Tensor, valid: Tensor, items: Tensor) -> Tensor:
        B, C = scores.shape
        coin = self._uniform((B, 1), scores.device)  # one coin per row
        keys = self._uniform((B, C), scores.device)  # a uniformly random order of the row
        return torch.where(coin < self.epsilon, keys, scores)


class UCB(Policy):
    """Upper confidence bound on top of the model's scores (module docstring for both forms).

    Args:
        num_items: catalogue size.
        c: width of the confidence bonus, ``>= 0`` (0: greedy on the index's mean).
        prior_strength: ``None`` for the count bonus on the raw score; a number ``w >= 0`` for
            the score as prior mean worth ``w`` pseudo-observations (``0``: plain UCB1).
        seed: seed of the policy's generator (UCB draws nothing; kept for a uniform interface).
        device: where the statistics live.
    """

    name = "ucb"

    def __init__(self, num_items: int, *, c: float = 1.0, prior_strength: float | None = None,
                 seed: int = 0, device: str | torch.device = "cpu") -> None:
        if not _finite_number(c) or c < 0:
            raise GraphrecError(f"{self.name}: c must be a finite number >= 0, got {c!r}")
        if prior_strength is not None and (not _finite_number(prior_strength) or prior_strength < 0):
            raise GraphrecError(f"{self.name}: prior_strength must be None or a finite number >= 0, "
                                f"got {prior_strength!r}")
        self.c = float(c)
        self.prior_strength = None if prior_strength is None else float(prior_strength)
        super().__init__(num_items, seed=seed, device=device)

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "c": self.c, "prior_strength": self.prior_strength}

    def _index(self, scores: Tensor, valid: Tensor, items: Tensor) -> Tensor:
        n, r = self._stats(items)  # [B, C] each
        # c sqrt(ln(1 + t) / m) as a scalar times rsqrt(m): torch.sqrt of float64 goes through a
        # vectorized math library that spins up threads and took ~10 ms per call on a loaded
        # 2-core machine, rsqrt ~0.01 ms
        width = self.c * math.sqrt(math.log1p(float(self.pulls.sum())))
        if self.prior_strength is None:
            return scores + width * (1.0 + n).rsqrt()
        w = self.prior_strength
        denom = w + n
        seen = denom > 0
        mean = torch.where(seen, (w * scores + r) / denom.clamp(min=1e-300), scores)
        bonus = torch.where(seen, width * denom.clamp(min=1e-300).rsqrt(),
                            torch.full_like(scores, math.inf))  # UCB1: an unobserved item first
        return mean + bonus


class ThompsonSampling(Policy):
    """Beta-Bernoulli Thompson sampling with the model's scores as the prior mean.

    Args:
        num_items: catalogue size.
        prior_strength: ``w > 0``, pseudo-observations the model's score is worth: the prior of
            item ``i`` is ``Beta(w p_i, w (1 - p_i))`` with ``p_i`` its score (clipped to
            ``[1e-3, 1 - 1e-3]``).
        seed: seed of the policy's generator.
        device: where the statistics live.
    """

    name = "thompson"

    def __init__(self, num_items: int, *, prior_strength: float = 10.0, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if not _finite_number(prior_strength) or prior_strength <= 0:
            raise GraphrecError(f"{self.name}: prior_strength must be a finite number > 0, "
                                f"got {prior_strength!r}")
        self.prior_strength = float(prior_strength)
        super().__init__(num_items, seed=seed, device=device)

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "prior_strength": self.prior_strength}

    def posterior(self, scores: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha, beta)`` ``[B, C]`` of the candidates' Beta posteriors (float64)."""
        n, r = self._stats(items.long())
        p = scores.double().clamp(_CLIP, 1.0 - _CLIP)
        w = self.prior_strength
        return w * p + r, w * (1.0 - p) + (n - r).clamp(min=0)

    def _index(self, scores: Tensor, valid: Tensor, items: Tensor) -> Tensor:
        bad = valid & ((scores < 0) | (scores > 1))
        if bool(bad.any()):
            raise GraphrecError(f"{self.name}: scores are prior probabilities and must lie in "
                                f"[0, 1], got {float(scores[bad][0])}")
        alpha, beta = self.posterior(scores, items)
        # torch's samplers take no generator, so the draw runs under the global CPU generator
        # reseeded from the policy's own, inside fork_rng so the caller's random state is kept.
        # Only the CPU generator: torch.manual_seed also queues every accelerator's seeding,
        # formatting a stack trace each time (~1 ms a call).
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            theta = torch.distributions.Beta(alpha.cpu(), beta.cpu(), validate_args=False).sample()
        return theta.to(scores.device)

    def _check_rewards(self, rewards: Tensor) -> None:
        if rewards.numel() and bool(((rewards < 0) | (rewards > 1)).any()):
            raise GraphrecError(f"{self.name}: rewards must lie in [0, 1] (Beta-Bernoulli)")
