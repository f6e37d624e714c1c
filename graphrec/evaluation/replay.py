r"""Offline replay evaluation of exploration policies on a time-ordered interaction log.

The method of Li, Chu, Langford & Wang, "Unbiased Offline Evaluation of Contextual-bandit-based
News Article Recommendation Algorithms", WSDM 2011 (Algorithm 3, "policy evaluator"): walk the
logged events in time order; at each event the policy picks one of the event's candidates; when
the pick is the logged item the event counts: its reward is observed, added to the total, and fed
to the policy (:meth:`~graphrec.serve.explore.Policy.update`); otherwise the event is skipped and
the policy learns nothing from it. When the logging policy chose uniformly at random among the
``K`` candidates, the counted events are distributed as if the policy had run online, so the
average reward over them (``ctr``) is an unbiased estimate of its online per-event reward, from
about ``events / K`` counted events.

**Candidate sets for logs that were not collected uniformly** (MovieLens and most recommender
logs; :func:`make_replay_log`): each event's candidates are the logged item plus
``num_candidates`` items drawn uniformly from the rest of the catalogue (with replacement, so a
distractor may repeat; never the logged item), and the logged item is put at a uniformly random
position (so tie-breaking by position favours nobody). A policy that ignores which candidate
was logged, the uniformly random one, then matches with probability exactly
``1 / (num_candidates + 1)``, as under uniform logging. But the logged item was the user's choice,
not a uniform draw, so it is not exchangeable with the sampled ones and Li et al.'s unbiasedness
does not carry over: the match rate is the policy's hit rate at 1 among ``K`` candidates (the
user's item against random distractors), and the reward counts the hits the user liked. The
figures compare policies on the same candidate sets; they are not an estimate of online CTR.

**Reward**: ``1`` when the logged rating is ``>= reward_threshold`` (default 4 on a 1-5 scale),
else ``0``; logs without ratings (implicit feedback) give every event reward 1.

**Regret** is the cumulative reward of the greedy policy (the same scores, epsilon 0) through the
same replay minus the policy's: what exploring cost relative to trusting the model (negative when
it earned more).

**Chunks**: ``chunk = 1`` is the exact per-event method. ``chunk = b`` lets the policy pick for
``b`` consecutive events at once with the statistics as they were before the chunk, then feeds it
the chunk's matched rewards: delayed feedback, as a service that updates its statistics in
batches. Events and their order are unchanged; only when the policy learns is. Policies whose
choices ignore the statistics (greedy, epsilon-greedy) match the same events under any chunk size
for the same random draws; the random stream is drawn per chunk, so epsilon-greedy's and
Thompson sampling's draws differ between chunk sizes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from graphrec.errors import GraphrecError
from graphrec.schema import EDGE, ITEM, RATING, TIME
from graphrec.serve.explore import EpsilonGreedy, Policy

logger = logging.getLogger(__name__)

__all__ = ["ReplayLog", "ReplayResult", "make_replay_log", "replay"]

# Model scores for the replay: a tensor [I] (the same for every user) or [U, I], or a function
# (users [B], candidate items [B, C]) -> scores [B, C].
Scores = Union[Tensor, Callable[[Tensor, Tensor], Tensor]]


@dataclass
class ReplayLog:
    """Logged events in time order, each with its candidate set.

    Attributes:
        users: ``[E]`` int64 user of each event.
        items: ``[E]`` int64 logged item.
        rewards: ``[E]`` float64 reward of the logged item.
        times: ``[E]`` int64 event time (non-decreasing).
        candidates: ``[E, K]`` int64 candidate items; the logged item is among them.
        logged: ``[E]`` int64 position of the logged item in its row of ``candidates``.
        num_items: catalogue size.
    """

    users: Tensor
    items: Tensor
    rewards: Tensor
    times: Tensor
    candidates: Tensor
    logged: Tensor
    num_items: int

    def __post_init__(self) -> None:
        E = self.users.numel()
        if any(t.shape != (E,) for t in (self.items, self.rewards, self.times, self.logged)):
            raise GraphrecError("replay log: users, items, rewards, times and logged must be [E] "
                                "tensors of one length")
        if self.candidates.dim() != 2 or self.candidates.size(0) != E or self.candidates.size(1) < 1:
            raise GraphrecError(f"replay log: candidates must be [E, K] = [{E}, K], "
                                f"got shape {list(self.candidates.shape)}")
        if E and bool((self.times[1:] < self.times[:-1]).any()):
            raise GraphrecError("replay log: events must be in time order")
        K = self.candidates.size(1)
        if E and (int(self.logged.min()) < 0 or int(self.logged.max()) >= K or not bool(
                (self.candidates.gather(1, self.logged[:, None])[:, 0] == self.items).all())):
            raise GraphrecError("replay log: candidates[e, logged[e]] must be the logged item items[e]")

    def __len__(self) -> int:
        return self.users.numel()


@dataclass
class ReplayResult:
    """What one policy earned through the replay.

    Attributes:
        reward: cumulative reward over the matched events.
        matched: events whose pick was the logged item.
        events: events replayed.
        ctr: ``reward / matched`` (``nan`` with no match), the average reward per counted event.
        regret: greedy's cumulative reward through the same replay minus ``reward``.
        hits: ``[E]`` bool, which events matched (for curves over time).
        gains: ``[E]`` float64, the reward of each event (0 where unmatched).
        settings: the policy's settings.
    """

    reward: float
    matched: int
    events: int
    ctr: float
    regret: float
    hits: Tensor = field(repr=False)
    gains: Tensor = field(repr=False)
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The scalars and settings as a JSON-ready dict."""
        return {**self.settings, "reward": self.reward, "matched": self.matched,
                "events": self.events, "ctr": self.ctr, "regret": self.regret}


