"""The model registry: a name maps to (model class, config dataclass). No import by string."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from graphrec.errors import GraphrecError
from graphrec.models.base import Ranker, Recommender, Retriever
from graphrec.models.baseline_only import BaselineOnly, BaselineOnlyConfig
from graphrec.models.bert4rec import BERT4Rec, BERT4RecConfig
from graphrec.models.bspm import BSPM, BSPMConfig
from graphrec.models.content_knn import ContentKNN, ContentKNNConfig
from graphrec.models.ease import EASE, EASEConfig
from graphrec.models.gcmc import GCMC, GCMCConfig
from graphrec.models.graph_filter import GraphFilter, GraphFilterConfig
from graphrec.models.hybrid import Hybrid, HybridConfig
from graphrec.models.ials import IALS, IALSConfig
from graphrec.models.knn import ItemKNN, ItemKNNConfig, UserKNN, UserKNNConfig
from graphrec.models.knn_baseline import KNNBaseline, KNNBaselineConfig
from graphrec.models.lightgcn import BPRConfig, LightGCN, LightGCNConfig
from graphrec.models.mf import MF, MFConfig
from graphrec.models.ncf import NCF, MLPRating, MLPRatingConfig, NCFConfig
from graphrec.models.nmf import NMF, NMFConfig
from graphrec.models.poly_filter import PolyFilter, PolyFilterConfig
from graphrec.models.pop import PopConfig, Popularity
from graphrec.models.random import RandomConfig, RandomRecommender
from graphrec.models.sasrec import SASRec, SASRecConfig
from graphrec.models.slim import SLIM, SLIMConfig
from graphrec.models.svd import SVD, SVDConfig
from graphrec.models.svdpp import SVDpp, SVDppConfig
from graphrec.models.turbo_cf import TurboCF, TurboCFConfig
from graphrec.models.two_tower import TwoTower, TwoTowerConfig
from graphrec.names import MODEL_ALIASES, MODEL_NAMES
from graphrec.options import checked

REGISTRY: dict[str, tuple[type[Recommender], type]] = {
    "pop": (Popularity, PopConfig),
    "random": (RandomRecommender, RandomConfig),
    "graph-filter": (GraphFilter, GraphFilterConfig),
    "lightgcn": (LightGCN, LightGCNConfig),
    "bpr": (LightGCN, BPRConfig),
    "mf": (MF, MFConfig),
    "ncf": (NCF, NCFConfig),
    "mlp-rating": (MLPRating, MLPRatingConfig),
    "sasrec": (SASRec, SASRecConfig),
    "bert4rec": (BERT4Rec, BERT4RecConfig),
    "two-tower": (TwoTower, TwoTowerConfig),
    "content-knn": (ContentKNN, ContentKNNConfig),
    "hybrid": (Hybrid, HybridConfig),
    "itemknn": (ItemKNN, ItemKNNConfig),
    "userknn": (UserKNN, UserKNNConfig),
    "ease": (EASE, EASEConfig),
    "slim": (SLIM, SLIMConfig),
    "ials": (IALS, IALSConfig),
    "baseline-only": (BaselineOnly, BaselineOnlyConfig),
    "svd": (SVD, SVDConfig),
    "svdpp": (SVDpp, SVDppConfig),
    "nmf": (NMF, NMFConfig),
    "knn-baseline": (KNNBaseline, KNNBaselineConfig),
    "gcmc": (GCMC, GCMCConfig),
    "bspm": (BSPM, BSPMConfig),
    "turbo-cf": (TurboCF, TurboCFConfig),
    "poly-filter": (PolyFilter, PolyFilterConfig),
}
ALIASES = MODEL_ALIASES
assert tuple(REGISTRY) == MODEL_NAMES, "graphrec.names.MODEL_NAMES lists the registry"


def canonical_name(name: str) -> str:
    """The registered name of ``name`` (aliases such as ``gfcf`` resolved)."""
    return ALIASES.get(name, name)


def model_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name`` filled from ``values``; unknown keys are errors."""
    name = canonical_name(name)
    if name not in REGISTRY:
        raise GraphrecError(f"--model: unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    cls = REGISTRY[name][1]
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GraphrecError(f"model {name}: unknown option {unknown[0]!r}; options are "
                            f"{', '.join(sorted(known)) or 'none'}")
    return cls(**checked(cls, values, f"model {name} option "))


def build_model(name: str, num_users: int, num_items: int, cfg: Any = None) -> Recommender:
    """Instantiate registered model ``name``."""
    name = canonical_name(name)
    model_cls, cfg_cls = REGISTRY[name] if name in REGISTRY else (None, None)
    if model_cls is None:
        raise GraphrecError(f"--model: unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    return model_cls(num_users, num_items, cfg if cfg is not None else cfg_cls())


__all__ = ["REGISTRY", "ALIASES", "Recommender", "Retriever", "Ranker", "build_model",
           "canonical_name", "model_config"]
