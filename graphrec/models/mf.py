"""``mf``: biased matrix factorization for explicit ratings, the graph family's rating member.

``r_ui = b + b_u + b_i + e_u . e_i`` with the embeddings propagated K hops over the training
graph first (K = 0 by default: classic biased MF, as Koren et al. 2009 and Surprise's SVD), trained
by mean squared error on the observed ratings with L2 on the batch's layer-0 embeddings. It
predicts ratings (RMSE/MAE) and ranks items by predicted rating. The global bias starts at the
training mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import RatingBatch, RatingSpec
from graphrec.errors import GraphrecError
from graphrec.models.graph import DotProductModel, rows
from graphrec.schema import EDGE, RATING


@dataclass
class MFConfig:
    """Args:
        dim: embedding size.
        num_layers: propagation hops K before the dot product (0: plain biased MF).
        layer_weights: weights of layers 0..K (default: the mean).
        loss: ``"mse"``.
        biases: user, item and global biases.
        l2: L2 weight on the batch's layer-0 embeddings, per example. 0.3 (0.15 per squared
            norm per example) was chosen on a validation part of ml-100k's training ratings
            (0.05 to 0.5 tried); LightGCN's 1e-4 leaves MF badly overfitted on ratings.
        table_l2: L2 weight on the whole embedding table, every step.
        init_std: standard deviation of the normal initialization.
        propagation: the propagation backend, see :mod:`graphrec.nn.propagation`.
    """

    dim: int = 64
    num_layers: int = 0
    layer_weights: tuple[float, ...] | None = None
    loss: str = "mse"
    biases: bool = True
    l2: float = 0.3
    table_l2: float = 0.0
    init_std: float = 0.1
    propagation: str = "symmetric"


class MF(DotProductModel):
    """Biased MF on explicit ratings; predicts them. Training defaults: lr 0.01, early stopping
    on RMSE when validated."""

    trainable = True
    predicts_ratings = True
    train_defaults = {"lr": 0.01, "metric": "rmse"}
    #: ``graphrec tune``: learning rate, size and L2 (0.3 by default) around the defaults
    search_space = {"train.lr": {"type": "float", "low": 1e-3, "high": 5e-2, "log": True},
                    "dim": {"type": "int", "low": 16, "high": 128, "log": True},
                    "l2": {"type": "float", "low": 0.01, "high": 1.0, "log": True}}

    def __init__(self, num_users: int, num_items: int, cfg: MFConfig | None = None) -> None:
        cfg = cfg or MFConfig()
        super().__init__(num_users, num_items, cfg.dim, cfg.num_layers, cfg.layer_weights,
                         cfg.init_std, cfg.propagation, cfg.biases)
        self.cfg = cfg
        if cfg.loss != "mse":
            raise GraphrecError(f"mf: loss must be 'mse', got {cfg.loss!r}")
        if cfg.l2 < 0 or cfg.table_l2 < 0:
            raise GraphrecError("mf: l2 and table_l2 must be >= 0")

    def fit(self, train: HeteroData) -> None:
        """Keep the training graph; the global bias starts at the mean training rating."""
        super().fit(train)
        if self.biases and RATING in train[EDGE]:
            self.global_bias.data.fill_(float(train[EDGE][RATING].float().mean()))

    def batch_spec(self) -> RatingSpec:
        return RatingSpec()

    def forward(self, batch: RatingBatch) -> Tensor:  # type: ignore[override]
        """The MSE loss of a batch of ratings."""
        return self.loss(batch.users, batch.items, batch.ratings)

    def loss(self, users: Tensor, items: Tensor, ratings: Tensor) -> Tensor:
        """Mean squared error of ``users [N]`` x ``items [N]`` against ``ratings [N]``, plus
        ``l2`` times the batch's halved squared layer-0 norms per example."""
        if ratings is None:
            raise GraphrecError("MSE loss needs ratings")
        u_all, i_all = self.embeddings()
        pred = (rows(u_all, users) * rows(i_all, items)).sum(1) + self.pair_bias(users, items)
        main = F.mse_loss(pred, ratings.float())
        if self.cfg.table_l2 > 0:
            main = main + self.cfg.table_l2 / 2 * self.embedding.weight.pow(2).sum()
        if self.cfg.l2 > 0:
            main = main + self.cfg.l2 * self.layer0_l2(users, items)
        return main

    def predict_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                     items: Tensor) -> Tensor:
        """Predicted ratings ``[N]`` of pairs from propagated embeddings."""
        return (user_emb[users] * item_emb[items]).sum(1) + self.pair_bias(users, items)

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        return self.predict_from(*self.embeddings(), users, items)


__all__ = ["MF", "MFConfig"]
