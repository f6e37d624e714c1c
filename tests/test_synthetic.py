"""The synthetic data set: deterministic, with planted structure a model can find."""

from __future__ import annotations

import torch

from graphrec.data.graph import build, user_sequences
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model
from graphrec.schema import EDGE
from graphrec.split import SplitConfig, split


def test_deterministic_from_seed():
    a, b = make_synthetic(), make_synthetic()
    assert a.frame.equals(b.frame) and a.item_features.equals(b.item_features)
    assert not make_synthetic(SyntheticConfig(seed=1)).frame.equals(a.frame)


def test_has_ratings_times_and_side_features():
    ds = build(make_synthetic())
    assert ds.meta["has_rating"] and ds.meta["has_time"]
    assert ds.graph["item"].genre.shape == (ds.num_items, 10)  # multi-hot over 10 clusters
    assert ds.graph["user"].region.shape == (ds.num_users,)


class CoOccurrence:
    """Item-item co-occurrence scores: the simplest collaborative model."""

    def __init__(self, train, num_users, num_items):
        ei = train[EDGE].edge_index
        self.R = torch.zeros(num_users, num_items)
        self.R[ei[0], ei[1]] = 1.0
        self.S = self.R.T @ self.R
        self.S.fill_diagonal_(0)

    def score(self, users):
        return self.R[users] @ self.S


class NextItem:
    """Scores items by how often they followed the user's last training item."""

    def __init__(self, train, num_items):
        ptr, seq = user_sequences(train)
        same_user = torch.repeat_interleave(torch.arange(len(ptr) - 1), ptr.diff())
        follow = same_user[1:] == same_user[:-1]
        self.T = torch.zeros(num_items, num_items)
        self.T.index_put_((seq[:-1][follow], seq[1:][follow]), torch.tensor(1.0), accumulate=True)
        self.last = seq[ptr[1:] - 1]

    def score(self, users):
        return self.T[self.last[users]]


def test_planted_structure_beats_popularity():
    ds = build(make_synthetic())
    cfg = EvalConfig(ks=(10,), metrics=("ndcg",), progress=False)
    pop = build_model("pop", ds.num_users, ds.num_items)
    parts = split(ds.graph, SplitConfig("random"))
    pop.fit(parts.train)
    co = CoOccurrence(parts.train, ds.num_users, ds.num_items)
    assert evaluate(co, parts, "test", cfg)["ndcg@10"] > 2 * evaluate(pop, parts, "test", cfg)["ndcg@10"]
    # Sequential structure: the next item follows from the last one.
    parts = split(ds.graph, SplitConfig("leave-one-out"))
    pop.fit(parts.train)
    nxt = NextItem(parts.train, ds.num_items)
    assert evaluate(nxt, parts, "test", cfg)["ndcg@10"] > 2 * evaluate(pop, parts, "test", cfg)["ndcg@10"]
