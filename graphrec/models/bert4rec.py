"""BERT4Rec (Sun et al., CIKM 2019): bidirectional self-attention trained by a cloze task.

The same blocks as SASRec (:mod:`graphrec.nn.transformer`) without the causal mask, with a
GELU feed-forward network four times the hidden size. Training: in each window of the user's
last ``max_len`` training items, every real position is replaced by the mask token with
probability ``mask_prob`` (at least one per window; the batches draw the masks, from the
trainer's generator), and the model predicts the original items at the masked positions only,
by cross-entropy over all items (output tied to the item embeddings). Prediction: the mask
token is appended after the user's last ``max_len - 1`` items and its position is scored.

The original also trains on windows whose only mask is the last item; that is left out, as in
the reproductions that reach its published full-ranking accuracy with plain cloze training.
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


@dataclass
class BERT4RecConfig:
    """Args:
        dim: hidden size.
        num_blocks: attention blocks.
        heads: attention heads.
        dropout: dropout on embeddings, attention and feed-forward outputs.
        max_len: longest window, the mask token included (50; 200 for long histories).
        mask_prob: chance that a position is masked in training, in (0, 1).
    """

    dim: int = 64
    num_blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    max_len: int = 50
    mask_prob: float = 0.2


class BERT4Rec(SequenceRecommender):
    """Bidirectional cloze model; scores the mask token placed after the history."""

    #: cloze training learns slowly at first: patience 10 stopped it near popularity; patience
    #: 30 at lr 3e-3 led the validation sweep (benchmarks/defaults.py, ml-100k)
    train_defaults = {**SequenceRecommender.train_defaults, "lr": 3e-3, "patience": 30}
    #: ``graphrec tune``: learning rate, width, dropout and the cloze masking rate
    search_space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                    "dim": {"type": "int", "low": 32, "high": 128, "log": True},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                    "mask_prob": {"type": "float", "low": 0.1, "high": 0.5}}

    def __init__(self, num_users: int, num_items: int, cfg: BERT4RecConfig | None = None) -> None:
        cfg = cfg or BERT4RecConfig()
        super().__init__(num_users, num_items, cfg.max_len)
        self.cfg = cfg
        if not 0 < cfg.mask_prob < 1:
            raise GraphrecError(f"bert4rec: mask_prob must lie in (0, 1), got {cfg.mask_prob}")
        if cfg.dim < 1 or cfg.heads < 1 or cfg.dim % cfg.heads or cfg.num_blocks < 0:
            raise GraphrecError("bert4rec: need dim >= 1 divisible by heads >= 1, num_blocks >= 0")
        if not 0 <= cfg.dropout < 1:
            raise GraphrecError(f"bert4rec: dropout must lie in [0, 1), got {cfg.dropout}")
        self.mask_token = num_items + 1
        self.window_length = cfg.max_len
        self.mask_prob = cfg.mask_prob
        self.encoder = SequenceEncoder(num_items + 2, self.pad, cfg.max_len, cfg.dim,
                                       cfg.num_blocks, cfg.heads, cfg.dropout, 4 * cfg.dim,
                                       "gelu", causal=False)

    def batch_spec(self) -> SequenceSpec:
        return SequenceSpec(self.window_length, self.pad, self.mask_prob, 0)

    def query_windows(self, history: History) -> Tensor:
        seqs = history.windows(self.max_len - 1, self.pad)  # [B, L - 1]
        mask = torch.full((seqs.size(0), 1), self.mask_token, dtype=torch.long, device=seqs.device)
        return torch.cat([seqs, mask], 1)  # [B, L]

    def loss(self, seqs: Tensor, mask: Tensor) -> Tensor:
        """``seqs [N, max_len]`` left-padded windows, ``mask [N, max_len]`` the cloze positions
        (real positions only): cross-entropy of the original items at the masked positions."""
        if (mask & (seqs == self.pad)).any():
            raise GraphrecError("bert4rec: a cloze mask falls on padding")
        h = self.encoder(seqs.masked_fill(mask, self.mask_token))  # [N, L, F]
        logits = h[mask] @ self.item_weights().T  # [P, I]
        return F.cross_entropy(logits, seqs[mask])


__all__ = ["BERT4Rec", "BERT4RecConfig"]
