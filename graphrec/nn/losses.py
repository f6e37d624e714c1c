"""Losses of pair-trained models, in one module: every function takes scores, not models.

Shapes: ``pos [N]`` is each example's score for its positive item, ``neg [N, M]`` the scores of
its ``M`` negatives. Scores are logits (dot products, MLP outputs) except for :func:`ccl`,
which takes cosine similarities.

* :func:`bpr`: Bayesian personalized ranking, ``-log sigmoid(pos - neg)`` (Rendle et al. 2009).
* :func:`bce`: binary cross-entropy, positives labelled 1 and negatives 0, averaged over all
  ``N * (1 + M)`` pairs (NeuMF's loss, He et al. 2017).
* :func:`sampled_softmax`: cross-entropy of the positive among itself and its negatives
  (InfoNCE), with a temperature and the logQ correction of sampled softmax: each score minus
  the log-probability that the sampler draws that item (Yi et al., RecSys 2019), so that the
  loss is an unbiased estimate of the full softmax's whatever the sampler.
* :func:`in_batch_logits`: the ``[N, N]`` scores of every user against every positive of the
  batch (the other positives are the negatives, drawn in proportion to popularity), with
  accidental hits (the same item as the row's positive) masked out; extra sampled negatives
  can be appended as columns: mixed negatives (Yang et al., WWW 2020).
* :func:`ccl`: the cosine contrastive loss of SimpleX (Mao et al., CIKM 2021),
  ``(1 - pos) + w / M * sum(relu(neg - margin))``.
* :func:`warp`: WARP (Weston, Bengio & Usunier, IJCAI 2011), a margin loss weighted by an
  estimate of the positive's rank from how many sampled negatives it took to find one that
  violates the margin; a batched form over a fixed number of negatives.

Every loss over ``neg [N, M]`` takes an optional ``hits [N, M]`` (bool): entries that are not
negatives (a shared pool's items that the row's user has as training positives). They are left
out: of the means for BPR, BCE and CCL (CCL divides by each row's remaining count), of the
softmax's denominator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphrec.errors import GraphrecError

#: the ``loss`` names pair-trained models accept (see :func:`pair_loss`)
PAIR_LOSSES = ("bpr", "bce", "softmax")


def _check(pos: Tensor, neg: Tensor, what: str, hits: Tensor | None = None) -> None:
    if neg is None or neg.numel() == 0:
        raise GraphrecError(f"{what} loss needs negatives (--num-negatives must be at least 1)")
    if neg.dim() != 2 or pos.shape != neg.shape[:1]:
        raise ValueError(f"{what}: expected pos [N] and neg [N, M], got {tuple(pos.shape)} and "
                         f"{tuple(neg.shape)}")
    if hits is not None and hits.shape != neg.shape:
        raise ValueError(f"{what}: hits must have neg's shape {tuple(neg.shape)}")


def bpr(pos: Tensor, neg: Tensor, hits: Tensor | None = None) -> Tensor:
    """Mean over the ``N * M`` (positive, negative) pairs of ``-log sigmoid(pos - neg)``."""
    _check(pos, neg, "BPR", hits)
    terms = -F.logsigmoid(pos.unsqueeze(1) - neg)
    if hits is None:
        return terms.mean()
    return terms.masked_fill(hits, 0.0).sum() / (~hits).sum().clamp_min(1)


def bce(pos: Tensor, neg: Tensor, hits: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of logits, mean over the ``N * (1 + M)`` labelled pairs."""
    _check(pos, neg, "BCE", hits)
    neg_terms = F.softplus(neg)  # -log(1 - s(x)); the positives' is -log s(x)
    count = pos.numel() + neg.numel()
    if hits is not None:
        neg_terms, count = neg_terms.masked_fill(hits, 0.0), pos.numel() + int((~hits).sum())
    return (F.softplus(-pos).sum() + neg_terms.sum()) / count


