"""Exploration policies against hand-run examples, and the replay evaluator against a plain
Python loop over a tiny log (Li et al.'s Algorithm 3 written one event at a time)."""

from __future__ import annotations

import math

import pytest
import torch

from graphrec.errors import GraphrecError
from graphrec.evaluation.replay import ReplayLog, make_replay_log, replay
from graphrec.serve.explore import UCB, EpsilonGreedy, ThompsonSampling

from conftest import random_graph

NINF = float("-inf")


# --------------------------------------------------------------------------------------------
# Epsilon-greedy


def test_greedy_is_top_k_with_ties_mask_and_padding():
    pol = EpsilonGreedy(4, epsilon=0.0)
    scores = torch.tensor([[0.2, 0.9, 0.5, 0.9],
                           [1.0, NINF, 0.3, 0.7]])
    mask = torch.tensor([[True, True, True, True],
                         [False, True, True, True]])
    # row 0: the tie 0.9 / 0.9 goes to the earlier position; row 1: position 0 is masked and
    # position 1 is -inf padding, so only 3 and 2 are left
    assert pol.select(scores, mask, k=2).tolist() == [[1, 3], [3, 2]]
    assert pol.select(scores, mask, k=4).tolist() == [[1, 3, 2, 0], [3, 2, -1, -1]]
    assert pol.select(scores, mask, k=6)[1].tolist() == [3, 2, -1, -1, -1, -1]


def test_epsilon_greedy_pick_frequencies():
    # P(best) = (1 - eps) + eps / C = 0.7 + 0.3 / 4 = 0.775, every other candidate eps / C = 0.075
    B = 20000
    pol = EpsilonGreedy(4, epsilon=0.3, seed=3)
    pos = pol.select(torch.tensor([[0.1, 3.0, 2.0, 1.0]]).expand(B, 4))[:, 0]
    freq = torch.bincount(pos, minlength=4).double() / B
    assert freq.tolist() == pytest.approx([0.075, 0.775, 0.075, 0.075], abs=0.012)
    # epsilon = 1 is uniform over the valid candidates only
    rand = EpsilonGreedy(4, epsilon=1.0, seed=4)
    mask = torch.tensor([[True, False, True, True]]).expand(B, 4)
    freq = torch.bincount(rand.select(torch.zeros(B, 4), mask)[:, 0], minlength=4).double() / B
    assert freq[1] == 0 and freq[[0, 2, 3]].tolist() == pytest.approx([1 / 3] * 3, abs=0.012)
    # one coin per row: an exploring row's k picks are distinct valid candidates
    picks = rand.select(torch.zeros(B, 4), mask, k=3)
    assert (picks.sort(1).values == torch.tensor([0, 2, 3])).all()


def test_epsilon_greedy_statistics_do_not_change_choices():
    pol = EpsilonGreedy(5, epsilon=0.0)
    items = torch.tensor([[4, 2, 0]])
    scores = torch.tensor([[0.1, 0.8, 0.3]])
    before = pol.select(scores, items=items)
    pol.update(torch.tensor([2, 2, -1, 4]), torch.tensor([0.0, 0.0, 9.0, 1.0]))
    assert pol.pulls.tolist() == [0, 0, 2, 0, 1] and pol.reward_sum.tolist() == [0, 0, 0, 0, 1]
    assert torch.equal(pol.select(scores, items=items), before) and before.tolist() == [[1]]


# --------------------------------------------------------------------------------------------
# UCB: n = [2, 1, 0, 0] after three rewards, so t = 3 and ln(1 + t) = ln 4 = 1.3863


def ucb_after_updates(**kw) -> UCB:
    pol = UCB(4, **kw)
    pol.update(torch.tensor([0, 0, 1]), torch.tensor([1.0, 0.0, 1.0]))
    return pol


SCORES = torch.tensor([[0.5, 0.6, 0.1, 0.55]])


def test_ucb_count_bonus_hand_example():
    pol = ucb_after_updates(c=1.0)
    assert pol.pulls.tolist() == [2, 1, 0, 0] and pol.reward_sum.tolist() == [1, 1, 0, 0]
    # index = s + sqrt(ln 4 / (1 + n)): 0.5 + 0.680 = 1.180, 0.6 + 0.833 = 1.433,
    # 0.1 + 1.177 = 1.277, 0.55 + 1.177 = 1.727
    assert pol.select(SCORES, k=4).tolist() == [[3, 1, 2, 0]]
    # items 0 (n = 2, score 0.5) against 2 (n = 0, score 0.03): 0.5 + sqrt(ln 4 / 3) = 1.180
    # loses to 0.03 + sqrt(ln 4) = 1.207; with ln t instead of ln(1 + t) it would win (1.105
    # against 1.078)
    assert pol.select(torch.tensor([[0.5, 0.03]]), items=torch.tensor([[0, 2]])).tolist() == [[1]]
    # c = 0.1: 0.568, 0.683, 0.218, 0.668 -> the bonus no longer lifts item 2 above item 0
    assert ucb_after_updates(c=0.1).select(SCORES, k=4).tolist() == [[1, 3, 0, 2]]
    # c = 0 is greedy on the score
    assert ucb_after_updates(c=0.0).select(SCORES, k=4).tolist() == [[1, 3, 0, 2]]
    assert UCB(4, c=0.0).select(SCORES, k=1).tolist() == [[1]]


