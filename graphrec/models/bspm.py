"""Blurring-sharpening process models (BSPM: Choi et al., "Blurring-Sharpening Process Models for
Collaborative Filtering", SIGIR 2023, https://arxiv.org/abs/2211.09324).

A user's binary training row ``r`` is blurred by the heat equation on the item-item operator
``P = R~^T R~`` (:mod:`graphrec.models.filters`), then sharpened back by running the blur
backwards::

    blur:     dx/dt = x P - x,          x(0) = r,             t in [0, blur_time]
    ideal:    dz/dt = z L - z,          z(0) = r,             t in [0, ideal_time]
    sharpen:  dy/dt = -y P,             y(0) = x(T_b) + beta z(T_i)   (early merge)
    scores    = y(T_s)

with ``L = D_I^-1/2 V V^T D_I^1/2`` GF-CF's ideal low-pass operator on the top-``k`` right
singular vectors ``V`` of ``R~``. Each ODE is solved with a fixed number of Euler or RK4 steps
(:func:`~graphrec.models.filters.integrate`). Without early merge the sharpening starts from
``x(T_b)`` and ``beta z(T_i)`` is added at the end; ``sharpen=False`` drops the sharpening;
``point_combination`` averages the states at every step (``t > 0``) of the blur and the
sharpening instead of taking the last one. The paper's Gowalla setting is one Euler blur step to
``T_b = 1`` (which is ``r P``), one Euler ideal step to ``T_i = 1`` (``r L``), one RK4
sharpening step to ``T_s = 2.5``, ``beta = 0.2`` and ``k = 448``.

Because every step is linear, the whole process is two polynomials: the scores are
``r g(P) + beta' (r L) s(P)`` with ``g`` the response to ``r`` and ``s`` the response to the
ideal term's input. They are found once by running the same solver on polynomials in ``lambda``
(an eigenvalue of ``P``), and scoring applies ``g`` by Horner's scheme (``deg g`` hops: the
first from the sparse rows, the rest on dense states) and ``s`` to ``V^T D_I^1/2`` at fit time.

``tail_degree`` trades exactness for speed: with ``d`` below ``deg g``, ``g(P)`` is taken as its
degree-``d`` Taylor polynomial at 0 plus the exact remainder on the top-``k`` eigenvectors,
``V (g(Lambda) - g_d(Lambda)) V^T``: exact where the eigenvalues are large and first-order
accurate (``d = 1``) in the tail where they are small. ``d = 1`` costs one hop and two thin
products, as GF-CF does. ``None`` (the default) is the exact process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.polynomial import Polynomial

from graphrec.errors import GraphrecError
from graphrec.models.filters import (
    FilterModel, ItemGraph, OperatorConfig, Rows, add_low_rank, check_ode, check_operator,
    check_svd, choose_dtype, horner, integrate, resolve_k, top_singular)


def bspm_k(num_users: int, num_items: int) -> int:
    """The default number of singular vectors of the ideal term: min(users, items) / 64,
    rounded to a multiple of 32 in [32, 448] (448 on Gowalla, as the paper; 32 on ml-100k)."""
    target = min(num_users, num_items) / 64
    return int(min(448, max(32, 32 * round(target / 32))))


@dataclass
class BSPMConfig(OperatorConfig):
    """Args:
        k: singular vectors of the ideal low-pass term (``None``: :func:`bspm_k` of the graph's
            size; 0: no ideal term). More than min(users, items) is an error.
        beta: weight of the ideal term (the paper's ``idl_beta``).
        blur_time, blur_steps, blur_solver: the blurring ODE's terminal time, step count and
            solver (``"euler"`` or ``"rk4"``).
        ideal_time, ideal_steps, ideal_solver: the same for the ideal (idealised-blur) ODE.
        sharpen_time, sharpen_steps, sharpen_solver: the same for the sharpening ODE.
        sharpen: run the sharpening (False: blur and ideal term only).
        early_merge: sharpen the blurred signal and the ideal term together (BSPM-EM).
        point_combination: average the states of every step instead of the last one.
        tail_degree: ``None``: the exact process; ``d``: the degree-``d`` Taylor polynomial in
            ``P`` plus the exact remainder on the top-``k`` eigenvectors (needs ``k`` > 0).
        svd, oversample, niter, seed: the truncated SVD (as ``graph-filter``'s).

    The defaults are the paper's Gowalla setting but ``sharpen_time`` 2.0 (the paper: 2.5),
    chosen on validation parts of ml-100k and Gowalla (``benchmarks/graph_filter.py --parts
    defaults``): over ``sharpen_time`` 2.0-3.0 by ``beta`` 0.1-0.3 it is the setting whose
    worse validation NDCG@20 of the two data sets is highest (Gowalla 0.1254, the best there;
    ml-100k 0.2480, 1% under its best, where 2.5 loses 4%).
    """

    k: int | None = None
    beta: float = 0.2
    blur_time: float = 1.0
    blur_steps: int = 1
    blur_solver: str = "euler"
    ideal_time: float = 1.0
    ideal_steps: int = 1
    ideal_solver: str = "euler"
    sharpen_time: float = 2.0
    sharpen_steps: int = 1
    sharpen_solver: str = "rk4"
    sharpen: bool = True
    early_merge: bool = True
    point_combination: bool = False
    tail_degree: int | None = None
    svd: str = "randomized"
    oversample: int = 64
    niter: int = 4
    seed: int = 0


class BSPM(FilterModel):
    """Blurring-sharpening ODEs over the item-item operator; nothing is trained."""

    name = "bspm"
    search_space = {"sharpen_time": {"type": "float", "low": 0.5, "high": 5.0},
                    "beta": {"type": "float", "low": 0.0, "high": 1.0},
                    "k": {"type": "int", "low": 32, "high": 1024, "log": True}}

    def __init__(self, num_users: int, num_items: int, cfg: BSPMConfig | None = None) -> None:
        cfg = cfg or BSPMConfig()
        for prefix in ("blur", "ideal", "sharpen"):
            check_ode(self.name, prefix, getattr(cfg, f"{prefix}_time"),
                      getattr(cfg, f"{prefix}_steps"), getattr(cfg, f"{prefix}_solver"))
        if not (np.isfinite(cfg.beta) and cfg.beta >= 0):
            raise GraphrecError(f"bspm: beta must be a number >= 0, got {cfg.beta}")
        if cfg.tail_degree is not None and (isinstance(cfg.tail_degree, bool)
                                            or int(cfg.tail_degree) != cfg.tail_degree
                                            or cfg.tail_degree < 1):
            raise GraphrecError(f"bspm: tail_degree must be a positive integer or null (the "
                                f"exact process), got {cfg.tail_degree}")
        if cfg.tail_degree is not None and cfg.k == 0:
            raise GraphrecError("bspm: tail_degree needs singular vectors (k > 0)")
        check_svd(self.name, cfg.k, cfg.svd, cfg.oversample, cfg.niter)
        check_operator(self.name, cfg)
        super().__init__(num_users, num_items, cfg)
        self.register_buffer("basis", torch.zeros(num_items, 0))  # V [I, k]
        self.register_buffer("eigen", torch.zeros(0))  # Lambda [k], eigenvalues of P
        self.plan: dict | None = None

    def responses(self) -> tuple[Polynomial, Polynomial]:
        """``(g, s)``: the process's output as polynomials in an eigenvalue ``lambda`` of
        ``P``: ``g`` for the input ``r``, ``s`` for the ideal term ``r L`` (``s`` includes
        ``beta`` and the ideal ODE's weight on ``L``)."""
        cfg = self.cfg
        lam = Polynomial([0.0, 1.0])
        # the ideal ODE on L (idempotent): z(T) = phi(0) r + (phi(1) - phi(0)) r L, phi the
        # solver's response to dz/dt = (mu - 1) z at an eigenvalue mu of L (0 or 1)
        phi = [integrate(1.0, lambda z, m=m: z * (m - 1.0), cfg.ideal_time, cfg.ideal_steps,
                         cfg.ideal_solver)[-1] for m in (0.0, 1.0)]
        one = Polynomial([1.0])
        g = self._process(one, one * (cfg.beta * phi[0]), lam)
        s = self._process(one * 0.0, one * (cfg.beta * (phi[1] - phi[0])), lam)
        return g, s

    def _process(self, r: Polynomial, ideal: Polynomial, lam: Polynomial) -> Polynomial:
        """The process on polynomial states (``lam`` stands for ``P``): input ``r``, ideal
        term ``ideal`` (weighted by beta already)."""
        cfg = self.cfg
        blur = integrate(r, lambda x: x * lam - x, cfg.blur_time, cfg.blur_steps,
                         cfg.blur_solver)
        states = blur[1:]
        out = blur[-1]
        if cfg.sharpen:
            start = blur[-1] + ideal if cfg.early_merge else blur[-1]
            sharp = integrate(start, lambda y: y * lam * -1.0, cfg.sharpen_time,
                              cfg.sharpen_steps, cfg.sharpen_solver)
            states = states + sharp[1:]
            out = sharp[-1]
        if cfg.point_combination:
            out = sum(states[1:], states[0]) * (1.0 / len(states))
        if not (cfg.sharpen and cfg.early_merge):
            out = out + ideal
        return out

    def fit_filter(self, graph: ItemGraph) -> None:
        k = resolve_k(self.name, self.cfg.k, self.num_users, self.num_items, bspm_k)
        basis, sigma = top_singular(graph, k, self.cfg.svd, self.cfg.oversample,
                                    self.cfg.niter, self.cfg.seed)
        self.basis, self.eigen = basis, sigma.square()

    def prepare(self, graph: ItemGraph) -> None:
        g, s = (p.trim() for p in self.responses())
        coef = [float(c) for c in g.coef]
        plan: dict = {"coef": coef, "low": None}
        inputs, outputs = [], []
        if self.basis.size(1) and any(abs(c) > 0 for c in s.coef):
            low_in, low_out = self.ideal_factors(self.basis, graph)
            # s(P) applied once to the k rows of V^T D^b: the ideal term's exact output
            inputs.append(low_in)
            outputs.append(horner(low_out, graph, [float(c) for c in s.coef]))
        d = self.cfg.tail_degree
        if d is not None and d < len(coef) - 1:
            taylor = Polynomial(coef[: d + 1])
            lam = self.eigen.double().cpu().numpy()
            gap = torch.from_numpy((g(lam) - taylor(lam)).astype(np.float32)).to(self.basis.device)
            plan["coef"] = coef[: d + 1]
            inputs.append(self.basis)
            outputs.append((self.basis * gap.unsqueeze(0)).T.contiguous())  # diag(gap) V^T
        if inputs:  # [I, k'], [k', I]
            w_out = torch.cat(outputs, 0)
            plan["low"] = (torch.cat(inputs, 1),
                           w_out.to(choose_dtype(self.cfg.dtype, graph.device, w_out.size(0))))
        self.plan = plan

    def filter_rows(self, rows: Rows, graph: ItemGraph) -> torch.Tensor:
        assert self.plan is not None
        scores = horner(rows, graph, self.plan["coef"])
        if self.plan["low"] is not None:
            w_in, w_out = self.plan["low"]
            add_low_rank(scores, rows.times(w_in), w_out)
        return scores

