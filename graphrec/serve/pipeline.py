"""A multi-stage recommender: retrieval from several runs -> a learned ranker over candidate
features -> a re-ranker -> the final K, configured by one TOML file and evaluated stage by stage.

The ranker's training data is leak-free by construction (the protocol in the README):

1. ``T`` = the runs' training and validation interactions; the test part is never read while
   fitting anything.
2. A holdout ``H`` is carved from ``T`` by the runs' own split method (per-user random or by
   time; ``holdout_method = "temporal"`` cuts by time where interactions have it), and the
   rest ``T \\ H`` split again into training and validation parts as the runs were.
3. Every retriever is retrained from its run's saved configuration on ``T \\ H``, early
   stopping on its validation part; its candidates for the users of ``H`` and the features,
   computed from ``T \\ H`` alone, are the ranker's inputs; membership in ``H`` its labels.
4. At test time the runs themselves (trained on the training part) retrieve, the features are
   computed from ``T`` and the ranker scores, so that stage 2 sees at test time what it saw in
   training, one level up.

:func:`ranker_data` returns the tensors and the interactions they came from, so a test can
check that no test interaction reaches them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from graphrec.batches import History
from graphrec.checkpoint import CHECKPOINT_NAME, Checkpoint, load_checkpoint
from graphrec.data.graph import Dataset, edge_subgraph, user_sequences
from graphrec.errors import GraphrecError
from graphrec.options import checked
from graphrec.evaluation.metrics import METRIC_FUNCTIONS
from graphrec.schema import EDGE, ITEM, PART_TRAIN, PART_VALID, TIME
from graphrec.serve.candidates import Candidates, retrieve
from graphrec.serve.features import FeatureBuilder, FeatureLayout, layout_of, parse_groups
from graphrec.split import Interactions, Split, SplitConfig, split
from graphrec.utils import atomic_write_json

log = logging.getLogger("graphrec.pipeline")

RANKER_WEIGHTS = "ranker.pt"
RANKER_META = "ranker.json"
RERANKERS = ("none", "mmr", "dpp", "semantic", "llm")
#: ranker settings under a pipeline's ``[ranker]`` keys: on ml-100k, listwise softmax with
#: dropout 0.3 at lr 3e-4 over 3 holdouts gave NDCG@20 0.4340 against 0.4280 with one holdout and
#: 0.4252 for logistic regression (test part; the table in the README)
RANKER_DEFAULTS = {"kind": "dcn-v2", "loss": "softmax", "dropout": 0.3}
SIMILARITIES = ("vectors", "genres", "cooccurrence")


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class RetrieverSpec:
    """One retriever: ``run`` (a run folder of ``python -m graphrec.train``), ``quota`` (at
    most this many of the fused candidates come from it; 0: up to ``n``)."""

    run: str
    quota: int = 0


@dataclass
class RankerSpec:
    """Stage 2. ``run``: the folder of the ranker's artifacts (``ranker.pt``, ``ranker.json``),
    written by ``--fit``; the other keys are the ranker's settings
    (:class:`graphrec.models.dcn.RankerConfig`: ``kind``, ``cross_layers``, ``structure``,
    ``rank``, ``deep_layers``, ``dropout``, ``token_dim``, ``loss``), its features
    (:mod:`graphrec.serve.features` groups), the holdout and the training loop."""

    run: str
    features: str = "all"
    holdout: float = 0.2
    holdout_method: str = "auto"  # auto: the runs' split method; or random, temporal
    folds: int = 3  # holdouts, each with its own retrained retrievers: more rows to learn from
    epochs: int = 100
    lr: float = 3e-4
    batch_size: int = 64
    weight_decay: float = 1e-5
    patience: int = 5
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RerankSpec:
    """Stage 3: ``method`` (none, mmr, dpp, semantic, llm), ``lam`` (relevance against
    diversity, in [0, 1]: 1 keeps the ranker's order), ``similarity`` of items (``vectors``:
    cosine of the first retriever's item vectors; ``genres``: cosine of the items' multi-hot
    feature; ``cooccurrence``: cosine of their co-occurrence rows), ``depth`` (re-rank the top
    this many of the ranked list; 0: all), freshness (``freshness_weight``, ``half_life_days``).

    ``semantic`` (:mod:`graphrec.serve.semantic`) blends the ranker's score with the cosine of
    each candidate's text embedding (the data's item ``text_emb``: train with ``--text-cols``)
    to the mean embedding of the user's last ``history`` items: ``alpha`` (in [0, 1]) is the
    weight of the ranker's score, 1 keeps its order.

    ``llm`` (:mod:`graphrec.serve.llm`) asks an OpenAI-compatible chat server to rank the top
    ``depth`` candidates (set it: every one of them is a line of the prompt) after the user's
    last ``history`` titles, one request per user: ``llm_url`` and ``llm_model`` (empty: the
    ``GRAPHREC_LLM_URL`` and ``GRAPHREC_LLM_MODEL`` environment; the key only from
    ``GRAPHREC_LLM_API_KEY``, never from a file), ``llm_timeout`` (seconds per request),
    ``llm_workers`` (concurrent requests). A user whose request fails keeps the ranker's
    order, with a warning."""

    method: str = "none"
    lam: float = 0.9
    similarity: str = "vectors"
    depth: int = 0
    freshness_weight: float = 0.0
    half_life_days: float = 365.0
    # the best of 0-1 on ml-100k's validation part (benchmarks/semantic_rerank.py); 0.5 lost NDCG
    alpha: float = 0.85
    history: int = 20  # most recent items of the user (semantic, llm); 0: all
    llm_url: str = ""
    llm_model: str = ""
    llm_timeout: float = 10.0
    llm_workers: int = 1


@dataclass
class PipelineConfig:
    """A pipeline file: ``n`` candidates, the final ``k``, ``[[retriever]]`` tables, an
    optional ``[ranker]`` and ``[rerank]``."""

    retrievers: list[RetrieverSpec]
    n: int = 200
    k: int = 20
    ranker: RankerSpec | None = None
    rerank: RerankSpec = field(default_factory=RerankSpec)
    path: Path | None = None

    def where(self, key: str) -> str:
        """``FILE: key`` for error messages."""
        return f"{self.path or 'pipeline'}: {key}"


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _table(where: str, values: Any, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise GraphrecError(f"{where}: must be a table")
    known = _fields(cls) - set(skip)
    for key in values:
        if key not in known:
            raise GraphrecError(f"{where}.{key}: unknown key; known keys are {', '.join(sorted(known))}")
    return checked(cls, values, f"{where}.")  # the one type check of config values


def parse_config(values: dict[str, Any], path: Path | None = None) -> PipelineConfig:
    """A checked :class:`PipelineConfig` from a parsed TOML table; relative run folders are
    read relative to the working directory. Errors name the file and the key."""
    from graphrec.models.dcn import RankerConfig

    name = str(path or "pipeline")
    known = {"retriever", "n", "k", "ranker", "rerank"}
    for key in values:
        if key not in known:
            raise GraphrecError(f"{name}: {key}: unknown key; known keys are {', '.join(sorted(known))}")
    tables = values.get("retriever")
    if not tables or not isinstance(tables, list):
        raise GraphrecError(f"{name}: retriever: at least one [[retriever]] table with a run")
    retrievers = []
    for i, t in enumerate(tables):
        got = _table(f"{name}: retriever[{i}]", t, RetrieverSpec)
        if "run" not in got:
            raise GraphrecError(f"{name}: retriever[{i}].run: missing (a run folder)")
        if got.get("quota", 0) < 0:
            raise GraphrecError(f"{name}: retriever[{i}].quota: must be >= 0")
        retrievers.append(RetrieverSpec(**got))
    n, k = values.get("n", 200), values.get("k", 20)
    for key, v in (("n", n), ("k", k)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise GraphrecError(f"{name}: {key}: expected a positive integer, got {v!r}")
    if n < k:
        raise GraphrecError(f"{name}: n: {n} candidates cannot fill k = {k} recommendations (need n >= k)")
    ranker = None
    if "ranker" in values:
        raw = dict(values["ranker"]) if isinstance(values["ranker"], dict) else values["ranker"]
        if not isinstance(raw, dict):
            raise GraphrecError(f"{name}: ranker: must be a table")
        model_keys = _fields(RankerConfig)
        # the pipeline's ranker defaults: listwise, with dropout (module docstring of dcn)
        options = {**RANKER_DEFAULTS, **{key: raw.pop(key) for key in list(raw) if key in model_keys}}
        got = _table(f"{name}: ranker", raw, RankerSpec, skip=("options",))
        if "run" not in got:
            raise GraphrecError(f"{name}: ranker.run: missing (the folder for the ranker's files)")
        ranker = RankerSpec(**got, options=options)
        try:
            RankerConfig(**options)
        except GraphrecError as e:
            raise GraphrecError(f"{name}: ranker: {e}") from None
        except TypeError as e:
            raise GraphrecError(f"{name}: ranker: {e}") from None
        parse_groups(ranker.features, f"{name}: ranker.features")
        if not 0 < ranker.holdout < 1:
            raise GraphrecError(f"{name}: ranker.holdout: must lie in (0, 1), got {ranker.holdout}")
        if ranker.folds < 1:
            raise GraphrecError(f"{name}: ranker.folds: must be at least 1, got {ranker.folds}")
        if ranker.holdout_method not in ("auto", "random", "temporal"):
            raise GraphrecError(f"{name}: ranker.holdout_method: auto, random or temporal, "
                                f"got {ranker.holdout_method!r}")
    rerank = RerankSpec(**_table(f"{name}: rerank", values.get("rerank", {}), RerankSpec))
    if rerank.method not in RERANKERS:
        raise GraphrecError(f"{name}: rerank.method: one of {', '.join(RERANKERS)}, got {rerank.method!r}")
    if not 0 <= rerank.lam <= 1:
        raise GraphrecError(f"{name}: rerank.lam: must lie in [0, 1], got {rerank.lam}")
    if rerank.similarity not in SIMILARITIES:
        raise GraphrecError(f"{name}: rerank.similarity: one of {', '.join(SIMILARITIES)}, "
                            f"got {rerank.similarity!r}")
    if rerank.depth < 0 or (rerank.depth and rerank.depth < k):
        raise GraphrecError(f"{name}: rerank.depth: 0 or at least k = {k}, got {rerank.depth}")
    if not 0 <= rerank.alpha <= 1:
        raise GraphrecError(f"{name}: rerank.alpha: must lie in [0, 1], got {rerank.alpha}")
    if rerank.history < 0:
        raise GraphrecError(f"{name}: rerank.history: 0 (all) or a number of items, got {rerank.history}")
    if not rerank.llm_timeout > 0:
        raise GraphrecError(f"{name}: rerank.llm_timeout: must be > 0 seconds, got {rerank.llm_timeout}")
    if rerank.llm_workers < 1:
        raise GraphrecError(f"{name}: rerank.llm_workers: must be at least 1, got {rerank.llm_workers}")
    if rerank.method == "llm":
        import os

        from graphrec.serve.llm import ENV_MODEL, ENV_URL, _endpoint

        for key, env in (("llm_url", ENV_URL), ("llm_model", ENV_MODEL)):
            if not (getattr(rerank, key) or os.environ.get(env)):
                raise GraphrecError(f"{name}: rerank.{key}: empty and ${env} is not set")
        try:
            _endpoint(rerank.llm_url or os.environ[ENV_URL])
        except GraphrecError as e:
            raise GraphrecError(f"{name}: rerank.llm_url: {str(e).split(': ', 1)[1]}") from None
    return PipelineConfig(retrievers, n, k, ranker, rerank, path)


def read_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline TOML file."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GraphrecError(f"--config: {path}: no such file") from None
    except IsADirectoryError:
        raise GraphrecError(f"--config: {path}: is a folder, not a pipeline file") from None
    except tomllib.TOMLDecodeError as e:
        raise GraphrecError(f"--config: {path}: {e}") from None
    return parse_config(values, path)


# --------------------------------------------------------------------------------------------
# Runs


def fingerprint(ckpt: Checkpoint) -> str:
    """A hash of what a run's ids mean: its user and item id maps."""
    h = hashlib.sha256()
    for ids in (ckpt.users, ckpt.items):
        h.update(json.dumps([str(x) for x in ids.raw]).encode())
    return h.hexdigest()[:16]


