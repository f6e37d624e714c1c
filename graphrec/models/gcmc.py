"""``gcmc``: Graph Convolutional Matrix Completion (Berg, Kipf and Welling, "Graph Convolutional
Matrix Completion", KDD deep learning day 2018, arXiv 1706.02263).

The training ratings are a bipartite graph with one relation per rating level ``r`` (the
sorted distinct training ratings; an edge ``u - i`` of relation ``r`` where ``r_ui == r``).
Every node (user or item) has a one-hot identity input, so a relation's weight matrix is a
table ``W_r [U + I, h]`` (the paper's user and item weights shared: they act on disjoint
one-hots). The encoder is one graph convolution, messages both ways along every edge::

    mu_{j->i,r} = W_r[j] / c_ij,     c_ij = |N_i| (left) or sqrt(|N_i| |N_j|) (symmetric)
    h_i = relu( accum_r sum_{j in N_r(i)} mu_{j->i,r} )       accum: stack (concatenate) or sum
    z_i = W_user h_i  (users),  W_item h_i  (items)           a linear dense layer

with ``|N_i|`` node ``i``'s number of training ratings over all levels. Ordinal weight sharing
(``ordinal``) sets ``W_r = sum_{s <= r} T_s``. The decoder is bilinear with basis sharing::

    p(r_ui = r) = softmax_r( z_u^T Q_r z_i ),    Q_r = sum_s a_rs P_s   (num_basis matrices P_s)

The loss is the cross-entropy of the true level; the prediction is the expected rating
``sum_r r p(r)``, always within [min, max] of the levels, and ``score`` ranks by it. Dropout
is the paper's: during training each node is dropped as a message sender with probability
``dropout`` (its remaining messages scaled by ``1 / (1 - dropout)``), and ``dropout`` is also
applied to the hidden layer's units before the dense layer. Scoring never drops.

The convolution is one PyG ``MessagePassing`` layer (:class:`RatingConv`) over the ``2E``
directed rating edges: the relation tables are flattened to ``[R (U + I), h]`` rows and each
edge reads row ``r N + j`` and, under stacking, writes row ``i R + r`` of an ``[N R, h]``
output (viewed as ``[N, R h]``), so all relations go in one product with a sparse matrix
``A`` built once from those edges (a CSR product forward, one with ``A^T`` backward; node
dropout scales the table rows, so ``A`` never changes). The edges, levels and normalisation are
derived from the ``train_edges``/``train_levels`` buffers after fit, load and device moves.
Every training step runs the full-graph encoder and decodes the batch's ratings; the defaults
train on the whole training set per step (the paper's full-batch gradient descent), about 0.3 s
a step on ml-100k on one CPU thread.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import MessagePassing

from graphrec.batches import History, RatingBatch, RatingSpec
from graphrec.errors import GraphrecError
from graphrec.models.base import Recommender
from graphrec.models.graph import Propagated, rows
from graphrec.nn.propagation import spmm
from graphrec.schema import EDGE, RATING

ACCUMULATIONS = ("stack", "sum")
NORMS = ("symmetric", "left")
#: more distinct training ratings than this are continuous, not levels
MAX_LEVELS = 20


@dataclass
class GCMCConfig:
    """Args:
        hidden: width of the graph convolution's output (500, the paper's); under ``stack``
            each of the R relations gets ``hidden // R`` columns.
        dim: width of the dense layer, the embeddings the decoder reads (75, the paper's).
        accumulation: ``stack`` (the paper's choice for ml-100k) or ``sum``.
        norm: ``symmetric`` (``1 / sqrt(|N_i| |N_j|)``) or ``left`` (``1 / |N_i|``).
        num_basis: basis matrices shared by the decoder's R bilinear forms (2).
        dropout: node dropout of the convolution's inputs and dropout of the hidden units
            while training. 0.5, chosen on a validation part (10%) of ml-100k's random-split
            training ratings: best validation RMSE 0.915 (epoch 230), against 0.926 at 0.3
            (epoch 120, then overfitting) and the paper's 0.7, still 0.932 at epoch 280 (the
            paper trains 1,000 epochs).
        ordinal: ordinal weight sharing of the relation tables.
    """

    hidden: int = 500
    dim: int = 75
    accumulation: str = "stack"
    norm: str = "symmetric"
    num_basis: int = 2
    dropout: float = 0.5
    ordinal: bool = True

    def __post_init__(self) -> None:
        if self.accumulation not in ACCUMULATIONS:
            raise GraphrecError(f"gcmc: accumulation must be one of {', '.join(ACCUMULATIONS)}, "
                                f"got {self.accumulation!r}")
        if self.norm not in NORMS:
            raise GraphrecError(f"gcmc: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if min(self.hidden, self.dim, self.num_basis) < 1:
            raise GraphrecError("gcmc: hidden, dim and num_basis must be at least 1")
        if not 0 <= self.dropout < 1:
            raise GraphrecError(f"gcmc: dropout must be in [0, 1), got {self.dropout}")


class _SpMM(torch.autograd.Function):
    """``A X`` for a sparse ``A`` with its transpose ``A^T`` given: the backward ``A^T G`` is
    one more CSR product (torch's own sparse backward transposes ``A`` on every call)."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_T: Tensor, x: Tensor) -> Tensor:
        ctx.adj_T = adj_T
        return spmm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, spmm(ctx.adj_T, grad)


class RatingConv(MessagePassing):
    """``out[t] = sum_s A[t, s] x[s]``: the relation-typed graph convolution, each relation
    folded into the source and target row indices by the caller. ``propagate`` is the entry:
    given ``adj_t`` as a sparse CSR ``[T, S]`` (with its transpose ``adj [S, T]`` for the
    backward) it runs one CSR product forward and one backward; given ``edge_index [2, E]``
    (source row, target row) and ``norm [E]``, PyG's gather-scale-scatter of ``norm_e x[s_e]``
    (the readable reference: on ml-100k's 160,000 messages of 100 columns, forward and
    backward take 1.2 s against the CSR path's 0.06 s on one CPU thread)."""

    def __init__(self) -> None:
        super().__init__(aggr="add")

    def forward(self, x: Tensor, adj_t: Tensor, adj: Tensor | None = None,
                norm: Tensor | None = None, num_out: int | None = None) -> Tensor:
        """``x [S, h]`` -> ``[T, h]``; ``adj_t`` sparse ``[T, S]`` (and ``adj``), or
        ``edge_index [2, E]`` with ``norm [E]`` and ``num_out = T``."""
        if adj_t.is_sparse or adj_t.layout == torch.sparse_csr:
            return self.propagate(adj_t, x=x, adj=adj, norm=None)
        return self.propagate(adj_t, x=(x, None), norm=norm, adj=None, size=(x.size(0), num_out))

    # both take every propagate argument: PyG builds one propagate from these signatures
    def message(self, x_j: Tensor, norm: Tensor,  # type: ignore[override]
                adj: Tensor | None) -> Tensor:
        return norm.unsqueeze(1) * x_j  # [E, h]

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor,  # type: ignore[override]
                              adj: Tensor, norm: Tensor | None) -> Tensor:
        if isinstance(x, (tuple, list)):
            x = x[0]
        return _SpMM.apply(adj_t, adj, x)


def _glorot(*shape: int, fan: tuple[int, int], device: torch.device) -> torch.nn.Parameter:
    bound = math.sqrt(6.0 / sum(fan))
    return torch.nn.Parameter(torch.empty(*shape, device=device).uniform_(-bound, bound))


class GCMC(Recommender):
    """GC-MC over the rating-typed edges of the training graph; predicts ratings.

    Training defaults: lr 0.01 (the paper's), full batch (one step per epoch, the paper's
    full-batch gradient descent), up to 1,000 epochs, validation RMSE every 10 epochs and early
    stopping after 10 evaluations (100 epochs) without improvement: the validation curve is
    noisy under dropout, and 5 stopped at a worse optimum (on ml-100k's random split the best
    validation RMSE comes at about 230 epochs).
    """

    trainable = True
    predicts_ratings = True
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.01, "metric": "rmse", "batch_size": 1 << 20, "epochs": 1000,
        "eval_every": 10, "patience": 10}
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "dropout": {"type": "float", "low": 0.3, "high": 0.8},
        "dim": {"type": "int", "low": 25, "high": 150, "log": True},
        "accumulation": {"type": "choice", "values": ["stack", "sum"]},
        "train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    }

    def __init__(self, num_users: int, num_items: int, cfg: GCMCConfig | None = None) -> None:
        super().__init__(num_users, num_items)
        self.cfg = cfg or GCMCConfig()
        self.conv = RatingConv()
        self.register_buffer("train_edges", torch.zeros(2, 0, dtype=torch.long))
        self.register_buffer("train_levels", torch.zeros(0, dtype=torch.long))  # [E] level index
        self.register_buffer("levels", torch.arange(1.0, 6.0))  # [R] rating values, sorted
        self._build(self.levels.numel())
        self.adj: tuple[Tensor, Tensor] | None = None  # derived: A and A^T (CSR)

    # -- parameters ---------------------------------------------------------------------------
    def _width(self, num_levels: int) -> int:
        """Columns of one relation's table."""
        if self.cfg.accumulation == "sum":
            return self.cfg.hidden
        return max(1, self.cfg.hidden // num_levels)

    def _build(self, num_levels: int) -> None:
        """Fresh parameters for ``num_levels`` relations (Glorot uniform, as the paper's code)."""
        n, r, c = self.num_users + self.num_items, num_levels, self.cfg
        h_r = self._width(r)
        hidden = h_r * r if c.accumulation == "stack" else h_r
        dev = self.levels.device
        self.tables = _glorot(r, n, h_r, fan=(n, h_r), device=dev)  # [R, N, h_r]
        self.w_user = _glorot(hidden, c.dim, fan=(hidden, c.dim), device=dev)
        self.w_item = _glorot(hidden, c.dim, fan=(hidden, c.dim), device=dev)
        self.basis = _glorot(c.num_basis, c.dim, c.dim, fan=(c.dim, c.dim), device=dev)
        self.coeff = _glorot(r, c.num_basis, fan=(r, c.num_basis), device=dev)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # the parameters' shapes follow the rating levels of the data it was fitted on
        for name, param in list(self._parameters.items()):
            saved = state_dict.get(prefix + name)
            if param is not None and saved is not None and saved.shape != param.shape:
                self._parameters[name] = torch.nn.Parameter(
                    torch.empty(saved.shape, dtype=saved.dtype, device=param.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # -- graph --------------------------------------------------------------------------------
    def fit(self, train: HeteroData) -> None:
        """Take the rating levels and the rating-typed edges from the training graph; fresh
        parameters for that many relations."""
        store = train[EDGE]
        if RATING not in store:
            raise GraphrecError("gcmc: needs explicit ratings, and the training graph has none")
        dev = self.levels.device
        ratings = store[RATING].to(dev, torch.float32)
        levels = torch.unique(ratings)  # sorted
        if levels.numel() == 0:
            raise GraphrecError("gcmc: the training graph has no ratings")
        if levels.numel() > MAX_LEVELS:
            raise GraphrecError(f"gcmc: the training ratings take {levels.numel()} distinct "
                                f"values; at most {MAX_LEVELS} rating levels are supported")
        self.levels = levels
        self.train_edges = store.edge_index.to(dev)
        self.train_levels = torch.searchsorted(levels, ratings)
        self._build(levels.numel())
        self.derive()

    def derive(self) -> None:
        """The relation-typed convolution matrix ``A [T, R N]`` (T: ``N R`` rows under stack,
        ``N`` under sum; a CSR) and its transpose, from the directed rating edges both ways
        and their normalisation; the table rows are ``r N + j``."""
        self.adj = None
        if not self.train_edges.numel():
            return
        src, target, norm = self.message_edges()
        n, r = self.num_users + self.num_items, self.levels.numel()
        num_out = n * r if self.cfg.accumulation == "stack" else n
        with warnings.catch_warnings():  # torch's notices that sparse CSR is in beta
            warnings.simplefilter("ignore", UserWarning)
            coo = torch.sparse_coo_tensor(torch.stack([target, src]), norm, (num_out, r * n),
                                          check_invariants=False).coalesce()
            self.adj = (coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr())

    def message_edges(self) -> tuple[Tensor, Tensor, Tensor]:
        """The ``2E`` directed messages: source table rows ``r N + j``, target rows (``i R + r``
        under stack, ``i`` under sum) and ``1 / c_ij``."""
        u, i = self.train_edges[0], self.train_edges[1] + self.num_users
        n, r = self.num_users + self.num_items, self.levels.numel()
        src, dst = torch.cat([u, i]), torch.cat([i, u])  # both directions
        rel = torch.cat([self.train_levels, self.train_levels])
        deg = torch.bincount(src, minlength=n).float()  # ratings per node, all levels
        norm = (1.0 / deg[dst] if self.cfg.norm == "left"
                else deg[src].mul(deg[dst]).rsqrt())
        target = dst * r + rel if self.cfg.accumulation == "stack" else dst
        return rel * n + src, target, norm

    def hidden(self, drop: bool = False) -> Tensor:
        """The convolution's output ``[N, R h_r]`` (stack) or ``[N, h]`` (sum), before the
        activation; ``drop``: with node dropout."""
        r, n, h_r = self.tables.shape
        w = self.tables.cumsum(0) if self.cfg.ordinal else self.tables  # [R, N, h_r]
        if self.adj is None:
            return w.new_zeros(n, self.w_user.size(0))
        p = self.cfg.dropout
        if drop and p > 0:  # node dropout: a dropped node sends no message this step
            keep = (torch.rand(n, device=w.device) >= p).to(w.dtype) / (1 - p)
            w = w * keep.view(1, n, 1)
        out = self.conv(w.reshape(r * n, h_r), *self.adj)  # [T, h_r]
        return out.view(n, -1)  # rows i R + r: [N, R h_r]; or [N, h_r]

    def embeddings(self, drop: bool = False) -> tuple[Tensor, Tensor]:
        """Users' ``[U, dim]`` and items' ``[I, dim]`` encoder outputs; ``drop``: with the
        training dropout."""
        hidden = F.relu(self.hidden(drop))
        if drop:
            hidden = F.dropout(hidden, self.cfg.dropout)
        return hidden[: self.num_users] @ self.w_user, hidden[self.num_users:] @ self.w_item

    # -- decoder ------------------------------------------------------------------------------
    def user_basis(self, zu: Tensor) -> Tensor:
        """``z_u^T P_s`` of every row of ``zu [B, d]``: ``[B, S, d]`` (per user, not per
        rating: the pairs then only gather and multiply)."""
        s, d, _ = self.basis.shape
        return (zu @ self.basis.permute(1, 0, 2).reshape(d, s * d)).view(-1, s, d)

    def pair_logits(self, zu: Tensor, zi: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Level logits ``[N, R]`` of pairs ``(users [N], items [N])`` from encoder outputs.
        When the user-item grid is no bigger than the pairs' gathered rows (``U I <= N d``: a
        full batch on ml-100k) every pair's bilinear forms come from one dense product over
        the grid and are gathered; otherwise each pair gathers its rows."""
        s, d, _ = self.basis.shape
        if zu.size(0) * zi.size(0) <= users.numel() * d:
            grid = (self.user_basis(zu) @ zi.T).transpose(1, 2).reshape(-1, s)  # [U I, S]
            t = grid.index_select(0, users * zi.size(0) + items)  # [N, S]
        else:
            ub = rows(self.user_basis(zu).view(-1, s * d), users).view(-1, s, d)  # [N, S, d]
            t = (ub * rows(zi, items).unsqueeze(1)).sum(-1)  # [N, S]
        return t @ self.coeff.T

    def all_logits(self, zu: Tensor, zi: Tensor, users: Tensor) -> Tensor:
        """Level logits ``[B, R, I]`` of ``users [B]`` against every item."""
        t = self.user_basis(zu[users]) @ zi.T  # [B, S, I]
        return torch.einsum("bsi,rs->bri", t, self.coeff)

    def expected(self, logits: Tensor, dim: int) -> Tensor:
        """``sum_r r p(r)`` over the level axis ``dim`` of ``logits``."""
        shape = [1] * logits.dim()
        shape[dim] = -1
        return (logits.softmax(dim) * self.levels.view(shape)).sum(dim)

    # -- contract -----------------------------------------------------------------------------
    def batch_spec(self) -> RatingSpec:
        return RatingSpec()

    def forward(self, batch: RatingBatch) -> Tensor:  # type: ignore[override]
        """Cross-entropy of the batch's true rating levels, after a full-graph encoder pass
        (with dropout in training mode)."""
        zu, zi = self.embeddings(drop=self.training)
        target = torch.searchsorted(self.levels, batch.ratings.float().contiguous())
        target = target.clamp_max(self.levels.numel() - 1)
        return F.cross_entropy(self.pair_logits(zu, zi, batch.users, batch.items), target)

    def score_from(self, zu: Tensor, zi: Tensor, users: Tensor) -> Tensor:
        """Expected ratings ``[B, I]`` of every item."""
        return self.expected(self.all_logits(zu, zi, users), 1)

    def candidates_from(self, zu: Tensor, zi: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Expected ratings ``[B, C]`` of ``items [B, C]``."""
        flat = self.pair_logits(zu, zi, users.repeat_interleave(items.size(1)), items.reshape(-1))
        return self.expected(flat, 1).view(items.shape)

    def predict_from(self, zu: Tensor, zi: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Expected ratings ``[N]`` of pairs."""
        return self.expected(self.pair_logits(zu, zi, users, items), 1)

    def score(self, users: Tensor, history: History | None = None) -> Tensor:
        """Expected ratings of every item for ``users [B]`` (encodes on each call; hold
        :meth:`scorer` to score many batches)."""
        return self.score_from(*self.embeddings(), users)

    def score_candidates(self, users: Tensor, items: Tensor,
                         history: History | None = None) -> Tensor:
        return self.candidates_from(*self.embeddings(), users, items)

    def predict(self, users: Tensor, items: Tensor) -> Tensor:
        return self.predict_from(*self.embeddings(), users, items)

    def scorer(self) -> Propagated:
        """The encoder's outputs, computed once without autograd, and the scoring methods."""
        with torch.no_grad():
            zu, zi = self.embeddings()
        return Propagated(self, zu, zi)  # type: ignore[arg-type]


__all__ = ["GCMC", "GCMCConfig", "RatingConv"]
