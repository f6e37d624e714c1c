"""The graph model family: embeddings, K hops of LightGCN propagation, a dot-product scorer.

``lightgcn`` (He et al., SIGIR 2020): K = 3, mean of layers 0..K, BPR loss, L2 on the batch's
layer-0 embeddings. ``bpr`` (Rendle et al. 2009): the same with K = 0, plain matrix
factorization trained by BPR. ``mf``: K = 0 with user, item and global biases, trained by MSE on
explicit ratings (it predicts ratings). Zero hops is a real case of the same code: the encoder
returns the layer-0 embeddings.

The propagation adjacency is built once from the training graph (saved as its edges, rebuilt on
load) and owned by the model's encoder; see :mod:`graphrec.nn.propagation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.nn.propagation import (BlockedAdjacency, LightGCNEncoder, blocked_adjacency,
                                     normalized_adjacency)
from graphrec.schema import EDGE, RATING

LOSSES = ("bpr", "mse")


def _rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an index of any shape, by ``index_select``: its backward is one
    ``index_add_``, about 3x faster on CPU than the accumulating ``index_put_`` behind
    ``table[index]`` (it dominated MF-BPR steps with hundreds of negatives per positive)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.size(1))


@dataclass
class GraphModelConfig:
    """Args:
        dim: embedding size.
        num_layers: propagation hops K (0: no propagation).
        layer_weights: weights of layers 0..K (default: the mean).
        loss: ``"bpr"`` (pairs with sampled negatives) or ``"mse"`` (explicit ratings).
        biases: user, item and global biases added to the dot product.
        l2: L2 weight on the batch's layer-0 embeddings (LightGCN's regularizer), per example.
        table_l2: L2 weight on the whole embedding table, every step: ``table_l2 / 2 * ||E||^2``
            (the ``embedding_regularizer`` of FuxiCTR and the BARS benchmark). Unlike ``l2`` it
            reaches the rows a batch does not touch; it kept BARS's MF-BPR from overfitting.
        init_std: standard deviation of the normal initialization.
        propagation: the propagation backend (``symmetric``, the fastest measured; ``autograd``;
            ``edge_index``), see :mod:`graphrec.nn.propagation`.
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


@dataclass
class BPRConfig(GraphModelConfig):
    """``bpr``: no propagation, BPR loss."""

    num_layers: int = 0


@dataclass
class MFConfig(GraphModelConfig):
    """``mf``: no propagation, biases, MSE on explicit ratings. ``l2`` 0.3 (0.15 per squared
    norm per example) was chosen on a validation part of ml-100k's training ratings (0.05 to
    0.5 tried); LightGCN's 1e-4 leaves MF badly overfitted on ratings."""

    num_layers: int = 0
    loss: str = "mse"
    biases: bool = True
    l2: float = 0.3


