"""The graph model family: user and item embeddings, K hops of LightGCN propagation over the
training graph, then a scorer.

``lightgcn`` and ``bpr`` (:mod:`graphrec.models.lightgcn`, dot product, BPR), ``mf``
(:mod:`graphrec.models.mf`, dot product plus biases, MSE on ratings) and ``ncf``
(:mod:`graphrec.models.ncf`, the NeuMF scorer) are members that differ in their scorer and loss
only. Zero hops is a real case of the same code: the encoder returns the layer-0 embeddings.

The embedding table holds users ``0..U-1`` then items, one row each. The propagation adjacency
is derived from the training edges (the ``train_edges`` buffer, saved with the model) once per
fit, load or device move, in the form the ``propagation`` backend asks for
(:func:`~graphrec.nn.propagation.lightgcn_adjacency`). Scoring many batches from the same
weights goes through :meth:`GraphModel.scorer`, which propagates once and answers from there;
the model keeps no cache of propagated embeddings.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import check_schema
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.nn.propagation import BACKENDS, Adjacency, LightGCNEncoder, lightgcn_adjacency
from graphrec.schema import EDGE, ITEM, SIMILAR, USER


def rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` for an index of any shape, by ``index_select``: its backward is one
    ``index_add_``, about 3x faster on CPU than the accumulating ``index_put_`` behind
    ``table[index]`` (it dominated MF-BPR steps with hundreds of negatives per positive)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.size(1))


class GraphModel(Recommender):
    """Base of the family: an embedding table propagated over the training graph.

    Args:
        num_users, num_items: node counts.
        dim: embedding columns.
        num_layers: propagation hops K (0: none).
        layer_weights: weights of layers 0..K (default: the mean).
        init_std: standard deviation of the normal initialization.
        propagation: the backend (:data:`~graphrec.nn.propagation.BACKENDS`).

    Subclasses give the scorer (:meth:`score_from`, and :meth:`candidates_from` where it can
    score pairs directly) and ``forward``.
    """

    # older checkpoints lack these (they then hold their initial values: none, all known)
    optional_state = ("similar_edges", "similar_weight", "user_known", "item_known")

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int,
                 layer_weights: Sequence[float] | None = None, init_std: float = 0.1,
                 propagation: str = "symmetric") -> None:
        super().__init__(num_users, num_items)
        name = type(self).__name__.lower()
        if dim < 1:
            raise GraphrecError(f"{name}: dim must be at least 1, got {dim}")
        if not init_std > 0:
            raise GraphrecError(f"{name}: init_std must be > 0, got {init_std}")
        if propagation not in BACKENDS:
            raise GraphrecError(f"{name}: propagation must be one of {', '.join(BACKENDS)}, "
                                f"got {propagation!r}")
        self.propagation = propagation
        self.embedding = torch.nn.Embedding(num_users + num_items, dim)  # users, then items
        torch.nn.init.normal_(self.embedding.weight, std=init_std)
        self.encoder = LightGCNEncoder(num_layers, layer_weights)
        self.register_buffer("train_edges", torch.zeros(2, 0, dtype=torch.long))
        # item-item similarity edges of the training graph (graph-first cold start), if any
        self.register_buffer("similar_edges", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("similar_weight", torch.zeros(0))
        self.adj: Adjacency | None = None  # derived from train_edges by derive()
        self.known: Tensor | None = None  # with similar edges: nodes with an interaction

    def fit(self, train: HeteroData) -> None:
        """Keep the training edges (and item-item :data:`~graphrec.schema.SIMILAR` edges, when
        the graph has them) on the model's device and build the adjacency from them."""
        check_schema(train, "training graph")
        dev = self.embedding.weight.device
        self.train_edges = train[EDGE].edge_index.to(dev)
        if SIMILAR in train.edge_types and train[SIMILAR].num_edges:
            self.similar_edges = train[SIMILAR].edge_index.to(dev)
            self.similar_weight = train[SIMILAR].edge_weight.float().to(dev)
        self.derive()

    def derive(self) -> None:
        """The normalized adjacency of ``train_edges`` (and the similar edges), on the model's
        device; with similar edges, which nodes have an interaction."""
        self.adj, self.known = None, None
        if self.encoder.num_layers and self.train_edges.numel():
            graph = HeteroData()
            graph[USER].num_nodes, graph[ITEM].num_nodes = self.num_users, self.num_items
            graph[EDGE].edge_index = self.train_edges
            if self.similar_edges.numel():
                graph[SIMILAR].edge_index = self.similar_edges
                graph[SIMILAR].edge_weight = self.similar_weight
            self.adj = lightgcn_adjacency(graph, self.embedding.embedding_dim, self.propagation,
                                          self.train_edges.device)
        if self.similar_edges.numel():
            deg = torch.bincount(torch.cat([self.train_edges[0],
                                            self.train_edges[1] + self.num_users]),
                                 minlength=self.num_users + self.num_items)
            self.known = deg > 0

    def serves_new_items(self) -> bool:
        """With similar edges: a new item's embedding is propagated from the items like it."""
        return bool(self.similar_edges.numel()) and self.encoder.num_layers > 0

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user ``[U, F]`` and item ``[I, F]`` embeddings after propagation (with
        autograd, in the current grad mode). With similar edges, the layer-0 rows of nodes
        without an interaction are zero (never trained as positives): a cold item's embedding
        is what propagation brings it from its similar items."""
        x = self.embedding.weight
        if self.known is not None:
            x = x * self.known.unsqueeze(1).to(x.dtype)
        out = self.encoder(x, self.adj)
        return out[: self.num_users], out[self.num_users:]

    def scorer(self) -> "Propagated":
        """The propagated embeddings, computed once without autograd, and the scoring methods
        over them: what the evaluator and ``recommend`` hold for one round of scoring."""
        with torch.no_grad():
            u, i = self.embeddings()
        kind = PropagatedRetriever if hasattr(self, "user_vectors_from") else Propagated
        return kind(self, u, i)

    @abstractmethod
    def score_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor) -> Tensor:
        """Scores ``[B, I]`` of every item for ``users [B]`` from propagated embeddings."""

    def candidates_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                        items: Tensor) -> Tensor:
        """Scores ``[B, C]`` of ``items [B, C]``; this default gathers from :meth:`score_from`."""
        return self.score_from(user_emb, item_emb, users).gather(1, items)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores of every item for ``users [B]``: ``[B, I]`` (propagates over the whole graph
        on each call; hold :meth:`scorer` to score many batches)."""
        return self.score_from(*self.embeddings(), users)

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        return self.candidates_from(*self.embeddings(), users, items)

    def layer0_l2(self, users: Tensor, items: Tensor, negatives: Tensor | None = None,
                  table: Tensor | None = None) -> Tensor:
        """Squared norms of a batch's layer-0 rows, halved, per example: users, positives and
        the negatives divided by their number per positive (LightGCN's regularizer; a shared
        pool ``negatives [M]`` counts once per example). ``table``: another table of the same
        rows (default: the embedding)."""
        w = self.embedding.weight if table is None else table
        reg = rows(w, users).pow(2).sum() + rows(w, items + self.num_users).pow(2).sum()
        if negatives is not None:
            per = users.numel() if negatives.dim() == 1 else 1
            reg = reg + per * rows(w, negatives + self.num_users).pow(2).sum() / negatives.size(-1)
        return reg / (2 * users.numel())


