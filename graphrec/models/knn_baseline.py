"""``knn-baseline``: item-based neighbourhood model on baseline residuals, as Surprise's
``KNNBaseline`` with ``sim_options={"name": "pearson_baseline", "user_based": False}``.

Koren ("Factor in the Neighbors", TKDD 2010, section 2.2). With the ALS baselines
``b_ui = mu + b_u + b_i`` (:mod:`graphrec.models.baseline_only`) and residuals
``d_ui = r_ui - b_ui`` on the training ratings, the item-item similarity is the shrunk
Pearson-baseline correlation over the users ``U_ij`` who rated both::

    rho_ij = sum_{U_ij} d_ui d_uj / sqrt(sum_{U_ij} d_ui^2 * sum_{U_ij} d_uj^2)
    s_ij   = (|U_ij| - 1) / (|U_ij| - 1 + shrinkage) * rho_ij      (0 when |U_ij| < 2)

and the prediction for ``(u, i)`` takes the ``k`` items rated by ``u`` most similar to ``i``
(``N^k_i(u)``), of which those with ``s_ij > 0`` count::

    r^_ui = b_ui + sum_{j in N^k_i(u), s_ij > 0} s_ij d_uj / sum_{...} s_ij

(just ``b_ui`` when fewer than ``min_k`` count). Surprise builds the four item-item sums in a
Cython triple loop over each user's pairs; here they are three sparse ``[I, U]`` times dense
``[U, I]`` products of the residual and mask matrices (``D^T D``, ``(D^2)^T M``, ``M^T M``;
the fourth sum is a transpose), and the neighbours of a batch of (user, item) pairs are one
``topk`` over the user's padded rated items.
The similarity is dense ``[I, I]``: ``max_items`` guards its size. Defaults are Surprise's
(k 40, min_k 1, shrinkage 100, its baseline options); on a validation part of fold 0's training
ratings (ml-100k, 10% held out) k in 20-80 and shrinkage in 50-200 changed RMSE by under 0.003,
so Surprise's values were kept. Like Surprise, ``predict`` clips to the training ratings' range.
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
from graphrec.models.baseline_only import als_baselines, training_ratings

#: elements per neighbour-gather block ([pairs, candidates, rated items])
_BLOCK = 1 << 23


@dataclass
class KNNBaselineConfig:
    """Args:
        k: neighbours at most (40).
        min_k: fewer positive-similarity neighbours than this give the baseline alone (1).
        shrinkage: the similarity's shrinkage (100).
        reg_u, reg_i, bsl_epochs: the ALS baselines (Surprise's 15, 10, 10).
        max_items: refuse catalogues above this many items (the dense similarity is
            ``max_items^2`` float32 values, 1.6 GB at the default 20,000).
    """

    k: int = 40
    min_k: int = 1
    shrinkage: float = 100.0
    reg_u: float = 15.0
    reg_i: float = 10.0
    bsl_epochs: int = 10
    max_items: int = 20_000

    def __post_init__(self) -> None:
        if self.k < 1 or self.min_k < 0 or self.shrinkage < 0 or self.bsl_epochs < 1:
            raise GraphrecError("knn-baseline: need k >= 1, min_k >= 0, shrinkage >= 0 and "
                                "bsl_epochs >= 1")


class KNNBaseline(Recommender):
    """Item-based KNN on baseline residuals; predicts ratings and ranks by them."""

    predicts_ratings = True
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "k": {"type": "int", "low": 5, "high": 200, "log": True},
        "shrinkage": {"type": "float", "low": 1.0, "high": 1000.0, "log": True},
        "min_k": {"type": "int", "low": 1, "high": 5},
    }

    def __init__(self, num_users: int, num_items: int,
                 cfg: KNNBaselineConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or KNNBaselineConfig()
        if num_items > cfg.max_items:
            raise GraphrecError(
                f"knn-baseline: {num_items:,} items need a dense {num_items:,} x {num_items:,} "
                f"similarity ({num_items ** 2 * 4 / 2 ** 30:.1f} GiB); max_items is "
                f"{cfg.max_items:,} (raise it with --set max_items=N if memory allows)")
        self.register_buffer("user_bias", torch.zeros(num_users))
        self.register_buffer("item_bias", torch.zeros(num_items))
        self.register_buffer("bounds", torch.zeros(3))  # mu, min, max rating
        self.register_buffer("sim", torch.zeros(num_items, num_items))  # s_ij
        # each user's rated items and residuals, CSR
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("rated", torch.zeros(0, dtype=torch.long))
        self.register_buffer("residual", torch.zeros(0))

    def fit(self, train: HeteroData) -> None:
        device = self.sim.device
        users, items, ratings = (t.to(device) for t in training_ratings(train, "knn-baseline"))
        cfg = self.cfg
        mu, b_u, b_i = als_baselines(users, items, ratings, self.num_users, self.num_items,
                                     cfg.reg_u, cfg.reg_i, cfg.bsl_epochs)
        d = ratings - mu - b_u[users] - b_i[items]  # [N] residuals
        shape = (self.num_users, self.num_items)
        index = torch.stack([items, users])

        def sparse_t(values: Tensor) -> Tensor:  # [I, U] with the ratings' values
            return torch.sparse_coo_tensor(index, values, shape[::-1],
                                           check_invariants=False).coalesce()

        dense = torch.zeros(shape, dtype=torch.float64, device=device)
        dense.index_put_((users, items), d)  # D [U, I]
        mask = torch.zeros(shape, dtype=torch.float64, device=device)
        mask.index_put_((users, items), torch.ones_like(d))  # M [U, I]
        # sparse x dense: |R| * I multiply-adds each, a twentieth of the dense products here
        prods = torch.sparse.mm(sparse_t(d), dense)  # sum_{U_ij} d_ui d_uj  [I, I]
        freq = torch.sparse.mm(sparse_t(torch.ones_like(d)), mask)  # |U_ij|
        sq_i = torch.sparse.mm(sparse_t(d * d), mask)  # sum_{U_ij} d_ui^2
        sq_j = sq_i.T  # sum_{U_ij} d_uj^2
        denom = (sq_i * sq_j).sqrt()
        rho = torch.where(denom > 0, prods / denom.clamp_min(1e-300), torch.zeros_like(prods))
        sim = rho * (freq - 1) / (freq - 1 + cfg.shrinkage).clamp_min(1e-300)
        sim = torch.where(freq >= 2, sim, torch.zeros_like(sim))
        sim.fill_diagonal_(1.0)
        self.sim = sim.float()
        self.user_bias, self.item_bias = b_u.float(), b_i.float()
        self.bounds = torch.tensor([mu, float(ratings.min()), float(ratings.max())],
                                   device=device)
        order = torch.argsort(users, stable=True)
        counts = torch.bincount(users, minlength=self.num_users)
        self.user_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.rated, self.residual = items[order].clone(), d[order].float()

    def _estimate(self, users: Tensor, items: Tensor) -> Tensor:
        """Unclipped ``r^_ui`` of ``items [B, C]`` for ``users [B]``: ``[B, C]``."""
        device = self.sim.device
        users, items = users.to(device), items.to(device)
        base = (self.bounds[0] + self.user_bias[users, None] + self.item_bias[items])  # [B, C]
        start, count = self.user_ptr[users], self.user_ptr[users + 1] - self.user_ptr[users]
        out = base.clone()
        lo = 0
        while lo < users.numel():
            # a block of users whose [b, C, L] gather stays under _BLOCK elements
            width = max(1, int(count[lo:lo + 64].max()))
            sl = slice(lo, lo + max(1, _BLOCK // (items.size(1) * width)))
            lo = sl.stop
            width = int(count[sl].max())
            if width == 0:
                continue
            slot = torch.arange(width, device=device)
            valid = slot[None, :] < count[sl, None]  # [b, L] the user's rated items, padded
            at = (start[sl, None] + slot[None, :]).clamp_max(self.rated.numel() - 1)
            nb_item = torch.where(valid, self.rated[at], torch.zeros_like(at))
            nb_res = torch.where(valid, self.residual[at], torch.zeros_like(self.residual[at]))
            s = self.sim[items[sl, :, None], nb_item[:, None, :]]  # [b, C, L]
            s = s.masked_fill(~valid[:, None, :], float("-inf"))
            top, idx = s.topk(min(self.cfg.k, width), dim=2)  # [b, C, k]
            res = nb_res[:, None, :].expand(-1, items.size(1), -1).gather(2, idx)
            w = top.clamp_min(0.0)  # only positive similarities count (-inf -> 0)
            num, den = (w * res).sum(2), w.sum(2)
            enough = (top > 0).sum(2) >= self.cfg.min_k
            out[sl] += torch.where((den > 0) & enough, num / den.clamp_min(1e-12),
                                   torch.zeros_like(num))
        return out

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Unclipped predicted ratings of every item ``[B, I]``."""
        items = torch.arange(self.num_items, device=self.sim.device).expand(users.numel(), -1)
        return self._estimate(users, items)

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        return self._estimate(users, items)

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Predicted ratings ``[N]``, clipped to the training ratings' range."""
        est = self._estimate(users, items.reshape(-1, 1).to(self.sim.device))[:, 0]
        return est.clamp(self.bounds[1], self.bounds[2])


__all__ = ["KNNBaseline", "KNNBaselineConfig"]
