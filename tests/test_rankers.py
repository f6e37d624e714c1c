"""The learned rankers: cross layers and losses against hand computations, learning a
feature-cross task, weights-only round trips, determinism, padding and one-line errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from graphrec.errors import GraphrecError, TrainingDiverged
from graphrec.models.dcn import (CandidateRanker, RankerConfig, candidate_ndcg, fit_ranker,
                                 ranker_from_dict)
from graphrec.nn.cross import CrossLayer, CrossLayerV2, CrossNetwork

VOCAB = [5, 7]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tiny models: one thread is ~10x faster than several fighting over shared cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- cross layers against explicit loops -------------------------------------------------------

def hand_v1(x0, x, w, b):
    """x_{l+1}[n, i] = x0[n, i] * sum_j x[n, j] w[j] + b[i] + x[n, i], one element at a time."""
    x0, x, w, b = x0.tolist(), x.tolist(), w.tolist(), b.tolist()
    out = []
    for n in range(len(x0)):
        s = sum(x[n][j] * w[j] for j in range(len(w)))
        out.append([x0[n][i] * s + b[i] + x[n][i] for i in range(len(w))])
    return torch.tensor(out, dtype=torch.float64)


def hand_v2(x0, x, W, b):
    """x_{l+1}[n, i] = x0[n, i] * (sum_j W[i, j] x[n, j] + b[i]) + x[n, i]."""
    x0, x, W, b = x0.tolist(), x.tolist(), W.tolist(), b.tolist()
    out = []
    for n in range(len(x0)):
        row = []
        for i in range(len(b)):
            wx = sum(W[i][j] * x[n][j] for j in range(len(b)))
            row.append(x0[n][i] * (wx + b[i]) + x[n][i])
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def matmul_loops(U, V):
    """(U V^T)[i, j] = sum_r U[i, r] V[j, r]."""
    U, V = U.tolist(), V.tolist()
    return torch.tensor([[sum(U[i][r] * V[j][r] for r in range(len(U[0]))) for j in range(len(V))]
                         for i in range(len(U))], dtype=torch.float64)


X0 = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 3.0]], dtype=torch.float64)
XL = torch.tensor([[0.3, -0.2, 0.7], [1.5, 0.25, -2.0]], dtype=torch.float64)


def set_(param, values):
    with torch.no_grad():
        param.copy_(torch.as_tensor(values, dtype=param.dtype))


def test_cross_layer_v1_is_the_papers_formula():
    layer = CrossLayer(3).double()
    w, b = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.1, 0.2, -0.3])
    set_(layer.weight, w), set_(layer.bias, b)
    assert torch.allclose(layer(X0, XL), hand_v1(X0, XL, w, b), atol=1e-12)
    # any leading shape: [2, 4, 3] is the [8, 3] computation
    x0, x = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    flat = hand_v1(x0.reshape(8, 3), x.reshape(8, 3), w, b).view(2, 4, 3)
    assert torch.allclose(layer(x0, x), flat, atol=1e-12)


def test_cross_layer_v2_full_rank_is_the_papers_formula():
    layer = CrossLayerV2(3).double()
    W = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.1, -0.3], [0.0, 0.7, 1.5]])  # not symmetric
    b = torch.tensor([0.1, 0.2, -0.3])
    set_(layer.weight, W), set_(layer.bias, b)
    assert torch.allclose(layer(X0, XL), hand_v2(X0, XL, W, b), atol=1e-12)
    assert not torch.allclose(layer(X0, XL), hand_v2(X0, XL, W.T, b))  # orientation matters
    x0, x = torch.randn(3, 2, 3, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)
    flat = hand_v2(x0.reshape(6, 3), x.reshape(6, 3), W, b).view(3, 2, 3)
    assert torch.allclose(layer(x0, x), flat, atol=1e-12)


@pytest.mark.parametrize("dim,rank", [(4, 2), (3, 1), (3, 5)])  # rank >= dim is allowed
def test_low_rank_v2_is_full_rank_with_w_equal_u_vt(dim, rank):
    torch.manual_seed(0)
    low = CrossLayerV2(dim, rank).double()
    full = CrossLayerV2(dim).double()
    set_(low.bias, torch.randn(dim))
    W = matmul_loops(low.u, low.v)
    set_(full.weight, W), set_(full.bias, low.bias)
    x0, x = torch.randn(5, dim, dtype=torch.float64), torch.randn(5, dim, dtype=torch.float64)
    assert torch.allclose(low(x0, x), full(x0, x), atol=1e-12)
    assert torch.allclose(low(x0, x), hand_v2(x0, x, W, low.bias), atol=1e-12)
    assert torch.allclose(low.matrix(), W, atol=1e-12)
    assert sum(p.numel() for p in low.parameters()) == 2 * dim * rank + dim


@pytest.mark.parametrize("version", [1, 2])
def test_two_layer_network_applies_the_formula_twice_with_x0_fixed(version):
    net = CrossNetwork(3, 2, version).double()
    torch.manual_seed(1)
    hand = hand_v1 if version == 1 else hand_v2
    weights = []
    for layer in net.layers:
        w = torch.randn(3) if version == 1 else torch.randn(3, 3)
        b = torch.randn(3)
        set_(layer.weight, w), set_(layer.bias, b)
        weights.append((w, b))
    x1 = hand(X0, X0, *weights[0])
    x2 = hand(X0, x1, *weights[1])  # x_0, not x_1, multiplies in the second layer
    assert torch.allclose(net(X0), x2, atol=1e-12)
    assert not torch.allclose(net(X0), hand(x1, x1, *weights[1]))


# ---- losses and metric against hand computations -----------------------------------------------

def identity_ranker(loss: str) -> CandidateRanker:
    """A logistic ranker over one dense column with weight 1 and bias 0: logits = dense."""
    r = CandidateRanker(1, [], RankerConfig(kind="logistic", loss=loss))
    set_(r.head.weight, [[1.0]]), set_(r.head.bias, [0.0])
    return r


def sig(z):
    return 1 / (1 + math.exp(-z))


def test_bce_is_the_mean_over_valid_candidates():
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.5, -3.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, False], [True, False, True]])
    r = identity_ranker("bce")
    tokens = torch.zeros(2, 3, 0, dtype=torch.long)
    expected = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5))
                 + math.log(sig(1.0))) / 4
    assert r.loss(logits[..., None], tokens, mask, labels).item() == pytest.approx(expected, rel=1e-6)
    out = r(logits[..., None], tokens, mask)
    assert torch.equal(out[mask], logits[mask]) and torch.isinf(out[~mask]).all() and (out[~mask] < 0).all()


def test_listwise_softmax_by_hand():
    logits = torch.tensor([[1.0, 2.0, 0.5, 9.0],    # two positives; the masked 9.0 is no candidate
                           [0.3, -0.2, 1.0, 0.0],   # no positive: skipped
                           [0.0, 3.0, -1.0, 2.0],   # one positive, one masked candidate
                           [0.1, 0.2, 0.3, 0.4]])   # its only positive is padding: skipped
    labels = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    mask = torch.tensor([[True, True, True, False], [True] * 4, [True, True, True, False],
                         [True, True, True, False]])
    z0 = math.exp(1.0) + math.exp(2.0) + math.exp(0.5)
    row0 = -(math.log(math.exp(1.0) / z0) + math.log(math.exp(2.0) / z0)) / 2
    row2 = -math.log(math.exp(-1.0) / (math.exp(0.0) + math.exp(3.0) + math.exp(-1.0)))
    r = identity_ranker("softmax")
    loss = r.loss(logits[..., None], torch.zeros(4, 4, 0, dtype=torch.long), mask, labels)
    assert loss.item() == pytest.approx((row0 + row2) / 2, rel=1e-6)
    none = r.loss(logits[..., None], torch.zeros(4, 4, 0, dtype=torch.long), mask, torch.zeros(4, 4))
    assert none.item() == 0.0 and none.requires_grad


def test_ndcg_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.5, 0.8], [0.1, 0.2, 0.3, 0.4], [3.0, 0.0, 1.0, 2.0]])
    labels = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0, 0, 0, 0], [1.0, 0, 0, 1.0]])
    mask = torch.tensor([[True] * 4, [True] * 4, [False, True, True, True]])
    # row 0: order 0, 3, 2, 1 -> positives at ranks 3 and 4; row 2: the masked positive is no gain
    row0 = (1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    row2 = 1.0  # valid order 3, 2, 1: its one positive first
    assert candidate_ndcg(logits, labels, mask).tolist() == pytest.approx([row0, row2])


# ---- learning a feature cross ------------------------------------------------------------------

def synthetic(users: int, seed: int, C: int = 20, D: int = 6):
    """Positive iff 2 d0 d1 + 0.7 d2 + [token0 in {1, 3}] > 1.5; C/2 to C valid candidates.
    The cross d0 d1 carries most of the signal, so a linear model sees only part of it."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(users, C, D, generator=g)
    tokens = torch.stack([torch.randint(0, VOCAB[0], (users, C), generator=g),
                          torch.randint(0, VOCAB[1], (users, C), generator=g)], -1)
    mask = torch.arange(C) < torch.randint(C // 2, C + 1, (users, 1), generator=g)
    score = (2 * dense[..., 0] * dense[..., 1] + 0.7 * dense[..., 2]
             + ((tokens[..., 0] == 1) | (tokens[..., 0] == 3)).float())
    return dense, tokens, mask, ((score > 1.5) & mask).float()


def auc(scores, labels, mask):
    """Pooled ROC AUC of the valid candidates (Mann-Whitney; continuous scores, no ties)."""
    s, y = scores[mask], labels[mask] > 0
    ranks = s.argsort().argsort().double() + 1
    p, q = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - p * (p + 1) / 2) / (p * q))