def sampled_softmax(pos: Tensor, neg: Tensor, temperature: float | Tensor = 1.0,
                    log_q_pos: Tensor | None = None, log_q_neg: Tensor | None = None,
                    hits: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of the positive (column 0) over ``[pos, neg] / temperature``, each
    logit first corrected by ``- log q`` when the sampling log-probabilities are given (``[N]``
    and ``[N, M]``, or ``[M]`` for a shared pool; both or neither)."""
    _check(pos, neg, "sampled softmax", hits)
    if not isinstance(temperature, Tensor) and temperature <= 0:
        raise GraphrecError(f"temperature must be > 0, got {temperature}")
    logits = torch.cat([pos.unsqueeze(1), neg], 1) / temperature
    if (log_q_pos is None) != (log_q_neg is None):
        raise ValueError("sampled_softmax: give log_q_pos and log_q_neg together")
    if log_q_pos is not None:
        logits = logits - torch.cat([log_q_pos.unsqueeze(1), log_q_neg.expand_as(neg)], 1)
    if hits is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(hits, float("-inf"))], 1)
    return -torch.log_softmax(logits, 1)[:, 0].mean()


def pair_loss(name: str, pos: Tensor, neg: Tensor, log_q_pos: Tensor | None = None,
              log_q_neg: Tensor | None = None, hits: Tensor | None = None) -> Tensor:
    """The loss a pair-trained model's ``loss`` option names (:data:`PAIR_LOSSES`). The
    sampling log-probabilities, given for weighted negatives, correct ``softmax``; with uniform
    negatives they would shift every logit by one constant, and the margin losses take none.
    ``hits``: entries of ``neg`` that are not negatives (module docstring)."""
    if name == "bpr":
        return bpr(pos, neg, hits)
    if name == "bce":
        return bce(pos, neg, hits)
    if name == "softmax":
        return sampled_softmax(pos, neg, 1.0, log_q_pos, log_q_neg, hits)
    raise GraphrecError(f"loss must be one of {PAIR_LOSSES}, got {name!r}")


def in_batch_logits(user_vecs: Tensor, item_vecs: Tensor, items: Tensor,
                    temperature: float = 1.0, log_q: Tensor | None = None) -> Tensor:
    """``[N, N]`` logits of user ``i`` (``user_vecs [N, F]``) against the batch's positives
    ``item_vecs [N, F]`` (item ids ``items [N]``): the diagonal holds each user's positive.
    ``log_q [num_items]`` subtracts each column item's log sampling probability (its share of
    the training interactions, for in-batch negatives). A column holding the row's positive
    item off the diagonal (an accidental hit) is ``-inf``."""
    if temperature <= 0:
        raise GraphrecError(f"temperature must be > 0, got {temperature}")
    logits = user_vecs @ item_vecs.T / temperature
    if log_q is not None:
        logits = logits - log_q[items].unsqueeze(0)
    hit = items.unsqueeze(0) == items.unsqueeze(1)
    hit.fill_diagonal_(False)
    return logits.masked_fill(hit, float("-inf"))


def in_batch_softmax(logits: Tensor, extra: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of the diagonal of :func:`in_batch_logits`, with ``extra [N, M]``
    logits of sampled negatives appended as further columns (mixed negatives)."""
    n = logits.size(0)
    if extra is not None:
        logits = torch.cat([logits, extra], 1)
    return -torch.log_softmax(logits, 1)[torch.arange(n), torch.arange(n)].mean()


def ccl(pos: Tensor, neg: Tensor, margin: float = 0.9, neg_weight: float = 1.0,
        hits: Tensor | None = None) -> Tensor:
    """SimpleX's cosine contrastive loss over cosine similarities: mean over examples of
    ``(1 - pos) + neg_weight / M * sum_j relu(neg_j - margin)``."""
    _check(pos, neg, "CCL", hits)
    if not -1 <= margin <= 1:
        raise GraphrecError(f"ccl: margin must lie in [-1, 1] (a cosine), got {margin}")
    push = F.relu(neg - margin)
    if hits is None:
        return ((1 - pos) + neg_weight * push.mean(1)).mean()
    per_row = push.masked_fill(hits, 0.0).sum(1) / (~hits).sum(1).clamp_min(1)
    return ((1 - pos) + neg_weight * per_row).mean()


def warp(pos: Tensor, neg: Tensor, num_items: int, margin: float = 1.0,
         hits: Tensor | None = None) -> Tensor:
    """WARP over ``M`` sampled negatives per example, batched. Weston et al. draw negatives one
    at a time until one violates the margin (``neg > pos - margin``); if that took ``k``
    draws, the positive's rank is estimated as ``r = floor((num_items - 1) / k)`` and the
    violator's hinge ``margin - pos + neg`` is weighted by ``L(r) = sum_{j <= r} 1 / j``, which
    pushes a positive ranked low harder than one near the top. Here all ``M`` negatives are
    scored at once: ``k`` is the (1-based) position of the first violator among them, the
    hinge is that of the hardest violator (the most informative of the ``M``, where the
    sequential sampler would have stopped at the first), and an example with no violator
    among ``M`` (rank estimated better than ``(num_items - 1) / M``) costs nothing. Mean over
    the ``N`` examples; ``hits`` entries are not negatives and do not count as draws.
    (LightFM weights by ``log r``, about ``L(r) - 0.58``.)"""
    _check(pos, neg, "WARP", hits)
    if num_items < 2:
        raise GraphrecError(f"warp: needs at least 2 items, got {num_items}")
    violating = neg > (pos.unsqueeze(1) - margin)  # [N, M]
    draws = torch.arange(1, neg.size(1) + 1, device=neg.device).expand_as(neg)  # 1-based
    if hits is not None:
        violating = violating & ~hits
        draws = (~hits).cumsum(1)  # position among the real negatives
    found = violating.any(1)  # [N]
    first = draws.gather(1, violating.int().argmax(1, keepdim=True)).squeeze(1).clamp_min(1)
    rank = torch.div(num_items - 1, first, rounding_mode="floor").clamp_min(1)
    weight = torch.special.digamma(rank.double() + 1) + 0.5772156649015329  # H_r
    hardest = neg.masked_fill(~violating, float("-inf")).max(1).values
    hinge = torch.where(found, margin - pos + hardest.where(found, pos), torch.zeros_like(pos))
    return (weight.to(pos.dtype) * hinge).mean()


__all__ = [
    "PAIR_LOSSES",
    "bce",
    "bpr",
    "ccl",
    "in_batch_logits",
    "in_batch_softmax",
    "pair_loss",
    "sampled_softmax",
    "warp",
]