def make_replay_log(graph: HeteroData, *, num_candidates: int = 20, reward_threshold: float = 4.0,
                    start: int = 0, seed: int = 0) -> ReplayLog:
    """The graph's interactions in time order with candidate sets (module docstring).

    Events are ordered by time; ties keep the graph's edge order (by user). Candidates are drawn
    with a ``torch.Generator`` seeded by ``seed``, vectorized over all events.

    Args:
        graph: a schema graph whose interactions have a ``time`` attribute.
        num_candidates: distractors per event (``K = num_candidates + 1`` candidates).
        reward_threshold: a rating at or above it is reward 1, below it 0.
        start: skip the first ``start`` events of the time order (e.g. a prefix a model was
            fitted on).
        seed: seed of the candidate draws.
    """
    store = graph[EDGE]
    if TIME not in store:
        raise GraphrecError("replay: the interactions have no time attribute; replay needs a time order")
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 0:
        raise GraphrecError(f"replay: num_candidates must be an integer >= 0, got {num_candidates!r}")
    num_items = int(graph[ITEM].num_nodes)
    if num_candidates and num_items < 2:
        raise GraphrecError("replay: distractors need a catalogue of at least 2 items")
    if not math.isfinite(reward_threshold):
        raise GraphrecError(f"replay: reward_threshold must be finite, got {reward_threshold}")
    order = torch.argsort(store[TIME], stable=True)
    if not 0 <= start <= order.numel():
        raise GraphrecError(f"replay: start must lie in [0, {order.numel()}], got {start}")
    order = order[start:]
    users, items = store.edge_index[0][order], store.edge_index[1][order]
    times = store[TIME][order].long()
    if RATING in store:
        rewards = (store[RATING][order].double() >= reward_threshold).double()
    else:
        rewards = torch.ones(order.numel(), dtype=torch.float64)
    E = order.numel()
    g = torch.Generator().manual_seed(seed)
    # Uniform over the other num_items - 1 items: draw from [0, I - 1) and step over the logged one.
    other = torch.randint(0, max(num_items - 1, 1), (E, num_candidates), generator=g)
    other = other + (other >= items[:, None]).long()
    logged = torch.randint(0, num_candidates + 1, (E,), generator=g)
    # Insert the logged item at its position: column j < logged holds other[:, j], column
    # j > logged holds other[:, j - 1]; the filler columns are never selected.
    col = torch.arange(num_candidates + 1)[None, :]  # [1, K]
    left = torch.cat([other, items[:, None]], dim=1)  # [E, K] other[:, j] for j < num_candidates
    right = torch.cat([items[:, None], other], dim=1)  # [E, K] other[:, j - 1] for j >= 1
    cand = torch.where(col < logged[:, None], left, right)
    cand = torch.where(col == logged[:, None], items[:, None], cand)
    return ReplayLog(users, items, rewards, times, cand.contiguous(), logged, num_items)