def _run_config(run: Path) -> Any:
    from graphrec.config import resolve

    path = run / "config.json"
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise GraphrecError(f"{path}: not found (not a graphrec run folder)") from None
    return resolve(saved, {})


def _split_key(cfg: Any) -> dict[str, Any]:
    """What decides a run's data and test part (a validation ratio only moves training
    interactions into its validation part; checked after loading)."""
    split_cfg = {k: v for k, v in dataclasses.asdict(cfg.split).items() if k != "valid_ratio"}
    return {"data": dataclasses.asdict(cfg.data), "split": split_cfg}


@dataclass
class Stage1:
    """The retrievers of one level: models, and the histories and exclusions they score with."""

    models: list[Any]
    known: HeteroData  # the interactions known at this level (features, history, exclusion)
    exclude: tuple[Tensor, Tensor]
    history: tuple[Tensor, Tensor]

    def histories(self, users: Tensor) -> list[History | None]:
        """Each model's history rows for ``users`` (``None`` for models that read none)."""
        return [History.of(*self.history, users) if m.uses_history else None for m in self.models]


def _known(graph: HeteroData, parts: Tensor) -> HeteroData:
    return edge_subgraph(graph, (parts == PART_TRAIN) | (parts == PART_VALID))


def _stage1(models: list[Any], known: HeteroData) -> Stage1:
    seq = user_sequences(known)
    return Stage1(models, known, seq, seq)


