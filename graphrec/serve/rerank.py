"""Re-rankers of a batch of candidate lists: MMR and greedy DPP for diversity, and a freshness
boost. Every function works on ``[B, C]`` candidate scores of ``B`` users at once.

The re-rankers return positions ``[B, k]`` into the ``C`` candidates (``-1`` where a row has
fewer than ``k`` valid candidates). A candidate is invalid where ``mask`` is ``False`` or its
score is not finite (``-inf`` marks padding); invalid candidates are never picked. Both loop
over the ``k`` output positions only; each step is vectorized over users and candidates.

Relevance is the score min-max normalized per row over the valid candidates, so
``r in [0, 1]`` and the trade-off ``lam`` means the same for every model whatever the scale of
its scores. ``lam = 1`` is the plain top ``k`` by score; smaller ``lam`` buys diversity. Ties
go to the more relevant candidate, then to the earlier one.

Item similarity is either the cosine of ``item_vecs [B, C, F]`` (zero vectors are similar to
nothing) or a given matrix ``sim [B, C, C]``, passed by keyword so a ``[B, C, C]`` tensor of
vectors with ``F == C`` is never mistaken for a similarity matrix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graphrec.errors import GraphrecError

__all__ = ["mmr", "dpp", "freshness_boost"]


def _check(scores: Tensor, item_vecs: Tensor | None, sim: Tensor | None, k: int, lam: float,
           mask: Tensor | None, name: str) -> None:
    if scores.dim() != 2:
        raise GraphrecError(f"{name}: scores must be [B, C], got shape {list(scores.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise GraphrecError(f"{name}: k must be a positive integer, got {k!r}")
    if not 0.0 <= lam <= 1.0:  # also rejects NaN
        raise GraphrecError(f"{name}: lam must lie in [0, 1], got {lam}")
    B, C = scores.shape
    if (item_vecs is None) == (sim is None):
        raise GraphrecError(f"{name}: pass exactly one of item_vecs [B, C, F] and sim [B, C, C]")
    if item_vecs is not None and (item_vecs.dim() != 3 or item_vecs.shape[:2] != (B, C)):
        raise GraphrecError(f"{name}: item_vecs must be [B, C, F] = [{B}, {C}, F] like scores, "
                            f"got shape {list(item_vecs.shape)}")
    if sim is not None and sim.shape != (B, C, C):
        raise GraphrecError(f"{name}: sim must be [B, C, C] = [{B}, {C}, {C}] like scores, "
                            f"got shape {list(sim.shape)}")
    if mask is not None and (mask.shape != (B, C) or mask.dtype != torch.bool):
        raise GraphrecError(f"{name}: mask must be a bool [B, C] = [{B}, {C}] tensor, "
                            f"got {mask.dtype} of shape {list(mask.shape)}")


def _valid(scores: Tensor, mask: Tensor | None) -> Tensor:
    valid = torch.isfinite(scores)
    return valid if mask is None else valid & mask.to(scores.device)


def _relevance(scores: Tensor, valid: Tensor) -> Tensor:
    """Scores min-max normalized per row over the valid candidates, in float64; 1 for every
    valid candidate of a row whose valid scores are all equal (nothing to tell them apart)."""
    s = scores.double()
    lo = s.masked_fill(~valid, math.inf).amin(1, keepdim=True)
    hi = s.masked_fill(~valid, -math.inf).amax(1, keepdim=True)
    span = hi - lo
    flat = ~(span > 0)  # also rows without valid candidates (span is nan or -inf there)
    rel = torch.where(flat, torch.ones_like(s), (s - lo) / torch.where(flat, torch.ones_like(span), span))
    return rel.masked_fill(~valid, 0.0)


def _pick(gain: Tensor, rel: Tensor, avail: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the available candidate of largest ``gain``; ties go to the larger ``rel``,
    then the lower position (``argmax`` returns the first maximum). Returns ``(j [B], ok [B])``
    where ``ok`` is ``False`` for rows with nothing left."""
    gain = gain.masked_fill(~avail, -math.inf)
    best = gain.amax(1, keepdim=True)
    tie = (gain == best) & avail
    j = rel.masked_fill(~tie, -math.inf).argmax(1)
    return j, avail.any(1)


