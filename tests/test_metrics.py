"""Every metric against a slow, obviously correct reference on random cases, and the evaluator
against brute-force ranking (training items excluded, K beyond the item count, few held-out)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from graphrec.evaluation.evaluator import EvalConfig, evaluate_ranking, merge_csr, topk_excluding
from graphrec.evaluation.metrics import METRIC_FUNCTIONS
from graphrec.split import Interactions


def reference(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time."""
    top = ranked[:k]
    hits = [1 if i in relevant else 0 for i in top]
    n = len(relevant)
    dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1 / math.log2(r + 2) for r in range(min(n, k)))
    ap, found = 0.0, 0
    for r, h in enumerate(hits):
        if h:
            found += 1
            ap += found / (r + 1)
    first = next((r for r, h in enumerate(hits) if h), None)
    return {
        "recall": sum(hits) / n,
        "precision": sum(hits) / k,
        "ndcg": dcg / idcg,
        "map": ap / min(n, k),
        "hit": float(any(hits)),
        "mrr": 0.0 if first is None else 1 / (first + 1),
    }


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_reference(seed):
    rng = random.Random(seed)
    num_items, users = 15, 40
    ranked_lists, relevant_sets = [], []
    for _ in range(users):
        ranked = rng.sample(range(num_items), rng.randint(3, num_items))  # lists may be short
        relevant = set(rng.sample(range(num_items), rng.randint(1, 8)))
        ranked_lists.append(ranked)
        relevant_sets.append(relevant)
    width = max(len(r) for r in ranked_lists)
    hits = torch.zeros(users, width, dtype=torch.bool)
    for u, (ranked, relevant) in enumerate(zip(ranked_lists, relevant_sets)):
        for r, i in enumerate(ranked):
            hits[u, r] = i in relevant
    n_rel = torch.tensor([len(s) for s in relevant_sets])
    for k in (1, 3, 5, 10, 20):  # 20 > number of items
        for name, fn in METRIC_FUNCTIONS.items():
            got = fn(hits, n_rel, k)
            want = torch.tensor([reference(r, s, k)[name]
                                 for r, s in zip(ranked_lists, relevant_sets)],
                                dtype=torch.float64)  # per-user values are float64
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{name}@{k}")


def test_hand_computed_values():
    # ranks 0..4 = [rel, no, rel, no, no], 3 relevant items in all
    hits = torch.tensor([[True, False, True, False, False]])
    n_rel = torch.tensor([3])
    assert METRIC_FUNCTIONS["recall"](hits, n_rel, 5).item() == pytest.approx(2 / 3)
    assert METRIC_FUNCTIONS["precision"](hits, n_rel, 5).item() == pytest.approx(2 / 5)
    assert METRIC_FUNCTIONS["ndcg"](hits, n_rel, 5).item() == pytest.approx(
        (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert METRIC_FUNCTIONS["map"](hits, n_rel, 5).item() == pytest.approx((1 + 2 / 3) / 3)
    assert METRIC_FUNCTIONS["mrr"](hits, n_rel, 5).item() == 1.0
    # ideal DCG over min(|relevant|, K): with K=2, one hit at rank 0 of 3 relevant
    assert METRIC_FUNCTIONS["ndcg"](hits, n_rel, 2).item() == pytest.approx(1 / (1 + 1 / math.log2(3)))


class Fixed:
    """Scores from a fixed matrix."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, users):
        return self.scores[users]


def csr(num_users, pairs):
    inter = Interactions(torch.tensor([u for u, _ in pairs], dtype=torch.long),
                         torch.tensor([i for _, i in pairs], dtype=torch.long))
    return inter, inter.csr(num_users)


def brute_force(scores, train_sets, test_sets, ks):
    """Rank every item per user in Python, skipping training items, and apply the reference."""
    out = {}
    users = [u for u in range(len(test_sets)) if test_sets[u]]
    for k in ks:
        for name in METRIC_FUNCTIONS:
            vals = []
            for u in users:
                order = sorted(range(scores.size(1)), key=lambda i: (-float(scores[u, i]), i))
                ranked = [i for i in order if i not in train_sets[u]]
                vals.append(reference(ranked, test_sets[u], k)[name])
            out[f"{name}@{k}"] = sum(vals) / len(vals)
    return out


@pytest.mark.parametrize("batch", [1, 3, 0])
def test_evaluator_matches_brute_force(batch):
    rng = random.Random(1)
    num_users, num_items = 9, 23  # asymmetric
    scores = torch.randn(num_users, num_items, generator=torch.Generator().manual_seed(2))
    train_sets, test_sets, train_pairs, test_pairs = [], [], [], []
    for u in range(num_users):
        items = rng.sample(range(num_items), rng.randint(0, 20))
        cut = rng.randint(0, len(items))
        train_sets.append(set(items[:cut]))
        test_sets.append(set(items[cut:]))
        train_pairs += [(u, i) for i in items[:cut]]
        test_pairs += [(u, i) for i in items[cut:]]
    _, train_csr = csr(num_users, train_pairs)
    test, _ = csr(num_users, test_pairs)
    ks = (1, 5, 30)  # 30 > num_items
    got = evaluate_ranking(Fixed(scores), num_items, test, train_csr,
                           EvalConfig(ks=ks, batch_users=batch, progress=False))
    want = brute_force(scores, train_sets, test_sets, ks)
    assert got["users"] == sum(1 for s in test_sets if s)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


def test_training_items_never_in_topk():
    num_users, num_items = 6, 11
    # Training items get the highest scores: they would win if they were not excluded.
    train_pairs = [(u, i) for u in range(num_users) for i in range(u % 4 + 1)]
    _, train_csr = csr(num_users, train_pairs)
    scores = -torch.arange(num_items, dtype=torch.float).repeat(num_users, 1)
    values, top = topk_excluding(scores, torch.arange(num_users), train_csr, 5)
    for u in range(num_users):
        seen = {i for uu, i in train_pairs if uu == u}
        assert not seen & set(top[u].tolist())
        assert torch.isfinite(values[u]).all()


def test_merge_csr_keeps_all_items():
    a = Interactions(torch.tensor([0, 2, 2]), torch.tensor([5, 1, 3])).csr(4)
    b = Interactions(torch.tensor([1, 2]), torch.tensor([7, 9])).csr(4)
    ptr, items = merge_csr(4, [a, b])
    rows = [sorted(items[ptr[u]:ptr[u + 1]].tolist()) for u in range(4)]
    assert rows == [[5], [7], [1, 3, 9], []]


def test_eval_config_rejects_bad_values():
    from graphrec.errors import GraphrecError
    with pytest.raises(GraphrecError, match="--k"):
        EvalConfig(ks=(0,))
    with pytest.raises(GraphrecError, match="--metrics"):
        EvalConfig(metrics=("auc",))


def test_evaluation_leaves_model_state_alone():
    """A model whose scores are a view of its own buffer keeps its buffer through evaluation."""

    class ViewModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("item_score", torch.arange(8, dtype=torch.float32))

        def score(self, users):
            return self.item_score.unsqueeze(0).expand(users.numel(), -1)

    model = ViewModel()
    before = model.item_score.clone()
    test, _ = csr(3, [(0, 1), (1, 2), (2, 3)])
    _, train_csr = csr(3, [(0, 7), (1, 6), (2, 5)])
    evaluate_ranking(model, 8, test, train_csr, EvalConfig(ks=(2,), progress=False))
    assert torch.equal(model.item_score, before)