class DotProductModel(GraphModel):
    """Members scored by a dot product of the propagated embeddings, plus optional user, item
    and global biases: retrievers, whose vectors fold the biases in (users
    ``[e_u, b + b_u, 1]``, items ``[e_i, 1, b_i]``). A new user folds in
    (:mod:`graphrec.models.coldstart`): ``[fold_in(e_H), b, 1]``, no user bias."""

    new_users = "fold-in"

    def __init__(self, num_users: int, num_items: int, dim: int, num_layers: int,
                 layer_weights: Sequence[float] | None = None, init_std: float = 0.1,
                 propagation: str = "symmetric", biases: bool = False) -> None:
        super().__init__(num_users, num_items, dim, num_layers, layer_weights, init_std,
                         propagation)
        self.biases = biases
        if biases:
            self.bias = torch.nn.Embedding(num_users + num_items, 1)
            torch.nn.init.zeros_(self.bias.weight)
            self.global_bias = torch.nn.Parameter(torch.zeros(1))

    def pair_bias(self, users: Tensor, items: Tensor) -> Tensor | float:
        """Global + user + item bias of pairs of any (equal) shape, or 0 without biases."""
        if not self.biases:
            return 0.0
        b = self.bias.weight.squeeze(1)
        return self.global_bias + b[users] + b[items + self.num_users]

    def score_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor) -> Tensor:
        scores = user_emb[users] @ item_emb.T  # [B, I]
        if self.biases:
            b = self.bias.weight.squeeze(1)
            scores = scores + (self.global_bias + b[users]).unsqueeze(1) + b[self.num_users:]
        return scores

    def candidates_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                        items: Tensor) -> Tensor:
        u = user_emb[users].unsqueeze(1)  # [B, 1, F]
        return (u * rows(item_emb, items)).sum(-1) + self.pair_bias(users.unsqueeze(1), items)

    def user_vectors_from(self, user_emb: Tensor, users: Tensor) -> Tensor:
        """Query vectors ``[B, F(+2)]``: the embeddings, then ``[b + b_u, 1]`` with biases."""
        u = user_emb[users]
        if not self.biases:
            return u
        b = self.bias.weight[users, 0] + self.global_bias
        return torch.cat([u, b.unsqueeze(1), torch.ones_like(b).unsqueeze(1)], 1)

    def new_user_vectors_from(self, item_emb: Tensor, history: History, method: str,
                              reg: float) -> Tensor:
        """Query vectors ``[B, F(+2)]`` of users outside training from their histories."""
        from graphrec.models.coldstart import fold_in

        u = fold_in(item_emb, history, method, reg)
        if not self.biases:
            return u
        b = self.global_bias.expand(u.size(0))
        return torch.cat([u, b.unsqueeze(1), torch.ones_like(b).unsqueeze(1)], 1)

    def item_vectors_from(self, item_emb: Tensor) -> Tensor:
        """Item vectors ``[I, F(+2)]``: the embeddings, then ``[1, b_i]`` with biases."""
        if not self.biases:
            return item_emb
        b = self.bias.weight[self.num_users:]
        return torch.cat([item_emb, torch.ones_like(b), b], 1)

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F']`` query vectors (propagates on each call; see :meth:`scorer`)."""
        return self.user_vectors_from(self.embeddings()[0], users)

    def item_vectors(self) -> Tensor:
        """``[I, F']`` item vectors (propagates on each call; see :meth:`scorer`)."""
        return self.item_vectors_from(self.embeddings()[1])