def _topk(scores: Tensor, valid: Tensor, k: int) -> Tensor:
    """The top ``k`` valid candidates by score, ties to the lower position, -1 padded."""
    s = scores.double().masked_fill(~valid, -math.inf)
    order = torch.argsort(s, dim=1, descending=True, stable=True)[:, :k]
    order = order.masked_fill(~valid.gather(1, order), -1)
    return _pad(order, k)


def _pad(idx: Tensor, k: int) -> Tensor:
    if idx.size(1) < k:  # k beyond the number of candidates
        idx = torch.nn.functional.pad(idx, (0, k - idx.size(1)), value=-1)
    return idx


class _Similarity:
    """Columns of the item similarity on demand: ``row(j)[b, i] = S[b, i, j[b]]`` (candidate
    ``i`` against the picked ``j``), float64.

    From vectors, a row is one batched mat-vec (``O(B C F)``) rather than the full
    ``[B, C, C]`` matrix, which MMR and greedy DPP never need at once."""

    def __init__(self, item_vecs: Tensor | None, sim: Tensor | None, device: torch.device) -> None:
        if item_vecs is not None:
            self.vecs: Tensor | None = torch.nn.functional.normalize(item_vecs.to(device).double(), dim=2)
            self.sim: Tensor | None = None
        else:
            assert sim is not None
            self.vecs, self.sim = None, sim.to(device).double()

    def row(self, j: Tensor) -> Tensor:
        b = torch.arange(j.numel(), device=j.device)
        if self.vecs is not None:
            return torch.einsum("bcf,bf->bc", self.vecs, self.vecs[b, j])  # [B, C]
        assert self.sim is not None
        return self.sim[b, :, j]  # [B, C]

    def diagonal(self, shape: torch.Size) -> Tensor:
        """``S[b, i, i]``: 1 for cosines (also for zero vectors, which keeps ``S`` PSD:
        unit-or-zero Gram matrix plus a non-negative diagonal)."""
        if self.vecs is not None:
            return torch.ones(shape, dtype=torch.float64, device=self.vecs.device)
        assert self.sim is not None
        return torch.diagonal(self.sim, dim1=1, dim2=2).clone()


def mmr(scores: Tensor, item_vecs: Tensor | None, k: int, lam: float = 0.5, *,
        mask: Tensor | None = None, sim: Tensor | None = None) -> Tensor:
    r"""Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998), batched over users.

    Greedily, ``k`` times, picks among the remaining valid candidates

    .. math::
        \arg\max_i \; \lambda\, r_i - (1 - \lambda) \max_{j \in S} \mathrm{sim}(i, j)

    where :math:`r_i \in [0, 1]` is the score min-max normalized per row over the valid
    candidates and :math:`S` the items picked so far (the diversity term of the empty set is 0,
    so the first pick is always the most relevant). ``lam = 1`` is the top ``k`` by score;
    ``lam = 0`` takes the most relevant item, then each time the one least similar to those
    already picked.

    Args:
        scores: ``[B, C]`` candidate scores; non-finite scores (``-inf`` padding) are invalid.
        item_vecs: ``[B, C, F]`` candidate vectors, similarity is their cosine; or ``None``
            with ``sim``.
        k: list length.
        lam: relevance weight in ``[0, 1]``.
        mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
        sim: ``[B, C, C]`` similarity matrix instead of ``item_vecs`` (keyword only).

    Returns:
        ``[B, k]`` int64 positions into the candidates, ``-1`` where a row ran out of valid
        candidates.
    """
    _check(scores, item_vecs, sim, k, lam, mask, "mmr")
    valid = _valid(scores, mask)
    if lam == 1.0:
        return _topk(scores, valid, k)
    B, C = scores.shape
    rel = _relevance(scores, valid)
    similarity = _Similarity(item_vecs, sim, scores.device)
    avail = valid.clone()
    max_sim = torch.zeros_like(rel)  # max similarity to the picked items; 0 for none picked
    steps = min(k, C)
    out = torch.full((B, steps), -1, dtype=torch.long, device=scores.device)
    for t in range(steps):
        j, ok = _pick(lam * rel - (1.0 - lam) * max_sim, rel, avail)
        out[:, t] = torch.where(ok, j, -1)
        avail[torch.arange(B, device=j.device), j] = False  # a no-op on exhausted rows
        if t + 1 < steps:
            s = similarity.row(j)
            max_sim = s if t == 0 else torch.maximum(max_sim, s)
    return _pad(out, k)


