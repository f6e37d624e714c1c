"""Splits: disjoint, covering, deterministic, following the documented rules, leak-free."""

from __future__ import annotations

import pytest
import torch

from conftest import random_graph
from graphrec.data.graph import make_graph
from graphrec.errors import GraphrecError
from graphrec.data.graph import user_sequences
from graphrec.schema import EDGE, PART, PART_TEST, PART_TRAIN, PART_VALID, TIME, USER
from graphrec.split import (DEFAULT_VALID_RATIO, DROPPED, SplitConfig, assign_parts,
                            default_valid_ratio, split)

METHODS = [
    SplitConfig("random", 0.2, 0.1, seed=3),
    SplitConfig("temporal", 0.25, 0.1),
    SplitConfig("time-cut", 0.2, 0.1),
    SplitConfig("leave-one-out"),
]


def pairs(user, item):
    return set(zip(user.tolist(), item.tolist()))


@pytest.mark.parametrize("cfg", METHODS, ids=lambda c: c.method)
def test_parts_disjoint_cover_and_train_graph_has_only_train_edges(cfg, toy_graph):
    s = split(toy_graph, cfg)
    ei = toy_graph[EDGE].edge_index
    all_pairs = pairs(ei[0], ei[1])
    train = pairs(*s.train[EDGE].edge_index)
    test = pairs(s.test.user, s.test.item)
    valid = pairs(s.valid.user, s.valid.item) if s.valid is not None else set()
    dropped = pairs(ei[0][s.parts == DROPPED], ei[1][s.parts == DROPPED])
    assert not train & test and not train & valid and not test & valid
    assert train | test | valid | dropped == all_pairs
    assert len(train) + len(test) + len(valid) + len(dropped) == ei.size(1)
    # The training graph's sequences and reverse edges hold training edges only.
    ptr, seq = user_sequences(s.train)
    seq_pairs = {(u, int(i)) for u in range(len(ptr) - 1) for i in seq[ptr[u]:ptr[u + 1]]}
    assert seq_pairs == train
    rev = s.train["item", "rev_interacts", "user"].edge_index
    assert pairs(rev[1], rev[0]) == train
    assert PART not in s.train[EDGE]


@pytest.mark.parametrize("cfg", METHODS, ids=lambda c: c.method)
def test_deterministic(cfg, toy_graph):
    assert torch.equal(assign_parts(toy_graph, cfg), assign_parts(toy_graph, cfg))


def test_random_seed_changes_split(toy_graph):
    a = assign_parts(toy_graph, SplitConfig("random", seed=0))
    b = assign_parts(toy_graph, SplitConfig("random", seed=1))
    assert not torch.equal(a, b)


def per_user_counts(graph, parts, code):
    user = graph[EDGE].edge_index[0]
    return torch.bincount(user[parts == code], minlength=graph[USER].num_nodes)


@pytest.mark.parametrize("method", ["random", "temporal"])
def test_ratio_rule(method):
    g = random_graph(num_users=40, num_items=50, per_user=(1, 30), seed=4)
    parts = assign_parts(g, SplitConfig(method, test_ratio=0.2, valid_ratio=0.1))
    n = torch.bincount(g[EDGE].edge_index[0], minlength=40)
    n_test = per_user_counts(g, parts, PART_TEST)
    n_valid = per_user_counts(g, parts, PART_VALID)
    n_train = per_user_counts(g, parts, PART_TRAIN)
    for u in range(40):
        want_test = min(int(n[u] * 0.2 + 0.5), int(n[u]) - 1)
        want_valid = min(int(n[u] * 0.1 + 0.5), int(n[u]) - 1 - want_test)
        assert n_test[u] == want_test and n_valid[u] == want_valid
        assert n_train[u] >= 1  # every user keeps a training interaction


def test_temporal_holds_out_the_latest():
    g = random_graph(num_users=20, num_items=40, per_user=(2, 15), seed=5)
    parts = assign_parts(g, SplitConfig("temporal", test_ratio=0.3))
    user, time = g[EDGE].edge_index[0], g[EDGE][TIME]
    for u in range(20):
        mine = user == u
        tr, te = time[mine & (parts == PART_TRAIN)], time[mine & (parts == PART_TEST)]
        if len(te):
            assert tr.max() <= te.min()


