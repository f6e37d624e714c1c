"""Two-tower retrieval over IDs, side features and the user's history (``two-tower``).

The user tower reads the user's ID embedding, an aggregate of the user's history (the mean of
its items' ID embeddings through a linear map, weighted against the ID as SimpleX does: Mao et
al., CIKM 2021) and the user's side features; the item tower reads the item's ID embedding and
the item's side features. Each tower is an MLP over the concatenation (Linear, LayerNorm, ReLU,
dropout per hidden layer, then a Linear to ``dim``; with no hidden layers and no features the
tower is the identity), then L2 normalization. A score is the cosine of the two outputs over a
temperature (fixed, or learned with ``learn_temperature``), so it is an inner product of
vectors and the model is a :class:`~graphrec.models.base.Retriever` that faiss indexes serve.

Graph-first: the ID embeddings are one table of users then items, propagated ``num_layers``
hops by the LightGCN encoder over the training graph before the towers read them
(:class:`~graphrec.models.graph.GraphModel`); 0, the default, is a plain two-tower model.

Side features are the graph's node attributes, read by kind: ``token`` codes (int64, one per
node) through an embedding table with one extra row, the unknown bucket, that every code
outside the vocabulary seen at fit maps to (a new category at serving time); float matrices
(multi-hot genres, ``float_vec`` such as text embeddings) through a linear map; float scalars
standardized with the training mean and spread. ``features`` names what the towers read
(``all``, ``none`` or a list); the model checks them at fit and keeps the feature tables and
their layout in its state, so a weights-only load rebuilds the towers. Text attributes (lists
of strings) are not read: a text embedding stored as a ``float_vec`` attribute is.

Losses (:mod:`graphrec.nn.losses`): ``softmax`` (InfoNCE over the logits, with the logQ
correction of whatever sampled the negatives; the default), ``ccl`` (SimpleX's cosine
contrastive loss), ``bpr`` and ``bce`` over the logits. Negatives
(:data:`graphrec.batches.NEGATIVES`):
per example, or a pool shared by the batch (``shared``, the default; ``in-batch``; ``mixed``),
whose items that are positives of a row's user are left out of that row's loss.

In training the history aggregate of an example leaves out its positive item: at evaluation
the held-out item is never in the history, so the tower must not learn to find it there.

Cold start (:mod:`graphrec.models.coldstart`): users and items without a training
interaction read a zero ID embedding (theirs was never trained as a positive), so a new item's
tower is its features alone (``text_emb``, genres: ``serves_new_items`` when the item tower
reads any) and a new user's tower is the history aggregate of the items given plus the user's
side features; a user outside the data (no node, no features) folds in over the item vectors.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History, PairBatch, PairSpec, pair_spec
from graphrec.data.graph import check_schema, user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import check_history
from graphrec.models.graph import GraphModel, rows
from graphrec.nn import losses
from graphrec.schema import ITEM, USER

LOSSES = ("ccl", "softmax", "bpr", "bce")
#: node attribute kinds the towers read
KINDS = ("token", "matrix", "float")


@dataclass
class TwoTowerConfig:
    """Args:
        dim: size of the ID embeddings and of the towers' outputs.
        features: which node attributes the towers read: ``"all"`` (every token, float and
            float-matrix attribute of either node type), ``"none"`` (IDs only: any graph), or
            a comma-separated list of names, ``user.`` or ``item.`` in front where both types
            have one (``"age,occupation,item.class"``).
        feature_dim: embedding size of each token feature and output of each matrix feature's
            linear map.
        layers: hidden sizes of each tower's MLP (``()``: one Linear to ``dim`` where the
            input is wider, else none).
        dropout: dropout on each tower's input and hidden layers, in training only.
        history: add the user's history aggregate to the user tower (SimpleX).
        history_weight: ``g`` in ``g * e_u + (1 - g) * V mean(e_history)``.
        num_layers: LightGCN hops over the training graph before the towers (0: none).
        propagation: the propagation backend (:mod:`graphrec.nn.propagation`).
        loss: ``ccl``, ``softmax``, ``bpr`` or ``bce`` (module docstring).
        negatives: :data:`graphrec.batches.NEGATIVES`; how many is the trainer's
            ``num_negatives`` (the pool's size for ``shared`` and ``mixed``).
        negatives_power: the popularity exponent of ``popularity`` negatives.
        margin, neg_weight: CCL's margin on negative cosines and weight of their term.
        temperature: the cosine is divided by it (> 0); the initial value when learned.
        learn_temperature: learn the temperature (kept at least 0.01).
        init_std: standard deviation of the normal ID embedding initialization.
    """

    dim: int = 64
    features: str = "all"
    feature_dim: int = 16
    layers: tuple[int, ...] = ()
    dropout: float = 0.1
    history: bool = True
    history_weight: float = 0.5
    num_layers: int = 0
    propagation: str = "symmetric"
    loss: str = "softmax"
    negatives: str = "shared"
    negatives_power: float = 0.75
    margin: float = 0.5
    neg_weight: float = 150.0
    temperature: float = 0.1
    learn_temperature: bool = False
    init_std: float = 0.1

    #: training defaults of ``two-tower`` (TrainConfig fields)
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 5e-3, "num_negatives": 512,
                                                 "batch_size": 1024}

    def __post_init__(self) -> None:
        self.layers = tuple(int(n) for n in self.layers)


def _feature_layout(graph: HeteroData, selection: str,
                    what: str = "two-tower") -> dict[str, list[dict[str, Any]]]:
    """The features the towers read, per node type, with what their modules need (vocabulary
    sizes, widths, standardization); one-line errors, naming the model ``what``, for named
    features that are absent or of a kind the towers cannot read."""
    out: dict[str, list[dict[str, Any]]] = {USER: [], ITEM: []}
    if selection.strip() == "none":
        return out
    available = {node: {k: v for k, v in graph[node].items() if k != "num_nodes"}
                 for node in (USER, ITEM)}
    if selection.strip() == "all":
        wanted = [(node, name) for node in (USER, ITEM) for name in available[node]
                  if not isinstance(available[node][name], list)]  # text: not read
    else:
        wanted = []
        for raw in (s.strip() for s in selection.split(",")):
            if not raw:
                continue
            node, _, name = raw.rpartition(".")
            nodes = [node] if node else [n for n in (USER, ITEM) if raw in available[n]]
            if node and node not in (USER, ITEM):
                raise GraphrecError(f"{what}: feature {raw!r}: the prefix must be user. or item.")
            if not nodes or name not in available[nodes[0]]:
                have = ", ".join(f"{n}.{k}" for n in (USER, ITEM) for k in available[n]) or "none"
                raise GraphrecError(f"{what}: feature {raw!r} is not a node attribute of the "
                                    f"graph (it has: {have}); --set features=none trains on IDs")
            if len(nodes) > 1:
                raise GraphrecError(f"{what}: feature {raw!r} is on users and items; name "
                                    f"user.{raw} or item.{raw}")
            wanted.append((nodes[0], name))
    for node, name in wanted:
        value = available[node][name]
        where = f"{what}: feature {node}.{name}"
        num = int(graph[node].num_nodes)
        if isinstance(value, list):
            raise GraphrecError(f"{where} is text; the towers read a text embedding stored as a "
                                "float_vec attribute")
        if not isinstance(value, Tensor) or value.size(0) != num or value.dim() > 2:
            raise GraphrecError(f"{where}: expected a tensor with one row per {node} "
                                f"({num}), got {type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
        if value.dtype == torch.int64 and value.dim() == 1:
            if value.numel() and int(value.min()) < 0:
                raise GraphrecError(f"{where}: token codes must be >= 0 (0: missing)")
            out[node].append({"name": name, "kind": "token",
                              "vocab": int(value.max()) + 1 if value.numel() else 1})
        elif value.is_floating_point() and bool(torch.isfinite(value).all()):
            if value.dim() == 2:
                out[node].append({"name": name, "kind": "matrix", "width": int(value.size(1))})
            else:
                std = float(value.std()) if value.numel() > 1 else 0.0
                out[node].append({"name": name, "kind": "float", "mean": float(value.mean()),
                                  "std": std if std > 0 else 1.0})
        else:
            raise GraphrecError(f"{where}: the towers read int64 token codes or finite floats, "
                                f"got {value.dtype} of shape {tuple(value.shape)}")
    return out


class FeatureEncoder(torch.nn.Module):
    """The side features of one node type as one ``[N, width]`` block, from the feature tables
    the model keeps (buffers ``feat_<name>``, one row per node)."""

    def __init__(self, layout: list[dict[str, Any]], feature_dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.maps = torch.nn.ModuleDict()
        self.width = 0
        for f in layout:
            if f["kind"] == "token":  # the last row is the unknown bucket
                self.maps[f["name"]] = torch.nn.Embedding(f["vocab"] + 1, feature_dim)
                torch.nn.init.normal_(self.maps[f["name"]].weight, std=0.1)
                self.width += feature_dim
            elif f["kind"] == "matrix":
                self.maps[f["name"]] = torch.nn.Linear(f["width"], feature_dim, bias=False)
                self.width += feature_dim
            else:
                self.width += 1

    def forward(self, values: dict[str, Tensor]) -> list[Tensor]:
        """The encoded blocks of ``values`` (a tensor per feature, rows of the nodes asked)."""
        out = []
        for f in self.layout:
            v = values[f["name"]]
            if f["kind"] == "token":  # codes outside the vocabulary: the unknown bucket
                vocab = f["vocab"]
                v = torch.where((v >= 0) & (v < vocab), v, torch.full_like(v, vocab))
                out.append(self.maps[f["name"]](v))
            elif f["kind"] == "matrix":
                out.append(self.maps[f["name"]](v))
            else:
                out.append(((v - f["mean"]) / f["std"]).unsqueeze(-1))
        return out


class Tower(torch.nn.Module):
    """MLP over ``width`` inputs to ``dim`` outputs: (Linear, LayerNorm, ReLU, dropout) per
    hidden size, then a Linear; the identity where there are no hidden layers and
    ``width == dim``. Dropout (on the input too) applies only when a caller passes
    ``train=True`` (the loss in training mode), so scoring is deterministic in any mode."""

    def __init__(self, width: int, dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        blocks: list[torch.nn.Module] = []
        size = width
        for h in hidden:
            blocks.append(torch.nn.ModuleList([torch.nn.Linear(size, h), torch.nn.LayerNorm(h)]))
            size = h
        self.hidden = torch.nn.ModuleList(blocks)
        self.out = torch.nn.Linear(size, dim) if hidden or width != dim else None

    def forward(self, parts: list[Tensor], train: bool = False) -> Tensor:
        """L2-normalized output ``[N, dim]`` of the concatenated ``parts``."""
        x = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        x = F.dropout(x, self.dropout, train)
        for linear, norm in self.hidden:  # type: ignore[misc]
            x = F.dropout(F.relu(norm(linear(x))), self.dropout, train)
        if self.out is not None:
            x = self.out(x)
        return F.normalize(x, dim=-1)


class TwoTower(GraphModel):
    """User and item towers over (propagated) ID embeddings, history and side features;
    cosine over a temperature (module docstring)."""

    trainable = True
    uses_history = True
    new_users = "history"  # the user tower aggregates the given items (zero ID embedding)
    reads_user_nodes = True  # ... and the user's side features
    #: ``graphrec tune``: learning rate, width, the softmax temperature and dropout
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "dim": {"type": "int", "low": 32, "high": 128, "log": True},
                    "temperature": {"type": "float", "low": 0.02, "high": 0.5, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.3}}

    def __init__(self, num_users: int, num_items: int, cfg: TwoTowerConfig | None = None) -> None:
        cfg = cfg or TwoTowerConfig()
        if cfg.loss not in LOSSES:
            raise GraphrecError(f"two-tower: loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
        if not cfg.temperature > 0:
            raise GraphrecError(f"two-tower: temperature must be > 0, got {cfg.temperature}")
        if not 0 <= cfg.dropout < 1 or not 0 <= cfg.history_weight <= 1:
            raise GraphrecError(f"two-tower: need dropout in [0, 1) and history_weight in "
                                f"[0, 1], got {cfg.dropout}, {cfg.history_weight}")
        if cfg.feature_dim < 1 or any(h < 1 for h in cfg.layers) or cfg.neg_weight < 0:
            raise GraphrecError("two-tower: feature_dim and layers must be positive, "
                                "neg_weight >= 0")
        if not -1 <= cfg.margin <= 1:
            raise GraphrecError(f"two-tower: margin must lie in [-1, 1] (a cosine), got {cfg.margin}")
        super().__init__(num_users, num_items, cfg.dim, cfg.num_layers, None, cfg.init_std,
                         cfg.propagation)
        self.cfg = cfg
        self.spec = pair_spec(cfg.negatives, cfg.negatives_power, "two-tower")
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(cfg.temperature)),
                                                  requires_grad=cfg.learn_temperature)
        if cfg.history:
            self.history_map = torch.nn.Linear(cfg.dim, cfg.dim, bias=False)
            torch.nn.init.eye_(self.history_map.weight)  # starts as the plain mean
        # training histories (CSR), the scores' history when the caller gives none
        self.register_buffer("history_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("history_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("feature_layout", torch.zeros(0, dtype=torch.uint8))
        # users and items with a training interaction: the others' ID embeddings were never
        # trained as positives, so their towers read zeros there (cold start: features alone)
        self.register_buffer("user_known", torch.ones(num_users, dtype=torch.bool))
        self.register_buffer("item_known", torch.ones(num_items, dtype=torch.bool))
        self._build({USER: [], ITEM: []})

    # -- structure -------------------------------------------------------------------------

    def _build(self, layout: dict[str, list[dict[str, Any]]]) -> None:
        """(Re)build the feature encoders, their tables and the towers for ``layout``."""
        device = self.embedding.weight.device
        self.layout = layout
        self.feature_layout = torch.frombuffer(bytearray(json.dumps(layout).encode()),
                                               dtype=torch.uint8).clone().to(device)
        self.encoders = torch.nn.ModuleDict({
            node: FeatureEncoder(layout[node], self.cfg.feature_dim) for node in (USER, ITEM)})
        for node in (USER, ITEM):
            count = self.num_users if node == USER else self.num_items
            for f in layout[node]:
                shape = (count, f["width"]) if f["kind"] == "matrix" else (count,)
                dtype = torch.long if f["kind"] == "token" else torch.float32
                self.register_buffer(f"feat_{node}_{f['name']}", torch.zeros(shape, dtype=dtype))
        self.user_tower = Tower(self.cfg.dim + self.encoders[USER].width, self.cfg.dim,
                                self.cfg.layers, self.cfg.dropout)
        self.item_tower = Tower(self.cfg.dim + self.encoders[ITEM].width, self.cfg.dim,
                                self.cfg.layers, self.cfg.dropout)
        self.to(device)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        saved = state_dict.get(prefix + "feature_layout")
        if saved is not None and saved.numel():
            layout = json.loads(bytes(saved.cpu().tolist()).decode())
            if layout != self.layout:  # the towers a saved model was fitted with
                for name in [n for n in self._buffers if n.startswith("feat_")]:
                    del self._buffers[name]
                self._build(layout)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def fit(self, train: HeteroData) -> None:
        """Check and keep the features ``cfg.features`` names (tables and layout), the training
        histories, and the graph family's training edges."""
        check_schema(train, "training graph")
        layout = _feature_layout(train, self.cfg.features)
        if layout != self.layout:
            for name in [n for n in self._buffers if n.startswith("feat_")]:
                del self._buffers[name]
            self._build(layout)
        device = self.embedding.weight.device
        for node in (USER, ITEM):
            for f in layout[node]:
                value = train[node][f["name"]]
                setattr(self, f"feat_{node}_{f['name']}",  # a copy: the graph stays the caller's
                        value.to(device, torch.long if f["kind"] == "token" else torch.float32,
                                 copy=True))
        ptr, items = user_sequences(train)
        self.history_ptr, self.history_items = ptr.to(device), items.to(device)
        self.user_known = (ptr.diff() > 0).to(device)
        self.item_known = (torch.bincount(items, minlength=self.num_items) > 0).to(device)
        super().fit(train)

    def serves_new_items(self) -> bool:
        """When the item tower reads features (``text_emb``, genres): a new item's tower reads
        them with a zero ID embedding."""
        return bool(self.layout[ITEM])

    @property
    def temperature(self) -> Tensor:
        """The current temperature (at least 0.01)."""
        return self.log_temperature.exp().clamp_min(0.01)

    # -- towers ----------------------------------------------------------------------------

    def _features(self, node: str, index: Tensor) -> list[Tensor]:
        tables = {f["name"]: getattr(self, f"feat_{node}_{f['name']}")[index]
                  for f in self.layout[node]}
        return self.encoders[node](tables)

    def history_mean(self, item_emb: Tensor, users: Tensor, history: History | None,
                     leave_out: Tensor | None = None) -> Tensor:
        """``[B, F]`` mean item embedding of each user's history row (zeros for an empty one):
        ``history``, or the training histories (each distinct user's gathered once).
        ``leave_out [B]``: an item of each row taken out of its mean (the training positive)."""
        if history is None:
            uq, inv = torch.unique(users, return_inverse=True)
            sums, counts = self._bag(item_emb, History.of(self.history_ptr, self.history_items, uq))
            sums, counts = sums[inv], counts[inv]
        else:
            sums, counts = self._bag(item_emb, history)
        if leave_out is not None:
            sums, counts = sums - rows(item_emb, leave_out), counts - 1
        return sums / counts.clamp_min(1).unsqueeze(1)

    @staticmethod
    def _bag(item_emb: Tensor, history: History) -> tuple[Tensor, Tensor]:
        counts = history.ptr.diff().to(item_emb.dtype)
        if not history.items.numel():
            return item_emb.new_zeros(history.num_rows, item_emb.size(1)), counts
        return F.embedding_bag(history.items, item_emb, history.ptr[:-1], mode="sum"), counts

    def user_tower_of(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                      history: History | None, leave_out: Tensor | None = None,
                      train: bool = False) -> Tensor:
        """Normalized user tower outputs ``[B, dim]`` from (propagated) ID tables
        (``train``: with dropout)."""
        e = rows(user_emb, users) * self.user_known[users].unsqueeze(-1)
        if self.cfg.history:
            g = self.cfg.history_weight
            mean = self.history_mean(item_emb, users, history, leave_out)
            e = g * e + (1 - g) * self.history_map(mean)
        return self.user_tower([e, *self._features(USER, users)], train)

    def item_tower_of(self, item_emb: Tensor, items: Tensor, train: bool = False) -> Tensor:
        """Normalized item tower outputs ``[len(items), dim]`` from (propagated) ID tables
        (``train``: with dropout)."""
        e = rows(item_emb, items) * self.item_known[items].unsqueeze(-1)
        return self.item_tower([e, *self._features(ITEM, items)], train)

    # -- scoring ---------------------------------------------------------------------------

    def score_from(self, user_emb: Tensor, item_emb: Tensor, users: Tensor,
                   history: History | None = None) -> Tensor:
        items = torch.arange(self.num_items, device=users.device)
        return (self.user_tower_of(user_emb, item_emb, users, history) / self.temperature) \
            @ self.item_tower_of(item_emb, items).T

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: cosines of the towers over the temperature."""
        check_history(self, users, history)
        return self.score_from(*self.embeddings(), users, history)

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        check_history(self, users, history)
        u_all, i_all = self.embeddings()
        u = self.user_tower_of(u_all, i_all, users, history) / self.temperature
        v = self.item_tower_of(i_all, items.reshape(-1)).view(*items.shape, -1)
        return (u.unsqueeze(1) * v).sum(-1)

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, dim]`` query vectors: the user tower over the temperature."""
        return self.scorer().user_vectors(users, history)

    def item_vectors(self) -> Tensor:
        """``[I, dim]`` item vectors: the item tower."""
        return self.scorer().item_vectors()

    def scorer(self) -> "TowerScorer":
        """The propagated ID tables and every item vector, computed once, and the scoring
        methods over them."""
        with torch.no_grad():
            u, i = self.embeddings()
            items = self.item_tower_of(i, torch.arange(self.num_items, device=i.device))
        return TowerScorer(self, u, i, items)

    # -- training --------------------------------------------------------------------------

    def batch_spec(self) -> PairSpec:
        return self.spec

    def forward(self, batch: PairBatch) -> Tensor:  # type: ignore[override]
        """The loss (``cfg.loss``) of a batch of (user, positive, negatives or pool)."""
        users, items, negatives = batch.users, batch.items, batch.negatives
        if negatives is None or negatives.numel() == 0:
            raise GraphrecError(f"two-tower: the {self.cfg.loss} loss needs negatives "
                                "(--num-negatives >= 1)")
        u_all, i_all = self.embeddings()
        u = self.user_tower_of(u_all, i_all, users, None,
                               items if self.cfg.history else None, self.training)  # [N, F]
        wanted, where = torch.unique(torch.cat([items, negatives.reshape(-1)]),
                                     return_inverse=True)
        v = self.item_tower_of(i_all, wanted, self.training)  # each distinct item once
        pos_v, neg_v = v[where[: items.numel()]], v[where[items.numel():]]
        pos = (u * pos_v).sum(1)  # cosines [N]
        if negatives.dim() == 1:
            neg = u @ neg_v.T  # [N, M]
        else:
            neg = (u.unsqueeze(1) * neg_v.view(*negatives.shape, -1)).sum(-1)
        loss = self.cfg.loss
        if loss == "ccl":
            return losses.ccl(pos, neg, self.cfg.margin, self.cfg.neg_weight, batch.hits)
        t = self.temperature
        if loss == "softmax":
            weighted = batch.log_q_pos is not None
            return losses.sampled_softmax(pos, neg, t, batch.log_q_pos if weighted else None,
                                          batch.log_q_neg if weighted else None, batch.hits)
        return losses.pair_loss(loss, pos / t, neg / t, hits=batch.hits)


class TowerScorer:
    """One round of scoring for a two-tower model: propagated ID tables and every item's
    vector, computed once; user vectors from them per call."""

    def __init__(self, model: TwoTower, user_emb: Tensor, item_emb: Tensor,
                 item_vecs: Tensor) -> None:
        self.model, self.user_emb, self.item_emb, self.item_vecs = model, user_emb, item_emb, item_vecs

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, dim]`` query vectors of ``users [B]``."""
        check_history(self.model, users, history)
        with torch.no_grad():
            return self.model.user_tower_of(self.user_emb, self.item_emb, users, history) \
                / self.model.temperature

    def item_vectors(self) -> Tensor:
        """``[I, dim]`` vectors of every item."""
        return self.item_vecs

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]`` of every item for ``users [B]``."""
        return self.user_vectors(users, history) @ self.item_vecs.T

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        """Scores ``[B, C]`` of ``items [B, C]``."""
        return (self.user_vectors(users, history).unsqueeze(1) * self.item_vecs[items]).sum(-1)


__all__ = ["TwoTower", "TwoTowerConfig", "TowerScorer", "FeatureEncoder", "LOSSES"]
