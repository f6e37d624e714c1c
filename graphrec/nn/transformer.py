"""Self-attention over item sequences, shared by SASRec and BERT4Rec.

Sequences are left-padded windows ``[N, L]`` of item indices where ``pad`` marks empty slots
(the padding index is local to the sequence models, never a graph node). Positions are counted
from the right (the latest item is position 0), so the same history gives the same output
whatever the amount of padding in front of it, and padded slots are masked out as attention
keys, so what they hold never reaches a real position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def tail_windows(ptr: Tensor, items: Tensor, rows: Tensor, length: int, pad: int) -> Tensor:
    """The last ``length`` items of CSR rows ``rows [N]``, left-padded with ``pad``: ``[N, length]``.

    Pure index arithmetic (one gather), no per-row Python loop.
    """
    start, end = ptr[rows], ptr[rows + 1]  # [N]
    pos = end.unsqueeze(1) - length + torch.arange(length, device=ptr.device)  # [N, L]
    real = pos >= start.unsqueeze(1)
    if items.numel() == 0:
        return torch.full(pos.shape, pad, dtype=torch.long, device=ptr.device)
    return torch.where(real, items[pos.clamp(min=0, max=items.numel() - 1)], pad)


class Block(torch.nn.Module):
    """One pre-norm transformer block: ``x + attn(LN(x))``, then ``x + FFN(LN(x))``.

    Args:
        dim: hidden size.
        heads: attention heads (``dim`` divisible by it).
        dropout: on attention weights and after each sublayer.
        ffn_dim: hidden size of the point-wise feed-forward network.
        activation: ``"relu"`` (SASRec) or ``"gelu"`` (BERT4Rec).
    """

    def __init__(self, dim: int, heads: int, dropout: float, ffn_dim: int, activation: str) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.ffn1, self.ffn2 = torch.nn.Linear(dim, ffn_dim), torch.nn.Linear(ffn_dim, dim)
        self.act = F.relu if activation == "relu" else F.gelu

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """``x [N, L, F]``, ``attn_mask [N, 1, L, L]`` (True: may attend) -> ``[N, L, F]``."""
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, dim // self.heads).unbind(2)
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=attn_mask, dropout_p=drop)  # [N, H, L, F/H]
        x = x + F.dropout(self.proj(a.transpose(1, 2).reshape(n, length, dim)), drop, self.training)
        h = F.dropout(self.act(self.ffn1(self.norm2(x))), drop, self.training)
        return x + F.dropout(self.ffn2(h), drop, self.training)


class SequenceEncoder(torch.nn.Module):
    """Item + position embeddings, ``num_blocks`` attention blocks, a final layer norm.

    Args:
        num_tokens: rows of the item embedding (items, then the model's pad/mask tokens).
        pad: the padding index (its embedding is zero and stays zero).
        max_len: longest window.
        dim, num_blocks, heads, dropout, ffn_dim, activation: the blocks (see :class:`Block`).
        causal: position ``t`` sees only positions ``<= t`` (SASRec); else both sides (BERT4Rec).
    """

    def __init__(self, num_tokens: int, pad: int, max_len: int, dim: int, num_blocks: int,
                 heads: int, dropout: float, ffn_dim: int, activation: str, causal: bool) -> None:
        super().__init__()
        self.pad, self.max_len, self.causal, self.dropout = pad, max_len, causal, dropout
        self.item = torch.nn.Embedding(num_tokens, dim, padding_idx=pad)
        self.position = torch.nn.Embedding(max_len, dim)
        torch.nn.init.normal_(self.item.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[pad].zero_()
        self.blocks = torch.nn.ModuleList(
            Block(dim, heads, dropout, ffn_dim, activation) for _ in range(num_blocks))
        self.norm = torch.nn.LayerNorm(dim)

    def forward(self, seqs: Tensor) -> Tensor:
        """``seqs [N, L]`` (``L <= max_len``, left-padded) -> hidden states ``[N, L, F]``; padded
        slots come out as zeros."""
        n, length = seqs.shape
        real = seqs != self.pad  # [N, L]
        positions = torch.arange(length - 1, -1, -1, device=seqs.device)  # right-aligned
        x = self.item(seqs) * self.item.embedding_dim ** 0.5 + self.position(positions)
        x = F.dropout(x, self.dropout, self.training) * real.unsqueeze(-1)
        allowed = real.unsqueeze(1).unsqueeze(1)  # keys: [N, 1, 1, L]
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool,
                                           device=seqs.device).tril()
        # A position always sees itself, so no row is fully masked (padded rows are zeroed).
        mask = allowed | torch.eye(length, dtype=torch.bool, device=seqs.device)  # [N, 1, L, L]
        for block in self.blocks:
            x = block(x, mask) * real.unsqueeze(-1)
        return self.norm(x) * real.unsqueeze(-1)


__all__ = ["tail_windows", "Block", "SequenceEncoder"]