class Propagated:
    """One round of scoring for a graph model: its propagated embeddings, computed once, and
    the model's scoring methods over them. Held by the caller while the weights do not change."""

    def __init__(self, model: GraphModel, user_emb: Tensor, item_emb: Tensor) -> None:
        self.model, self.user_emb, self.item_emb = model, user_emb, item_emb

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]`` of every item for ``users [B]``."""
        return self.model.score_from(self.user_emb, self.item_emb, users)

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        """Scores ``[B, C]`` of ``items [B, C]``."""
        return self.model.candidates_from(self.user_emb, self.item_emb, users, items)

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        """Rating predictions ``[N]`` (rating models)."""
        predict_from = getattr(self.model, "predict_from", None)
        if predict_from is None:
            return self.model.predict(users, items)  # the model's own error
        return predict_from(self.user_emb, self.item_emb, users, items)


class PropagatedRetriever(Propagated):
    """:class:`Propagated` for dot-product members: also their user and item vectors."""

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, F']`` query vectors of ``users [B]``."""
        return self.model.user_vectors_from(self.user_emb, users)  # type: ignore[attr-defined]

    def item_vectors(self) -> Tensor:
        """``[I, F']`` vectors of every item."""
        return self.model.item_vectors_from(self.item_emb)  # type: ignore[attr-defined]

    def new_user_vectors(self, history: History, method: str = "mean", reg: float = 1.0) -> Tensor:
        """``[B, F']`` query vectors of users outside training, from their histories."""
        return self.model.new_user_vectors_from(  # type: ignore[attr-defined]
            self.item_emb, history, method, reg)


__all__ = ["GraphModel", "DotProductModel", "Propagated", "PropagatedRetriever", "rows"]