class GraphModel(Recommender):
    """User and item embeddings propagated over the training graph, scored by dot product."""

    trainable = True

    def __init__(self, num_users: int, num_items: int, cfg: GraphModelConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or GraphModelConfig()
        if cfg.loss not in LOSSES or cfg.dim < 1:
            raise GraphrecError(f"graph model: need loss in {LOSSES} and dim >= 1")
        if cfg.l2 < 0 or cfg.table_l2 < 0:
            raise GraphrecError("graph model: l2 and table_l2 must be >= 0")
        self.predicts_ratings = cfg.loss == "mse"
        self.batch_kind = "ratings" if cfg.loss == "mse" else "pairs"
        self.embedding = torch.nn.Embedding(num_users + num_items, cfg.dim)  # users, then items
        torch.nn.init.normal_(self.embedding.weight, std=cfg.init_std)
        self.encoder = LightGCNEncoder(cfg.num_layers, cfg.layer_weights, cfg.propagation)
        if cfg.biases:
            self.bias = torch.nn.Embedding(num_users + num_items, 1)
            torch.nn.init.zeros_(self.bias.weight)
            self.global_bias = torch.nn.Parameter(torch.zeros(1))
        self.register_buffer("train_edges", torch.zeros(2, 0, dtype=torch.long))
        self._adj: Tensor | BlockedAdjacency | None = None  # from train_edges, rebuilt when missing
        # propagated embeddings for scoring, keyed on the weights' in-place version counter
        # (every optimizer step and state load bumps it) and the adjacency they came from
        self._scored: tuple[tuple[int, ...], tuple[Tensor, Tensor]] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_adj", None))

    def fit(self, train: HeteroData) -> None:
        """Remember the training graph, whose normalized adjacency propagation uses."""
        self.train_edges = train[EDGE].edge_index.to(self.embedding.weight.device)
        self._adj = None
        if self.cfg.loss == "mse" and RATING in train[EDGE]:
            self.global_bias.data.fill_(float(train[EDGE][RATING].float().mean()))

    def adjacency(self) -> Tensor | BlockedAdjacency:
        """The symmetric-normalized training adjacency, built on first use: a sparse CSR
        tensor, or its tiles (users and items, each cut into column blocks) where the default
        backend gains from them: on a CPU, with a table larger than 12 MiB
        (:func:`~graphrec.nn.propagation.blocked_adjacency`)."""
        if self._adj is None or self._adj.device != self.train_edges.device:
            graph = HeteroData()
            graph["user"].num_nodes, graph["item"].num_nodes = self.num_users, self.num_items
            graph[EDGE].edge_index = self.train_edges
            adj = normalized_adjacency(graph, self.train_edges.device)
            if self.cfg.propagation == "symmetric":
                adj = blocked_adjacency(adj, self.cfg.dim, self.num_users)
            self._adj = adj
        return self._adj

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user ``[U, F]`` and item ``[I, F]`` embeddings after propagation."""
        weight = self.embedding.weight
        out = self.encoder(weight, self.adjacency()) if self.cfg.num_layers else weight
        return out[: self.num_users], out[self.num_users:]

    def _bias(self, users: Tensor, items: Tensor) -> Tensor | float:
        if not self.cfg.biases:
            return 0.0
        b = self.bias.weight.squeeze(1)
        return self.global_bias + b[users] + b[items + self.num_users]

    def scoring_embeddings(self) -> tuple[Tensor, Tensor]:
        """:meth:`embeddings` without autograd; in eval mode computed once per state of the
        weights, since the evaluator scores users batch after batch and each batch would
        otherwise propagate over the whole graph again. ``train()`` drops the cache."""
        if self.training:
            with torch.no_grad():
                return self.embeddings()
        w = self.embedding.weight
        key = (w._version, w.data_ptr(), id(self.adjacency()))
        if self._scored is None or self._scored[0] != key:
            with torch.no_grad():
                self._scored = (key, self.embeddings())
        return self._scored[1]

    def train(self, mode: bool = True) -> "GraphModel":
        """Switch mode, dropping cached scoring embeddings."""
        self._scored = None
        return super().train(mode)

    def score(self, users: Tensor) -> Tensor:
        u, i = self.scoring_embeddings()
        scores = u[users] @ i.T  # [B, I]
        if self.cfg.biases:
            b = self.bias.weight.squeeze(1)
            scores = scores + (self.global_bias + b[users]).unsqueeze(1) + b[self.num_users:]
        return scores

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        if not self.predicts_ratings:
            return super().predict(users, items)
        u, i = self.scoring_embeddings()
        return (u[users] * i[items]).sum(1) + self._bias(users, items)  # [N]

    def loss(self, users: Tensor, items: Tensor, negatives: Tensor | None = None,
             ratings: Tensor | None = None) -> Tensor:
        """BPR: ``users [N]``, positive ``items [N]``, ``negatives [N, M]``; MSE: ``ratings [N]``.
        Plus ``l2`` times the squared norms of the batch's layer-0 embeddings, halved, per example."""
        u_all, i_all = self.embeddings()
        u = _rows(u_all, users)  # [N, F]
        w = self.embedding.weight
        l2 = self.cfg.l2 > 0  # skipped at zero: the negatives' gather is half a step's work
        reg = w.new_zeros(())
        if l2:
            reg = _rows(w, users).pow(2).sum() + _rows(w, items + self.num_users).pow(2).sum()
        if self.cfg.loss == "bpr":
            if negatives is None:
                raise GraphrecError("BPR loss needs negatives")
            pos = (u * _rows(i_all, items)).sum(1, keepdim=True)  # [N, 1]
            neg = (u.unsqueeze(1) * _rows(i_all, negatives)).sum(2)  # [N, M]
            main = -F.logsigmoid(pos - neg).mean()
            if l2:
                reg = reg + _rows(w, negatives + self.num_users).pow(2).sum() / negatives.size(1)
        else:
            if ratings is None:
                raise GraphrecError("MSE loss needs ratings")
            pred = (u * _rows(i_all, items)).sum(1) + self._bias(users, items)
            main = F.mse_loss(pred, ratings.float())
        if self.cfg.table_l2 > 0:
            main = main + self.cfg.table_l2 / 2 * w.pow(2).sum()
        return main + self.cfg.l2 * reg / (2 * users.numel())


class RatingMF(GraphModel):
    """``mf``: the graph model with zero hops, biases and MSE (:class:`MFConfig`), and the
    training defaults that suit it: lr 0.01, early stopping on RMSE when validated."""

    train_defaults = {"lr": 0.01, "metric": "rmse"}
