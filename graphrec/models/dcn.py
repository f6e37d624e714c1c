"""Learned rankers of the multi-stage recommender (stage 2): score a user's candidates.

Inputs per (user, candidate) pair, ``B`` users by ``C`` candidates: ``dense [B, C, D]``
(standardized floats), ``tokens [B, C, T]`` (integer codes, column ``t`` in
``[0, vocab[t])``) and ``mask [B, C]`` (``True`` for real candidates, ``False`` for padding;
the tokens and dense features of padding are never checked and never influence a valid
score). Each token column has its own embedding table (``vocab[t] × token_dim``); the input of
every kind is ``x_0 = [dense, e_1(tokens_1), ..., e_T(tokens_T)]`` of size
``D + T * token_dim``. Kinds (:class:`RankerConfig`):

* ``logistic``: ``w^T x_0 + b``, logistic regression. Its token embeddings have dimension 1
  whatever ``token_dim``: a linear function of an embedding is one scalar per code, so this is
  exactly logistic regression over one-hot tokens.
* ``mlp``: the deep tower (Linear, ReLU, dropout per ``deep_layers``), then a Linear to 1.
* ``dcn``: DCN (Wang et al., ADKDD 2017): a v1 cross network (:class:`~graphrec.nn.cross.
  CrossLayer`) and the deep tower side by side over ``x_0`` (``parallel``, the paper's), their
  outputs concatenated, a Linear to 1.
* ``dcn-v2``: DCN-V2 (Wang et al., WWW 2021): v2 cross layers (:class:`~graphrec.nn.cross.
  CrossLayerV2`, full or low ``rank``), ``stacked`` (``x_0 -> cross -> deep -> Linear``) or
  ``parallel`` (as ``dcn``).

Losses: ``bce``, binary cross-entropy of the logits, averaged over the valid candidates of the
batch (:func:`candidate_bce`); ``softmax``, listwise: for each row with at least one positive,
minus the mean over its positives of the log-softmax over the row's valid candidates (other
positives stay in the denominator), averaged over those rows; rows without a positive are
skipped (:func:`candidate_softmax`). :func:`fit_ranker` trains with Adam over shuffled batches
of user rows and stops early on the validation rows' mean NDCG (:func:`candidate_ndcg`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphrec.errors import GraphrecError, TrainingDiverged
from graphrec.nn.cross import CrossNetwork
from graphrec.options import checked

log = logging.getLogger("graphrec.models.dcn")

RANKER_KINDS = ("dcn", "dcn-v2", "mlp", "logistic")
STRUCTURES = ("stacked", "parallel")
RANKER_LOSSES = ("bce", "softmax")
#: rows per chunk when :func:`fit_ranker` scores the validation rows
VALID_CHUNK = 4096


@dataclass
class RankerConfig:
    """Args:
        kind: ``"dcn"``, ``"dcn-v2"``, ``"mlp"`` or ``"logistic"`` (module docstring).
        cross_layers: number of cross layers ``L >= 1`` (``dcn``, ``dcn-v2``).
        structure: how the cross network and the deep tower combine: ``"stacked"`` (cross,
            then deep on its output) or ``"parallel"`` (both on ``x_0``, outputs concatenated).
            ``None``: each paper's, ``parallel`` for ``dcn`` and ``stacked`` for ``dcn-v2``.
            Ignored by ``mlp`` and ``logistic``.
        rank: ``None``: full-rank ``dcn-v2`` cross layers; an integer ``r >= 1``: low-rank
            ``W = U V^T`` of rank ``r`` (allowed at or above the input size, where it saves
            nothing). ``dcn-v2`` only.
        deep_layers: output sizes of the deep tower's ReLU layers (``mlp``: at least one;
            ``dcn``/``dcn-v2``: none leaves the cross network alone).
        dropout: dropout after each deep ReLU layer in training mode, in ``[0, 1)``.
        token_dim: embedding size of each token column (``logistic`` uses 1).
        loss: ``"bce"`` (pointwise) or ``"softmax"`` (listwise over a user's candidates).
    """

    kind: str = "dcn-v2"
    cross_layers: int = 3
    structure: str | None = None
    rank: int | None = None
    deep_layers: tuple[int, ...] = (256, 128)
    dropout: float = 0.0
    token_dim: int = 8
    loss: str = "bce"

    def __post_init__(self) -> None:
        # types first (values may come straight from TOML or JSON), then the values
        for key, value in checked(type(self), {f.name: getattr(self, f.name) for f in fields(self)}).items():
            setattr(self, key, value)
        if self.kind not in RANKER_KINDS:
            raise GraphrecError(f"kind: must be one of {', '.join(RANKER_KINDS)}, got {self.kind!r}")
        if self.structure is not None and self.structure not in STRUCTURES:
            raise GraphrecError(f"structure: must be stacked or parallel, got {self.structure!r}")
        if self.loss not in RANKER_LOSSES:
            raise GraphrecError(f"loss: must be one of {', '.join(RANKER_LOSSES)}, got {self.loss!r}")
        if self.rank is not None and self.rank < 1:
            raise GraphrecError(f"rank: must be a positive integer (or absent: full rank), got {self.rank}")
        if self.rank is not None and self.kind != "dcn-v2":
            raise GraphrecError(f"rank: applies to kind dcn-v2 only, not {self.kind}")
        if self.cross_layers < 1:
            raise GraphrecError(f"cross_layers: must be >= 1, got {self.cross_layers}")
        if any(n < 1 for n in self.deep_layers):
            raise GraphrecError(f"deep_layers: sizes must be >= 1, got {list(self.deep_layers)}")
        if self.kind == "mlp" and not self.deep_layers:
            raise GraphrecError("deep_layers: kind mlp needs at least one layer (none is logistic)")
        if not 0 <= self.dropout < 1:
            raise GraphrecError(f"dropout: must lie in [0, 1), got {self.dropout}")
        if self.token_dim < 1:
            raise GraphrecError(f"token_dim: must be >= 1, got {self.token_dim}")


def candidate_bce(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy of ``logits [B, C]`` against 0/1 ``labels``, mean over the valid
    candidates (``mask``); 0 (with a gradient) when there are none."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask].float())


def candidate_softmax(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Listwise softmax loss: over rows with at least one valid positive, the mean of
    ``-1/|P_b| sum_{i in P_b} log softmax_{j valid}(logits_b)_i``; other rows are skipped,
    padding is out of the softmax's denominator. 0 (with a gradient) when no row has a positive."""
    pos = (labels > 0) & mask
    rows = pos.any(1)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    # only rows with a positive (hence a valid candidate): no all -inf row, no NaN
    logp = torch.log_softmax(logits[rows].masked_fill(~mask[rows], float("-inf")), 1)
    pos = pos[rows]
    per_row = -logp.masked_fill(~pos, 0.0).sum(1) / pos.sum(1)
    return per_row.mean()


def candidate_ndcg(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """NDCG over the whole candidate list (no cutoff) of each row with a valid positive:
    ``sum_r g_r / log2(r + 1) / IDCG`` with the candidates sorted by decreasing logit (ties in
    candidate order), binary gains, padding last. Returns ``[rows with a positive]``."""
    gains = ((labels > 0) & mask).float()
    order = logits.masked_fill(~mask, float("-inf")).argsort(dim=1, descending=True, stable=True)
    disc = 1.0 / torch.log2(torch.arange(logits.size(1), device=logits.device) + 2.0)
    dcg = (gains.gather(1, order) * disc).sum(1)
    idcg = (gains.sort(1, descending=True).values * disc).sum(1)
    rows = idcg > 0
    return dcg[rows] / idcg[rows]


def _tower(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear, ReLU, dropout for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class CandidateRanker(nn.Module):
    """Scores ``[B, C]`` of a user's candidates from their features (module docstring).

    Args:
        dense_dim: number ``D`` of dense feature columns (may be 0).
        vocab: vocabulary size of each of the ``T`` token columns (each ``>= 1``).
        cfg: the architecture and loss (:class:`RankerConfig`; default: its defaults).
    """

    def __init__(self, dense_dim: int, vocab: Sequence[int], cfg: RankerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else RankerConfig()
        if isinstance(dense_dim, bool) or not isinstance(dense_dim, int) or dense_dim < 0:
            raise GraphrecError(f"ranker: dense_dim must be an integer >= 0, got {dense_dim!r}")
        vocab = list(vocab)
        for t, v in enumerate(vocab):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GraphrecError(f"ranker: vocab[{t}] must be an integer >= 1, got {v!r}")
        self.cfg, self.dense_dim, self.vocab = cfg, dense_dim, vocab
        emb_dim = 1 if cfg.kind == "logistic" else cfg.token_dim
        self.input_dim = dense_dim + len(vocab) * emb_dim
        if self.input_dim == 0:
            raise GraphrecError("ranker: no features (dense_dim is 0 and there are no token columns)")
        self.embeddings = nn.ModuleList(nn.Embedding(v, emb_dim) for v in vocab)
        self.register_buffer("vocab_sizes", torch.tensor(vocab, dtype=torch.long).view(1, 1, -1),
                             persistent=False)
        self.structure = (None if cfg.kind in ("mlp", "logistic") else
                          cfg.structure or ("parallel" if cfg.kind == "dcn" else "stacked"))
        self.cross = (CrossNetwork(self.input_dim, cfg.cross_layers, 1 if cfg.kind == "dcn" else 2,
                                   cfg.rank) if self.structure else None)
        deep = () if cfg.kind == "logistic" else cfg.deep_layers
        # the deep tower reads x_0 (mlp, parallel) or the cross output (stacked): both of size F
        self.deep = _tower((self.input_dim, *deep), cfg.dropout)
        deep_out = deep[-1] if deep else self.input_dim
        head_in = self.input_dim + deep_out if self.structure == "parallel" and deep else deep_out
        self.head = nn.Linear(head_in, 1)

    def check(self, dense: Tensor, tokens: Tensor, mask: Tensor, labels: Tensor | None = None,
              what: str = "ranker") -> None:
        """One-line :class:`GraphrecError` unless the shapes and dtypes are what this ranker
        takes and, at valid candidates, dense values are finite, labels 0 or 1 and token codes
        within their vocabularies (padding may hold anything)."""
        if dense.dim() != 3 or dense.size(2) != self.dense_dim or not dense.is_floating_point():
            raise GraphrecError(f"{what}: dense must be a float tensor [B, C, {self.dense_dim}], got "
                                f"{dense.dtype} {tuple(dense.shape)}")
        b, c = dense.shape[:2]
        if (tokens.shape != (b, c, len(self.vocab)) or tokens.is_floating_point()
                or tokens.dtype == torch.bool or tokens.is_complex()):
            raise GraphrecError(f"{what}: tokens must be an integer tensor [{b}, {c}, {len(self.vocab)}] "
                                f"(dense's B and C), got {tokens.dtype} {tuple(tokens.shape)}")
        if mask.shape != (b, c) or mask.dtype != torch.bool:
            raise GraphrecError(f"{what}: mask must be a bool tensor [{b}, {c}], got {mask.dtype} "
                                f"{tuple(mask.shape)}")
        if bool((~torch.isfinite(dense) & mask.unsqueeze(-1)).any()):
            raise GraphrecError(f"{what}: dense has non-finite values at valid candidates")
        if labels is not None:
            if labels.shape != (b, c):
                raise GraphrecError(f"{what}: labels must be [{b}, {c}] like mask, got {tuple(labels.shape)}")
            if bool((((labels != 0) & (labels != 1)) & mask).any()):
                raise GraphrecError(f"{what}: labels must be 0 or 1 at valid candidates")
        if self.vocab:
            bad = ((tokens < 0) | (tokens >= self.vocab_sizes.to(tokens.device))) & mask.unsqueeze(-1)
            if bool(bad.any()):
                t = int(bad.flatten(0, 1).any(0).nonzero()[0])
                code = int(tokens[..., t][bad[..., t]][0])
                raise GraphrecError(f"{what}: token column {t}: code {code} outside its vocabulary "
                                    f"[0, {self.vocab[t]})")

    def _x0(self, dense: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """``x_0 [B, C, F]``; padding reads as zeros and code 0, whatever it holds (NaN at a
        pad would otherwise reach the gradients through ``0 * NaN``)."""
        pad = ~mask.unsqueeze(-1)
        dense, tokens = dense.masked_fill(pad, 0.0), tokens.masked_fill(pad, 0)
        embs = [emb(tokens[..., t]) for t, emb in enumerate(self.embeddings)]  # T x [B, C, E]
        return torch.cat([dense, *embs], -1)

    def _logits(self, dense: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Finite logits ``[B, C]`` everywhere (padding included), without checks."""
        x0 = self._x0(dense, tokens, mask)
        if self.structure == "stacked":
            h = self.deep(self.cross(x0))
        elif self.structure == "parallel":
            h = self.cross(x0)
            if len(self.deep):
                h = torch.cat([h, self.deep(x0)], -1)  # [B, C, F + deep_layers[-1]]
        else:  # mlp; logistic (an empty tower)
            h = self.deep(x0)
        return self.head(h).squeeze(-1)

    def forward(self, dense: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Logits ``[B, C]`` of the candidates; ``-inf`` where ``mask`` is ``False``."""
        self.check(dense, tokens, mask)
        return self._logits(dense, tokens, mask).masked_fill(~mask, float("-inf"))

    def _loss(self, dense: Tensor, tokens: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        logits = self._logits(dense, tokens, mask)
        fn = candidate_bce if self.cfg.loss == "bce" else candidate_softmax
        return fn(logits, labels, mask)

    def loss(self, dense: Tensor, tokens: Tensor, mask: Tensor, labels: Tensor) -> Tensor:
        """The configured loss (scalar) of 0/1 ``labels [B, C]``; padding's labels are ignored."""
        self.check(dense, tokens, mask, labels)
        return self._loss(dense, tokens, mask, labels)

    def config_dict(self) -> dict[str, Any]:
        """JSON-serializable ``{"dense_dim", "vocab", "config"}``: :func:`ranker_from_dict`
        rebuilds this architecture from it (then ``load_state_dict`` the weights)."""
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}
        return {"dense_dim": self.dense_dim, "vocab": list(self.vocab), "config": cfg}

    def describe(self) -> dict[str, Any]:
        """:meth:`config_dict` plus derived facts: ``structure`` as resolved, ``input_dim``
        (size of ``x_0``) and ``parameters`` (count); also accepted by :func:`ranker_from_dict`."""
        return {**self.config_dict(), "structure": self.structure, "input_dim": self.input_dim,
                "parameters": sum(p.numel() for p in self.parameters())}


def ranker_from_dict(d: dict[str, Any]) -> CandidateRanker:
    """A freshly initialized :class:`CandidateRanker` of the architecture that
    :meth:`CandidateRanker.config_dict` (or ``describe``) wrote."""
    known = {"dense_dim", "vocab", "config", "structure", "input_dim", "parameters"}
    if not isinstance(d, dict) or not {"dense_dim", "vocab", "config"} <= set(d):
        raise GraphrecError("ranker config: expected a dict with dense_dim, vocab and config")
    unknown = sorted(set(d) - known)
    if unknown:
        raise GraphrecError(f"ranker config: unknown key {unknown[0]!r}")
    if not isinstance(d["config"], dict) or not isinstance(d["vocab"], list):
        raise GraphrecError("ranker config: config must be a dict and vocab a list")
    names = {f.name for f in fields(RankerConfig)}
    bad = sorted(set(d["config"]) - names)
    if bad:
        raise GraphrecError(f"ranker config: unknown option {bad[0]!r}; options are {', '.join(sorted(names))}")
    return CandidateRanker(d["dense_dim"], d["vocab"], RankerConfig(**d["config"]))


def _positive(name: str, value: float, zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        raise GraphrecError(f"fit_ranker: {name} must be {'>= 0' if zero else '> 0'}, got {value!r}")


def fit_ranker(ranker: CandidateRanker, dense: Tensor, tokens: Tensor, mask: Tensor, labels: Tensor,
               epochs: int = 100, lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 1e-5,
               valid: tuple[Tensor, Tensor, Tensor, Tensor] | None = None, patience: int = 5,
               seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Train ``ranker`` in place with Adam (L2 ``weight_decay``) on its configured loss.

    Each epoch shuffles the ``B`` user rows (a generator seeded by ``seed``) and steps on
    batches of ``batch_size`` rows; dropout draws from the global generator seeded by ``seed``
    inside :func:`torch.random.fork_rng`, so two calls with the same seed, initial weights and
    data train the same weights and the caller's random state is left alone. Tensors stay
    where they are and batches move to the ranker's device.

    ``valid``: ``(dense, tokens, mask, labels)`` of other users. After each epoch the
    validation rows' mean :func:`candidate_ndcg` is measured (and their loss, reported only);
    training stops after ``patience`` epochs without a higher NDCG and the weights of the best
    epoch are restored. Validation rows without a positive carry no NDCG: if none has one,
    training runs all epochs (a warning is logged).

    Returns the history (JSON-serializable): ``train_loss`` (per epoch, the row-weighted mean
    of the batch losses), ``valid_loss`` and ``valid_ndcg`` (empty without ``valid``; ``None`` for an NDCG
    without a positive row),
    ``best_epoch`` (1-based; the last without early stopping), ``epochs_run``,
    ``stopped_early``. The ranker is left in eval mode. A non-finite batch loss raises
    :class:`~graphrec.errors.TrainingDiverged` with the weights of the best epoch (early
    stopping) or of the last complete epoch restored (the initial ones in epoch 1).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GraphrecError(f"fit_ranker: {name} must be a positive integer, got {value!r}")
    _positive("lr", lr)
    _positive("weight_decay", weight_decay, zero=True)
    ranker.check(dense, tokens, mask, labels, "fit_ranker")
    if dense.size(0) == 0:
        raise GraphrecError("fit_ranker: no training rows")
    stop_early = valid is not None
    if valid is not None:
        if not isinstance(valid, (tuple, list)) or len(valid) != 4:
            raise GraphrecError("fit_ranker: valid must be a tuple (dense, tokens, mask, labels)")
        ranker.check(*valid, "fit_ranker: valid")
        if not bool(((valid[3] > 0) & valid[2]).any()):
            log.warning("fit_ranker: no validation row has a positive; training all %d epochs", epochs)
            stop_early = False
    device = next(ranker.parameters()).device
    data = (dense, tokens, mask, labels.float())
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(ranker.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, Any] = {"train_loss": [], "valid_loss": [], "valid_ndcg": [],
                               "best_epoch": 0, "epochs_run": 0, "stopped_early": False}
    best_state, best_ndcg = copy.deepcopy(ranker.state_dict()), -math.inf
    n = dense.size(0)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc="ranker", unit="epoch", disable=not progress, leave=False)
        for epoch in bar:
            ranker.train()
            total = 0.0
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                loss = ranker._loss(*(x[idx].to(device) for x in data))
                value = float(loss.detach())
                if not math.isfinite(value):
                    ranker.load_state_dict(best_state)
                    ranker.eval()
                    raise TrainingDiverged(f"fit_ranker: non-finite loss in epoch {epoch}; lower lr "
                                           "(the weights of the best or last complete epoch are kept)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += value * idx.numel()
            history["train_loss"].append(total / n)
            history["epochs_run"] = epoch
            bar.set_postfix(loss=f"{total / n:.4f}")
            if not stop_early:  # the last good weights, should a later epoch diverge
                best_state = copy.deepcopy(ranker.state_dict())
            if valid is None:
                continue
            v_loss, v_ndcg = _validate(ranker, valid, device)
            history["valid_loss"].append(v_loss)
            history["valid_ndcg"].append(None if math.isnan(v_ndcg) else v_ndcg)
            bar.set_postfix(loss=f"{total / n:.4f}", ndcg=f"{v_ndcg:.4f}")
            log.debug("ranker epoch %d: loss %.5f, valid loss %.5f, ndcg %.5f", epoch, total / n, v_loss, v_ndcg)
            if stop_early and v_ndcg > best_ndcg:
                best_ndcg, history["best_epoch"] = v_ndcg, epoch
                best_state = copy.deepcopy(ranker.state_dict())
            elif stop_early and epoch - history["best_epoch"] >= patience:
                history["stopped_early"] = True
                break
        bar.close()
    if stop_early:
        ranker.load_state_dict(best_state)
    else:
        history["best_epoch"] = history["epochs_run"]
    ranker.eval()
    return history


@torch.no_grad()
def _validate(ranker: CandidateRanker, valid: Sequence[Tensor], device: torch.device) -> tuple[float, float]:
    """Loss and mean NDCG (NaN without a positive row) of the validation rows, in eval mode."""
    ranker.eval()
    dense, tokens, mask, labels = valid
    logits = torch.cat([ranker._logits(dense[s].to(device), tokens[s].to(device), mask[s].to(device)).cpu()
                        for s in torch.arange(dense.size(0)).split(VALID_CHUNK)])
    labels, mask = labels.float().cpu(), mask.cpu()
    fn = candidate_bce if ranker.cfg.loss == "bce" else candidate_softmax
    ndcg = candidate_ndcg(logits, labels, mask)
    return float(fn(logits, labels, mask)), float(ndcg.mean()) if ndcg.numel() else math.nan


__all__ = ["RANKER_KINDS", "RANKER_LOSSES", "STRUCTURES", "CandidateRanker", "RankerConfig",
           "candidate_bce", "candidate_ndcg", "candidate_softmax", "fit_ranker", "ranker_from_dict"]
