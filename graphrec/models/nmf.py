"""``nmf``: non-negative matrix factorization of explicit ratings, as Surprise's ``NMF``.

``r^_ui = p_u . q_i`` with ``P >= 0``, ``Q >= 0`` (Luo et al., "An Efficient Non-Negative
Matrix-Factorization-Based Approach to Collaborative Filtering for Recommender Systems", IEEE
TII 2014). Each epoch is one multiplicative update of both factor matrices from the same old
factors, over the observed ratings ``R`` only (``n_u``, ``n_i``: rating counts)::

    p_uf <- p_uf * sum_{i in I_u} q_if r_ui / (sum_{i in I_u} q_if r^_ui + n_u reg_pu p_uf)
    q_if <- q_if * sum_{u in U_i} p_uf r_ui / (sum_{u in U_i} p_uf r^_ui + n_i reg_qi q_if)

Surprise accumulates the four sums in a Python loop over the ratings and then updates; here
each sum is one ``index_add_`` over all ratings at once, the same update. Factors start uniform
in ``[init_low, init_high]`` and, being multiplied by non-negative ratios, stay non-negative.

With ``biases`` the estimate is ``mu + b_u + b_i + p_u . q_i`` (Surprise's ``biased=True``);
Surprise moves the biases by per-rating SGD steps inside its loop; here each bias takes its
``n_u`` steps in closed form, every error replaced by the user's mean error of the epoch
(:func:`sgd_bias`: the steps then commute; one step is exactly Surprise's). No trainer: ``fit``
runs the epochs. ``predict`` clips to the training ratings' range, as
Surprise's ``predict`` does by default; a pair whose user or item has no training rating gets
the training mean (Surprise's fallback for unknown users and items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.schema import EDGE, RATING


@dataclass
class NMFConfig:
    """Args (Surprise's ``NMF`` defaults):
        dim: number of factors (Surprise's ``n_factors``, 15).
        epochs: multiplicative updates (50).
        reg_pu, reg_qi: user and item factor regularization (0.06).
        biases: add user, item and global biases (Surprise's ``biased``, off).
        reg_bu, reg_bi, lr_bu, lr_bi: the biases' regularization and step size (0.02, 0.005).
        init_low, init_high: range of the uniform initialization (0, 1).
        seed: seed of the initialization.
    """

    dim: int = 15
    epochs: int = 50
    reg_pu: float = 0.06
    reg_qi: float = 0.06
    biases: bool = False
    reg_bu: float = 0.02
    reg_bi: float = 0.02
    lr_bu: float = 0.005
    lr_bi: float = 0.005
    init_low: float = 0.0
    init_high: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 0:
            raise GraphrecError("nmf: dim must be at least 1 and epochs at least 0")
        if min(self.reg_pu, self.reg_qi, self.reg_bu, self.reg_bi, self.lr_bu, self.lr_bi) < 0:
            raise GraphrecError("nmf: regularization weights and step sizes must be >= 0")
        if not 0 <= self.init_low < self.init_high:
            raise GraphrecError(f"nmf: init range must satisfy 0 <= init_low < init_high, got "
                                f"[{self.init_low}, {self.init_high}]")


def nmf_step(p: Tensor, q: Tensor, users: Tensor, items: Tensor, ratings: Tensor,
             reg_pu: float, reg_qi: float, est: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One multiplicative update of ``p [U, F]`` and ``q [I, F]`` from ratings ``(users [N],
    items [N], ratings [N])``; ``est [N]``: the current estimates (default ``p_u . q_i``).
    Rows without ratings (0 / 0) become 0."""
    if est is None:
        est = (p[users] * q[items]).sum(1)
    n_u = torch.bincount(users, minlength=p.size(0)).to(p.dtype).unsqueeze(1)  # [U, 1]
    n_i = torch.bincount(items, minlength=q.size(0)).to(q.dtype).unsqueeze(1)  # [I, 1]
    qi, pu = q[items], p[users]  # [N, F] each
    u_num = torch.zeros_like(p).index_add_(0, users, qi * ratings.unsqueeze(1))
    u_den = torch.zeros_like(p).index_add_(0, users, qi * est.unsqueeze(1)) + n_u * reg_pu * p
    i_num = torch.zeros_like(q).index_add_(0, items, pu * ratings.unsqueeze(1))
    i_den = torch.zeros_like(q).index_add_(0, items, pu * est.unsqueeze(1)) + n_i * reg_qi * q
    new_p = torch.where(u_den > 0, p * u_num / u_den.clamp_min(1e-30), torch.zeros_like(p))
    new_q = torch.where(i_den > 0, q * i_num / i_den.clamp_min(1e-30), torch.zeros_like(q))
    return new_p, new_q


def sgd_bias(b: Tensor, err: Tensor, index: Tensor, count: Tensor, lr: float,
             reg: float) -> Tensor:
    """Biases ``b [K]`` after ``count[k]`` sequential SGD steps ``b += lr (e - reg b)`` each,
    ``e`` the epoch's error moved by the bias change so far, with every error of ``k`` replaced
    by their mean ``e_k`` (so the steps commute): in closed form, with ``a = lr (1 + reg)``,
    ``b_n = (1 - a)^n b + lr (e_k + b) (1 - (1 - a)^n) / a``; one step is Surprise's."""
    mean_err = torch.zeros_like(b).index_add_(0, index, err) / count.clamp_min(1)
    a = lr * (1 + reg)
    if a == 0:
        return b
    c = (1 - a) ** count
    return c * b + lr * (mean_err + b) * (1 - c) / a


class NMF(Recommender):
    """Non-negative MF on explicit ratings, fitted by multiplicative updates in ``fit``; a
    retriever (user vectors ``[p_u, mu + b_u, 1]``, items ``[q_i, 1, b_i]`` with biases)."""

    predicts_ratings = True
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "dim": {"type": "int", "low": 4, "high": 64, "log": True},
        "epochs": {"type": "int", "low": 20, "high": 200, "log": True},
        "reg_pu": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "reg_qi": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    }

    def __init__(self, num_users: int, num_items: int, cfg: NMFConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg or NMFConfig()
        f = self.cfg.dim
        self.register_buffer("user_factors", torch.zeros(num_users, f))  # [U, F] >= 0
        self.register_buffer("item_factors", torch.zeros(num_items, f))  # [I, F] >= 0
        self.register_buffer("user_bias", torch.zeros(num_users))
        self.register_buffer("item_bias", torch.zeros(num_items))
        # mean, min, max of the training ratings
        self.register_buffer("rating_stats", torch.tensor([0.0, float("-inf"), float("inf")]))
        self.register_buffer("user_known", torch.zeros(num_users, dtype=torch.bool))
        self.register_buffer("item_known", torch.zeros(num_items, dtype=torch.bool))

    def fit(self, train: HeteroData) -> None:
        """Run ``epochs`` multiplicative updates over the training ratings."""
        store = train[EDGE]
        if RATING not in store:
            raise GraphrecError("nmf: needs explicit ratings, and the training graph has none")
        cfg, dev = self.cfg, self.device
        users, items = store.edge_index[0].to(dev), store.edge_index[1].to(dev)
        ratings = store[RATING].to(dev, torch.float32)
        if ratings.numel() == 0:
            raise GraphrecError("nmf: the training graph has no ratings")
        gen = torch.Generator().manual_seed(cfg.seed)
        span = cfg.init_high - cfg.init_low
        p = (torch.rand(self.num_users, cfg.dim, generator=gen) * span + cfg.init_low).to(dev)
        q = (torch.rand(self.num_items, cfg.dim, generator=gen) * span + cfg.init_low).to(dev)
        mu = ratings.mean()
        bu, bi = torch.zeros(self.num_users, device=dev), torch.zeros(self.num_items, device=dev)
        n_u = torch.bincount(users, minlength=self.num_users).float()
        n_i = torch.bincount(items, minlength=self.num_items).float()
        for _ in range(cfg.epochs):  # epochs, not interactions: each is one vectorized update
            est = (p[users] * q[items]).sum(1)
            if cfg.biases:
                est = est + mu + bu[users] + bi[items]
                err = ratings - est
                bu = sgd_bias(bu, err, users, n_u, cfg.lr_bu, cfg.reg_bu)
                bi = sgd_bias(bi, err, items, n_i, cfg.lr_bi, cfg.reg_bi)
            p, q = nmf_step(p, q, users, items, ratings, cfg.reg_pu, cfg.reg_qi, est)
        self.user_factors, self.item_factors = p, q
        self.user_bias, self.item_bias = bu, bi
        self.rating_stats = torch.stack([mu, ratings.min(), ratings.max()])
        self.user_known, self.item_known = n_u > 0, n_i > 0

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F(+2)]``: ``p_u``, then ``[mu + b_u, 1]`` with biases."""
        p = self.user_factors[users]
        if not self.cfg.biases:
            return p
        b = self.user_bias[users] + self.rating_stats[0]
        return torch.cat([p, b.unsqueeze(1), torch.ones_like(b).unsqueeze(1)], 1)

    def item_vectors(self) -> Tensor:
        """``[I, F(+2)]``: ``q_i``, then ``[1, b_i]`` with biases."""
        if not self.cfg.biases:
            return self.item_factors
        b = self.item_bias.unsqueeze(1)
        return torch.cat([self.item_factors, torch.ones_like(b), b], 1)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Unclipped estimated ratings of every item: ``[B, I]``."""
        return self.user_vectors(users) @ self.item_vectors().T

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Estimated ratings ``[N]``, clipped to the training range; the training mean where
        the user or the item has no training rating."""
        mu, low, high = self.rating_stats.unbind()
        est = (self.user_vectors(users) * self.item_vectors()[items]).sum(1)
        known = self.user_known[users] & self.item_known[items]
        return torch.where(known, est, mu).clamp(low, high)


__all__ = ["NMF", "NMFConfig", "nmf_step", "sgd_bias"]
