"""Neural collaborative filtering: NeuMF and its GMF/MLP branches, and an MLP rating regressor.

``ncf`` (He et al., WWW 2017): NeuMF fuses two branches over separate embeddings. GMF takes
the element-wise product ``p_u * q_i`` of user and item embeddings; MLP feeds the
concatenation ``[p_u, q_i]`` through a ReLU tower. One linear layer over
``[GMF product, MLP output]`` gives the logit, trained by binary cross-entropy on the observed
pairs (label 1) and uniformly sampled unobserved items (label 0). ``variant="gmf"`` or ``"mlp"``
keeps one branch only. NCF is a member of the graph family (:mod:`graphrec.models.graph`) with
the NeuMF scorer: its embeddings are one table, propagated ``num_layers`` hops over the training
graph before the scorer; zero hops, the default, is the paper's NeuMF (a test pins it). The paper's pre-training of NeuMF from trained GMF and MLP models is not
done: every variant trains from scratch (Adam, as the paper does without pre-training). On
ml-100k (random 80/20 split) ``--epochs 10 --lr 0.001 --num-negatives 4 --batch-size 256``
(epochs picked on a validation split) gave Recall@20 0.3322, NDCG@20 0.4007.

``mlp-rating``: the MLP branch for explicit feedback. ``[p_u, q_i]`` goes through a ReLU tower
and one linear unit; a sigmoid rescaled to the training ratings' range ``[r_min, r_max]`` gives
the rating, trained by mean squared error.

Scoring all items never loops over items: the tower's first layer splits into a user and an
item part, ``W [p_u, q_i] + b = W_u p_u + b + W_i q_i``, computed once per user and once per
item and broadcast to ``[B, I, H]``, in item chunks of at most :data:`CHUNK_FLOATS` floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History, PairBatch, PairSpec, RatingBatch, RatingSpec
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.models.graph import GraphModel, rows
from graphrec.nn.losses import PAIR_LOSSES, pair_loss
from graphrec.schema import EDGE, RATING

VARIANTS = ("neumf", "gmf", "mlp")
#: largest ``[B, items, hidden]`` activation scoring builds at once (64M floats = 256 MB)
CHUNK_FLOATS = 1 << 26


class Tower(torch.nn.Module):
    """ReLU layers over ``[user, item]`` embeddings of size ``dim`` each.

    Args:
        dim: size of the user and of the item embedding (the input is ``2 * dim``).
        layers: output sizes of the layers, e.g. ``(64, 32, 16)``.
        dropout: dropout after each ReLU, applied only when a caller passes ``train=True``
            (the models' losses in training mode), so scoring is deterministic in any mode.
    """

    def __init__(self, dim: int, layers: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        sizes = (2 * dim, *layers)
        self.dim = dim
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = dropout
        self.width = max(sizes)

    def _rest(self, h: Tensor, train: bool) -> Tensor:
        """ReLU and dropout after the first layer's pre-activation ``h``, then the other layers."""
        h = F.dropout(F.relu(h), self.dropout, train)
        for layer in self.layers[1:]:
            h = F.dropout(F.relu(layer(h)), self.dropout, train)
        return h

    def forward(self, u: Tensor, i: Tensor, train: bool = False) -> Tensor:
        """Output ``[N, layers[-1]]`` for pairs of embeddings ``u [N, dim]``, ``i [N, dim]``."""
        return self._rest(self.layers[0](torch.cat([u, i], -1)), train)

    def broadcast(self, u: Tensor, i: Tensor) -> Tensor:
        """Output ``[B, C, layers[-1]]`` for every pair of ``u [B, dim]`` and ``i [C, dim]``."""
        first = self.layers[0]
        hu = F.linear(u, first.weight[:, : self.dim], first.bias)  # [B, H1]
        hi = F.linear(i, first.weight[:, self.dim:])  # [C, H1]
        return self._rest(hu.unsqueeze(1) + hi.unsqueeze(0), False)  # [B, C, H]


def _item_chunks(num_items: int, batch: int, width: int) -> list[tuple[int, int]]:
    """Item ranges such that a ``[batch, chunk, width]`` tensor stays within CHUNK_FLOATS."""
    step = max(1, CHUNK_FLOATS // max(1, batch * width))
    return [(s, min(s + step, num_items)) for s in range(0, num_items, step)]


@dataclass
class NCFConfig:
    """Args:
        variant: ``"neumf"`` (both branches), ``"gmf"`` or ``"mlp"`` (one branch).
        gmf_dim: size of the GMF embeddings (the GMF branch's predictive factors).
        mlp_dim: size of the MLP user and item embeddings (the tower's input is twice this).
        mlp_layers: output sizes of the MLP tower's ReLU layers; the last is the MLP branch's
            predictive factors.
        dropout: dropout after each tower layer in the loss while training (never in scoring).
        l2: L2 weight on the batch's embeddings (both branches), per example; see ``loss``.
        init_std: standard deviation of the normal embedding initialization (the paper: 0.01).
        num_layers: LightGCN hops over the training graph before the NeuMF scorer (0: the
            paper's NeuMF).
        layer_weights: weights of layers 0..K (default: the mean).
        propagation: the propagation backend, see :mod:`graphrec.nn.propagation`.
        loss: ``"bce"`` (the paper's), ``"bpr"`` or ``"softmax"`` over the logits of the
            positive and its negatives (:mod:`graphrec.nn.losses`).
    """

    variant: str = "neumf"
    gmf_dim: int = 32
    mlp_dim: int = 32
    mlp_layers: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.0
    l2: float = 0.0
    init_std: float = 0.01
    num_layers: int = 0
    layer_weights: tuple[float, ...] | None = None
    propagation: str = "symmetric"
    loss: str = "bce"

    def __post_init__(self) -> None:
        self.mlp_layers = tuple(int(n) for n in self.mlp_layers)


class NCF(GraphModel):
    """NeuMF, or its GMF or MLP branch alone, over the graph family's embeddings: one logit per
    (user, item) pair. The table's first ``gmf_dim`` columns are the GMF embeddings, the next
    ``mlp_dim`` the MLP ones (a branch left out has no columns); both are propagated
    ``num_layers`` hops (0: the paper's NeuMF)."""

    trainable = True
    #: four negatives per positive (the paper's) led the validation sweep on ml-100k
    #: (benchmarks/defaults.py)
    train_defaults = {"num_negatives": 4}
    #: ``graphrec tune``: learning rate, the two towers' sizes and dropout
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "gmf_dim": {"type": "int", "low": 8, "high": 64, "log": True},
                    "mlp_dim": {"type": "int", "low": 8, "high": 64, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    def __init__(self, num_users: int, num_items: int, cfg: NCFConfig | None = None) -> None:
        cfg = cfg or NCFConfig()
        if cfg.variant not in VARIANTS:
            raise GraphrecError(f"ncf: variant must be one of {VARIANTS}, got {cfg.variant!r}")
        if cfg.loss not in PAIR_LOSSES:
            raise GraphrecError(f"ncf: loss must be one of {PAIR_LOSSES}, got {cfg.loss!r}")
        if not 0 <= cfg.dropout < 1 or cfg.l2 < 0:
            raise GraphrecError(f"ncf: need dropout in [0, 1) and l2 >= 0, got {cfg.dropout}, {cfg.l2}")
        use_gmf, use_mlp = cfg.variant != "mlp", cfg.variant != "gmf"
        if use_gmf and cfg.gmf_dim < 1:
            raise GraphrecError("ncf: gmf_dim must be at least 1")
        if use_mlp and (cfg.mlp_dim < 1 or not cfg.mlp_layers or min(cfg.mlp_layers) < 1):
            raise GraphrecError(f"ncf: variant {cfg.variant} needs mlp_dim >= 1 and a non-empty "
                                f"mlp_layers of positive sizes, got {cfg.mlp_dim}, {cfg.mlp_layers}")
        self.gmf_dim = cfg.gmf_dim if use_gmf else 0
        mlp_dim = cfg.mlp_dim if use_mlp else 0
        super().__init__(num_users, num_items, self.gmf_dim + mlp_dim, cfg.num_layers,
                         cfg.layer_weights, cfg.init_std, cfg.propagation)
        self.cfg = cfg
        self.use_gmf, self.use_mlp = use_gmf, use_mlp
        factors = self.gmf_dim
        if use_mlp:
            self.tower = Tower(mlp_dim, cfg.mlp_layers, cfg.dropout)
            factors += cfg.mlp_layers[-1]
        self.output = torch.nn.Linear(factors, 1)  # over [GMF product, MLP output]

    def batch_spec(self) -> PairSpec:
        return PairSpec()

    def logits_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor, items: Tensor,
                    train: bool = False) -> Tensor:
        """Logits of pairs ``(users [...], items [...])`` of the same shape from propagated
        embeddings: ``[...]`` (``train``: apply the tower's dropout)."""
        u, i = rows(user_emb, users), rows(item_emb, items)  # [..., G + M]
        g = self.gmf_dim
        parts = []
        if self.use_gmf:
            parts.append(u[..., :g] * i[..., :g])  # [..., G]
        if self.use_mlp:
            parts.append(self.tower(u[..., g:], i[..., g:], train))  # [..., H]
        return self.output(torch.cat(parts, -1)).squeeze(-1)

    def logits(self, users: Tensor, items: Tensor, train: bool = False) -> Tensor:
        """:meth:`logits_from` the current embeddings."""
        return self.logits_from(*self.embeddings(), users, items, train)

    def score_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor) -> Tensor:
        """Logits of every item for ``users [B]``: ``[B, num_items]``, in item chunks."""
        w = self.output.weight[0]
        g = self.gmf_dim
        w_gmf, w_mlp = w[:g], w[g:]
        u = user_emb[users]  # [B, G + M]
        out = torch.empty(users.numel(), self.num_items, device=w.device)
        width = self.tower.width if self.use_mlp else 1
        for s, e in _item_chunks(self.num_items, users.numel(), width):
            chunk = self.output.bias.expand(users.numel(), e - s)  # [B, C]
            if self.use_gmf:  # w_g . (p_u * q_i) = (w_g * p_u) . q_i
                chunk = chunk + (u[:, :g] * w_gmf) @ item_emb[s:e, :g].T
            if self.use_mlp:
                h = self.tower.broadcast(u[:, g:], item_emb[s:e, g:])
                chunk = chunk + h @ w_mlp  # [B, C]
            out[:, s:e] = chunk
        return out

    def candidates_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                        items: Tensor) -> Tensor:
        return self.logits_from(user_emb, item_emb, users.unsqueeze(1).expand_as(items), items)

    def forward(self, batch: PairBatch) -> Tensor:  # type: ignore[override]
        """The BCE loss of a batch of (user, positive, negatives)."""
        return self.loss(batch.users, batch.items, batch.negatives)

    def loss(self, users: Tensor, items: Tensor, negatives: Tensor | None = None) -> Tensor:
        """Binary cross-entropy with logits over ``users [N]`` with positive ``items [N]``
        (label 1) and each of their ``negatives [N, M]`` (label 0), averaged over all
        ``N * (1 + M)`` pairs. Plus ``l2`` times the squared norms of the batch's layer-0
        embeddings (users, positives, and negatives divided by M; both branches), halved, per
        example."""
        if negatives is None or negatives.numel() == 0:
            raise GraphrecError(f"ncf: the {self.cfg.loss} loss needs sampled negatives "
                                "(--num-negatives >= 1)")
        all_items = torch.cat([items.unsqueeze(1), negatives], 1)  # [N, 1 + M]
        logits = self.logits(users.unsqueeze(1).expand_as(all_items), all_items,
                             self.training)  # [N, 1 + M]
        main = pair_loss(self.cfg.loss, logits[:, 0], logits[:, 1:])  # uniform negatives
        if not self.cfg.l2:
            return main
        return main + self.cfg.l2 * self.layer0_l2(users, items, negatives)