def dpp(scores: Tensor, item_vecs: Tensor | None, k: int, lam: float = 0.5, *,
        mask: Tensor | None = None, sim: Tensor | None = None,
        eps: float = 1e-4, jitter: float = 1e-6) -> Tensor:
    r"""Greedy MAP inference of a determinantal point process, batched over users: Algorithm 1
    of Chen, Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point Process to
    Improve Recommendation Diversity", NeurIPS 2018 (incremental Cholesky updates, ``O(k C)``
    work per step and row after the similarity rows).

    The kernel is :math:`L = \mathrm{diag}(q)\,(S + \epsilon_J I)\,\mathrm{diag}(q)` with
    :math:`S` the cosine similarity of ``item_vecs`` (diagonal 1) or the given ``sim``,
    :math:`\epsilon_J` = ``jitter``, and the paper's relevance/diversity trade-off
    :math:`q_i = \exp(\alpha r_i)`, :math:`\alpha = \lambda / (2 (1 - \lambda))`, with
    :math:`r_i \in [0, 1]` the score min-max normalized per row. Then
    :math:`\log\det L_Y \propto \lambda \sum_{i \in Y} r_i + (1 - \lambda) \log\det S_Y`,
    so ``lam`` plays the role of MMR's: ``lam = 1`` is the top ``k`` by score (the limit
    :math:`\alpha \to \infty`), ``lam = 0`` pure diversity.

    Each step adds the candidate maximizing :math:`\log\det L_{Y \cup \{j\}}`, i.e.
    :math:`2\alpha r_j + \log \tilde d_j^2`, where :math:`\tilde d_j^2 = d_j^2 / q_j^2` is the
    Schur complement of :math:`S + \epsilon_J I` (the squared distance of item ``j`` from the
    span of the picked items). The recursion runs on :math:`S` and adds the quality in log
    space: the same picks as running it on :math:`L`, without :math:`q^2` overflowing for
    ``lam`` near 1. A row stops when the chosen :math:`\tilde d_j^2 <` ``eps`` (the item adds
    almost nothing to the determinant, e.g. once ``k`` exceeds the rank of ``S``); its
    remaining slots are filled with the best remaining candidates by score, so a row with
    ``k`` valid candidates always gets ``k`` items.

    Args:
        scores: ``[B, C]`` candidate scores; non-finite scores (``-inf`` padding) are invalid.
        item_vecs: ``[B, C, F]`` candidate vectors (cosine similarity), or ``None`` with ``sim``.
        k: list length.
        lam: relevance weight in ``[0, 1]``.
        mask: optional ``[B, C]`` bool, ``False`` marks invalid candidates.
        sim: ``[B, C, C]`` symmetric PSD similarity instead of ``item_vecs`` (keyword only).
        eps: stop threshold on :math:`\tilde d_j^2` (default ``1e-4``).
        jitter: added to the diagonal of :math:`S` (default ``1e-6``).

    Returns:
        ``[B, k]`` int64 positions into the candidates, ``-1`` where a row ran out of valid
        candidates.
    """
    _check(scores, item_vecs, sim, k, lam, mask, "dpp")
    if sim is not None and not torch.allclose(sim, sim.transpose(1, 2), rtol=1e-4, atol=1e-6):
        raise GraphrecError("dpp: sim must be symmetric (a DPP kernel is symmetric PSD)")
    if not (eps > 0 and jitter >= 0):
        raise GraphrecError(f"dpp: eps must be > 0 and jitter >= 0, got eps={eps}, jitter={jitter}")
    valid = _valid(scores, mask)
    if lam == 1.0:
        return _topk(scores, valid, k)
    B, C = scores.shape
    rel = _relevance(scores, valid)
    log_q2 = (lam / (1.0 - lam)) * rel  # 2 log q_i = 2 alpha r_i
    similarity = _Similarity(item_vecs, sim, scores.device)
    d2 = similarity.diagonal(scores.shape) + jitter  # [B, C] Schur complements of S + jitter I
    steps = min(k, C)
    chol = torch.zeros(B, steps, C, dtype=torch.float64, device=scores.device)  # rows c_i of the paper
    avail = valid.clone()
    stopped = torch.zeros(B, dtype=torch.bool, device=scores.device)
    rows = torch.arange(B, device=scores.device)
    out = torch.full((B, steps), -1, dtype=torch.long, device=scores.device)
    for t in range(steps):
        j, ok = _pick(log_q2 + torch.log(d2.clamp(min=1e-300)), rel, avail)
        stopped |= ok & (d2[rows, j] < eps)
        best, _ = _pick(rel, rel, avail)
        j = torch.where(stopped, best, j)
        out[:, t] = torch.where(ok, j, -1)
        avail[rows, j] = False
        if t + 1 < steps:
            # e_i = (S_ji - <c_j, c_i>) / d_j ; d_i^2 -= e_i^2  (Algorithm 1, lines 5-6)
            c_j = chol[rows, :t, j]  # [B, t]
            e = (similarity.row(j) - torch.einsum("bt,btc->bc", c_j, chol[:, :t])) \
                / d2[rows, j].clamp(min=eps).sqrt()[:, None]
            e = e.masked_fill(stopped[:, None], 0.0)  # stopped rows fill by score; keep them finite
            chol[:, t] = e
            d2 = d2 - e * e
    return _pad(out, k)


