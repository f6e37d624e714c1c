"""Negative sampling: never a training positive, uniform over the rest, seeded."""

from __future__ import annotations

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