@dataclass
class MLPRatingConfig:
    """Args:
        dim: size of the user and of the item embeddings.
        layers: output sizes of the ReLU tower over ``[user, item]``.
        dropout: dropout after each tower layer in ``loss`` while training (never in ``score``
            or ``predict``).
        init_std: standard deviation of the normal embedding initialization.
    """

    dim: int = 32
    layers: tuple[int, ...] = (64, 32, 16)
    dropout: float = 0.1
    init_std: float = 0.1

    def __post_init__(self) -> None:
        self.layers = tuple(int(n) for n in self.layers)


class MLPRating(Recommender):
    """Explicit ratings from an MLP: ``r_min + (r_max - r_min) * sigmoid(w . tower(p_u, q_i) + b)``.

    ``r_min`` and ``r_max`` are the smallest and largest training ratings, set by ``fit`` and
    kept as buffers, so a saved state restores them.
    """

    trainable = True
    predicts_ratings = True
    #: batch 256 at lr 1e-3 led the validation sweep (benchmarks/defaults.py); early stopping
    #: watches RMSE, what the model is for
    train_defaults = {"batch_size": 256, "metric": "rmse"}
    #: ``graphrec tune``: learning rate, embedding size and dropout
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "dim": {"type": "int", "low": 16, "high": 64, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    def __init__(self, num_users: int, num_items: int, cfg: MLPRatingConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or MLPRatingConfig()
        if cfg.dim < 1 or not cfg.layers or min(cfg.layers) < 1:
            raise GraphrecError(f"mlp-rating: need dim >= 1 and a non-empty layers of positive "
                                f"sizes, got {cfg.dim}, {cfg.layers}")
        if not 0 <= cfg.dropout < 1:
            raise GraphrecError(f"mlp-rating: dropout must lie in [0, 1), got {cfg.dropout}")
        self.user = torch.nn.Embedding(num_users, cfg.dim)
        self.item = torch.nn.Embedding(num_items, cfg.dim)
        for table in (self.user, self.item):
            torch.nn.init.normal_(table.weight, std=cfg.init_std)
        self.tower = Tower(cfg.dim, cfg.layers, cfg.dropout)
        self.output = torch.nn.Linear(cfg.layers[-1], 1)
        self.register_buffer("r_min", torch.tensor(0.0))
        self.register_buffer("r_max", torch.tensor(1.0))

    def fit(self, train: HeteroData) -> None:
        """Take the rating range ``[r_min, r_max]`` from the training ratings."""
        store = train[EDGE]
        if RATING not in store or store[RATING].numel() == 0:
            raise GraphrecError("this model learns from ratings, and the data has none")
        r = store[RATING].float()
        self.r_min.fill_(float(r.min()))
        self.r_max.fill_(float(r.max()))

    def _rescale(self, logit: Tensor) -> Tensor:
        return self.r_min + (self.r_max - self.r_min) * torch.sigmoid(logit)

    def predict(self, users: Tensor, items: Tensor, train: bool = False) -> Tensor:
        """Predicted ratings of pairs ``(users [N], items [N])``: ``[N]`` (``train``: apply the
        tower's dropout)."""
        h = self.tower(self.user(users), self.item(items), train)  # [N, H]
        return self._rescale(self.output(h).squeeze(-1))

    def batch_spec(self) -> RatingSpec:
        return RatingSpec()

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Predicted ratings of every item for ``users [B]``: ``[B, num_items]``."""
        out = torch.empty(users.numel(), self.num_items, device=self.r_min.device)
        u = self.user(users)  # [B, D]
        for s, e in _item_chunks(self.num_items, users.numel(), self.tower.width):
            h = self.tower.broadcast(u, self.item.weight[s:e])  # [B, C, H]
            out[:, s:e] = self._rescale(self.output(h).squeeze(-1))
        return out

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        return self.predict(users.unsqueeze(1).expand_as(items), items)

    def forward(self, batch: RatingBatch) -> Tensor:  # type: ignore[override]
        """The MSE loss of a batch of ratings."""
        return self.loss(batch.users, batch.items, batch.ratings)

    def loss(self, users: Tensor, items: Tensor, ratings: Tensor) -> Tensor:
        """Mean squared error of the predicted ``users [N]`` x ``items [N]`` ratings."""
        if ratings is None:
            raise GraphrecError("mlp-rating: the MSE loss needs ratings")
        return F.mse_loss(self.predict(users, items, self.training), ratings.float())


__all__ = ["NCF", "NCFConfig", "MLPRating", "MLPRatingConfig", "Tower"]
