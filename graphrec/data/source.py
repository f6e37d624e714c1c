"""Where a run's data comes from: a raw file or folder, a converted graph, or the synthetic set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graphrec.data.graph import Dataset, build, load
from graphrec.data.readers import ColumnNames, RawData, combine_parts, read
from graphrec.data.synthetic import SyntheticConfig, make_synthetic
from graphrec.errors import GraphrecError
from graphrec.schema import PART_TRAIN

GRAPH_SUFFIX = ".pt"


@dataclass
class DataConfig:
    """Args:
        path: raw file, folder (LightGCN train/test pair or one ``.inter`` file), converted graph
            (``.pt``), or ``None`` for the built-in synthetic data set.
        format: reader format, ``None`` to detect it from the name.
        user_col, item_col, rating_col, time_col, header: column names for CSV/TSV/Parquet.
        edge_type: ``format = "pyg"``: the interaction edges, ``"SRC,REL,DST"``.
        test_path, valid_path: a predefined split from separate files of the same format as
            ``path`` (the training part): ``--test-data``, ``--valid-data``.
        unseen_test: ``error`` or ``drop``: held-out rows whose user or item is not in training.
        overlap: ``error`` or ``drop-from-test``: held-out pairs that are training pairs too.
        sep: the field delimiter of a delimited file (one character; ``\\t`` is a tab), which
            then reads as ``csv`` whatever its name.
        min_rating: keep interactions rated at least this (implicit threshold).
        kcore: iterated k-core filter on users and items (0 = off).
        dedup: duplicate (user, item) policy, ``"last"`` or ``"first"``.
        synthetic_seed: seed of the synthetic data set.
        text_cols: item columns to encode into the item attribute ``text_emb``
            (:mod:`graphrec.data.text`); empty: none.
        text_model: the sentence-transformers model folder (``None``: the packaged MiniLM).
        text_dtype: ``float32`` or ``float16`` storage of ``text_emb``.
    """

    path: str | None = None
    format: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    header: bool = True
    edge_type: str | None = None
    sep: str | None = None
    test_path: str | None = None
    valid_path: str | None = None
    unseen_test: str = "error"
    overlap: str = "error"
    min_rating: float | None = None
    kcore: int = 0
    dedup: str = "last"
    synthetic_seed: int = 0
    text_cols: tuple[str, ...] = ()
    text_model: str | None = None
    text_dtype: str = "float32"

    def columns(self) -> ColumnNames:
        return ColumnNames(self.user_col, self.item_col, self.rating_col, self.time_col, self.header)


def is_graph_file(path: Path) -> bool:
    """A converted graph: a ``.pt`` file."""
    return path.is_file() and path.suffix == GRAPH_SUFFIX


def load_data(cfg: DataConfig) -> Dataset:
    """Load or convert the data a run asks for, with item text embeddings when
    ``cfg.text_cols`` names columns (reused from a converted graph that has them)."""
    ds = _load(cfg)
    if cfg.text_cols:
        from graphrec.data.text import add_text_embeddings

        add_text_embeddings(ds, cfg.text_cols, cfg.text_model, cfg.text_dtype)
    elif cfg.text_model is not None:
        raise GraphrecError("--text-model: needs --text-cols (the item columns to encode)")
    return ds


def _load(cfg: DataConfig) -> Dataset:
    if cfg.path is None:
        return build(make_synthetic(SyntheticConfig(seed=cfg.synthetic_seed)), cfg.dedup,
                     cfg.min_rating, cfg.kcore)
    path = Path(cfg.path)
    if is_graph_file(path) and cfg.format != "pyg":
        given = [(flag, value) for flag, value in (
            ("--format", cfg.format), ("--user-col", cfg.user_col), ("--item-col", cfg.item_col),
            ("--rating-col", cfg.rating_col), ("--time-col", cfg.time_col),
            ("--edge-type", cfg.edge_type), ("--sep", cfg.sep), ("--test-data", cfg.test_path),
            ("--valid-data", cfg.valid_path),
            ("--no-header", None if cfg.header else False),
            ("--dedup", None if cfg.dedup == "last" else cfg.dedup)) if value is not None]
        if given:
            raise GraphrecError(f"{given[0][0]}: {path} is already converted; reading options "
                                "apply when converting (python -m graphrec.convert)")
        ds = load(path)
        for option, value, saved in (("--min-rating", cfg.min_rating, ds.meta.get("min_rating")),
                                     ("--kcore", cfg.kcore or None, ds.meta.get("kcore"))):
            if value is not None and value != saved:
                raise GraphrecError(f"{option}: {path} is already converted (with {option[2:]}="
                                    f"{saved}); filter when converting it instead")
        return ds
    raw = read_parts(path, cfg)
    return build(raw, cfg.dedup, cfg.min_rating, cfg.kcore)


def read_parts(path: str | Path | list, cfg: DataConfig) -> RawData:
    """Read ``path`` (and ``cfg``'s test and validation files, when given: a predefined split)
    with ``cfg``'s reading options."""
    def one(p: str | Path | list) -> RawData:
        return read(p, cfg.format, cfg.columns(), cfg.edge_type, cfg.sep, cfg.unseen_test,
                    cfg.overlap)

    if cfg.valid_path and not cfg.test_path:
        raise GraphrecError("--valid-data: needs --test-data (a predefined split)")
    if not cfg.test_path:
        return one(path)
    raws = [one(path), one(cfg.test_path)] + ([one(cfg.valid_path)] if cfg.valid_path else [])
    if any("part" in r.frame and bool((r.frame["part"] != PART_TRAIN).any()) for r in raws):
        raise GraphrecError("--test-data: the data is already a train/test pair (a LightGCN "
                            "folder); give the training file alone")
    return combine_parts(raws[0], raws[1], raws[2] if len(raws) > 2 else None,
                         cfg.unseen_test, cfg.overlap)


__all__ = ["DataConfig", "load_data", "is_graph_file"]
