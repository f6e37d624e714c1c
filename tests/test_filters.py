"""The graph-filter family (bspm, turbo-cf, poly-filter and the shared operator) against dense
numpy references of their formulas on a tiny asymmetric graph, and their behaviour."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.linalg
import torch

from conftest import random_graph
from graphrec.data.graph import edge_subgraph, user_sequences
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import topk_excluding
from graphrec.models import build_model, model_config
from graphrec.models.filters import (
    DENSE_MAX_ITEMS, ItemGraph, OperatorConfig, Rows, choose_gram, integrate)
from graphrec.batches import History
from graphrec.schema import EDGE, USER

NUM_USERS, NUM_ITEMS = 11, 17


def graph(seed: int = 2):
    return random_graph(num_users=NUM_USERS, num_items=NUM_ITEMS, per_user=(1, 9), seed=seed)


def dense_r(g) -> np.ndarray:
    R = np.zeros((g[USER].num_nodes, g["item"].num_nodes))
    ei = g[EDGE].edge_index.numpy()
    R[ei[0], ei[1]] = 1.0
    return R


def inv_pow(d: np.ndarray, e: float) -> np.ndarray:
    return np.where(d > 0, np.maximum(d, 1e-12) ** -e, 0.0)


def gram_ref(R: np.ndarray, a: float = 0.5, b: float = 0.5, power: float = 1.0) -> np.ndarray:
    """P = (R~^T R~) ** power, R~ = D_U^-a R D_I^-b, in float64."""
    Rn = np.diag(inv_pow(R.sum(1), a)) @ R @ np.diag(inv_pow(R.sum(0), b))
    return (Rn.T @ Rn) ** power


def ideal_ref(R: np.ndarray, k: int) -> np.ndarray:
    """L = D_I^-1/2 V V^T D_I^1/2 with V the top-k right singular vectors of R~."""
    di = R.sum(0)
    Rn = np.diag(inv_pow(R.sum(1), 0.5)) @ R @ np.diag(inv_pow(di, 0.5))
    V = np.linalg.svd(Rn)[2][:k].T
    return np.diag(inv_pow(di, 0.5)) @ V @ V.T @ np.diag(np.sqrt(di))


def fitted(name: str, g, **options):
    """A fitted model; float32 products unless asked (references are compared at float32)."""
    options.setdefault("dtype", "float32")
    model = build_model(name, g[USER].num_nodes, g["item"].num_nodes, model_config(name, options))
    model.fit(g)
    return model


def scores(model) -> np.ndarray:
    return model.score(torch.arange(model.num_users)).double().numpy()


# --- the shared operator ----------------------------------------------------------------------

@pytest.mark.parametrize("a,b,power", [(0.5, 0.5, 1.0), (0.6, 0.4, 0.7), (0.3, 0.9, 1.3)])
@pytest.mark.parametrize("gram", ["dense", "sparse", "factored"])
def test_operator_is_the_normalised_gram_matrix(a, b, power, gram):
    g = graph()
    R = dense_r(g)
    P = gram_ref(R, a, b, power)
    ptr, items = user_sequences(g)
    if gram == "factored" and power != 1:
        with pytest.raises(GraphrecError, match="factored.*power 1"):
            from graphrec.models.filters import check_operator
            check_operator("poly-filter", OperatorConfig(gram="factored"), power)
        return
    op = ItemGraph(ptr, items, NUM_ITEMS, OperatorConfig(user_exp=a, item_exp=b, gram=gram), power)
    assert op.mode == gram and op.nbytes() > 0
    rows = Rows(History.of(ptr, items, torch.arange(NUM_USERS)), NUM_ITEMS, torch.device("cpu"))
    np.testing.assert_allclose(op.hop_rows(rows).double().numpy(), R @ P, rtol=1e-5, atol=1e-6)
    x = torch.randn(4, NUM_ITEMS, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(op.hop(x).double().numpy(), x.double().numpy() @ P,
                               rtol=1e-4, atol=1e-5)
    if gram == "dense":
        np.testing.assert_allclose(op.dense.double().numpy(), P, rtol=1e-5, atol=1e-6)


def test_automatic_dtype_is_bfloat16_only_where_measured_faster():
    from graphrec.models.filters import BF16_MIN_RANK, choose_dtype
    cpu = torch.device("cpu")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert choose_dtype("auto", cpu, BF16_MIN_RANK - 1) == torch.float32
    assert choose_dtype("auto", cpu, 448) == (torch.bfloat16 if native else torch.float32)
    assert choose_dtype("float32", cpu, 448) == torch.float32
    assert choose_dtype("bfloat16", cpu, 8) == torch.bfloat16


def test_prune_drops_the_smallest_entries_of_the_operator():
    g = graph()
    R = dense_r(g)
    P = gram_ref(R)
    ptr, items = user_sequences(g)
    for gram in ("sparse", "auto"):
        op = ItemGraph(ptr, items, NUM_ITEMS, OperatorConfig(gram=gram, prune=0.5))
        assert op.mode == "sparse"  # a pruned P is held explicitly, never factored or dense
        want = np.where(P >= np.quantile(P[P > 0], 0.5), P, 0.0)
        np.testing.assert_allclose(op.gram.toarray(), want, rtol=1e-5, atol=1e-7)
        assert op.gram.nnz < (P > 0).sum()
    with pytest.raises(GraphrecError, match="cannot prune"):
        build_model("graph-filter", 5, 8, model_config("graph-filter", {"gram": "factored",
                                                                        "prune": 0.5}))
    with pytest.raises(GraphrecError, match=r"prune must be in \[0, 1\)"):
        build_model("graph-filter", 5, 8, model_config("graph-filter", {"prune": 1.0}))


def test_automatic_choice_follows_the_measured_rule():
    assert choose_gram(1682, 1.0, "auto", 8.0, "f") == "dense"
    assert choose_gram(DENSE_MAX_ITEMS, 1.0, "auto", 8.0, "f") == "dense"
    assert choose_gram(DENSE_MAX_ITEMS + 1, 1.0, "auto", 8.0, "f") == "factored"
    assert choose_gram(40981, 0.7, "auto", 8.0, "f") == "sparse"
    assert choose_gram(1682, 1.0, "auto", 0.001, "f") == "factored"  # does not fit: not dense
    assert choose_gram(1682, 1.0, "auto", 8.0, "f", prune=0.5) == "sparse"
    with pytest.raises(GraphrecError, match=r"bspm: a dense item-item matrix of 40,981 items "
                                            r"takes 6\.3 GiB, over max_memory_gb=4"):
        choose_gram(40981, 1.0, "dense", 4.0, "bspm")


def test_integrate_matches_the_exponential():
    """RK4 at fine steps solves dx/dt = x A to the matrix exponential; Euler is first order."""
    A = np.array([[-1.0, 0.3], [0.2, -0.5]])
    x0 = np.array([1.0, 2.0])
    want = x0 @ scipy.linalg.expm(2.0 * A)
    got = integrate(x0, lambda x: x @ A, 2.0, 64, "rk4")[-1]
    np.testing.assert_allclose(got, want, rtol=1e-7)  # RK4 error ~ h^4
    coarse = integrate(x0, lambda x: x @ A, 2.0, 200, "euler")[-1]
    np.testing.assert_allclose(coarse, want, rtol=2e-2)
    assert len(integrate(x0, lambda x: x @ A, 1.0, 3, "euler")) == 4


# --- bspm ------------------------------------------------------------------------------------

def bspm_ref(R: np.ndarray, cfg: dict) -> np.ndarray:
    """BSPM step by step on dense float64 matrices: the ODEs of the paper's code, each solved
    by its fixed-step solver."""
    P = gram_ref(R)
    L = ideal_ref(R, cfg["k"])

    def solve(x, A, shift, T, K, solver):  # dx/dt = x A + shift x
        h, out = T / K, [x]
        f = lambda y: y @ A + shift * y  # noqa: E731
        for _ in range(K):
            if solver == "euler":
                x = x + h * f(x)
            else:
                k1 = f(x); k2 = f(x + h / 2 * k1); k3 = f(x + h / 2 * k2); k4 = f(x + h * k3)  # noqa: E702
                x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(x)
        return out

    blur = solve(R, P, -1.0, cfg["blur_time"], cfg["blur_steps"], cfg["blur_solver"])
    ideal = solve(R, L, -1.0, cfg["ideal_time"], cfg["ideal_steps"], cfg["ideal_solver"])[-1]
    beta = cfg["beta"]
    states = blur[1:]
    out = blur[-1]
    if cfg["sharpen"]:
        start = blur[-1] + beta * ideal if cfg["early_merge"] else blur[-1]
        sharp = solve(start, -P, 0.0, cfg["sharpen_time"], cfg["sharpen_steps"],
                      cfg["sharpen_solver"])
        states, out = states + sharp[1:], sharp[-1]
    if cfg["point_combination"]:
        out = np.mean(states, axis=0)
    if not (cfg["sharpen"] and cfg["early_merge"]):
        out = out + beta * ideal
    return out


BSPM_DEFAULTS = dict(k=5, beta=0.2, blur_time=1.0, blur_steps=1, blur_solver="euler",
                     ideal_time=1.0, ideal_steps=1, ideal_solver="euler", sharpen_time=2.5,
                     sharpen_steps=1, sharpen_solver="rk4", sharpen=True, early_merge=True,
                     point_combination=False)
BSPM_CASES = [
    {},  # the paper's Gowalla setting (at a small k)
    {"early_merge": False, "beta": 0.5},
    {"point_combination": True, "sharpen_steps": 3, "sharpen_solver": "euler"},
    {"blur_solver": "rk4", "blur_steps": 2, "blur_time": 0.7, "ideal_steps": 3,
     "ideal_time": 2.0, "sharpen_time": 1.2},
    {"sharpen": False, "point_combination": True, "blur_steps": 2},
    {"k": 0},
]


@pytest.mark.parametrize("case", BSPM_CASES)
def test_bspm_matches_the_step_by_step_reference(case):
    g = graph()
    cfg = {**BSPM_DEFAULTS, **case}
    got = scores(fitted("bspm", g, svd="exact", **cfg))
    np.testing.assert_allclose(got, bspm_ref(dense_r(g), cfg), rtol=1e-4, atol=1e-5)


def test_bspm_at_fine_steps_is_the_exact_ode_solution():
    """RK4 at 32 steps per ODE gives the closed-form solutions: blur r e^{T(P - I)}, ideal
    r e^{T(L - I)}, sharpening e^{-T P}."""
    g = graph()
    R = dense_r(g)
    P, L = gram_ref(R), ideal_ref(R, 5)
    eye = np.eye(NUM_ITEMS)
    blurred = R @ scipy.linalg.expm(1.5 * (P - eye))
    ideal = R @ scipy.linalg.expm(0.8 * (L - eye))
    want = (blurred + 0.3 * ideal) @ scipy.linalg.expm(-2.0 * P)
    model = fitted("bspm", g, svd="exact", k=5, beta=0.3, blur_time=1.5, blur_steps=32,
                   blur_solver="rk4", ideal_time=0.8, ideal_steps=32, ideal_solver="rk4",
                   sharpen_time=2.0, sharpen_steps=32, sharpen_solver="rk4")
    np.testing.assert_allclose(scores(model), want, rtol=1e-4, atol=1e-5)


def test_bspm_tail_degree_is_exact_on_the_full_eigenspace_and_close_on_a_part():
    g = graph()
    exact = scores(fitted("bspm", g, svd="exact", k=5))
    rank = min(NUM_USERS, NUM_ITEMS)
    # every eigenvector kept: the remainder is exact, at any tail degree
    full = fitted("bspm", g, svd="exact", k=rank, tail_degree=1)
    np.testing.assert_allclose(scores(full), scores(fitted("bspm", g, svd="exact", k=rank)),
                               rtol=1e-4, atol=1e-5)
    # a degree at or above the process's is the exact process
    np.testing.assert_allclose(scores(fitted("bspm", g, svd="exact", k=5, tail_degree=9)), exact,
                               rtol=1e-5, atol=1e-6)
    # on part of the eigenspace: the remainder is second order in the dropped eigenvalues
    part = scores(fitted("bspm", g, svd="exact", k=5, tail_degree=1))
    assert 0 < np.abs(part - exact).max() < 0.2 * np.abs(exact).max()


# --- turbo-cf and poly-filter ------------------------------------------------------------------

@pytest.mark.parametrize("filt,coef", [(1, [0, 1]), (2, [0, 2, -1]), (3, [0, 0.71, 0.1, -0.01])])
def test_turbo_cf_is_the_explicit_matrix_polynomial(filt, coef):
    g = graph(3)
    R = dense_r(g)
    P = gram_ref(R, 0.6, 0.4, 0.7)
    want = R @ sum(c * np.linalg.matrix_power(P, j) for j, c in enumerate(coef))
    for gram in ("dense", "sparse"):
        got = scores(fitted("turbo-cf", g, alpha=0.6, power=0.7, filter=filt, gram=gram))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_poly_filter_is_the_explicit_matrix_polynomial():
    g = graph(4)
    R = dense_r(g)
    coef = [0.5, 1.0, -0.7, 0.25, 0.1]
    P = gram_ref(R, 0.4, 0.6, 1.2)
    want = R @ sum(c * np.linalg.matrix_power(P, j) for j, c in enumerate(coef))
    got = scores(fitted("poly-filter", g, coefficients=coef, user_exp=0.4, item_exp=0.6,
                        power=1.2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # [0, 1] is GF-CF's linear term
    np.testing.assert_allclose(scores(fitted("poly-filter", g)),
                               scores(fitted("graph-filter", g, alpha=0.0, k=0)), rtol=1e-5)


# --- the family's shared behaviour -----------------------------------------------------------

FAMILY = [("graph-filter", {"k": 4}), ("bspm", {"k": 4}), ("bspm", {"k": 4, "tail_degree": 1}),
          ("turbo-cf", {"filter": 2}), ("poly-filter", {"coefficients": [0.1, 1.0, 0.5]})]


@pytest.mark.parametrize("name,options", FAMILY)
def test_dense_and_sparse_forms_give_the_same_scores(name, options):
    g = graph(5)
    forms = ["dense", "sparse"] + (["factored"] if name != "turbo-cf" else [])
    got = {gram: scores(fitted(name, g, gram=gram, **options)) for gram in forms}
    for gram in forms[1:]:
        np.testing.assert_allclose(got[gram], got["dense"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,options", FAMILY)
def test_deterministic_and_training_items_never_recommended(name, options):
    g = random_graph(num_users=30, num_items=40, per_user=(2, 12), seed=6)
    keep = g[EDGE].edge_index[0] != 0  # user 0 has no training row: popularity
    train = edge_subgraph(g, keep)
    model = fitted(name, train, **options)
    users = torch.arange(30)
    s = model.score(users)
    assert torch.equal(s, fitted(name, train, **options).score(users))
    exclude = user_sequences(train)
    _, top = topk_excluding(s, users, exclude, 10)
    for u in range(30):
        seen = set(exclude[1][exclude[0][u]:exclude[0][u + 1]].tolist())
        assert not seen & set(top[u].tolist())
    counts = torch.bincount(train[EDGE].edge_index[1], minlength=40).float()
    torch.testing.assert_close(s[0], counts / counts.max())


@pytest.mark.parametrize("name,options,message", [
    ("bspm", {"sharpen_steps": 0}, "bspm: sharpen_steps must be a positive integer, got 0"),
    ("bspm", {"blur_time": -1.0}, "bspm: blur_time must be a positive number, got -1.0"),
    ("bspm", {"ideal_time": 0.0}, "bspm: ideal_time must be a positive number"),
    ("bspm", {"sharpen_solver": "dopri5"}, "bspm: sharpen_solver must be one of euler, rk4"),
    ("bspm", {"tail_degree": 0}, "bspm: tail_degree must be a positive integer"),
    ("poly-filter", {"coefficients": []}, "poly-filter: coefficients must be a non-empty list"),
    ("poly-filter", {"coefficients": [1.0, float("nan")]},
     r"poly-filter option coefficients\[1\]: must be a finite number"),
    ("poly-filter", {"power": -1.0}, "poly-filter: power must be a positive number"),
    ("turbo-cf", {"filter": 4}, "turbo-cf: filter must be 1, 2 or 3"),
    ("turbo-cf", {"gram": "factored"}, "turbo-cf: gram='factored' .* needs power 1"),
    ("graph-filter", {"gram": "csc"}, "graph-filter: gram must be one of"),
])
def test_bad_options_are_one_line_errors(name, options, message):
    with pytest.raises(GraphrecError, match=message):
        build_model(name, 5, 8, model_config(name, options))


def test_coefficients_checked_when_built_directly():
    from graphrec.models.poly_filter import PolyFilter, PolyFilterConfig
    with pytest.raises(GraphrecError, match="poly-filter: coefficients must be finite"):
        PolyFilter(3, 4, PolyFilterConfig(coefficients=(1.0, float("inf"))))


@pytest.mark.parametrize("name", ["graph-filter", "bspm"])
def test_more_singular_vectors_than_the_rank_is_an_error(name):
    g = random_graph(num_users=5, num_items=8, seed=1)
    with pytest.raises(GraphrecError, match=rf"{name}: k=6 singular vectors exceed the rank "
                                            r"bound min\(users, items\) = 5"):
        fitted(name, g, k=6)


def test_a_dense_gram_too_big_is_refused_up_front():
    g = graph()
    with pytest.raises(GraphrecError, match=r"dense item-item matrix of 17 items takes 0\.0 GiB"):
        fitted("bspm", g, gram="dense", max_memory_gb=1e-9)


@pytest.mark.parametrize("name", ["graph-filter", "bspm"])
def test_bfloat16_low_rank_products_are_close_to_float32(name):
    g = graph(8)
    exact = scores(fitted(name, g, k=5, dtype="float32"))
    half = scores(fitted(name, g, k=5, dtype="bfloat16"))
    assert 0 < np.abs(half - exact).max() < 1e-2 * np.abs(exact).max()


def test_bspm_on_the_device_path_matches_the_cpu_path():
    """The torch sparse products (used on GPUs) give the scipy path's scores."""
    g = graph(7)
    model = fitted("bspm", g, svd="exact", k=4, gram="sparse")
    users = torch.tensor([3, 0, 7])
    cpu = model.score(users)
    for gram in ("sparse", "factored"):
        model.graph = ItemGraph(model.user_ptr, model.user_items, NUM_ITEMS,
                                dataclasses.replace(model.cfg, gram=gram), scipy_products=False)
        model.prepare(model.graph)
        torch.testing.assert_close(model.score(users), cpu, rtol=1e-5, atol=1e-6)
