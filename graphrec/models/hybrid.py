"""A hybrid of IDs and side features in the style of LightFM (``hybrid``): Kula, "Metadata
Embeddings for User and Item Cold-start Recommendations", CBRecSys 2015.

A user's and an item's vectors are sums of an ID embedding and one embedding per feature,
scaled by the feature's value:

    q_u = e_u + sum_f x_uf W^U_f,   p_i = e_i + sum_f x_if W^I_f,   b_i = c_i + sum_f x_if d_f
    score(u, i) = q_u . p_i + b_i

Features are the graph's node attributes, read as the two-tower model reads them
(:func:`~graphrec.models.two_tower._feature_layout`, :class:`~graphrec.models.two_tower.FeatureEncoder`):
a token column (int64 codes) through its own embedding table, code 0 (missing) and codes
outside the vocabulary seen at fit adding nothing; a float matrix (multi-hot genres, a
``text_emb`` of ``[num_items, 384]``) through a linear map without bias, i.e. one embedding
per column weighted by its value; a float column standardized, times a learned vector. Each
item-side embedding carries one more column, its share of the item bias ``b_i`` (with
``biases``); a user bias would shift all of a user's scores by one constant, which no ranking
loss can learn, so there is none.

Cold start. Users and items without a training interaction get a zero ID embedding (masked by
training degree, as in the two-tower model), so their vectors are their features alone: a
new item is ranked from its content whenever the item side reads features
(``serves_new_items``). Trained next to IDs, features learn only what the IDs leave over, so
``id_dropout`` (an addition to LightFM: DropoutNet's input dropout, Volkovs et al., NeurIPS
2017) leaves out the ID rows of a share of each batch's items, and the features learn to
stand alone too. A user outside training folds in (``new_users = "fold-in"``,
:mod:`graphrec.models.coldstart`): ``[fold_in(p_H), 1]``, the mean (or least-squares fit) of
the given items' vectors, item biases still counting. A cold user that is a node of the data
(a ``cold-users`` split) is served the same way: the fold-in path passes histories and no
user index, so the user's own side features are not read there.

Losses: ``bpr`` (:func:`graphrec.nn.losses.bpr`, mean over the sampled negatives) and
``warp`` (:func:`graphrec.nn.losses.warp`, batched over ``num_negatives`` sampled negatives per
positive), on the pair batches of the dot-product family, with ``l2`` on the batch's ID rows
as LightGCN does; the feature weights take the trainer's ``--weight-decay``. It is a
:class:`~graphrec.models.base.Retriever`: users ``[q_u, 1]``, items ``[p_i, b_i]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History, PairBatch, PairSpec, pair_spec
from graphrec.data.graph import check_schema, user_sequences
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history
from graphrec.models.coldstart import fold_in
from graphrec.models.graph import rows
from graphrec.models.two_tower import FeatureEncoder, _feature_layout
from graphrec.nn import losses
from graphrec.schema import ITEM, USER

LOSSES = ("bpr", "warp")


@dataclass
class HybridConfig:
    """Args:
        dim: embedding size of IDs and features.
        loss: ``"bpr"`` or ``"warp"`` (module docstring). BPR ranked cold items better in the
            tuning below; WARP did better on warm validation, and on cold items with fewer
            negatives (``--num-negatives 4``) than the default 16.
        features: node attributes read: ``"all"``, ``"none"`` (pure MF) or a comma-separated
            list (``"age,item.class,text_emb"``), as in ``two-tower``.
        biases: item biases (an ID bias plus one per feature).
        margin: WARP's margin on ``pos - neg``.
        l2: L2 on the batch's ID embedding rows, per example (users, positives, the mean of the
            negatives), halved; a larger value leaves more to the shared feature embeddings.
        negatives: :data:`graphrec.batches.NEGATIVES` (``uniform``: per positive, never one of
            the user's items; how many is the trainer's ``num_negatives``).
        init_std: standard deviation of the normal initialization (biases start at 0).
        id_dropout: in training, the share of a batch's distinct items whose ID embedding is
            left out, where the items have features (module docstring); 0: LightFM's model.

    The defaults of ``l2`` (0.1), ``id_dropout`` (0.5) and ``loss`` were chosen for cold items:
    on a cold-items split of the training part of ml-100k's own cold-items split (text
    embeddings of titles and genres), against ``l2`` 1e-4 to 1, ``id_dropout`` 0 to 0.8 and 2
    to 64 negatives. The larger ``l2`` and the ID dropout both helped cold items, at some cost
    on warm validation; for warm users and items alone (or ``features=none``) a smaller
    ``l2`` and ``id_dropout=0`` may fit better (not tuned).
    """

    dim: int = 64
    loss: str = "bpr"
    features: str = "all"
    biases: bool = True
    margin: float = 1.0
    l2: float = 0.1
    negatives: str = "uniform"
    init_std: float = 0.1
    id_dropout: float = 0.5

    #: training defaults of ``hybrid`` (TrainConfig fields)
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 5e-3, "num_negatives": 16}


class Hybrid(Recommender):
    """ID plus feature embeddings, summed; dot product plus item bias (module docstring)."""

    trainable = True
    new_users = "fold-in"
    #: ``graphrec tune``: learning rate, width, L2 and ID dropout (the docstring's untuned two)
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "dim": {"type": "int", "low": 32, "high": 128, "log": True},
                    "l2": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
                    "id_dropout": {"type": "float", "low": 0.0, "high": 0.8}}

    def __init__(self, num_users: int, num_items: int, cfg: HybridConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        cfg = self.cfg = cfg or HybridConfig()
        if cfg.loss not in LOSSES:
            raise GraphrecError(f"hybrid: loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
        if cfg.dim < 1 or not cfg.init_std > 0 or cfg.l2 < 0 or not cfg.margin >= 0:
            raise GraphrecError(f"hybrid: need dim >= 1, init_std > 0, l2 >= 0 and margin >= 0, "
                                f"got {cfg.dim}, {cfg.init_std}, {cfg.l2}, {cfg.margin}")
        if not 0 <= cfg.id_dropout < 1:
            raise GraphrecError(f"hybrid: id_dropout must lie in [0, 1), got {cfg.id_dropout}")
        self.spec = pair_spec(cfg.negatives, 0.75, "hybrid")
        self.width = {USER: cfg.dim, ITEM: cfg.dim + int(cfg.biases)}  # items: + bias column
        self.ids = torch.nn.ModuleDict({USER: torch.nn.Embedding(num_users, self.width[USER]),
                                        ITEM: torch.nn.Embedding(num_items, self.width[ITEM])})
        self._init(self.ids[USER].weight, None)
        self._init(self.ids[ITEM].weight, 1)
        # only nodes with a training interaction read their ID row (cold start: features alone)
        self.register_buffer("user_known", torch.ones(num_users, dtype=torch.bool))
        self.register_buffer("item_known", torch.ones(num_items, dtype=torch.bool))
        self.register_buffer("feature_layout", torch.zeros(0, dtype=torch.uint8))
        self._build({USER: [], ITEM: []})

    def _init(self, weight: Tensor, bias_dim: int | None) -> None:
        """Normal ``init_std``; the bias entries (the last index along ``bias_dim``, on the
        item side with ``biases``) zero."""
        torch.nn.init.normal_(weight, std=self.cfg.init_std)
        if self.cfg.biases and bias_dim is not None:
            weight.data.select(bias_dim, -1).zero_()

    def _build(self, layout: dict[str, list[dict[str, Any]]]) -> None:
        """(Re)build the feature embeddings and feature tables (buffers ``feat_<node>_<name>``)."""
        device = self.ids[USER].weight.device
        self.layout = layout
        self.feature_layout = torch.frombuffer(bytearray(json.dumps(layout).encode()),
                                               dtype=torch.uint8).clone().to(device)
        for name in [n for n in self._buffers if n.startswith("feat_")]:
            del self._buffers[name]
        self.encoders = torch.nn.ModuleDict(
            {node: FeatureEncoder(layout[node], self.width[node]) for node in (USER, ITEM)})
        self.scales = torch.nn.ParameterDict()  # the learned vector of each float column
        for node in (USER, ITEM):
            count = self.num_users if node == USER else self.num_items
            for f in layout[node]:
                key, item = f"{node}_{f['name']}", node == ITEM
                if f["kind"] == "float":
                    self.scales[key] = torch.nn.Parameter(torch.empty(self.width[node]))
                    self._init(self.scales[key], 0 if item else None)
                else:  # token table [vocab + 1, W], or linear map weight [W, width]
                    bias_dim = (1 if f["kind"] == "token" else 0) if item else None
                    self._init(self.encoders[node].maps[f["name"]].weight, bias_dim)
                shape = (count, f["width"]) if f["kind"] == "matrix" else (count,)
                dtype = torch.long if f["kind"] == "token" else torch.float32
                self.register_buffer(f"feat_{key}", torch.zeros(shape, dtype=dtype))
        self.to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "feature_layout")
        if saved is not None and saved.numel():
            layout = json.loads(bytes(saved.cpu().tolist()).decode())
            if layout != self.layout:  # the features a saved model was fitted with
                self._build(layout)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, train: HeteroData) -> None:
        """Check and keep the features ``cfg.features`` names, and which users and items have
        a training interaction."""
        check_schema(train, "training graph")
        layout = _feature_layout(train, self.cfg.features, "hybrid")
        if layout != self.layout:
            self._build(layout)
        device = self.device
        for node in (USER, ITEM):
            for f in layout[node]:  # a copy: the graph stays the caller's
                dtype = torch.long if f["kind"] == "token" else torch.float32
                setattr(self, f"feat_{node}_{f['name']}",
                        train[node][f["name"]].to(device, dtype, copy=True))
        ptr, items = user_sequences(train)
        self.user_known = (ptr.diff() > 0).to(device)
        self.item_known = (torch.bincount(items, minlength=self.num_items) > 0).to(device)

    def serves_new_items(self) -> bool:
        """When the item side reads features: a new item's vector is their sum."""
        return bool(self.layout[ITEM])

    # -- representations -------------------------------------------------------------------

    def represent(self, node: str, index: Tensor, keep: Tensor | None = None) -> Tensor:
        """``[N, W]`` sums of ID and feature embeddings of nodes ``index [N]`` (items: the bias
        in the last column with ``biases``); ``keep [N]``: whose ID rows count (default: the
        nodes with a training interaction)."""
        known = (self.user_known if node == USER else self.item_known)[index]
        keep = known if keep is None else keep & known
        out = rows(self.ids[node].weight, index) * keep.unsqueeze(1)  # [N, W]
        values = {f["name"]: getattr(self, f"feat_{node}_{f['name']}")[index]
                  for f in self.layout[node]}
        for f, part in zip(self.layout[node], self.encoders[node](values)):
            if f["kind"] == "token":  # missing (0) and unseen codes add nothing
                code = values[f["name"]]
                part = part * ((code > 0) & (code < f["vocab"])).unsqueeze(1)
            elif f["kind"] == "float":  # standardized value [N, 1] times its vector
                part = part * self.scales[f"{node}_{f['name']}"]
            out = out + part
        return out

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, dim (+1)]`` query vectors ``[q_u, 1]`` (the history is not read)."""
        q = self.represent(USER, users)
        return torch.cat([q, q.new_ones(q.size(0), 1)], 1) if self.cfg.biases else q

    def item_vectors(self) -> Tensor:
        """``[I, dim (+1)]`` item vectors ``[p_i, b_i]``."""
        return self.represent(ITEM, torch.arange(self.num_items, device=self.device))

    def new_user_vectors(self, history: History, method: str = "mean", reg: float = 1.0,
                         items: Tensor | None = None) -> Tensor:
        """``[B, dim (+1)]`` query vectors of users outside training: ``[fold_in(p_H), 1]``
        over item vectors ``items`` (default: every item's)."""
        items = self.item_vectors() if items is None else items
        q = fold_in(items[:, : self.cfg.dim], history, method, reg)
        return torch.cat([q, q.new_ones(q.size(0), 1)], 1) if self.cfg.biases else q

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: ``q_u . p_i + b_i``."""
        check_history(self, users, history)
        return self.user_vectors(users) @ self.item_vectors().T

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        check_history(self, users, history)
        p = self.represent(ITEM, items.reshape(-1)).view(*items.shape, -1)  # [B, C, W]
        return (self.user_vectors(users).unsqueeze(1) * p).sum(-1)

    def scorer(self) -> "HybridScorer":
        """Every item's vector, computed once, and the scoring methods over them."""
        with torch.no_grad():
            return HybridScorer(self, self.item_vectors())

    # -- training --------------------------------------------------------------------------

    def batch_spec(self) -> PairSpec:
        return self.spec

    def forward(self, batch: PairBatch) -> Tensor:  # type: ignore[override]
        """``cfg.loss`` of a batch of (user, positive, negatives or a shared pool), plus L2."""
        users, items, negatives = batch.users, batch.items, batch.negatives
        if negatives is None or negatives.numel() == 0:
            raise GraphrecError(f"hybrid: the {self.cfg.loss} loss needs negatives "
                                "(--num-negatives >= 1)")
        q = self.user_vectors(users)  # [N, W]
        wanted, where = torch.unique(torch.cat([items, negatives.reshape(-1)]),
                                     return_inverse=True)
        keep = None
        if self.training and self.cfg.id_dropout > 0 and self.layout[ITEM]:
            keep = torch.rand(wanted.shape, device=wanted.device) >= self.cfg.id_dropout
        p = self.represent(ITEM, wanted, keep)  # each distinct item once
        pos = (q * p[where[: items.numel()]]).sum(1)  # [N]
        neg_p = p[where[items.numel():]]
        if negatives.dim() == 1:
            neg = q @ neg_p.T  # [N, M]
        else:
            neg = (q.unsqueeze(1) * neg_p.view(*negatives.shape, -1)).sum(-1)
        if self.cfg.loss == "warp":
            main = losses.warp(pos, neg, self.num_items, self.cfg.margin, batch.hits)
        else:
            main = losses.bpr(pos, neg, batch.hits)
        if self.cfg.l2 > 0:
            e_u, e_i = self.ids[USER].weight, self.ids[ITEM].weight
            reg = rows(e_u, users).pow(2).sum() + rows(e_i, items).pow(2).sum()
            per = users.numel() if negatives.dim() == 1 else 1  # a shared pool counts per row
            reg = reg + per * rows(e_i, negatives).pow(2).sum() / negatives.size(-1)
            main = main + self.cfg.l2 * reg / (2 * users.numel())
        return main


class HybridScorer:
    """One round of scoring: every item's vector, computed once; user vectors per call."""

    def __init__(self, model: Hybrid, item_vecs: Tensor) -> None:
        self.model, self.item_vecs = model, item_vecs

    def user_vectors(self, users: Tensor, history: History | None = None) -> Tensor:
        """``[B, dim (+1)]`` query vectors of ``users [B]``."""
        check_history(self.model, users, history)
        with torch.no_grad():
            return self.model.user_vectors(users)

    def item_vectors(self) -> Tensor:
        """``[I, dim (+1)]`` vectors of every item."""
        return self.item_vecs

    def new_user_vectors(self, history: History, method: str = "mean", reg: float = 1.0) -> Tensor:
        """``[B, dim (+1)]`` query vectors of users outside training, from their histories."""
        return self.model.new_user_vectors(history, method, reg, self.item_vecs)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]`` of every item for ``users [B]``."""
        return self.user_vectors(users, history) @ self.item_vecs.T

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        """Scores ``[B, C]`` of ``items [B, C]``."""
        return (self.user_vectors(users, history).unsqueeze(1) * self.item_vecs[items]).sum(-1)


__all__ = ["Hybrid", "HybridConfig", "HybridScorer", "LOSSES"]
