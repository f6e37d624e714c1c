"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item sequence.

Item and learned position embeddings, ``num_blocks`` causal self-attention blocks with a
point-wise ReLU feed-forward network, layer norm and dropout (:mod:`graphrec.nn.transformer`);
the hidden state at position ``t`` scores the item at ``t + 1`` by a dot product with the item
embeddings (output tied to the input). Trained on windows of the user's last ``max_len + 1``
training items: every position predicts the next one.

Losses (``loss``):

* ``ce`` (default): cross-entropy over all items, which is what makes SASRec reach its best
  full-ranking accuracy (Klenitskiy & Vasilev, RecSys 2023);
* ``bce``: the original: binary cross-entropy of the next item against one sampled negative per
  position;
* ``sampled-ce``: cross-entropy over the next item and ``num_negatives`` items sampled once per
  window (uniformly among the items the user has not interacted with in training).

Defaults follow the full-ranking reproduction: hidden size 64, 2 blocks, 1 head, dropout 0.2,
``max_len`` 50 (use 200 for long histories such as MovieLens: ``--set max_len=200``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from graphrec.batches import History, SequenceSpec
from graphrec.errors import GraphrecError
from graphrec.models.sequence import SequenceRecommender
from graphrec.nn.transformer import SequenceEncoder

LOSSES = ("ce", "bce", "sampled-ce")


@dataclass
class SASRecConfig:
    """Args:
        dim: hidden size.
        num_blocks: attention blocks.
        heads: attention heads.
        dropout: dropout on embeddings, attention and feed-forward outputs.
        max_len: longest history window (50; 200 for long histories such as MovieLens).
        loss: ``"ce"``, ``"bce"`` or ``"sampled-ce"``.
        num_negatives: negatives per window for ``sampled-ce``.
    """

    dim: int = 64
    num_blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    loss: str = "ce"
    num_negatives: int = 128


class SASRec(SequenceRecommender):
    """Causal self-attention next-item model; scores from the last position of the history."""

    #: lr 3e-3 at batch 64 led the validation sweep of benchmarks/defaults.py (ml-100k)
    train_defaults = {**SequenceRecommender.train_defaults, "lr": 3e-3, "batch_size": 64}
    #: ``graphrec tune``: learning rate, width, depth and dropout
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "dim": {"type": "int", "low": 32, "high": 128, "log": True},
                    "num_blocks": {"type": "int", "low": 1, "high": 3},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5}}

    def __init__(self, num_users: int, num_items: int, cfg: SASRecConfig | None = None) -> None:
        cfg = cfg or SASRecConfig()
        super().__init__(num_users, num_items, cfg.max_len)
        self.cfg = cfg
        if cfg.loss not in LOSSES:
            raise GraphrecError(f"sasrec: loss must be one of {LOSSES}, got {cfg.loss!r}")
        if cfg.dim < 1 or cfg.heads < 1 or cfg.dim % cfg.heads or cfg.num_blocks < 0:
            raise GraphrecError("sasrec: need dim >= 1 divisible by heads >= 1, num_blocks >= 0")
        if not 0 <= cfg.dropout < 1:
            raise GraphrecError(f"sasrec: dropout must lie in [0, 1), got {cfg.dropout}")
        if cfg.loss == "sampled-ce" and cfg.num_negatives < 1:
            raise GraphrecError("sasrec: num_negatives must be at least 1")
        self.window_length = cfg.max_len + 1  # inputs [:-1], next items [1:]
        self.negatives_per_window = {"ce": 0, "bce": cfg.max_len,
                                     "sampled-ce": cfg.num_negatives}[cfg.loss]
        self.encoder = SequenceEncoder(num_items + 1, self.pad, cfg.max_len, cfg.dim,
                                       cfg.num_blocks, cfg.heads, cfg.dropout, cfg.dim, "relu",
                                       causal=True)

    def batch_spec(self) -> SequenceSpec:
        return SequenceSpec(self.window_length, self.pad, 0.0, self.negatives_per_window)

    def query_windows(self, history: History) -> Tensor:
        return history.windows(self.max_len, self.pad)

    def loss(self, seqs: Tensor, negatives: Tensor | None = None) -> Tensor:
        """``seqs [N, max_len + 1]`` left-padded windows; ``negatives [N, max_len]`` (``bce``:
        one per position) or ``[N, num_negatives]`` (``sampled-ce``). Positions whose input or
        next item is padding do not count."""
        inputs, targets = seqs[:, :-1], seqs[:, 1:]  # [N, L] each
        counted = (inputs != self.pad) & (targets != self.pad)  # [N, L]
        h = self.encoder(inputs)  # [N, L, F]
        items = self.item_weights()  # [I, F]
        if self.cfg.loss == "ce":
            logits = h[counted] @ items.T  # [P, I]
            return F.cross_entropy(logits, targets[counted])
        if negatives is None:
            raise GraphrecError(f"sasrec: loss {self.cfg.loss} needs sampled negatives")
        pos = (h * items[targets.clamp(max=self.num_items - 1)]).sum(-1)  # [N, L]
        if self.cfg.loss == "bce":
            neg = (h * items[negatives]).sum(-1)  # [N, L]
            per_position = F.softplus(-pos) + F.softplus(neg)  # -log s(pos) - log(1 - s(neg))
            return per_position[counted].mean()
        neg = torch.einsum("nlf,nmf->nlm", h, items[negatives])  # [N, L, M]
        logits = torch.cat([pos.unsqueeze(-1), neg], -1)[counted]  # [P, 1 + M]
        return F.cross_entropy(logits, torch.zeros(logits.size(0), dtype=torch.long,
                                                   device=logits.device))


__all__ = ["SASRec", "SASRecConfig", "LOSSES"]