SETTINGS = {"logistic": {"kind": "logistic"}, "mlp": {"kind": "mlp"}, "dcn": {"kind": "dcn"},
            "dcn-v2": {"kind": "dcn-v2"},
            "dcn-v2-parallel-r4": {"kind": "dcn-v2", "structure": "parallel", "rank": 4},
            "dcn-v2-softmax": {"kind": "dcn-v2", "loss": "softmax"}}


@pytest.fixture(scope="module")
def fitted():
    train, valid, test = synthetic(400, 0), synthetic(100, 1), synthetic(300, 2)
    out = {}
    for name, opts in SETTINGS.items():
        torch.manual_seed(0)
        ranker = CandidateRanker(6, VOCAB, RankerConfig(deep_layers=(32, 16), **opts))
        history = fit_ranker(ranker, *train, epochs=25, lr=3e-3, batch_size=32, weight_decay=1e-5,
                             valid=valid, patience=4, seed=0)
        with torch.no_grad():
            scores = ranker(*test[:3])
            restored = float(candidate_ndcg(ranker(*valid[:3]), valid[3], valid[2]).mean())
        out[name] = {"auc": auc(scores, test[3], test[2]),
                     "ndcg": float(candidate_ndcg(scores, test[3], test[2]).mean()),
                     "history": history, "restored_ndcg": restored}
    return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_kind_learns_well_above_chance(fitted, name):
    got = fitted[name]
    assert got["auc"] > 0.65, got["auc"]  # chance is 0.5
    h = got["history"]
    assert h["train_loss"][-1] < h["train_loss"][0]
    # the weights of the best validation epoch are the ones kept
    assert got["restored_ndcg"] == pytest.approx(h["valid_ndcg"][h["best_epoch"] - 1], abs=1e-6)
    assert max(h["valid_ndcg"]) == h["valid_ndcg"][h["best_epoch"] - 1]
    json.dumps(h, allow_nan=False)


