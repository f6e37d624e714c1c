"""Re-rankers against slow, obviously correct references written one user at a time: MMR by its
definition, DPP by greedy argmax of log det of the kernel's sub-matrix (``slogdet``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphrec.errors import GraphrecError
from graphrec.serve.rerank import dpp, freshness_boost, mmr

B, C, F, K = 5, 17, 6, 7  # asymmetric on purpose: a transposition fails loudly


def random_case(seed: int, with_mask: bool = True, f: int = F):
    """Scores with distinct values, some -inf padding, a mask, and one row with < K valid."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, C, generator=g) * 3 + 1
    vecs = torch.randn(B, C, f, generator=g)
    mask = torch.rand(B, C, generator=g) > 0.2 if with_mask else torch.ones(B, C, dtype=torch.bool)
    scores[0, -3:] = float("-inf")  # padding at the end of a row
    mask[1, 4:] = False  # a row with only a few valid candidates (fewer than K)
    return scores, vecs, mask


def valid_of(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(scores) & mask


def rel_of(s: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Min-max normalized relevance of one row over its valid candidates."""
    lo, hi = s[ok].min(), s[ok].max()
    return np.where(ok, (s - lo) / (hi - lo) if hi > lo else 1.0, 0.0)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def argmax_ties(values: dict[int, float], rel: np.ndarray) -> int:
    """Largest value; ties to the more relevant, then the lower position."""
    return max(values, key=lambda i: (values[i], rel[i], -i))


def mmr_reference(scores, sim, mask, k, lam) -> list[list[int]]:
    out = []
    for b in range(scores.shape[0]):
        s, ok = scores[b].numpy().astype(np.float64), valid_of(scores, mask)[b].numpy()
        rel = rel_of(np.where(ok, s, 0.0), ok)
        picked: list[int] = []
        for _ in range(k):
            left = [i for i in range(s.size) if ok[i] and i not in picked]
            if not left:
                picked.append(-1)
                continue
            div = {i: max((sim[b][i, j] for j in picked if j >= 0), default=0.0) for i in left}
            picked.append(argmax_ties({i: lam * rel[i] - (1 - lam) * div[i] for i in left}, rel))
        out.append(picked)
    return out


def dpp_reference(scores, S, mask, k, lam, eps=1e-4, jitter=1e-6) -> list[list[int]]:
    """Greedy MAP of L = diag(q) (S + jitter I) diag(q), q = exp(lam / (2 (1 - lam)) r): each
    step the candidate of largest log det L_{Y+j}; once the new item's own share of the
    determinant, det(S'_{Y+j}) / det(S'_Y), falls below eps, the rest by score."""
    out = []
    for b in range(scores.shape[0]):
        s, ok = scores[b].numpy().astype(np.float64), valid_of(scores, mask)[b].numpy()
        rel = rel_of(np.where(ok, s, 0.0), ok)
        q = np.exp(lam / (2 * (1 - lam)) * rel)
        Sj = S[b] + jitter * np.eye(s.size)
        L = q[:, None] * Sj * q[None, :]
        picked: list[int] = []
        stopped = False
        for _ in range(k):
            left = [i for i in range(s.size) if ok[i] and i not in picked]
            if not left:
                picked.append(-1)
                continue
            if not stopped:
                logdet = {j: np.linalg.slogdet(L[np.ix_(picked + [j], picked + [j])])[1] for j in left}
                j = argmax_ties(logdet, rel)
                base = np.linalg.slogdet(Sj[np.ix_(picked, picked)])[1] if picked else 0.0
                share = np.exp(np.linalg.slogdet(Sj[np.ix_(picked + [j], picked + [j])])[1] - base)
                stopped = share < eps
            if stopped:
                j = argmax_ties({i: rel[i] for i in left}, rel)
            picked.append(j)
        out.append(picked)
    return out


def cosine(vecs: torch.Tensor) -> np.ndarray:
    v = np.stack([unit(x) for x in vecs.double().numpy()])
    return np.einsum("bif,bjf->bij", v, v)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.7])
def test_mmr_matches_reference(seed, lam):
    scores, vecs, mask = random_case(seed)
    got = mmr(scores, vecs, K, lam, mask=mask)
    assert got.shape == (B, K) and got.dtype == torch.long
    assert got.tolist() == mmr_reference(scores, cosine(vecs), mask, K, lam)
    assert (got[1] >= 0).sum() == int(valid_of(scores, mask)[1].sum()) < K  # -1 fills the rest


def test_mmr_with_similarity_matrix():
    scores, vecs, mask = random_case(7)
    sim = torch.rand(B, C, C, generator=torch.Generator().manual_seed(1))  # any matrix, not cosine
    got = mmr(scores, None, K, 0.5, mask=mask, sim=sim)
    assert got.tolist() == mmr_reference(scores, sim.double().numpy(), mask, K, 0.5)


@pytest.mark.parametrize("fn", [mmr, dpp])
def test_lam_one_is_top_k(fn):
    scores, vecs, mask = random_case(3)
    got = fn(scores, vecs, K, 1.0, mask=mask)
    expect = torch.topk(scores.masked_fill(~mask, float("-inf")), K, dim=1)
    assert torch.equal(got, expect.indices.masked_fill(~torch.isfinite(expect.values), -1))


def test_mmr_lam_zero_most_relevant_then_least_similar():
    # candidate 0 is the best; 1 is a near copy of 0 with the second score; 2 is orthogonal
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    vecs = torch.tensor([[[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.7, 0.7]]])
    assert mmr(scores, vecs, 4, 0.0).tolist() == [[0, 2, 3, 1]]
    assert mmr(scores, vecs, 4, 1.0).tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9])
def test_dpp_matches_slogdet_reference(seed, lam):
    # F = 6 < K = 7: the seventh item lies in the span of the first six, so rows stop and fill
    scores, vecs, mask = random_case(seed)
    S = cosine(vecs)
    S[:, np.arange(C), np.arange(C)] = 1.0
    got = dpp(scores, vecs, K, lam, mask=mask)
    assert got.tolist() == dpp_reference(scores, S, mask, K, lam)


@pytest.mark.parametrize("seed", range(3))
def test_dpp_full_rank_and_similarity_matrix(seed):
    scores, vecs, mask = random_case(seed, f=12)  # F >= K: no early stop
    S = cosine(vecs)
    S[:, np.arange(C), np.arange(C)] = 1.0
    expect = dpp_reference(scores, S, mask, K, 0.6)
    assert dpp(scores, vecs, K, 0.6, mask=mask).tolist() == expect
    assert dpp(scores, None, K, 0.6, mask=mask, sim=torch.from_numpy(S)).tolist() == expect


def test_dpp_high_lam_does_not_overflow():
    scores, vecs, mask = random_case(5)
    S = cosine(vecs)
    S[:, np.arange(C), np.arange(C)] = 1.0
    got = dpp(scores, vecs, K, 0.995, mask=mask)  # q^2 = exp(199 r): beyond float32
    assert got.tolist() == dpp_reference(scores, S, mask, K, 0.995)


def test_dpp_prefers_diverse_items():
    # two near-duplicates on top; DPP at lam = 0.5 takes the orthogonal third over the copy
    scores = torch.tensor([[3.0, 2.9, 2.0]])
    vecs = torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]])
    assert dpp(scores, vecs, 2, 0.5).tolist() == [[0, 2]]
    assert dpp(scores, vecs, 2, 1.0).tolist() == [[0, 1]]


@pytest.mark.parametrize("fn", [mmr, dpp])
def test_invalid_never_picked_and_k_beyond_candidates(fn):
    scores, vecs, mask = random_case(2)
    got = fn(scores, vecs, C + 3, 0.5, mask=mask)
    valid = valid_of(scores, mask)
    assert got.shape == (B, C + 3)
    for b in range(B):  # each row: its valid candidates once each, then -1
        row = got[b].tolist()
        n = int(valid[b].sum())
        assert sorted(row[:n]) == torch.nonzero(valid[b]).flatten().tolist()
        assert row[n:] == [-1] * (C + 3 - n)
    none = fn(torch.full((2, 4), float("-inf")), torch.randn(2, 4, 3), 3, 0.5)
    assert none.tolist() == [[-1] * 3] * 2


@pytest.mark.parametrize("fn", [mmr, dpp])
@pytest.mark.parametrize("kwargs, message", [
    (dict(lam=1.5), r"lam must lie in \[0, 1\]"),
    (dict(lam=-0.1), r"lam must lie in \[0, 1\]"),
    (dict(lam=float("nan")), r"lam must lie in \[0, 1\]"),
    (dict(k=0), "k must be a positive integer"),
    (dict(vecs=torch.randn(B, C + 1, F)), r"item_vecs must be \[B, C, F\]"),
    (dict(vecs=torch.randn(C, F)), r"item_vecs must be \[B, C, F\]"),
    (dict(vecs=None, sim=torch.rand(B, C, C + 1)), r"sim must be \[B, C, C\]"),
    (dict(sim=torch.rand(B, C, C)), "exactly one of item_vecs"),
    (dict(mask=torch.ones(C, B, dtype=torch.bool)), r"mask must be a bool \[B, C\]"),
    (dict(scores=torch.randn(C)), r"scores must be \[B, C\]"),
])
def test_errors(fn, kwargs, message):
    scores, vecs, mask = random_case(0)
    args = dict(scores=scores, vecs=vecs, k=K, lam=0.5, mask=mask, sim=None) | kwargs
    with pytest.raises(GraphrecError, match=message) as err:
        fn(args["scores"], args["vecs"], args["k"], args["lam"], mask=args["mask"], sim=args["sim"])
    assert "\n" not in str(err.value) and str(err.value).startswith(fn.__name__)


def test_dpp_rejects_asymmetric_similarity():
    scores, _, _ = random_case(0)
    with pytest.raises(GraphrecError, match="sim must be symmetric"):
        dpp(scores, None, K, 0.5, sim=torch.rand(B, C, C))


def test_freshness_boost():
    day = 86400.0
    scores = torch.tensor([[1.0, 1.0, float("-inf")], [0.0, 2.0, 1.0]])
    t = torch.tensor([10 * day, 9 * day, 0.0])
    got = freshness_boost(scores, t, now=10 * day, half_life=day, weight=0.5)
    # ages 0, 1 and 10 days: bonuses 0.5, 0.25 and 0.5 / 1024
    expect = torch.tensor([[1.5, 1.25, float("-inf")], [0.5, 2.25, 1 + 0.5 / 1024]])
    assert torch.allclose(got, expect) and got.dtype == scores.dtype
    per_row = freshness_boost(scores, t.expand(2, 3), now=10 * day, half_life=day, weight=0.5)
    assert torch.equal(per_row, got)
    future = freshness_boost(scores[:1, :1], torch.tensor([20 * day]), now=10 * day, half_life=day, weight=0.5)
    assert math.isclose(float(future), 1.5)  # a time after now counts as age 0
    # epoch seconds keep their precision: one hour of age at half-life one hour halves the bonus
    now = 1.7e9
    one = freshness_boost(torch.zeros(1, 1), torch.tensor([now - 3600.0], dtype=torch.float64),
                          now=now, half_life=3600.0, weight=1.0)
    assert math.isclose(float(one), 0.5, rel_tol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(half_life=0.0), "half_life must be > 0"),
    (dict(item_time=torch.zeros(4)), r"item_time must be \[C\] or \[B, C\]"),
    (dict(weight=float("inf")), "must be finite"),
])
def test_freshness_errors(kwargs, message):
    args = dict(scores=torch.zeros(2, 3), item_time=torch.zeros(3), now=1.0, half_life=1.0, weight=1.0) | kwargs
    with pytest.raises(GraphrecError, match=message):
        freshness_boost(**args)