def test_ucb_prior_mean_hand_example():
    # w = 2, c = 0.5: mean = (2 s + r) / (2 + n) = 0.5, 0.733, 0.1, 0.55;
    # bonus = 0.5 sqrt(ln 4 / (2 + n)) = 0.294, 0.340, 0.416, 0.416
    # index = 0.794, 1.073, 0.516, 0.966
    pol = ucb_after_updates(c=0.5, prior_strength=2.0)
    assert pol.select(SCORES, k=4).tolist() == [[1, 3, 0, 2]]
    # w = 0 is UCB1: unobserved items first (by score: 3 before 2), then the observed means
    # 0.5 + 0.5 sqrt(ln 4 / 2) = 0.916 and 1.0 + 0.5 sqrt(ln 4) = 1.589
    pol = ucb_after_updates(c=0.5, prior_strength=0.0)
    assert pol.select(SCORES, k=4).tolist() == [[3, 2, 1, 0]]
    # once every item is observed the scores no longer enter, only the observed means:
    # means 0.5, 1.0, 0.0, 0.2; bonus 0.5 sqrt(ln 6 / n) = 0.473, 0.669, 0.669, 0.669;
    # index = 0.973, 1.669, 0.669, 0.869 (by score alone item 3 would beat item 0)
    pol.update(torch.tensor([2, 3]), torch.tensor([0.0, 0.2]))
    assert pol.select(SCORES, k=4).tolist() == [[1, 0, 3, 2]]


def test_ucb_candidates_name_their_items():
    pol = ucb_after_updates(c=1.0)
    # the same four items in another order, plus a padding slot with an out-of-range id
    items = torch.tensor([[3, 0, 9, 2, 1]])
    scores = torch.tensor([[0.55, 0.5, NINF, 0.1, 0.6]])
    assert pol.select(scores, k=4, items=items).tolist() == [[0, 4, 3, 1]]


# --------------------------------------------------------------------------------------------
# Thompson sampling


def test_thompson_posterior_hand_example():
    pol = ThompsonSampling(3, prior_strength=4.0)
    pol.update(torch.tensor([0, 0, 0, 2]), torch.tensor([1.0, 1.0, 0.0, 0.5]))
    alpha, beta = pol.posterior(torch.tensor([[0.25, 0.5, 0.0]]), torch.tensor([[0, 1, 2]]))
    # item 0: 4 * 0.25 + 2 = 3, 4 * 0.75 + 1 = 4; item 1: 2, 2; item 2: the prior mean 0 is
    # clipped to 1e-3: 0.004 + 0.5, 3.996 + 0.5
    assert alpha[0].tolist() == pytest.approx([3.0, 2.0, 0.504])
    assert beta[0].tolist() == pytest.approx([4.0, 2.0, 4.496])


def test_thompson_pick_frequency():
    # both priors Beta(1, 1); one reward for item 0 makes its posterior Beta(2, 1), and
    # P(X > Y) for X ~ Beta(2, 1), Y ~ U(0, 1) is the integral of 2x * x over [0, 1] = 2/3
    B = 20000
    pol = ThompsonSampling(2, prior_strength=2.0, seed=5)
    pol.update(torch.tensor([0]), torch.tensor([1.0]))
    pos = pol.select(torch.full((B, 2), 0.5))[:, 0]
    assert float((pos == 0).double().mean()) == pytest.approx(2 / 3, abs=0.012)
    # a prior worth a million observations is greedy on the score
    sure = ThompsonSampling(3, prior_strength=1e6, seed=5)
    assert (sure.select(torch.tensor([[0.3, 0.7, 0.5]]).expand(50, 3), k=3) == torch.tensor([1, 2, 0])).all()


