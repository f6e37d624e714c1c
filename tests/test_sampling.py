"""Negative sampling: never a training positive, uniform over the rest, seeded."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_graph
from graphrec.errors import GraphrecError
from graphrec.sampling import NegativeSampler
from graphrec.data.graph import user_sequences


def sampler_for(graph):
    return NegativeSampler(*user_sequences(graph), graph["item"].num_nodes)


def test_never_a_training_positive():
    g = random_graph(num_users=20, num_items=15, per_user=(1, 13), seed=2)  # dense users
    s = sampler_for(g)
    users = torch.arange(20).repeat_interleave(50)
    neg = s.sample(users, num_negatives=4, generator=torch.Generator().manual_seed(0))
    assert neg.shape == (1000, 4)
    ptr, items = user_sequences(g)
    for u in range(20):
        seen = set(items[ptr[u]:ptr[u + 1]].tolist())
        assert not seen & set(neg[users == u].flatten().tolist())


def test_is_positive_matches_membership():
    g = random_graph(num_users=9, num_items=11, per_user=(1, 8), seed=4)
    s = sampler_for(g)
    users = torch.arange(9).repeat_interleave(11)
    items = torch.arange(11).repeat(9)
    ptr, seq = user_sequences(g)
    want = torch.tensor([int(i) in set(seq[ptr[u]:ptr[u + 1]].tolist())
                         for u, i in zip(users.tolist(), items.tolist())])
    assert torch.equal(s.is_positive(users, items), want)


def test_uniform_over_unseen_items():
    # user 0 has seen items 0..4 of 10: the other five should each get about a fifth
    ptr = torch.tensor([0, 5])
    s = NegativeSampler(ptr, torch.arange(5), 10)
    neg = s.sample(torch.zeros(20000, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(neg.flatten(), minlength=10).float()
    assert counts[:5].sum() == 0
    assert (counts[5:] / 20000 - 0.2).abs().max() < 0.015


def test_seeded_and_errors():
    g = random_graph(num_users=6, num_items=30, seed=5)
    s = sampler_for(g)
    users = torch.arange(6)
    a = s.sample(users, 3, torch.Generator().manual_seed(7))
    b = s.sample(users, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(GraphrecError, match="num_negatives"):
        s.sample(users, 0)
    with pytest.raises(GraphrecError, match="every item"):
        NegativeSampler(torch.tensor([0, 3]), torch.arange(3), 3)


def test_weighted_negatives_follow_the_weights_over_unseen_items():
    # user 0 has seen items 0 and 1; the rest are drawn in proportion to weights 0,0,1,2,3,0,4
    ptr = torch.tensor([0, 2])
    weights = torch.tensor([5.0, 5.0, 1.0, 2.0, 3.0, 0.0, 4.0])
    s = NegativeSampler(ptr, torch.arange(2), 7, weights=weights)
    neg = s.sample(torch.zeros(40000, dtype=torch.long), generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(neg.flatten(), minlength=7).double() / 40000
    assert counts[[0, 1, 5]].sum() == 0  # positives rejected, weight 0 never drawn
    want = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / 10
    assert (counts[[2, 3, 4, 6]] - want).abs().max() < 0.01
    # log q is the log of one draw's probability, before positives are rejected
    assert torch.allclose(s.log_prob(torch.tensor([2, 6])).double(),
                          torch.log(torch.tensor([1.0, 4.0], dtype=torch.float64) / 20))
    a = s.sample(torch.zeros(5, dtype=torch.long), 3, torch.Generator().manual_seed(9))
    assert torch.equal(a, s.sample(torch.zeros(5, dtype=torch.long), 3,
                                   torch.Generator().manual_seed(9)))
    uniform = NegativeSampler(ptr, torch.arange(2), 7)
    assert torch.allclose(uniform.log_prob(torch.tensor([3])), torch.tensor([-math.log(7)]))
    for bad in (torch.ones(6), -torch.ones(7), torch.zeros(7), torch.full((7,), float("nan"))):
        with pytest.raises(GraphrecError, match="weights"):
            NegativeSampler(ptr, torch.arange(2), 7, weights=bad)