def test_cross_networks_beat_logistic_regression_on_a_cross_feature(fitted):
    linear = fitted["logistic"]
    assert linear["auc"] < 0.85  # it cannot express d0 * d1
    for name in ("dcn", "dcn-v2", "dcn-v2-parallel-r4", "dcn-v2-softmax", "mlp"):
        assert fitted[name]["auc"] > 0.95 and fitted[name]["auc"] > linear["auc"] + 0.15, (name, fitted[name])
        assert fitted[name]["ndcg"] > linear["ndcg"] + 0.1, (name, fitted[name], linear)


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    train = synthetic(64, 3)
    states, histories = [], []
    for _ in range(2):
        torch.manual_seed(5)
        ranker = CandidateRanker(6, VOCAB, RankerConfig(kind="dcn-v2", deep_layers=(16,), dropout=0.3))
        before = torch.get_rng_state()
        histories.append(fit_ranker(ranker, *train, epochs=3, batch_size=16, seed=7))
        assert torch.equal(torch.get_rng_state(), before)
        states.append(ranker.state_dict())
    assert histories[0] == histories[1] and histories[0]["epochs_run"] == 3
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not ranker.training


def test_padding_never_changes_a_valid_score():
    dense, tokens, mask, _ = synthetic(8, 4)
    ranker = CandidateRanker(6, VOCAB, RankerConfig(kind="dcn", deep_layers=(8,)))
    junk_dense = torch.where(mask[..., None], dense, torch.full_like(dense, float("nan")))
    junk_tokens = torch.where(mask[..., None], tokens, torch.full_like(tokens, -99))
    with torch.no_grad():
        a, b = ranker(dense, tokens, mask), ranker(junk_dense, junk_tokens, mask)
    assert torch.equal(a, b) and torch.isneginf(a[~mask]).all()
    labels = (torch.rand(mask.shape) < 0.3).float()
    for loss in ("bce", "softmax"):
        ranker.cfg.loss = loss
        ranker.zero_grad()
        ranker.loss(junk_dense, junk_tokens, mask, labels).backward()
        assert all(torch.isfinite(p.grad).all() for p in ranker.parameters() if p.grad is not None)


