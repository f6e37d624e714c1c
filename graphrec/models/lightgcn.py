"""LightGCN (He et al., SIGIR 2020) and BPR-MF (Rendle et al., UAI 2009): one model.

User and item embeddings propagated K hops over the symmetric-normalized training graph
(:class:`~graphrec.nn.propagation.LightGCNEncoder`), the mean of layers 0..K, scored by a dot
product and trained by the BPR loss on (user, positive, sampled negatives) pairs with L2 on the
batch's layer-0 embeddings. ``lightgcn`` is K = 3; ``bpr`` is K = 0, plain matrix factorization
trained by BPR: the same code, not a copy (a test pins the equality).

With ``M`` negatives per positive the loss is

    mean over (u, i, j) of -log sigmoid(s_ui - s_uj) + l2 / 2 * (|e_u|^2 + |e_i|^2 + mean_j |e_j|^2)

per example, plus ``table_l2 / 2 * |E|^2`` on the whole table when set.

Graph-first cold start (``similar_k``): the training graph gains item-item edges between
content-similar items, ``('item', 'similar', 'item')`` in the same ``HeteroData``, weighted by
their cosine; propagation then runs over ``[[0, R], [R^T, S]]`` and an item without
interactions (its layer-0 row held at zero) gets the propagated embeddings of the items like it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import PairBatch, PairSpec, pair_spec
from graphrec.errors import GraphrecError
from graphrec.models.graph import DotProductModel, rows
from graphrec.nn.losses import PAIR_LOSSES, pair_loss
from graphrec.schema import SIMILAR

LOSSES = PAIR_LOSSES


@dataclass
class LightGCNConfig:
    """Args:
        dim: embedding size.
        num_layers: propagation hops K (0: no propagation).
        layer_weights: weights of layers 0..K (default: the mean).
        loss: ``"bpr"``, ``"bce"`` (sampled negatives labelled 0) or ``"softmax"`` (the
            positive's cross-entropy among itself and its negatives), from
            :mod:`graphrec.nn.losses`.
        biases: user, item and global biases added to the dot product.
        l2: L2 weight on the batch's layer-0 embeddings (LightGCN's regularizer), per example.
        table_l2: L2 weight on the whole embedding table, every step: ``table_l2 / 2 * ||E||^2``
            (the ``embedding_regularizer`` of FuxiCTR and the BARS benchmark). Unlike ``l2`` it
            reaches the rows a batch does not touch; it kept BARS's MF-BPR from overfitting.
        init_std: standard deviation of the normal initialization.
        negatives: ``"uniform"`` or ``"popularity"`` (in proportion to each item's training
            degree to the power ``negatives_power``; ``softmax`` then corrects by logQ), per
            example; or one pool per batch shared by its examples (``"shared"``: the trainer's
            ``num_negatives`` uniform items, ``"in-batch"``: the batch's positives,
            ``"mixed"``: both), which makes hundreds of negatives cheap
            (:data:`graphrec.batches.NEGATIVES`).
        negatives_power: see ``negatives``.
        propagation: the propagation backend (``symmetric``, the fastest measured; ``autograd``;
            ``edge_index``), see :mod:`graphrec.nn.propagation`.
        similar_k: graph-first cold start: join each item to its ``similar_k`` most
            content-similar items (text embeddings and side features) by item-item edges
            (:func:`graphrec.models.content_knn.add_similar_edges`), so propagation reaches items
            without interactions; 0 (the default): none.
        similar_scale: the weight of a similar edge is the cosine times this.
    """

    dim: int = 64
    num_layers: int = 3
    layer_weights: tuple[float, ...] | None = None
    loss: str = "bpr"
    biases: bool = False
    l2: float = 1e-4
    table_l2: float = 0.0
    init_std: float = 0.1
    propagation: str = "symmetric"
    negatives: str = "uniform"
    negatives_power: float = 0.75
    similar_k: int = 0
    similar_scale: float = 1.0

    #: training defaults of ``lightgcn`` (TrainConfig fields), chosen by benchmarks/defaults.py
    #: on validation parts of ml-100k and a Gowalla sample
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 5e-3, "num_negatives": 8}
    #: ``graphrec tune``'s default space for ``lightgcn`` (on the config class, as
    #: ``train_defaults``: ``bpr`` shares the model class)
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "dim": {"type": "int", "low": 32, "high": 256, "log": True},
        "num_layers": {"type": "int", "low": 1, "high": 4},
        "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}


@dataclass
class BPRConfig(LightGCNConfig):
    """``bpr``: no propagation."""

    num_layers: int = 0

    #: ``bpr`` trains at TrainConfig's own defaults (lr 1e-3, one negative), chosen by the same
    #: sweep: more negatives tied with one, at four times the cost
    train_defaults: ClassVar[dict[str, Any]] = {}
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "dim": {"type": "int", "low": 32, "high": 256, "log": True},
        "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}}


class LightGCN(DotProductModel):
    """Embeddings propagated over the training graph, dot product, BPR (``lightgcn``, ``bpr``)."""

    trainable = True

    def __init__(self, num_users: int, num_items: int, cfg: LightGCNConfig | None = None) -> None:
        cfg = cfg or LightGCNConfig()
        super().__init__(num_users, num_items, cfg.dim, cfg.num_layers, cfg.layer_weights,
                         cfg.init_std, cfg.propagation, cfg.biases)
        self.cfg = cfg
        if cfg.loss not in LOSSES:
            raise GraphrecError(f"lightgcn: loss must be one of {LOSSES}, got {cfg.loss!r} "
                                "(explicit ratings: --model mf, which propagates too)")
        if cfg.l2 < 0 or cfg.table_l2 < 0:
            raise GraphrecError("lightgcn: l2 and table_l2 must be >= 0")
        self.spec = pair_spec(cfg.negatives, cfg.negatives_power, "lightgcn")
        if cfg.similar_k < 0 or not cfg.similar_scale > 0:
            raise GraphrecError("lightgcn: similar_k must be >= 0 and similar_scale > 0")

    def fit(self, train: HeteroData) -> None:
        """The graph family's fit, over the training graph joined by similar-item edges when
        ``similar_k`` asks for them."""
        if self.cfg.similar_k and SIMILAR not in train.edge_types:
            from graphrec.models.content_knn import add_similar_edges

            train = add_similar_edges(train, self.cfg.similar_k, self.cfg.similar_scale)
        super().fit(train)

    def batch_spec(self) -> PairSpec:
        return self.spec

    def forward(self, batch: PairBatch) -> Tensor:  # type: ignore[override]
        """The loss (``cfg.loss``) of a batch of (user, positive, negatives)."""
        return self.loss(batch.users, batch.items, batch.negatives, batch.log_q_pos,
                         batch.log_q_neg, batch.hits)

    def loss(self, users: Tensor, items: Tensor, negatives: Tensor,
             log_q_pos: Tensor | None = None, log_q_neg: Tensor | None = None,
             hits: Tensor | None = None) -> Tensor:
        """``cfg.loss`` (:mod:`graphrec.nn.losses`: ``bpr``, ``bce`` or ``softmax``) over
        ``users [N]``, positive ``items [N]`` and ``negatives [N, M]`` (or a shared pool
        ``[M]`` with its ``hits [N, M]``), plus the L2 terms (module docstring)."""
        if negatives is None or negatives.numel() == 0:
            raise GraphrecError(f"{self.cfg.loss} loss needs negatives (--num-negatives >= 1)")
        u_all, i_all = self.embeddings()
        u = rows(u_all, users)  # [N, F]
        pos = (u * rows(i_all, items)).sum(1, keepdim=True)  # [N, 1]
        if negatives.dim() == 1:  # a shared pool: one product, not N * M gathered rows
            neg = u @ rows(i_all, negatives).T  # [N, M]
            pool_items = negatives.unsqueeze(0)
        else:
            neg = (u.unsqueeze(1) * rows(i_all, negatives)).sum(2)  # [N, M]
            pool_items = negatives
        if self.biases:
            pos = pos + self.pair_bias(users, items).unsqueeze(1)
            neg = neg + self.pair_bias(users.unsqueeze(1), pool_items)
        main = pair_loss(self.cfg.loss, pos.squeeze(1), neg, log_q_pos, log_q_neg, hits)
        if self.cfg.table_l2 > 0:
            main = main + self.cfg.table_l2 / 2 * self.embedding.weight.pow(2).sum()
        if self.cfg.l2 > 0:  # skipped at zero: the negatives' gather is half a step's work
            main = main + self.cfg.l2 * self.layer0_l2(users, items, negatives)
        return main


__all__ = ["LightGCN", "LightGCNConfig", "BPRConfig", "LOSSES"]