def _scores_of(scores: Scores, users: Tensor, cand: Tensor) -> Tensor:
    if callable(scores) and not isinstance(scores, Tensor):
        out = scores(users, cand)
    elif scores.dim() == 1:
        out = scores[cand.to(scores.device)]
    elif scores.dim() == 2:
        out = scores[users.to(scores.device)[:, None], cand.to(scores.device)]
    else:
        raise GraphrecError(f"replay: scores must be [I] or [U, I], got shape {list(scores.shape)}")
    if out.shape != cand.shape:
        raise GraphrecError(f"replay: scores of a chunk must be [B, K] = {list(cand.shape)}, "
                            f"got {list(out.shape)}")
    return out


def _run(log: ReplayLog, policy: Policy, scores: Scores, chunk: int, progress: bool,
         desc: str) -> tuple[Tensor, Tensor]:
    E = len(log)
    hits = torch.zeros(E, dtype=torch.bool)
    bar = tqdm(total=E, desc=desc, unit="event", disable=not progress, leave=False)
    for s in range(0, E, chunk):  # chunks of time-ordered events; the picks within are batched
        e = min(s + chunk, E)
        cand = log.candidates[s:e]
        sc = _scores_of(scores, log.users[s:e], cand)  # [b, K]
        pos = policy.select(sc, items=cand.to(sc.device), k=1)[:, 0].cpu()  # [b]
        hit = pos == log.logged[s:e]
        hits[s:e] = hit
        if bool(hit.any()):
            policy.update(log.items[s:e][hit], log.rewards[s:e][hit])
        bar.update(e - s)
    bar.close()
    return hits, torch.where(hits, log.rewards, torch.zeros_like(log.rewards))


def replay(log: ReplayLog, policy: Policy, scores: Scores, *, chunk: int = 1,
           greedy: ReplayResult | None = None, progress: bool = False) -> ReplayResult:
    """Replay ``log`` through ``policy`` (Li et al., WSDM 2011; module docstring).

    The policy is updated in place (pass a fresh or :meth:`~Policy.reset` one). Regret is against
    the greedy policy over the same ``scores`` and candidates: pass its result as ``greedy`` to
    reuse it, else it is run here with the same ``chunk``.

    Args:
        log: the time-ordered events and their candidates (:func:`make_replay_log`).
        policy: the exploration policy, over ``log.num_items`` items.
        scores: the model's scores, ``[I]`` (every user alike) or ``[U, I]``, or a function
            ``(users [B], items [B, K]) -> [B, K]``.
        chunk: events per batch of picks (1: exact per-event replay).
        greedy: greedy's result through this replay, to skip running it again.
        progress: show a progress bar.

    Returns:
        The policy's :class:`ReplayResult`.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise GraphrecError(f"replay: chunk must be a positive integer, got {chunk!r}")
    if policy.num_items != log.num_items:
        raise GraphrecError(f"replay: the policy has {policy.num_items} items, the log {log.num_items}")
    if greedy is not None and greedy.events != len(log):
        raise GraphrecError(f"replay: greedy replayed {greedy.events} events, this log has {len(log)}")
    hits, gains = _run(log, policy, scores, chunk, progress, policy.name)
    reward, matched = float(gains.sum()), int(hits.sum())
    if greedy is None:
        is_greedy = isinstance(policy, EpsilonGreedy) and policy.epsilon == 0.0
        base = reward if is_greedy else float(
            _run(log, EpsilonGreedy(log.num_items, epsilon=0.0), scores, chunk, progress, "greedy")[1].sum())
    else:
        base = greedy.reward
    result = ReplayResult(reward, matched, len(log), reward / matched if matched else math.nan,
                          base - reward, hits, gains, {**policy.settings, "chunk": chunk})
    logger.debug("replay %s: reward %.0f over %d matched of %d events", policy, reward, matched, len(log))
    return result
