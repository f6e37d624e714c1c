"""iALS against a dense numpy solve of the per-user normal equations, its objective over
sweeps, its fold-in, and that it ranks better than random."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import build
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.evaluation.evaluator import EvalConfig, evaluate
from graphrec.models import build_model, model_config
from graphrec.models.coldstart import NewUsers
from graphrec.schema import EDGE
from graphrec.split import SplitConfig, split

U, I = 5, 7
# an asymmetric case: users of different degrees, item 6 unseen, pair (1, 2) given twice
EDGES = [(0, 0), (0, 1), (0, 4), (1, 2), (1, 2), (1, 3), (2, 0), (2, 5), (2, 3), (2, 1),
         (3, 4), (4, 5), (4, 2)]


def tiny_graph() -> HeteroData:
    g = HeteroData()
    g["user"].num_nodes, g["item"].num_nodes = U, I
    g[EDGE].edge_index = torch.tensor(EDGES).T
    return g


def dense_user_solve(y: np.ndarray, l2: float, alpha: float) -> np.ndarray:
    """The textbook solve: for each user, ``(Y^T C_u Y + l2 I)^-1 Y^T C_u p_u`` with the full
    ``I x I`` diagonal ``C_u`` (no trick)."""
    r = np.zeros((U, I))
    for u, i in EDGES:
        r[u, i] += 1
    out = np.zeros((U, y.shape[1]))
    for u in range(U):
        c = np.diag(1 + alpha * r[u])
        p = (r[u] > 0).astype(float)
        out[u] = np.linalg.solve(y.T @ c @ y + l2 * np.eye(y.shape[1]), y.T @ c @ p)
    return out


def started(solver: str, cg_steps: int = 3, **opts):
    cfg = model_config("ials", {"dim": 3, "l2": 0.5, "alpha": 4.0, "solver": solver,
                                "cg_steps": cg_steps, "init_std": 0.5, **opts})
    model = build_model("ials", U, I, cfg)
    model.start(tiny_graph())
    return model


def test_user_sweep_matches_dense_solve():
    exact = started("cholesky")
    y = exact.item_factors.double().numpy()
    want = dense_user_solve(y, 0.5, 4.0)
    got = exact.solve(exact.users_side, exact.user_factors, exact.item_factors)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    # CG with as many steps as factors is exact up to rounding; one step is not
    cg = started("cg", cg_steps=10)
    np.testing.assert_allclose(cg.solve(cg.users_side, cg.user_factors, cg.item_factors).numpy(),
                               want, rtol=1e-3, atol=1e-4)
    one = started("cg", cg_steps=1)
    rough = one.solve(one.users_side, one.user_factors, one.item_factors).numpy()
    assert np.abs(rough - want).max() > 1e-3
    # and the item side: the same equations on the transpose
    x = exact.user_factors.double().numpy()
    r = np.zeros((U, I))
    for u, i in EDGES:
        r[u, i] += 1
    i = 2  # item 2: users 1 (twice) and 4
    c = np.diag(1 + 4.0 * r[:, i])
    want_i = np.linalg.solve(x.T @ c @ x + 0.5 * np.eye(3), x.T @ c @ (r[:, i] > 0))
    got_i = exact.solve(exact.items_side, exact.item_factors, exact.user_factors)[i]
    np.testing.assert_allclose(got_i.numpy(), want_i, rtol=1e-4, atol=1e-5)


def test_objective_matches_dense_and_decreases():
    model = started("cg", cg_steps=2)
    x, y = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    r = np.zeros((U, I))
    for u, i in EDGES:
        r[u, i] += 1
    dense = ((1 + 4.0 * r) * ((r > 0) - x @ y.T) ** 2).sum() + 0.5 * ((x ** 2).sum() + (y ** 2).sum())
    assert model.objective() == pytest.approx(dense, rel=1e-6)
    for solver in ("cg", "cholesky"):
        model = started(solver, cg_steps=2)
        losses = [model.objective()]
        for _ in range(8):
            model.sweep()
            losses.append(model.objective())
        assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:])), (solver, losses)
        assert losses[-1] < 0.5 * losses[0]


@pytest.fixture(scope="module")
def synthetic_parts():
    ds = build(make_synthetic(SyntheticConfig(num_users=300, num_items=160, num_clusters=8)))
    return ds, split(ds.graph, SplitConfig("random", seed=0))


def test_beats_random_and_cg_tracks_cholesky(synthetic_parts):
    ds, parts = synthetic_parts
    cfg = EvalConfig(ks=(20,), metrics=("recall", "ndcg"), progress=False)
    results = {}
    for name, opts in (("random", {}), ("ials", {"dim": 16}),
                       ("ials-chol", {"dim": 16, "solver": "cholesky"})):
        model = build_model(name.split("-")[0], ds.num_users, ds.num_items,
                            model_config(name.split("-")[0], opts))
        model.fit(parts.train)
        results[name] = evaluate(model, parts, "test", cfg)
    assert results["ials"]["ndcg@20"] > 2 * results["random"]["ndcg@20"]
    assert results["ials"]["ndcg@20"] == pytest.approx(results["ials-chol"]["ndcg@20"], abs=0.03)
    assert len(model.iteration_seconds) == 15


def test_fold_in_is_the_user_half_sweep():
    model = started("cholesky")
    model.sweep()
    users = torch.arange(U)
    ptr = torch.zeros(U + 1, dtype=torch.long)
    rows = [[i for uu, i in EDGES if uu == u] for u in range(U)]
    ptr[1:] = torch.tensor([len(r) for r in rows]).cumsum(0)
    history = History(ptr, torch.tensor([i for r in rows for i in r]))
    want = model.solve(model.users_side, model.user_factors, model.item_factors)
    torch.testing.assert_close(NewUsers(model, "ls").user_vectors(users, history), want,
                               rtol=1e-4, atol=1e-5)
    mean = NewUsers(model, "mean").user_vectors(users[:1], History(torch.tensor([0, 2]),
                                                                   torch.tensor([0, 1])))
    torch.testing.assert_close(mean[0], model.item_factors[:2].mean(0))


def test_bad_options():
    with pytest.raises(GraphrecError, match="solver"):
        model_config("ials", {"solver": "lu"})
    with pytest.raises(GraphrecError, match="l2"):
        model_config("ials", {"l2": 0.0})
    with pytest.raises(GraphrecError, match="start"):
        build_model("ials", U, I).sweep()