def test_leave_one_out_rules():
    # user 0: 1 interaction, user 1: 2, user 2: 5 (times out of order on purpose)
    user = torch.tensor([0, 1, 1, 2, 2, 2, 2, 2])
    item = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4])
    time = torch.tensor([5, 9, 1, 50, 10, 40, 30, 20])
    g = make_graph(3, 6, user, item, {"time": time})
    s = split(g, SplitConfig("leave-one-out"))
    assert pairs(s.test.user, s.test.item) == {(1, 1), (2, 0)}  # latest of users 1 and 2
    assert pairs(s.valid.user, s.valid.item) == {(2, 2)}  # second latest, only for user 2
    assert pairs(*s.train[EDGE].edge_index) == {(0, 0), (1, 2), (2, 1), (2, 3), (2, 4)}
    s = split(g, SplitConfig("leave-one-out", valid_ratio=0))
    assert s.valid is None


def test_time_cut_global_and_cold_users_dropped():
    user = torch.tensor([0, 0, 1, 1, 2])
    item = torch.tensor([0, 1, 0, 2, 3])
    time = torch.tensor([1, 10, 2, 3, 20])  # user 2 only after the cut
    g = make_graph(3, 4, user, item, {"time": time})
    s = split(g, SplitConfig("time-cut", time_cut=10))
    assert pairs(s.test.user, s.test.item) == {(0, 1)}
    assert s.dropped == 1
    assert pairs(*s.train[EDGE].edge_index) == {(0, 0), (1, 0), (1, 2)}


def test_given_split_uses_parts_and_optional_validation():
    user = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    item = torch.tensor([0, 1, 2, 3, 0, 4, 2])
    part = torch.tensor([0, 0, 0, 2, 0, 0, 2], dtype=torch.int8)
    g = make_graph(2, 5, user, item, {"part": part})
    s = split(g, SplitConfig("given"))
    assert pairs(s.test.user, s.test.item) == {(0, 3), (1, 2)}
    assert s.valid is None
    s = split(g, SplitConfig("given", valid_ratio=0.4, seed=1))
    assert len(s.valid) == 2 and not pairs(s.valid.user, s.valid.item) & {(0, 3), (1, 2)}


def test_default_validation_part_is_for_trained_models_and_keeps_the_test_part():
    user = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    item = torch.tensor([0, 1, 2, 3, 0, 4, 2])
    part = torch.tensor([0, 0, 0, 2, 0, 1, 2], dtype=torch.int8)
    given = make_graph(2, 5, user, item, {"part": part})
    plain = make_graph(2, 5, user, item, {TIME: torch.arange(7)})
    assert default_valid_ratio(plain, SplitConfig("random")) == DEFAULT_VALID_RATIO == 0.1
    assert default_valid_ratio(plain, SplitConfig("temporal")) == 0.1
    assert default_valid_ratio(plain, SplitConfig("random"), trainable=False) == 0.0
    assert default_valid_ratio(plain, SplitConfig("leave-one-out")) is None  # its one item
    assert default_valid_ratio(plain, SplitConfig("leave-one-out"), trainable=False) == 0.0
    assert default_valid_ratio(plain, SplitConfig("time-cut", time_cut=5)) == 0.0
    assert default_valid_ratio(plain, SplitConfig("time-cut")) == 0.1
    assert default_valid_ratio(given, SplitConfig("given")) == 0.0  # it brings its own
    # carving validation moves training interactions only: the test part is the same
    g = random_graph(40, 30, (5, 20), seed=3)
    without = split(g, SplitConfig("random", valid_ratio=0.0))
    carved = split(g, SplitConfig("random", valid_ratio=0.1))
    assert pairs(without.test.user, without.test.item) == pairs(carved.test.user, carved.test.item)
    assert len(carved.valid) > 0


@pytest.mark.parametrize("cfg,match", [
    (SplitConfig("given"), "no predefined test part"),
    (SplitConfig("random", test_ratio=1.0), "test-ratio"),
    (SplitConfig("random", test_ratio=0.5, valid_ratio=0.5), "below 1"),
    (SplitConfig("bogus"), "unknown method"),
    (SplitConfig("time-cut", time_cut=-1), "no training data"),
])
def test_bad_split_configs(cfg, match, toy_graph):
    with pytest.raises(GraphrecError, match=match):
        split(toy_graph, cfg)


def test_time_cut_needs_timestamps():
    g = random_graph(with_time=False)
    with pytest.raises(GraphrecError, match="no timestamps"):
        split(g, SplitConfig("time-cut"))


def test_split_with_no_test_is_an_error():
    g = make_graph(2, 2, torch.tensor([0, 1]), torch.tensor([0, 1]))  # one interaction each
    with pytest.raises(GraphrecError, match="no test data"):
        split(g, SplitConfig("random"))