def freshness_boost(scores: Tensor, item_time: Tensor, now: float, half_life: float,
                    weight: float) -> Tensor:
    r"""Scores plus an exponentially decaying bonus for recent items:

    .. math::
        s'_{bi} = s_{bi} + w \cdot 2^{-\max(0,\, \mathrm{now} - t_i) / h}

    so an item of age 0 gains ``weight``, one ``half_life`` old half of it. Items with a time
    after ``now`` count as age 0. Non-finite scores (``-inf`` padding) stay as they are.

    Args:
        scores: ``[B, C]`` candidate scores.
        item_time: ``[C]`` (shared by all rows) or ``[B, C]`` item times, in the unit of
            ``now`` and ``half_life`` (e.g. seconds).
        now: the reference time.
        half_life: age at which the bonus halves, ``> 0``.
        weight: bonus of a brand-new item.

    Returns:
        ``[B, C]`` boosted scores, in the dtype of ``scores``.
    """
    if scores.dim() != 2:
        raise GraphrecError(f"freshness_boost: scores must be [B, C], got shape {list(scores.shape)}")
    if item_time.shape not in (scores.shape[1:], scores.shape):
        raise GraphrecError(f"freshness_boost: item_time must be [C] or [B, C] with [B, C] = "
                            f"{list(scores.shape)}, got shape {list(item_time.shape)}")
    if not half_life > 0:
        raise GraphrecError(f"freshness_boost: half_life must be > 0, got {half_life}")
    if not math.isfinite(weight) or not math.isfinite(now):
        raise GraphrecError(f"freshness_boost: now and weight must be finite, got now={now}, weight={weight}")
    # float64: epoch seconds (~1.7e9) lose whole minutes in float32
    age = (now - item_time.to(scores.device).double()).clamp(min=0)
    bonus = weight * torch.exp2(-age / half_life)
    return (scores.double() + bonus).to(scores.dtype)