def test_thompson_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    ThompsonSampling(6, seed=1).select(torch.rand(4, 6, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.random.get_rng_state(), state)


# --------------------------------------------------------------------------------------------
# All policies: determinism, settings


POLICIES = [lambda seed: EpsilonGreedy(7, epsilon=0.5, seed=seed),
            lambda seed: UCB(7, c=0.3, prior_strength=1.0, seed=seed),
            lambda seed: ThompsonSampling(7, prior_strength=3.0, seed=seed)]


def run_sequence(pol) -> list[list[list[int]]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(5):
        scores = torch.rand(6, 7, generator=g)
        picks = pol.select(scores, k=2)
        out.append(picks.tolist())
        pol.update(picks[:, 0], (torch.rand(6, generator=g) < 0.5).double())
    return out


@pytest.mark.parametrize("make", POLICIES)
def test_deterministic_given_a_seed(make):
    first = run_sequence(make(11))
    assert run_sequence(make(11)) == first
    pol = make(11)
    run_sequence(pol)
    pol.reset()
    assert run_sequence(pol) == first
    if not isinstance(pol, UCB):  # UCB draws nothing
        assert run_sequence(make(12)) != first


@pytest.mark.parametrize("bad", [
    lambda: EpsilonGreedy(5, epsilon=-0.1), lambda: EpsilonGreedy(5, epsilon=1.5),
    lambda: EpsilonGreedy(5, epsilon=math.nan), lambda: EpsilonGreedy(5, epsilon=True),
    lambda: EpsilonGreedy(0), lambda: EpsilonGreedy(5, seed=1.5),
    lambda: UCB(5, c=-1.0), lambda: UCB(5, c=math.inf), lambda: UCB(5, prior_strength=-1.0),
    lambda: ThompsonSampling(5, prior_strength=0.0), lambda: ThompsonSampling(5, prior_strength=math.inf),
])
def test_bad_settings(bad):
    with pytest.raises(GraphrecError):
        bad()


def test_bad_inputs():
    pol = ThompsonSampling(4)
    ok = torch.full((2, 3), 0.5)
    items = torch.tensor([[0, 1, 2], [1, 2, 3]])
    for call in (lambda: pol.select(torch.rand(3), items=items),  # not [B, C]
                 lambda: pol.select(ok, k=0, items=items),
                 lambda: pol.select(ok, mask=torch.ones(2, 3), items=items),  # mask not bool
                 lambda: pol.select(ok),  # 3 candidates without items, 4 catalogue items
                 lambda: pol.select(ok, items=items + 1),  # item 4 out of range
                 lambda: pol.select(ok * 3, items=items),  # priors outside [0, 1]
                 lambda: pol.update(torch.tensor([0]), torch.tensor([2.0])),  # Bernoulli reward
                 lambda: pol.update(torch.tensor([4]), torch.tensor([1.0])),
                 lambda: pol.update(torch.tensor([0, 1]), torch.tensor([1.0]))):
        with pytest.raises(GraphrecError):
            call()


# --------------------------------------------------------------------------------------------
# Replay


def tiny_log(num_candidates: int = 3, start: int = 0, seed: int = 0) -> tuple[ReplayLog, torch.Tensor]:
    graph = random_graph(num_users=13, num_items=29, seed=1)
    scores = torch.rand(13, 29, generator=torch.Generator().manual_seed(2))  # [U, I]
    return make_replay_log(graph, num_candidates=num_candidates, start=start, seed=seed), scores


def test_replay_log_candidates():
    graph = random_graph(num_users=13, num_items=29, seed=1)
    log = make_replay_log(graph, num_candidates=5, seed=3)
    ei, t, rating = graph["user", "interacts", "item"].edge_index, graph["user", "interacts", "item"].time, \
        graph["user", "interacts", "item"].rating
    E = ei.size(1)
    assert len(log) == E and log.candidates.shape == (E, 6)
    assert (log.times[1:] >= log.times[:-1]).all()
    assert sorted(zip(log.users.tolist(), log.items.tolist(), log.times.tolist())) == \
        sorted(zip(ei[0].tolist(), ei[1].tolist(), t.tolist()))
    assert torch.equal(log.candidates[torch.arange(E), log.logged], log.items)
    others = log.candidates.masked_fill(torch.arange(6) == log.logged[:, None], -1)
    assert not (others == log.items[:, None]).any()  # a distractor is never the logged item
    assert int(log.candidates.min()) >= 0 and int(log.candidates.max()) < 29
    by_edge = {(u, i): float(r >= 4) for u, i, r in zip(ei[0].tolist(), ei[1].tolist(), rating.tolist())}
    assert log.rewards.tolist() == [by_edge[(u, i)] for u, i in zip(log.users.tolist(), log.items.tolist())]
    later = make_replay_log(graph, num_candidates=5, start=10, seed=3)
    assert len(later) == E - 10 and torch.equal(later.items, log.items[10:])


def reference_replay(log: ReplayLog, scores: torch.Tensor, c: float | None, chunk: int) -> tuple[list[bool], float]:
    """Li et al.'s replay written out one event at a time, with greedy (``c is None``) or the
    count-bonus UCB as plain Python; statistics refreshed only at chunk boundaries."""
    pulls = [0.0] * log.num_items
    frozen = list(pulls)
    hits, total = [], 0.0
    for e in range(len(log)):
        if e % chunk == 0:
            frozen = list(pulls)
        u = int(log.users[e])
        cand = log.candidates[e].tolist()
        best, best_key = -1, None
        for pos, item in enumerate(cand):
            s = float(scores[u, item])
            index = s if c is None else s + c * math.sqrt(math.log1p(sum(frozen)) / (1.0 + frozen[item]))
            key = (index, s)
            if best_key is None or key > best_key:  # strict: ties keep the earlier position
                best, best_key = pos, key
        hit = best == int(log.logged[e])
        hits.append(hit)
        if hit:
            total += float(log.rewards[e])
            pulls[int(log.items[e])] += 1
    return hits, total


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("c", [None, 0.2])
def test_replay_against_a_python_loop(c, chunk):
    log, scores = tiny_log()
    pol = EpsilonGreedy(29, epsilon=0.0) if c is None else UCB(29, c=c)
    res = replay(log, pol, scores, chunk=chunk)
    hits, total = reference_replay(log, scores, c, chunk)
    assert res.hits.tolist() == hits
    assert res.matched == sum(hits) and res.reward == total and res.events == len(log)
    assert res.ctr == pytest.approx(total / sum(hits))
    assert torch.equal(res.gains, torch.where(res.hits, log.rewards, 0.0))
    assert pol.pulls.sum() == res.matched  # the policy was fed the matched events only
    greedy_total = reference_replay(log, scores, None, chunk)[1]
    assert res.regret == greedy_total - total
    assert 0 < res.matched < len(log)  # the example exercises both branches


def test_replay_of_a_sampling_policy_matches_one_event_at_a_time():
    log, scores = tiny_log()
    res = replay(log, ThompsonSampling(29, prior_strength=2.0, seed=9), scores, chunk=1)
    pol = ThompsonSampling(29, prior_strength=2.0, seed=9)
    hits, total = [], 0.0
    for e in range(len(log)):
        pos = int(pol.select(scores[log.users[e], log.candidates[e]][None], items=log.candidates[e][None])[0, 0])
        hits.append(pos == int(log.logged[e]))
        if hits[-1]:
            total += float(log.rewards[e])
            pol.update(log.items[e:e + 1], log.rewards[e:e + 1])
    assert res.hits.tolist() == hits and res.reward == total
    assert res.settings == {"policy": "thompson", "seed": 9, "prior_strength": 2.0, "chunk": 1}


def test_replay_scores_forms_and_random_match_rate():
    log, scores = tiny_log(num_candidates=4)
    per_user = replay(log, UCB(29, c=0.1), scores, chunk=3)
    called = replay(log, UCB(29, c=0.1), lambda u, i: scores[u[:, None], i], chunk=3)
    assert torch.equal(per_user.hits, called.hits)
    shared = replay(log, UCB(29, c=0.1), scores[0], chunk=3)  # [I]: every user alike
    assert torch.equal(shared.hits, replay(log, UCB(29, c=0.1), scores[0].expand(13, 29), chunk=3).hits)
    # the uniformly random policy matches 1 / K of the events (K = 5 here)
    big = make_replay_log(random_graph(num_users=300, num_items=40, per_user=(5, 15), seed=4),
                          num_candidates=4, seed=5)
    rand = replay(big, EpsilonGreedy(40, epsilon=1.0, seed=6), torch.zeros(40), chunk=64)
    # the logged item sits at a uniformly random position (else tie-breaking by position could
    # favour it)
    per_position = torch.bincount(big.logged, minlength=5).double()
    assert (per_position - len(big) / 5).abs().max() < 4 * math.sqrt(len(big) * 0.2 * 0.8)
    expected = len(big) / 5
    assert abs(rand.matched - expected) < 4 * math.sqrt(len(big) * 0.2 * 0.8)
    assert replay(big, EpsilonGreedy(40, epsilon=0.0), torch.zeros(40), chunk=64).regret == 0


def test_replay_errors():
    log, scores = tiny_log()
    with pytest.raises(GraphrecError):
        replay(log, UCB(30), scores)  # catalogue size differs
    with pytest.raises(GraphrecError):
        replay(log, UCB(29), scores, chunk=0)
    with pytest.raises(GraphrecError):
        make_replay_log(random_graph(with_time=False))
    with pytest.raises(GraphrecError):
        make_replay_log(random_graph(), num_candidates=-1)