def _train_like(run_cfg: Any, ds: Dataset, parts: Split, known: HeteroData, progress: bool) -> Any:
    """The run's model, rebuilt from its configuration and trained on ``parts`` (early
    stopping on its validation part), or, for models fitted without a loss, fitted on
    ``known`` (the training and validation parts together, as their runs are)."""
    from graphrec.models import build_model, model_config
    from graphrec.trainer import train_model

    torch.manual_seed(run_cfg.seed)
    model = build_model(run_cfg.model, ds.num_users, ds.num_items,
                        model_config(run_cfg.model, run_cfg.model_options))
    model.fit(parts.train if model.trainable else known)
    if model.trainable:
        train_cfg = dataclasses.replace(run_cfg.train, progress=progress)
        eval_cfg = dataclasses.replace(run_cfg.eval, progress=False)
        train_model(model, parts, train_cfg, eval_cfg)
    return model.eval()


# --------------------------------------------------------------------------------------------
# The pipeline


class Pipeline:
    """Loaded runs, data and (once fitted) the ranker of a :class:`PipelineConfig`."""

    def __init__(self, cfg: PipelineConfig, progress: bool = True, load_ranker: bool = True) -> None:
        from graphrec.data.source import load_data

        self.cfg = cfg
        self.progress = progress
        self.runs: list[Checkpoint] = []
        self.run_cfgs = []
        keys, prints = [], []
        for i, spec in enumerate(cfg.retrievers):
            run = Path(spec.run)
            path = run / CHECKPOINT_NAME
            if not path.exists():
                raise GraphrecError(f"{cfg.where(f'retriever[{i}].run')}: {path} not found "
                                    "(train it with python -m graphrec.train --out RUN)")
            ckpt = load_checkpoint(path)
            ckpt.model.eval()
            self.runs.append(ckpt)
            self.run_cfgs.append(_run_config(run))
            keys.append(_split_key(self.run_cfgs[-1]))
            prints.append(fingerprint(ckpt))
        for i in range(1, len(self.runs)):
            if prints[i] != prints[0]:
                raise GraphrecError(f"{cfg.where(f'retriever[{i}].run')}: {cfg.retrievers[i].run} "
                                    f"was trained on other data than {cfg.retrievers[0].run} "
                                    f"(id maps differ: fingerprint {prints[i]} against {prints[0]})")
            if keys[i] != keys[0]:
                raise GraphrecError(f"{cfg.where(f'retriever[{i}].run')}: {cfg.retrievers[i].run} "
                                    f"used another data file or split than {cfg.retrievers[0].run}: "
                                    f"{keys[i]} against {keys[0]}")
        self.fingerprint = prints[0]
        first = self.run_cfgs[0]
        self.ds: Dataset = load_data(first.data)
        self.split_cfg: SplitConfig = first.split
        self.parts: Split = split(self.ds.graph, self.split_cfg)
        test_key = _pair_keys(self.parts.test, self.ds.num_items)
        for i, run_cfg in enumerate(self.run_cfgs[1:], 1):
            if run_cfg.split != self.split_cfg:
                other = split(self.ds.graph, run_cfg.split).test
                if not torch.equal(_pair_keys(other, self.ds.num_items), test_key):
                    raise GraphrecError(f"{cfg.where(f'retriever[{i}].run')}: {cfg.retrievers[i].run} "
                                        f"has another test part than {cfg.retrievers[0].run}")
        ratios = [c.split.valid_ratio or 0.0 for c in self.run_cfgs]
        self.valid_ratio = max(ratios) or None  # the inner split's, for early stopping
        self.known = _known(self.ds.graph, self.parts.parts)
        self.stage1 = _stage1([c.model for c in self.runs], self.known)
        self.quotas = [s.quota or cfg.n for s in cfg.retrievers]
        self.ranker = None
        self.ranker_meta: dict[str, Any] | None = None
        self._features: FeatureBuilder | None = None
        self._sim: dict[str, Tensor] = {}
        if load_ranker and cfg.ranker is not None and (Path(cfg.ranker.run) / RANKER_WEIGHTS).exists():
            self.load_ranker()

    # ---- stage 2 -----------------------------------------------------------------------------

    def layout(self, graph: HeteroData) -> FeatureLayout:
        """The ranker's feature layout on ``graph``."""
        spec = self.cfg.ranker
        assert spec is not None
        strict = spec.features.strip() != "all"
        return layout_of(graph, parse_groups(spec.features), len(self.runs), strict,
                         self.cfg.where("ranker.features"))

    def inner_split(self, fold: int = 0) -> tuple[HeteroData, Split]:
        """``T`` (training and validation interactions) and its split into ``T \\ H`` (training
        and validation parts) and the holdout ``H`` (the inner test part); each ``fold`` draws
        another holdout."""
        spec = self.cfg.ranker
        assert spec is not None
        T = self.known
        method = spec.holdout_method
        if method == "auto":
            method = self.split_cfg.method if self.split_cfg.method in ("random", "temporal") else "temporal"
        if method == "temporal" and TIME not in T[EDGE]:
            method = "random"
        inner_cfg = SplitConfig(method=method, test_ratio=spec.holdout,
                                valid_ratio=self.valid_ratio, seed=spec.seed + 1 + fold)
        return T, split(T, inner_cfg)

    def ranker_data(self) -> dict[str, Any]:
        """The ranker's training tensors by the leak-free protocol (module docstring), with the
        interactions they were built from: ``dense``, ``tokens``, ``mask``, ``labels``, ``users``,
        ``items`` (the candidates), one row per user and fold; ``folds``: per fold its
        ``holdout`` (``H``), ``inner`` (the split of ``T``), ``known`` (``T \\ H``) and
        ``rows`` (its slice of the tensors); ``layout``; ``recall`` (candidate recall of the
        holdouts)."""
        spec = self.cfg.ranker
        assert spec is not None
        rows: dict[str, list[Tensor]] = {k: [] for k in ("dense", "tokens", "mask", "labels", "users", "items")}
        folds, recalls, layout, start_row = [], [], None, 0
        for fold in range(spec.folds):
            T, inner = self.inner_split(fold)
            log.info("ranker data, fold %d: retraining %d retriever(s) on T \\ H (%s interactions; "
                     "holdout H: %s)", fold, len(self.runs), f"{inner.train[EDGE].num_edges:,}",
                     f"{len(inner.test):,}")
            known = _known(T, inner.parts)
            models = []
            for i, run_cfg in enumerate(self.run_cfgs):
                start = time.perf_counter()
                models.append(_train_like(run_cfg, self.ds, inner, known, self.progress))
                log.info("  retriever %d (%s) retrained in %.1f s", i, run_cfg.model,
                         time.perf_counter() - start)
            stage = _stage1(models, known)
            layout = layout or self.layout(known)
            builder = FeatureBuilder(layout, known)
            users = torch.unique(inner.test.user)
            cand, dense, tokens = self._candidates(stage, builder, users)
            labels = _labels(cand.items, users, inner.test, self.ds.num_items)
            for key, value in (("dense", dense), ("tokens", tokens), ("mask", cand.mask),
                               ("labels", labels), ("users", users), ("items", cand.items)):
                rows[key].append(value)
            recalls.append(float(_candidate_recall(labels, users, inner.test, self.ds.num_users)))
            folds.append({"holdout": inner.test, "inner": inner, "known": known,
                          "rows": slice(start_row, start_row + users.numel())})
            start_row += users.numel()
        out: dict[str, Any] = {k: torch.cat(v) for k, v in rows.items()}
        out.update(folds=folds, layout=layout, recall=sum(recalls) / len(recalls))
        return out

    def _candidates(self, stage: Stage1, builder: FeatureBuilder | None, users: Tensor,
                    batch: int = 256) -> tuple[Candidates, Tensor, Tensor]:
        out_c, out_d, out_t = [], [], []
        for s in range(0, users.numel(), batch):
            u = users[s:s + batch]
            cand = retrieve(stage.models, u, stage.exclude, self.quotas, self.cfg.n, stage.histories(u))
            out_c.append(cand)
            if builder is not None:
                d, t = builder.build(u, cand)
                out_d.append(d)
                out_t.append(t)
        cand = Candidates(torch.cat([c.items for c in out_c]), torch.cat([c.scores for c in out_c]),
                          torch.cat([c.ranks for c in out_c]), torch.cat([c.source for c in out_c]),
                          out_c[0].depth)
        dense = torch.cat(out_d) if out_d else torch.zeros(0)
        tokens = torch.cat(out_t) if out_t else torch.zeros(0, dtype=torch.long)
        return cand, dense, tokens

    def fit_ranker(self) -> dict[str, Any]:
        """Train the ranker by the leak-free protocol and write ``ranker.pt`` and
        ``ranker.json`` into its run folder. Returns the metadata written."""
        from graphrec.models.dcn import CandidateRanker, RankerConfig, fit_ranker

        spec = self.cfg.ranker
        if spec is None:
            raise GraphrecError(f"{self.cfg.where('ranker')}: the pipeline has no [ranker] to fit")
        start = time.perf_counter()
        data = self.ranker_data()
        dense, tokens, mask, labels = data["dense"], data["tokens"], data["mask"], data["labels"]
        mean, std = _moments(dense, mask)
        dense = (dense - mean) / std * mask[..., None]
        # a tenth of the users validate (early stopping): all their folds' rows, so that no
        # user's rows are on both sides
        gen = torch.Generator().manual_seed(spec.seed)
        held = torch.randperm(self.ds.num_users, generator=gen)[:max(1, self.ds.num_users // 10)]
        is_valid = torch.isin(data["users"], held)
        tr, va = torch.nonzero(~is_valid).flatten(), torch.nonzero(is_valid).flatten()
        torch.manual_seed(spec.seed)
        ranker = CandidateRanker(dense.size(2), data["layout"].vocab, RankerConfig(**spec.options))
        history = fit_ranker(ranker, dense[tr], tokens[tr], mask[tr], labels[tr], epochs=spec.epochs,
                             lr=spec.lr, batch_size=spec.batch_size, weight_decay=spec.weight_decay,
                             valid=(dense[va], tokens[va], mask[va], labels[va]),
                             patience=spec.patience, seed=spec.seed, progress=self.progress)
        ranker.eval()
        out = Path(spec.run)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"format": "graphrec-ranker", "fingerprint": self.fingerprint,
                "retrievers": [s.run for s in self.cfg.retrievers], "n": self.cfg.n,
                "ranker": ranker.config_dict(), "layout": data["layout"].to_dict(),
                "mean": mean.flatten().tolist(), "std": std.flatten().tolist(),
                "protocol": {"folds": len(data["folds"]),
                             "holdout": sum(len(f["holdout"]) for f in data["folds"]),
                             "users": int(data["users"].numel()),
                             "retrained_on": int(data["folds"][0]["inner"].train[EDGE].num_edges),
                             "candidate_recall": data["recall"]},
                "history": history, "seconds": time.perf_counter() - start}
        from graphrec.utils import atomic_torch_save

        atomic_torch_save(out / RANKER_WEIGHTS, ranker.state_dict())
        atomic_write_json(out / RANKER_META, meta)
        self.ranker, self.ranker_meta, self._features = ranker, meta, None
        return meta

    def load_ranker(self) -> None:
        """Load the fitted ranker of the config's ``[ranker] run``; a ranker fitted for other
        data or retrievers is a one-line error."""
        from graphrec.models.dcn import ranker_from_dict

        spec = self.cfg.ranker
        assert spec is not None
        folder = Path(spec.run)
        try:
            meta = json.loads((folder / RANKER_META).read_text())
        except FileNotFoundError:
            raise GraphrecError(f"{self.cfg.where('ranker.run')}: {folder / RANKER_META} not found "
                                "(fit it with --fit)") from None
        if meta.get("fingerprint") != self.fingerprint:
            raise GraphrecError(f"{self.cfg.where('ranker.run')}: the ranker in {folder} was fitted "
                                "on other data (id maps differ); refit it with --fit")
        if meta.get("retrievers") != [s.run for s in self.cfg.retrievers] or meta.get("n") != self.cfg.n:
            raise GraphrecError(f"{self.cfg.where('ranker.run')}: the ranker in {folder} was fitted "
                                f"for retrievers {meta.get('retrievers')} and n = {meta.get('n')}; "
                                "refit it with --fit")
        ranker = ranker_from_dict(meta["ranker"])
        ranker.load_state_dict(torch.load(folder / RANKER_WEIGHTS, weights_only=True))
        self.ranker, self.ranker_meta = ranker.eval(), meta
        self._features = None

    def features(self) -> FeatureBuilder:
        """The test-time feature builder (features from ``T``), built once."""
        if self._features is None:
            assert self.ranker_meta is not None
            self._features = FeatureBuilder(FeatureLayout.from_dict(self.ranker_meta["layout"]), self.known)
        return self._features

    @torch.no_grad()
    def rank(self, dense: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Ranker scores ``[B, N]`` of standardized features (-inf at pads)."""
        assert self.ranker is not None and self.ranker_meta is not None
        mean = torch.tensor(self.ranker_meta["mean"])
        std = torch.tensor(self.ranker_meta["std"])
        dense = (dense - mean) / std * mask[..., None]
        return self.ranker(dense, tokens, mask).masked_fill(~mask, float("-inf"))

    # ---- stage 3 -----------------------------------------------------------------------------

    def similarity_vectors(self) -> Tensor:
        """``[num_items, F]`` unit vectors whose cosines are the re-ranker's item similarity
        (``rerank.similarity``), built once per kind."""
        kind = self.cfg.rerank.similarity
        if kind in self._sim:
            return self._sim[kind]
        if kind == "vectors":
            model = self.runs[0].model
            if not hasattr(model, "item_vectors"):
                raise GraphrecError(f"{self.cfg.where('rerank.similarity')}: 'vectors' needs a first "
                                    f"retriever with item vectors ({self.runs[0].model_name} has none); "
                                    "use genres or cooccurrence")
            with torch.no_grad():
                vec = model.item_vectors().float()
        elif kind == "genres":
            vec = self.genres()
            if vec is None:
                raise GraphrecError(f"{self.cfg.where('rerank.similarity')}: 'genres' needs a "
                                    "multi-hot item feature; the data has none")
        else:
            import scipy.sparse as sp

            ptr, items = user_sequences(self.known)
            R = sp.csr_matrix((np.ones(items.numel(), dtype=np.float32), items.numpy(), ptr.numpy()),
                              shape=(self.ds.num_users, self.ds.num_items))
            vec = torch.from_numpy(np.asarray(R.T.todense(), dtype=np.float32))
        self._sim[kind] = torch.nn.functional.normalize(vec, dim=1)
        return self._sim[kind]

    def genres(self) -> Tensor | None:
        """The items' first multi-hot (float matrix) feature, or ``None``."""
        for value in self.ds.graph[ITEM].values():
            if isinstance(value, Tensor) and value.dim() == 2 and value.is_floating_point():
                return value.float()
        return None

    def rerank(self, scores: Tensor, items: Tensor, k: int, users: Tensor | None = None) -> Tensor:
        """Positions ``[B, k]`` into ``items [B, M]`` chosen by the re-ranker (-1 pads);
        ``users [B]`` (dense) for the re-rankers that read the users' histories."""
        from graphrec.serve import rerank as rr

        spec = self.cfg.rerank
        mask = (items >= 0) & torch.isfinite(scores)
        if spec.freshness_weight > 0 and TIME in self.known[EDGE]:
            scores = rr.freshness_boost(scores, self._item_time()[items.clamp(min=0)],
                                        now=float(self.known[EDGE][TIME].max()),
                                        half_life=spec.half_life_days * 86400.0,
                                        weight=spec.freshness_weight)
        if spec.method == "none":
            top = torch.topk(scores.masked_fill(~mask, float("-inf")), k, dim=1)
            return top.indices.masked_fill(~torch.isfinite(top.values), -1)
        if spec.method in ("semantic", "llm"):
            if users is None:
                raise GraphrecError(f"{self.cfg.where('rerank.method')}: {spec.method} needs the "
                                    "users whose lists it re-ranks")
            # the known interactions of this level (all of them once serving), oldest first
            history = History.of(*self.stage1.history, users)
            if spec.method == "semantic":
                from graphrec.serve.semantic import history_vectors, semantic

                emb = self._text_embeddings()
                return semantic(scores.masked_fill(~mask, float("-inf")), emb[items.clamp(min=0)],
                                history_vectors(emb, history, spec.history), k, spec.alpha, mask=mask)
            return self._llm().rerank(scores, items, history, k, mask=mask)
        vec = self.similarity_vectors()[items.clamp(min=0)]
        fn = rr.mmr if spec.method == "mmr" else rr.dpp
        return fn(scores.masked_fill(~mask, float("-inf")), vec, k, spec.lam, mask=mask)

    def _text_embeddings(self) -> Tensor:
        """The items' ``text_emb`` (the semantic re-ranker's vectors), read once."""
        if "text_emb" not in self._sim:  # the re-ranker's item vectors live in one cache
            from graphrec.data.text import text_embeddings

            self._sim["text_emb"] = text_embeddings(self.ds.graph, f"{self.cfg.where('rerank.method')}: "
                                                    "semantic")
        return self._sim["text_emb"]

    def _llm(self) -> Any:
        """The LLM re-ranker of ``[rerank]``, made on first use and again when its settings
        change (a sweep assigns ``cfg.rerank``)."""
        from graphrec.serve.llm import ChatClient, LLMReranker

        spec = self.cfg.rerank
        key = (spec.llm_url, spec.llm_model, spec.llm_timeout, spec.history, spec.llm_workers)
        held = getattr(self, "_llm_reranker", None)  # set here only: stage 3 owns it
        if held is None or held[0] != key:
            titles = self.titles
            if not titles:
                raise GraphrecError(f"{self.cfg.where('rerank.method')}: llm needs item titles; "
                                    "the data has none")
            client = ChatClient(spec.llm_url or None, spec.llm_model or None, timeout=spec.llm_timeout)
            held = (key, LLMReranker(client, titles, max_history=spec.history, workers=spec.llm_workers))
            self._llm_reranker = held
        return held[1]

    def _item_time(self) -> Tensor:
        """Each item's first known interaction time (its release, as far as the data knows)."""
        store = self.known[EDGE]
        first = torch.full((self.ds.num_items,), float(store[TIME].max()))
        return first.scatter_reduce(0, store.edge_index[1], store[TIME].double().float(), "amin")

    # ---- all stages --------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, users: Tensor, k: int | None = None, batch: int = 256) -> dict[str, Tensor]:
        """Every stage for dense ``users``: ``candidates [B, N]``, ``ranked [B, N]`` (the
        candidates in ranker order, or the fused order without a ranker), ``ranked_scores``,
        ``final [B, k]`` (item indices, -1 pads) and ``final_scores``."""
        k = k or self.cfg.k
        out: dict[str, list[Tensor]] = {"candidates": [], "ranked": [], "ranked_scores": [],
                                        "final": [], "final_scores": []}
        builder = self.features() if self.ranker is not None else None
        for s in range(0, users.numel(), batch):
            u = users[s:s + batch]
            cand, dense, tokens = self._candidates(self.stage1, builder, u, batch)
            if self.ranker is not None:
                scores = self.rank(dense, tokens, cand.mask)
            else:  # the fused order: earlier is better
                n = cand.items.size(1)
                scores = (n - torch.arange(n, dtype=torch.float32)).expand(cand.items.shape).clone()
                scores = scores.masked_fill(~cand.mask, float("-inf"))
            order = torch.argsort(scores, dim=1, descending=True, stable=True)
            ranked = cand.items.gather(1, order)
            ranked_scores = scores.gather(1, order)
            final, final_scores = self.finalize(ranked, ranked_scores, k, users=u)
            for key, v in (("candidates", cand.items), ("ranked", ranked), ("ranked_scores", ranked_scores),
                           ("final", final), ("final_scores", final_scores)):
                out[key].append(v)
        return {key: torch.cat(v) for key, v in out.items()}

    def finalize(self, ranked: Tensor, ranked_scores: Tensor, k: int, batch: int = 256,
                 users: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Stage 3 over ranked lists ``[B, N]`` of dense ``users [B]``: the final items and
        scores ``[B, k]``."""
        depth = self.cfg.rerank.depth or ranked.size(1)
        finals, scores = [], []
        for s in range(0, ranked.size(0), batch):
            r, rs = ranked[s:s + batch, :depth], ranked_scores[s:s + batch, :depth]
            pos = self.rerank(rs, r, k, None if users is None else users[s:s + batch])
            finals.append(r.gather(1, pos.clamp(min=0)).masked_fill(pos < 0, -1))
            scores.append(rs.gather(1, pos.clamp(min=0)).masked_fill(pos < 0, float("-inf")))
        return torch.cat(finals), torch.cat(scores)

    def evaluate(self, cache: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stage-by-stage metrics on the test part: candidate Recall@N of the fused list and of
        each retriever alone, Recall/NDCG@K of the ranked list and of the final one, and the
        final lists' beyond-accuracy metrics.

        ``cache``: a dict kept by the caller; stages 1 and 2 are computed into it once, so
        that evaluating other re-rankers (``self.cfg.rerank``) redoes stage 3 only."""
        from graphrec.evaluation import beyond

        test = self.parts.test
        users = torch.unique(test.user)
        k = self.cfg.k
        cache = {} if cache is None else cache
        if "res" not in cache:
            cache["res"] = self.run(users)
            cache["alone"] = [self._alone(i, users) for i in range(len(self.runs))]
        res = dict(cache["res"])
        res["final"], res["final_scores"] = self.finalize(res["ranked"], res["ranked_scores"], k,
                                                          users=users)
        num_items = self.ds.num_items
        out: dict[str, Any] = {"users": int(users.numel()), "n": self.cfg.n, "k": k}
        out[f"candidates.recall@{self.cfg.n}"] = float(_candidate_recall(
            _labels(res["candidates"], users, test, num_items), users, test, self.ds.num_users))
        for i, ckpt in enumerate(self.runs):
            alone = cache["alone"][i]
            out[f"retriever{i}.{ckpt.model_name}.recall@{self.cfg.n}"] = float(_candidate_recall(
                _labels(alone, users, test, num_items), users, test, self.ds.num_users))
        for stage, key in (("ranked", "ranked"), ("final", "final")):
            hits = _labels(res[key][:, :max(k, 1)], users, test, num_items).bool()
            n_rel = _n_rel(users, test, self.ds.num_users)
            for m in ("recall", "ndcg"):
                for kk in sorted({k, 10} if k >= 10 else {k}):
                    out[f"{stage}.{m}@{kk}"] = float(METRIC_FUNCTIONS[m](hits, n_rel, kk).double().mean())
        final = res["final"]
        vec = self._diversity_vectors()
        out["final.coverage"] = beyond.coverage(final, num_items)
        if vec is not None:
            out["final.diversity"] = beyond.intra_list_diversity(final, vec)
        out["final.novelty"] = beyond.novelty(final, _degrees(self.known, num_items), self.ds.num_users)
        out["final.gini"] = beyond.gini(final, num_items)
        return out

    def _diversity_vectors(self) -> Tensor | None:
        """Item vectors for intra-list diversity: the multi-hot genres where the data has them,
        else the re-ranker's similarity vectors."""
        genres = self.genres()
        if genres is not None:
            return genres
        try:
            return self.similarity_vectors()
        except GraphrecError:
            return None

    @torch.no_grad()
    def _alone(self, i: int, users: Tensor, batch: int = 256) -> Tensor:
        """Retriever ``i``'s own top ``n`` for ``users``."""
        rows = []
        for s in range(0, users.numel(), batch):
            u = users[s:s + batch]
            hist = self.stage1.histories(u)[i]
            cand = retrieve([self.stage1.models[i]], u, self.stage1.exclude, [self.cfg.n], self.cfg.n, [hist])
            rows.append(cand.items)
        return torch.cat(rows)

    @property
    def titles(self) -> list[str] | None:
        """Item titles, where the data has them."""
        return self.runs[0].titles

    def for_serving(self) -> None:
        """Score as ``recommend`` does: every known interaction (test part included) is the
        users' history, excluded from their lists and counted by the features."""
        self.known = self.ds.graph
        self.stage1 = _stage1(self.stage1.models, self.known)
        self._features = None

    def recommend(self, users: Tensor, k: int | None = None) -> tuple[Tensor, Tensor]:
        """Final item indices and scores ``([B, k], [B, k])`` for dense ``users``: every
        known interaction excluded (serving, as ``recommend`` does)."""
        res = self.run(users, k)
        return res["final"], res["final_scores"]


def _pair_keys(part: Interactions, num_items: int) -> Tensor:
    return torch.sort(part.user.long() * num_items + part.item.long())[0]


def _degrees(graph: HeteroData, num_items: int) -> Tensor:
    return torch.bincount(graph[EDGE].edge_index[1], minlength=num_items).float()


def _n_rel(users: Tensor, heldout: Interactions, num_users: int) -> Tensor:
    ptr, _ = heldout.csr(num_users)
    return (ptr[users + 1] - ptr[users])


def _labels(items: Tensor, users: Tensor, heldout: Interactions, num_items: int) -> Tensor:
    """``[B, N]`` float: 1 where candidate ``items[b, c]`` is a held-out item of ``users[b]``."""
    key = heldout.user.long() * num_items + heldout.item.long()
    key = torch.unique(key)
    cand = users[:, None].long() * num_items + items.clamp(min=0).long()
    pos = torch.searchsorted(key, cand.flatten()).clamp(max=max(key.numel() - 1, 0))
    found = (key[pos] == cand.flatten()).view_as(items) & (items >= 0) if key.numel() else torch.zeros_like(items, dtype=torch.bool)
    return found.float()


def _candidate_recall(labels: Tensor, users: Tensor, heldout: Interactions, num_users: int) -> Tensor:
    """Mean over ``users`` of the share of their held-out items among the candidates."""
    n_rel = _n_rel(users, heldout, num_users).float()
    return (labels.sum(1) / n_rel.clamp(min=1)).mean()


def _moments(dense: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and spread of each dense column over the real candidates (spread 1 where 0)."""
    flat = dense[mask]
    if flat.numel() == 0:
        return torch.zeros(dense.size(2)), torch.ones(dense.size(2))
    mean = flat.mean(0)
    std = flat.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean, std


class PipelineService:
    """A pipeline behind :class:`graphrec.serve.http.Service`: loaded once, known users served
    by every stage (all their known interactions excluded, as ``recommend`` does), unknown users
    by the most-interacted items, marked ``"fallback": "popularity"``."""

    def __init__(self, pipe: Pipeline) -> None:
        import threading

        if pipe.cfg.ranker is not None and pipe.ranker is None:
            raise GraphrecError(f"{pipe.cfg.where('ranker.run')}: no fitted ranker in "
                                f"{pipe.cfg.ranker.run}; run graphrec pipeline --fit first")
        pipe.for_serving()
        self.pipe = pipe
        self._users = {str(raw): i for i, raw in enumerate(pipe.ds.users.raw.tolist())}
        counts = _degrees(pipe.ds.graph, pipe.ds.num_items)
        self._counts = counts
        self._popular = torch.sort(counts, descending=True, stable=True)[1]
        self._lock = threading.Lock()
        pipe.recommend(torch.tensor([0]), 1)  # fail at start, not in the first request

    @classmethod
    def from_config(cls, path: str | Path) -> "PipelineService":
        """The service of pipeline file ``path``."""
        return cls(Pipeline(read_config(path), progress=False))

    def ready(self) -> bool:
        """Always True once constructed: everything loads in the constructor."""
        return True

    def info(self) -> dict[str, Any]:
        """The stages, the data's size and the fallback."""
        cfg = self.pipe.cfg
        return {"model": "pipeline", "retrievers": [c.model_name for c in self.pipe.runs],
                "ranker": (self.pipe.ranker_meta or {}).get("ranker", {}).get("config", {}).get("kind"),
                "rerank": cfg.rerank.method, "n": cfg.n, "k": cfg.k,
                "users": self.pipe.ds.num_users, "items": self.pipe.ds.num_items,
                "index": "exact", "fallback": "popularity"}

    def recommend(self, raw_user: str, k: int, items: list[str] | None = None) -> dict[str, Any]:
        """The final list of ``raw_user``: ``{"user", "items": [{"item", "score", "title"}],
        "fallback"}``."""
        if items:
            raise GraphrecError("items: the pipeline serves the users of its data; serve a run "
                                "(graphrec serve --run) for a new user's items")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise GraphrecError(f"k: must be an integer of at least 1, got {k!r}")
        if k > self.pipe.cfg.n:
            raise GraphrecError(f"k: at most the pipeline's n = {self.pipe.cfg.n}, got {k}")
        user = self._users.get(str(raw_user).strip())
        titles = self.pipe.titles
        raw = self.pipe.ds.items.raw
        if user is None:
            top = self._popular[:k].tolist()
            rows = [(i, float(self._counts[i])) for i in top]
            fallback = "popularity"
        else:
            with self._lock:
                items, scores = self.pipe.recommend(torch.tensor([user]), k)
            rows = [(i, s) for i, s in zip(items[0].tolist(), scores[0].tolist()) if i >= 0]
            fallback = None
        return {"user": raw_user, "fallback": fallback,
                "items": [{"item": raw[i].item() if hasattr(raw[i], "item") else raw[i],
                           "score": float(sc), "title": titles[i] if titles else None}
                          for i, sc in rows]}


__all__ = ["Pipeline", "PipelineConfig", "PipelineService", "RankerSpec", "RerankSpec", "RetrieverSpec",
           "fingerprint", "parse_config", "read_config"]