# ---- weights-only round trip -------------------------------------------------------------------

@pytest.mark.parametrize("opts", [{"kind": "logistic"}, {"kind": "mlp"}, {"kind": "dcn"},
                                  {"kind": "dcn-v2", "rank": 3, "structure": "parallel"},
                                  {"kind": "dcn-v2", "dropout": 0.2, "loss": "softmax"}])
def test_save_load_round_trip_gives_identical_logits(opts, tmp_path):
    dense, tokens, mask, _ = synthetic(6, 5)
    torch.manual_seed(0)
    ranker = CandidateRanker(6, VOCAB, RankerConfig(deep_layers=(16, 8), **opts)).eval()
    torch.save(ranker.state_dict(), tmp_path / "ranker.pt")
    (tmp_path / "ranker.json").write_text(json.dumps(ranker.config_dict()))
    torch.manual_seed(1)  # other initial weights: only the load can make them equal
    again = ranker_from_dict(json.loads((tmp_path / "ranker.json").read_text()))
    again.load_state_dict(torch.load(tmp_path / "ranker.pt", weights_only=True))
    again.eval()
    with torch.no_grad():
        assert torch.equal(ranker(dense, tokens, mask), again(dense, tokens, mask))
    assert again.config_dict() == ranker.config_dict()
    assert ranker_from_dict(json.loads(json.dumps(ranker.describe()))).describe() == ranker.describe()


# ---- errors ------------------------------------------------------------------------------------

def _ranker():
    return CandidateRanker(6, VOCAB, RankerConfig(kind="mlp", deep_layers=(4,)))


D, T, M, Y = synthetic(3, 6, C=5)


def _with(tensor, index, value):
    out = tensor.clone()
    out[index] = value
    return out


