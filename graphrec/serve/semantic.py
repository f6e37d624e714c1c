"""An offline semantic re-ranker: candidates scored by how close their text is to what the user
has been watching, blended with the upstream score. Batched over users; no model is called.

The user's profile vector is the mean of the text embeddings (``text_emb``,
:mod:`graphrec.data.text`) of the user's ``last`` most recent history items, L2-normalised:

.. math::
    p_u = \\mathrm{normalize}\\Big(\\frac{1}{|H_u|} \\sum_{i \\in H_u} e_i\\Big)

and a candidate's semantic score is its cosine :math:`c_{ui} = \\cos(p_u, e_i)`. Why the mean of
the items' stored embeddings rather than encoding the history's titles, joined, with MiniLM:

* no encoder at ranking time: the embeddings were computed once at conversion, so the re-ranker
  is a gather and two batched products (sentence-transformers stays an optional extra, and
  encoding 1,682 ml-100k texts alone takes ~30 s on two CPU cores; one long text per user per
  request would cost more than every other stage together);
* no truncation: MiniLM reads at most 256 word pieces (~20-30 titles with their genres), the
  mean weighs every history item;
* the same vector space as the candidates by construction (item text in, item text out), and a
  mean-pooling encoder's embedding of a concatenation is close to the mean of the parts anyway.

The blend is the per-row min-max fusion of the two scores over the valid candidates
(:func:`graphrec.serve.rerank` normalises relevance the same way):

.. math::
    s'_{ui} = \\alpha\\, r_{ui} + (1 - \\alpha)\\, \\tilde c_{ui}

with :math:`r` the upstream score and :math:`\\tilde c` the cosine, each min-max normalised per
row to ``[0, 1]`` (1 for every valid candidate of a row whose values are all equal), so
``alpha`` weighs the two spreads alike on every row whatever the retriever's score scale:
``alpha = 1`` keeps the upstream order, ``alpha = 0`` ranks by text similarity alone. Ties go
to the more relevant candidate, then the earlier one. A user without history (zero profile) and
candidates without text (zero embeddings) get cosine 0, so such a row keeps its upstream order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.serve.rerank import _pad, _relevance, _topk, _valid

__all__ = ["history_vectors", "semantic_scores", "semantic"]


def history_vectors(item_emb: Tensor, history: History, last: int = 0) -> Tensor:
    """``[B, D]`` unit profile vectors: the mean embedding of each row's ``last`` most recent
    items (``0``: all of them), zero for an empty row.

    Args:
        item_emb: ``[num_items, D]`` item text embeddings.
        history: ``B`` time-ordered rows (oldest first), e.g. ``History.of(*user_sequences(g),
            users)``.
        last: how many of the most recent items count (``0``: all).
    """
    if item_emb.dim() != 2:
        raise GraphrecError(f"history_vectors: item_emb must be [num_items, D], got {list(item_emb.shape)}")
    if isinstance(last, bool) or not isinstance(last, int) or last < 0:
        raise GraphrecError(f"history_vectors: last must be an integer >= 0, got {last!r}")
    ptr, items = history.ptr.to(item_emb.device), history.items.to(item_emb.device)
    B = ptr.numel() - 1
    counts = ptr[1:] - ptr[:-1]
    row = torch.repeat_interleave(torch.arange(B, device=ptr.device), counts, output_size=items.numel())
    keep = torch.ones_like(items, dtype=torch.bool)
    if last:  # position from the end of its row: 0 for the most recent item
        from_end = ptr[1:][row] - 1 - torch.arange(items.numel(), device=ptr.device)
        keep = from_end < last
    emb = item_emb.float()
    total = torch.zeros(B, emb.size(1), dtype=torch.float32, device=emb.device)
    total.index_add_(0, row[keep], emb[items[keep]])
    # the mean's direction is the sum's: normalising the sum skips the division by |H_u|
    return torch.nn.functional.normalize(total, dim=1)


def _check(scores: Tensor, cand_vecs: Tensor, user_vecs: Tensor, alpha: float,
           mask: Tensor | None, name: str) -> None:
    if scores.dim() != 2:
        raise GraphrecError(f"{name}: scores must be [B, C], got shape {list(scores.shape)}")
    B, C = scores.shape
    if cand_vecs.dim() != 3 or cand_vecs.shape[:2] != (B, C):
        raise GraphrecError(f"{name}: cand_vecs must be [B, C, D] = [{B}, {C}, D] like scores, "
                            f"got shape {list(cand_vecs.shape)}")
    if user_vecs.shape != (B, cand_vecs.size(2)):
        raise GraphrecError(f"{name}: user_vecs must be [B, D] = [{B}, {cand_vecs.size(2)}], "
                            f"got shape {list(user_vecs.shape)}")
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise GraphrecError(f"{name}: alpha must lie in [0, 1], got {alpha}")
    if mask is not None and (mask.shape != (B, C) or mask.dtype != torch.bool):
        raise GraphrecError(f"{name}: mask must be a bool [B, C] = [{B}, {C}] tensor, "
                            f"got {mask.dtype} of shape {list(mask.shape)}")


def _blend(scores: Tensor, cand_vecs: Tensor, user_vecs: Tensor, alpha: float,
           mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(blend, rel, valid)`` ``[B, C]``: the blended scores (``-inf`` at invalid candidates),
    the normalised upstream scores and the validity."""
    valid = _valid(scores, mask)
    rel = _relevance(scores, valid)
    dev = scores.device
    # in the vectors' own dtype: a float64 copy of [B, C, D] would cost more than the products
    c = cand_vecs.to(dev)
    c = c if c.is_floating_point() else c.float()
    p = user_vecs.to(dev, c.dtype)
    dots = torch.einsum("bcd,bd->bc", c, p)  # [B, C]
    norms = torch.linalg.vector_norm(c, dim=2) * torch.linalg.vector_norm(p, dim=1, keepdim=True)
    cos = dots.double() / norms.double().clamp(min=1e-12)  # zero vectors: cosine 0
    blend = alpha * rel + (1.0 - alpha) * _relevance(cos, valid)
    return blend.masked_fill(~valid, -math.inf), rel, valid


