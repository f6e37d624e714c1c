"""Item-item kNN over content (``content-knn``): items are similar when their text embeddings
and side features are, whatever their interactions.

Each item gets a content vector, the concatenation of weighted, L2-normalised blocks::

    x_i = [ sqrt(w_text) * t_i / |t_i| ,  sqrt(w_side) * f_i / |f_i| ]

with ``t_i`` the item's ``text_emb`` (:mod:`graphrec.data.text`) and ``f_i`` its other side
features (multi-hot and matrix columns as they are, numbers standardized, token columns
one-hot). Similarity is the
cosine of content vectors; each item keeps its ``k`` most similar other items (positive
similarities only) as its neighbourhood ``N(j)``, and a user with items ``H`` scores item ``j``
as in item-based kNN (Sarwar et al., WWW 2001)::

    s_uj = sum_{i in H, i in N(j)} cos(x_i, x_j)

Nothing is trained; fitting computes the neighbourhoods in blocks of items (never the dense
item-item matrix). A new item needs only its content, so it is ranked like any other
(``serves_new_items``); a new user is scored from the items given (``new_users = "history"``);
a user with no items scores 0 everywhere.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.data.graph import check_schema, user_sequences
from graphrec.data.text import TEXT_ATTR
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender, check_history
from graphrec.schema import ITEM, SIMILAR

MAX_ONE_HOT = 4096  # token columns with more codes than this (ids, zip codes) say little here


@dataclass
class ContentKNNConfig:
    """Args:
        k: neighbours kept per item.
        text_weight: weight of the text embedding block (0: leave it out).
        side_weight: weight of the side-feature block (0: leave it out).
        block: items per block when computing neighbourhoods.
    """

    k: int = 100
    text_weight: float = 1.0
    side_weight: float = 1.0
    block: int = 2048


def content_vectors(graph: HeteroData, text_weight: float = 1.0,
                    side_weight: float = 1.0) -> Tensor:
    """``[num_items, D]`` content vectors of the module docstring (empty blocks left out)."""
    store = graph[ITEM]
    n = int(store.num_nodes)
    text, side = [], []
    for name, value in store.items():
        if name == "num_nodes" or not isinstance(value, Tensor) or value.size(0) != n:
            continue
        if name == TEXT_ATTR:
            text.append(value.float())
        elif value.is_floating_point() and value.dim() == 2:  # multi-hot, embeddings
            side.append(torch.nan_to_num(value.float()))
        elif value.is_floating_point() and value.dim() == 1:  # a number: standardized
            v = torch.nan_to_num(value.float())
            side.append(((v - v.mean()) / v.std().clamp_min(1e-12)).unsqueeze(1))
        elif value.dtype == torch.int64 and value.dim() == 1 and 0 < int(value.max()) < MAX_ONE_HOT:
            onehot = torch.zeros(n, int(value.max()) + 1)
            onehot[torch.arange(n), value.clamp(min=0)] = 1.0
            side.append(onehot[:, 1:])  # code 0: missing
    blocks = []
    for weight, parts in ((text_weight, text), (side_weight, side)):
        if weight > 0 and parts:
            x = torch.cat(parts, 1)
            blocks.append(weight ** 0.5 * torch.nn.functional.normalize(x, dim=1))
    if not blocks:
        raise GraphrecError("content-knn needs item content: text embeddings (convert with "
                            "--text-cols) or item side features; the items have neither")
    return torch.cat(blocks, 1)


def neighbourhoods(x: Tensor, k: int, block: int = 2048) -> tuple[Tensor, Tensor, Tensor]:
    """Each item's ``k`` most similar other items by cosine of ``x [I, D]``, positive
    similarities only: COO ``(neighbour [N], target [N], similarity [N])``."""
    x = torch.nn.functional.normalize(x.float(), dim=1)
    num = x.size(0)
    k = min(k, num - 1)
    nbr, tgt, val = [], [], []
    for start in range(0, num, block):
        stop = min(num, start + block)
        sim = x[start:stop] @ x.T  # [b, I]
        sim[torch.arange(stop - start), torch.arange(start, stop)] = -1.0  # not itself
        v, i = sim.topk(k, dim=1)  # [b, k]
        keep = v > 0
        nbr.append(i[keep])
        tgt.append(torch.arange(start, stop).unsqueeze(1).expand(-1, k)[keep])
        val.append(v[keep])
    return torch.cat(nbr), torch.cat(tgt), torch.cat(val)


def add_similar_edges(graph: HeteroData, k: int, scale: float = 1.0, text_weight: float = 1.0,
                      side_weight: float = 1.0) -> HeteroData:
    """A shallow copy of ``graph`` with item-item :data:`~graphrec.schema.SIMILAR` edges: each
    item to its ``k`` most content-similar items (:func:`neighbourhoods`), symmetrized (an edge
    in both directions, once even when both ends chose each other), ``edge_weight`` the cosine
    times ``scale``."""
    if k < 1 or not scale > 0:
        raise GraphrecError(f"similar edges: need k >= 1 and scale > 0, got {k}, {scale}")
    x = content_vectors(graph, text_weight, side_weight)
    nbr, target, sim = neighbourhoods(x, k)
    n = x.size(0)
    src, dst = torch.cat([nbr, target]), torch.cat([target, nbr])
    keys, inverse = torch.unique(src * n + dst, return_inverse=True)
    weight = torch.zeros(keys.numel()).scatter_reduce_(0, inverse, torch.cat([sim, sim]), "amax",
                                                       include_self=False)
    out = copy.copy(graph)
    out[SIMILAR].edge_index = torch.stack([keys // n, keys % n])
    out[SIMILAR].edge_weight = weight * scale
    return out


class ContentKNN(Recommender):
    """Item-based kNN over content similarity (module docstring); nothing is trained."""

    new_users = "history"  # the given items' neighbours
    #: ``graphrec tune``: neighbourhood size and the weights of the two content signals
    search_space = {"k": {"type": "int", "low": 10, "high": 400, "log": True},
                    "text_weight": {"type": "float", "low": 0.0, "high": 2.0},
                    "side_weight": {"type": "float", "low": 0.0, "high": 2.0}}

    def __init__(self, num_users: int, num_items: int, cfg: ContentKNNConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg = cfg or ContentKNNConfig()
        if cfg.k < 1 or cfg.block < 1 or cfg.text_weight < 0 or cfg.side_weight < 0:
            raise GraphrecError("content-knn: k and block must be >= 1, the weights >= 0")
        # W[i, j] = cos(x_i, x_j) for i in N(j), as COO; training histories as CSR
        self.register_buffer("nbr", torch.zeros(0, dtype=torch.long))
        self.register_buffer("target", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sim", torch.zeros(0))
        self.register_buffer("user_ptr", torch.zeros(num_users + 1, dtype=torch.long))
        self.register_buffer("user_items", torch.zeros(0, dtype=torch.long))
        self.weights: Tensor | None = None

    def fit(self, train: HeteroData) -> None:
        """Content vectors, neighbourhoods and the training histories."""
        check_schema(train, "training graph")
        x = content_vectors(train, self.cfg.text_weight, self.cfg.side_weight)
        dev = self.device
        nbr, target, sim = neighbourhoods(x, self.cfg.k, self.cfg.block)
        self.nbr, self.target, self.sim = nbr.to(dev), target.to(dev), sim.to(dev)
        ptr, items = user_sequences(train)
        self.user_ptr, self.user_items = ptr.to(dev), items.to(dev)
        self.derive()

    def derive(self) -> None:
        """``W^T`` as a sparse CSR ``[I (target), I (neighbour)]`` on the model's device."""
        if self.sim.numel() == 0 and self.nbr.numel() == 0:
            self.weights = None
            return
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(torch.stack([self.target, self.nbr]), self.sim,
                                          (self.num_items, self.num_items), check_invariants=False)
            self.weights = coo.coalesce().to_sparse_csr()

    def serves_new_items(self) -> bool:
        """Yes: a new item needs only its content."""
        return True

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Scores ``[B, I]``: ``r_u W`` with rows ``r_u`` from ``history`` or training."""
        check_history(self, users, history)
        if self.weights is None:
            raise GraphrecError("content-knn: fit the model first")
        if history is None:
            history = History.of(self.user_ptr, self.user_items, users)
        rows = torch.repeat_interleave(torch.arange(users.numel(), device=users.device),
                                       history.ptr.diff())
        r = torch.zeros(users.numel(), self.num_items, device=self.sim.device)
        r[rows, history.items.to(r.device)] = 1.0  # binary rows: repeats count once
        return (self.weights @ r.T).T  # [B, I]


__all__ = ["ContentKNN", "ContentKNNConfig", "content_vectors", "neighbourhoods",
           "add_similar_edges"]