ERRORS = [
    (lambda: RankerConfig(kind="xgboost"), "kind: must be one of dcn, dcn-v2, mlp, logistic"),
    (lambda: RankerConfig(structure="zigzag"), "structure: must be stacked or parallel"),
    (lambda: RankerConfig(loss="hinge"), "loss: must be one of bce, softmax"),
    (lambda: RankerConfig(rank=0), "rank: must be a positive integer"),
    (lambda: RankerConfig(rank=-2), "rank: must be a positive integer"),
    (lambda: RankerConfig(kind="dcn", rank=4), "rank: applies to kind dcn-v2 only"),
    (lambda: RankerConfig(cross_layers=0), "cross_layers: must be >= 1"),
    (lambda: RankerConfig(kind="mlp", deep_layers=()), "kind mlp needs at least one layer"),
    (lambda: RankerConfig(deep_layers=["a"]), r"deep_layers\[0\]: expected an integer"),
    (lambda: RankerConfig(dropout=1.0), r"dropout: must lie in \[0, 1\)"),
    (lambda: RankerConfig(token_dim=0), "token_dim: must be >= 1"),
    (lambda: CandidateRanker(6, [5, 0]), r"vocab\[1\] must be an integer >= 1"),
    (lambda: CandidateRanker(0, []), "no features"),
    (lambda: CrossLayerV2(4, rank=0), "rank must be a positive integer"),
    (lambda: CrossNetwork(4, 2, version=1, rank=2), "rank applies to version 2 only"),
    (lambda: CrossNetwork(4, 2, version=3), "version must be 1 or 2"),
    (lambda: CrossNetwork(4, 0), "num_layers must be a positive integer"),
    (lambda: _ranker()(D[..., :5], T, M), r"dense must be a float tensor \[B, C, 6\]"),
    (lambda: _ranker()(D, T[..., :1], M), r"tokens must be an integer tensor \[3, 5, 2\]"),
    (lambda: _ranker()(D, T.float(), M), "tokens must be an integer tensor"),
    (lambda: _ranker()(D, T, M[:2]), r"mask must be a bool tensor \[3, 5\]"),
    (lambda: _ranker()(D, T, M.float()), "mask must be a bool tensor"),
    (lambda: _ranker()(_with(D, (0, 0, 0), float("inf")), T, M), "dense has non-finite values"),
    (lambda: _ranker()(D, _with(T, (0, 0, 0), 5), M), r"token column 0: code 5 outside its vocabulary \[0, 5\)"),
    (lambda: _ranker()(D, _with(T, (1, 0, 1), -1), M), r"token column 1: code -1 outside"),
    (lambda: _ranker().loss(D, T, M, Y[:, :4]), r"labels must be \[3, 5\] like mask"),
    (lambda: _ranker().loss(D, T, M, _with(Y, (0, 0), 0.5)), "labels must be 0 or 1"),
    (lambda: fit_ranker(_ranker(), D, T, M, Y, epochs=0), "epochs must be a positive integer"),
    (lambda: fit_ranker(_ranker(), D, T, M, Y, lr=0.0), "lr must be > 0"),
    (lambda: fit_ranker(_ranker(), D, T, M, Y, valid=(D, T, M)), "valid must be a tuple"),
    (lambda: fit_ranker(_ranker(), D, T, M, Y, valid=(D, T, M, Y[:, :4])), "valid: labels must be"),
    (lambda: fit_ranker(_ranker(), D, T, M[:, :4], Y), "fit_ranker: mask must be"),
    (lambda: ranker_from_dict({"vocab": [], "config": {}}), "expected a dict with dense_dim, vocab and config"),
    (lambda: ranker_from_dict({"dense_dim": 2, "vocab": [], "config": {"colour": 1}}), "unknown option 'colour'"),
]


@pytest.mark.parametrize("make,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_are_one_line(make, message):
    with pytest.raises(GraphrecError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_padding_may_hold_codes_outside_the_vocabulary():
    tokens = torch.where(M[..., None], T, torch.full_like(T, 1000))
    assert torch.isfinite(_ranker()(D, tokens, M)[M]).all()


def test_divergence_is_an_error_that_keeps_the_last_good_weights():
    torch.manual_seed(0)
    ranker = CandidateRanker(6, VOCAB, RankerConfig(kind="dcn-v2", deep_layers=(8,)))
    initial = {k: v.clone() for k, v in ranker.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="non-finite loss in epoch 1") as info:
        fit_ranker(ranker, *synthetic(64, 0), epochs=5, lr=1e8, batch_size=16)
    assert "\n" not in str(info.value)
    assert all(torch.equal(initial[k], v) for k, v in ranker.state_dict().items())