def semantic_scores(scores: Tensor, cand_vecs: Tensor, user_vecs: Tensor, alpha: float = 0.85, *,
                    mask: Tensor | None = None) -> Tensor:
    """The blended scores ``[B, C]`` (float64, ``-inf`` at invalid candidates): ``alpha`` times
    the min-max normalised upstream score plus ``1 - alpha`` times the min-max normalised
    cosine of candidate and profile vectors (module docstring).

    Args:
        scores: ``[B, C]`` upstream scores; non-finite ones (``-inf`` padding) are invalid.
        cand_vecs: ``[B, C, D]`` candidate text embeddings (need not be unit vectors; the
            cosine is computed in their dtype, float64 inputs give float64 cosines).
        user_vecs: ``[B, D]`` profile vectors (:func:`history_vectors`).
        alpha: weight of the upstream score, in ``[0, 1]``.
        mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
    """
    _check(scores, cand_vecs, user_vecs, alpha, mask, "semantic")
    return _blend(scores, cand_vecs, user_vecs, alpha, mask)[0]


def semantic(scores: Tensor, cand_vecs: Tensor, user_vecs: Tensor, k: int, alpha: float = 0.85, *,
             mask: Tensor | None = None) -> Tensor:
    """Positions ``[B, k]`` into the candidates by the blended score of
    :func:`semantic_scores`, best first; ties to the more relevant candidate, then the earlier
    one; ``-1`` where a row has fewer than ``k`` valid candidates. ``alpha = 1`` is the top
    ``k`` by upstream score.

    Args:
        scores: ``[B, C]`` upstream scores; non-finite ones (``-inf`` padding) are invalid.
        cand_vecs: ``[B, C, D]`` candidate text embeddings.
        user_vecs: ``[B, D]`` profile vectors (:func:`history_vectors`).
        k: list length.
        alpha: weight of the upstream score, in ``[0, 1]``.
        mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise GraphrecError(f"semantic: k must be a positive integer, got {k!r}")
    _check(scores, cand_vecs, user_vecs, alpha, mask, "semantic")
    if alpha == 1.0:
        return _topk(scores, _valid(scores, mask), k)
    blend, rel, valid = _blend(scores, cand_vecs, user_vecs, alpha, mask)
    # lexicographic (blend, rel, -position): stable sorts from the last key to the first
    order = torch.argsort(rel, dim=1, descending=True, stable=True)
    order = order.gather(1, torch.argsort(blend.gather(1, order), dim=1, descending=True, stable=True))
    order = order[:, :k]
    order = order.masked_fill(~valid.gather(1, order), -1)
    return _pad(order, k)
