"""Beyond-accuracy metrics against hand-computed values on tiny cases, a slow reference on random
lists, and PyG's ``torch_geometric.metrics`` where the definitions agree."""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.metrics import (LinkPredAveragePopularity, LinkPredCoverage,
                                     LinkPredDiversity)

from graphrec.errors import GraphrecError
from graphrec.evaluation.beyond import coverage, gini, intra_list_diversity, novelty

NO_LABELS = torch.empty(2, 0, dtype=torch.long)  # PyG's update wants labels these metrics ignore


def random_lists(seed: int, num_users: int = 9, k: int = 5, num_items: int = 23) -> torch.Tensor:
    """Full lists of distinct items per user (PyG's metrics assume full lists)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_items, generator=g)[:k] for _ in range(num_users)])


def pyg(metric, topk: torch.Tensor) -> float:
    metric.update(topk, NO_LABELS)
    return float(metric.compute())


# ---- coverage -------------------------------------------------------------------------------

def test_coverage_by_hand():
    topk = torch.tensor([[0, 1], [1, -1], [3, 0]])
    # shown: {0, 1, 3} of 5 items -> 3 / 5
    assert coverage(topk, 5) == pytest.approx(0.6)
    assert coverage(torch.full((2, 3), -1), 5) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_coverage_matches_pyg(seed):
    topk = random_lists(seed)
    assert coverage(topk, 23) == pytest.approx(pyg(LinkPredCoverage(5, 23), topk), abs=1e-7)
    # with padding: the same as PyG on the lists with each pad replaced by an item of its row
    padded = topk.clone()
    padded[::2, 3:] = -1
    filled = torch.where(padded >= 0, padded, padded[:, :1])
    assert coverage(padded, 23) == pytest.approx(pyg(LinkPredCoverage(5, 23), filled), abs=1e-7)


# ---- intra-list diversity --------------------------------------------------------------------

def test_intra_list_diversity_by_hand():
    vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    topk = torch.tensor([[0, 1, 2], [2, -1, -1], [0, 2, -1]])
    # list 0: pairs (0,1) cos 0 -> 1; (0,2), (1,2) cos 1/sqrt2 -> 1 - 0.70711 = 0.29289 each;
    #         mean (1 + 2 * 0.29289) / 3 = 0.52860
    # list 1: one item, skipped.  list 2: (0,2) -> 0.29289
    # mean over the two lists: (0.52860 + 0.29289) / 2 = 0.41074
    d = 1 - 1 / math.sqrt(2)
    assert intra_list_diversity(topk, vecs) == pytest.approx(((1 + 2 * d) / 3 + d) / 2)
    # a zero vector (item 3) is similar to nothing: distance 1
    assert intra_list_diversity(torch.tensor([[3, 0]]), vecs) == pytest.approx(1.0)
    assert math.isnan(intra_list_diversity(torch.tensor([[1, -1]]), vecs))


def test_intra_list_diversity_multi_hot():
    genres = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # (0,1): cos = 1 / sqrt(2) -> 0.29289; (0,2): 0 -> 1; (1,2): 0 -> 1; mean 2.29289 / 3
    assert intra_list_diversity(torch.tensor([[0, 1, 2]]), genres) == pytest.approx((3 - 1 / math.sqrt(2)) / 3)


@pytest.mark.parametrize("seed", range(3))
def test_intra_list_diversity_matches_pyg_categories(seed):
    # PyG: div = 1 - sum_{i != j} [cat_i == cat_j] / (k (k - 1)), the mean over ordered pairs of
    # 1 - sim with sim 1 for a shared category; our cosine of one-hot categories is that sim.
    topk = random_lists(seed)
    category = torch.randint(0, 4, (23,), generator=torch.Generator().manual_seed(seed))
    onehot = torch.nn.functional.one_hot(category, 4).float()
    expect = pyg(LinkPredDiversity(5, category), topk)
    assert intra_list_diversity(topk, onehot) == pytest.approx(expect, abs=1e-6)


def test_intra_list_diversity_chunks_like_one_pass(monkeypatch):
    import graphrec.evaluation.beyond as beyond

    topk = random_lists(4, num_users=40)
    topk[::3, 2:] = -1
    vecs = torch.randn(23, 8, generator=torch.Generator().manual_seed(0))
    whole = intra_list_diversity(topk, vecs)
    monkeypatch.setattr(beyond, "_CHUNK_VALUES", 5 * 8 * 3)  # three users per chunk
    assert intra_list_diversity(topk, vecs) == pytest.approx(whole, abs=1e-12)
    # the slow reference: per user, per pair
    v = torch.nn.functional.normalize(vecs.double(), dim=1)
    per_user = []
    for row in topk.tolist():
        items = [i for i in row if i >= 0]
        pairs = [(a, b) for x, a in enumerate(items) for b in items[x + 1:]]
        per_user.append(sum(1 - float(v[a] @ v[b]) for a, b in pairs) / len(pairs))
    assert whole == pytest.approx(sum(per_user) / len(per_user), abs=1e-12)


# ---- novelty --------------------------------------------------------------------------------

def test_novelty_by_hand():
    popularity = torch.tensor([8, 4, 2, 1, 0])
    # 8 users: p = 1, 1/2, 1/4, 1/8 and, for the unseen item, 1/8 -> -log2 p = 0, 1, 2, 3, 3
    # lists: [0, 1] -> 0.5; [2, 4] -> 2.5; [3, pad] -> 3; mean 6 / 3 = 2
    topk = torch.tensor([[0, 1], [2, 4], [3, -1]])
    assert novelty(topk, popularity, 8) == pytest.approx(2.0)
    assert novelty(torch.tensor([[0]]), torch.tensor([12]), 8) == 0.0  # p capped at 1
    assert math.isnan(novelty(torch.full((1, 2), -1), popularity, 8))


@pytest.mark.parametrize("seed", range(3))
def test_novelty_matches_pyg_average_popularity_of_self_information(seed):
    topk = random_lists(seed)
    counts = torch.randint(0, 30, (23,), generator=torch.Generator().manual_seed(seed))
    info = -torch.log2((counts.clamp(min=1) / 30.0).clamp(max=1))
    expect = pyg(LinkPredAveragePopularity(5, info), topk)
    assert novelty(topk, counts, 30) == pytest.approx(expect, abs=1e-5)


# ---- Gini -----------------------------------------------------------------------------------

def test_gini_by_hand():
    topk = torch.tensor([[0, 1], [0, 2], [0, -1]])
    # exposure over 4 items: [3, 1, 1, 0]; sorted [0, 1, 1, 3], weights 2i - n - 1 = -3, -1, 1, 3
    # sum = 0 - 1 + 1 + 9 = 9; n * total = 4 * 5 = 20 -> 0.45
    # (check: sum_{i,j} |x_i - x_j| = 18, 2 n^2 mean = 2 * 16 * 1.25 = 40 -> 0.45)
    assert gini(topk, 4) == pytest.approx(0.45)
    assert gini(torch.tensor([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)  # equal exposure
    assert gini(torch.tensor([[2], [2], [2]]), 5) == pytest.approx(1 - 1 / 5)  # all on one item
    # a repeat within a list is one exposure: [1, 1] -> 0 (counting occurrences, [1, 2], gives 1/6)
    assert gini(torch.tensor([[1, 1], [0, -1]]), 2) == pytest.approx(0.0)
    assert math.isnan(gini(torch.full((2, 2), -1), 4))


@pytest.mark.parametrize("seed", range(3))
def test_gini_matches_mean_absolute_difference(seed):
    topk = random_lists(seed, num_users=30)
    topk[::4, 3:] = -1
    x = [sum(1 for row in topk.tolist() if i in row) for i in range(23)]
    mad = sum(abs(a - b) for a in x for b in x)
    assert gini(topk, 23) == pytest.approx(mad / (2 * 23 ** 2 * (sum(x) / 23)))


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: coverage(torch.tensor([[0, 5]]), 5), r"item indices must lie in \[0, 5\)"),
    (lambda: coverage(torch.tensor([[0, -2]]), 5), r"item indices must lie in \[0, 5\)"),
    (lambda: coverage(torch.tensor([0, 1]), 5), r"topk must be \[B, K\]"),
    (lambda: coverage(torch.tensor([[0.0]]), 5), "integer item indices"),
    (lambda: gini(torch.tensor([[0]]), 0), "num_items must be positive"),
    (lambda: intra_list_diversity(torch.tensor([[0, 3]]), torch.randn(3, 2)), r"\[0, 3\)"),
    (lambda: intra_list_diversity(torch.tensor([[0, 1]]), torch.randn(3)), r"item_vecs must be \[num_items, F\]"),
    (lambda: novelty(torch.tensor([[0]]), torch.tensor([1, 2]), 0), "num_users must be positive"),
    (lambda: novelty(torch.tensor([[0]]), torch.tensor([-1, 2]), 3), "non-negative counts"),
])
def test_errors(call, message):
    with pytest.raises(GraphrecError, match=message) as err:
        call()
    assert "\n" not in str(err.value)
