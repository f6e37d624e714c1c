"""Builder: raw interactions -> one bipartite ``HeteroData`` graph, plus id maps and metadata.

The builder is vectorized end to end (pandas/numpy/torch): id factorization, the duplicate
policy, the implicit threshold, k-core filtering, sorting edges by (user, time), the per-user
sequence CSR and side-feature encoding. Saved graphs are a dict of tensors, strings and numbers
that ``torch.load(weights_only=True)`` reads without running pickled code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData

from graphrec.data.readers import RawData
from graphrec.errors import GraphrecError
from graphrec.names import DEDUP_POLICIES
from graphrec.schema import (EDGE, ITEM, PART, PART_TEST, RATING, RESERVED_NODE_ATTRS, REV_EDGE,
                             TIME, USER)
from graphrec.utils import atomic_torch_save, load_artifact

log = logging.getLogger(__name__)

FILE_FORMAT = "graphrec-graph"
FILE_VERSION = 1
MAX_MULTI_HOT = 256  # token_seq columns with more distinct tokens stay text (titles, say)


@dataclass
class IdMap:
    """Raw id <-> dense index for one node type. ``raw[i]`` is the raw id of node ``i``."""

    raw: np.ndarray  # int64, or object array of str

    def __len__(self) -> int:
        return len(self.raw)

    @classmethod
    def from_index(cls, uniques: pd.Index) -> "IdMap":
        """From the sorted uniques of ``pd.factorize``: int64 ids stay ints, others become str."""
        if uniques.dtype.kind == "i":
            return cls(uniques.to_numpy().astype(np.int64))
        return cls(np.array([str(x) for x in uniques], dtype=object))

    @property
    def is_int(self) -> bool:
        """Whether the raw ids are integers (else strings)."""
        return self.raw.dtype.kind == "i"

    def to_raw(self, index: torch.Tensor | np.ndarray) -> np.ndarray:
        """Dense indices -> raw ids."""
        idx = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        return self.raw[idx]

    def to_index(self, raw_ids: Any, what: str = "id") -> np.ndarray:
        """Raw ids (given as ints or strings) -> dense indices; an unknown id is an error."""
        index = self.lookup(raw_ids)
        if (index < 0).any():
            values = np.atleast_1d(np.asarray(raw_ids, dtype=object))
            raise GraphrecError(f"unknown {what} {str(values[index < 0][0])!r}")
        return index

    def lookup(self, raw_ids: Any) -> np.ndarray:
        """Raw ids (given as ints or strings) -> dense indices, -1 where unknown."""
        values = pd.Series(np.atleast_1d(np.asarray(raw_ids, dtype=object)))
        if self.is_int:
            as_int = pd.to_numeric(values.astype(str), errors="coerce")
            bad = (as_int.isna() | (as_int != as_int.round())).to_numpy()  # "7.5" is not 7
            index = np.full(len(values), -1, dtype=np.int64)
            if (~bad).any():
                index[~bad] = pd.Index(self.raw).get_indexer(as_int[~bad].astype("int64").to_numpy())
            return index
        return pd.Index(self.raw).get_indexer(values.astype(str).to_numpy())


@dataclass
class Dataset:
    """A graph with its id maps and metadata: what ``convert`` writes and ``load`` returns."""

    graph: HeteroData
    users: IdMap
    items: IdMap
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return int(self.graph[USER].num_nodes)

    @property
    def num_items(self) -> int:
        return int(self.graph[ITEM].num_nodes)

    @property
    def num_interactions(self) -> int:
        return int(self.graph[EDGE].edge_index.size(1))


# --------------------------------------------------------------------------------------------
# The graph primitive, shared by the builder, the splits and the synthetic generator


def make_graph(
    num_users: int,
    num_items: int,
    user: torch.Tensor,
    item: torch.Tensor,
    edge_attrs: dict[str, torch.Tensor] | None = None,
    user_attrs: dict[str, Any] | None = None,
    item_attrs: dict[str, Any] | None = None,
) -> HeteroData:
    """Assemble a schema graph from edges: sorts them by (user, time, given order) and adds the
    reverse edge type. Each user's time-ordered items are then one contiguous run of the edges
    (:func:`user_sequences` reads them without sorting).

    Args:
        num_users, num_items: node counts.
        user, item: ``[E]`` int64 dense indices.
        edge_attrs: optional ``[E]`` tensors (``rating``, ``time``, ``part``).
        user_attrs, item_attrs: node side features (tensors with ``num_nodes`` rows, or lists).
    """
    edge_attrs = dict(edge_attrs or {})
    user = user.long()
    item = item.long()
    # Stable sort by user, then time when present: the per-user sequences are time-ordered.
    time = edge_attrs.get(TIME)
    same_user = user[1:] == user[:-1]
    ordered = bool((user[1:] >= user[:-1]).all()) and (
        time is None or bool(((time[1:] >= time[:-1]) | ~same_user).all()))
    if not ordered:  # build() passes them ordered already
        order = torch.from_numpy(_edge_order(user.numpy(), None if time is None else time.numpy()))
        user, item = user[order], item[order]
        edge_attrs = {k: v[order] for k, v in edge_attrs.items()}

    data = HeteroData()
    data[USER].num_nodes = int(num_users)
    data[ITEM].num_nodes = int(num_items)
    for store, attrs in ((data[USER], user_attrs), (data[ITEM], item_attrs)):
        for name, value in (attrs or {}).items():
            store[name] = value
    data[EDGE].edge_index = torch.stack([user, item])
    for name, value in edge_attrs.items():
        data[EDGE][name] = value
    data[REV_EDGE].edge_index = torch.stack([item, user])
    for name, value in edge_attrs.items():
        data[REV_EDGE][name] = value
    return data


def _edge_order(user: np.ndarray, time: np.ndarray | None) -> np.ndarray:
    """The stable order by (user, time) of edges in file order, as one sort of one int64 key
    where it fits (two stable sorts otherwise)."""
    user_t = torch.from_numpy(np.ascontiguousarray(user, dtype=np.int64))
    if time is None:
        return torch.argsort(user_t, stable=True).numpy()
    t = torch.from_numpy(np.array(time, dtype=np.int64))  # a copy: the frame's may be read-only
    low, span = (int(t.min()), int(t.max()) - int(t.min()) + 1) if t.numel() else (0, 1)
    if (int(user_t.max()) + 1 if user_t.numel() else 1) * span < 2**62:
        return torch.argsort(user_t * span + (t - low), stable=True).numpy()
    by_time = torch.argsort(t, stable=True)
    return by_time[torch.argsort(user_t[by_time], stable=True)].numpy()


def _plain(value: Any) -> Any:
    """A raw id as a Python value (numpy scalars print as themselves)."""
    return value.item() if hasattr(value, "item") else value


def check_schema(graph: HeteroData, what: str = "graph") -> None:
    """A one-line error unless ``graph`` follows graphrec's schema: ``user`` and ``item`` nodes
    and ``('user', 'interacts', 'item')`` edges. Graphs with other names (a PyG data set's
    ``('user', 'rates', 'movie')``) come in through ``--format pyg``
    (:func:`graphrec.data.readers.read_pyg`)."""
    if not isinstance(graph, HeteroData):
        raise GraphrecError(f"{what}: expected a torch_geometric HeteroData, got {type(graph).__name__}")
    if EDGE not in graph.edge_types:
        found = ", ".join(str(t) for t in graph.edge_types) or "none"
        raise GraphrecError(f"{what}: no {EDGE} edges (edge types: {found}); read other names "
                            "with --format pyg --edge-type SRC,REL,DST")
    for node in (USER, ITEM):
        if graph[node].num_nodes is None:
            raise GraphrecError(f"{what}: node type {node!r} has no num_nodes")


def user_sequences(graph: HeteroData) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's items in time order, as CSR: ``(ptr [num_users + 1], items [E])``, read from
    the interaction edges (ordered by time where the edges have ``time``, ties and untimed
    edges in edge order).

    Computed from the edges on each call, never stored on the graph, so it is right after any
    PyG transform (``subgraph``, ``RandomLinkSplit``, batching). Graphs built by graphrec keep
    their edges sorted by (user, time): then this is one ``bincount`` and ``items`` is a view of
    the edges, no copy; otherwise one stable sort."""
    check_schema(graph)
    store = graph[EDGE]
    user, item = store.edge_index[0], store.edge_index[1]
    num_users = int(graph[USER].num_nodes)
    time = store[TIME] if TIME in store else None
    if user.numel() > 1:
        later = user[1:] > user[:-1]
        ordered = bool((later | (user[1:] == user[:-1])).all())
        if ordered and time is not None:
            ordered = bool((later | (time[1:] >= time[:-1])).all())
        if not ordered:
            order = torch.arange(user.numel(), device=user.device)
            if time is not None:
                order = torch.argsort(time, stable=True)
            order = order[torch.argsort(user[order], stable=True)]
            user, item = user[order], item[order]
    counts = torch.bincount(user, minlength=num_users)
    ptr = torch.zeros(num_users + 1, dtype=torch.long, device=user.device)
    ptr[1:] = counts.cumsum(0)
    return ptr, item


def edge_attrs_of(graph: HeteroData) -> dict[str, torch.Tensor]:
    """The optional per-edge attributes (rating, time, part) of the interaction edges."""
    store = graph[EDGE]
    return {k: store[k] for k in (RATING, TIME, PART) if k in store}


def node_attrs_of(graph: HeteroData, node_type: str) -> dict[str, Any]:
    """Side features of a node type (everything on its store but the node count)."""
    store = graph[node_type]
    return {k: v for k, v in store.items() if k != "num_nodes"}


def edge_subgraph(graph: HeteroData, mask: torch.Tensor) -> HeteroData:
    """The same nodes and side features with only the interaction edges where ``mask`` holds."""
    ei = graph[EDGE].edge_index
    attrs = {k: v[mask] for k, v in edge_attrs_of(graph).items() if k != PART}
    return make_graph(
        graph[USER].num_nodes, graph[ITEM].num_nodes, ei[0][mask], ei[1][mask], attrs,
        node_attrs_of(graph, USER), node_attrs_of(graph, ITEM),
    )


# --------------------------------------------------------------------------------------------
# Builder


def _kcore(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Mask of the interactions that survive iterated k-core filtering (every kept user and item
    has at least ``k`` kept interactions)."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        uc = np.bincount(user[keep], minlength=user.max() + 1 if len(user) else 0)
        ic = np.bincount(item[keep], minlength=item.max() + 1 if len(item) else 0)
        new = keep & (uc[user] >= k) & (ic[item] >= k)
        if new.sum() == keep.sum():
            return new
        keep = new


def _align_ids(feature_ids: pd.Index, ids: np.ndarray) -> np.ndarray:
    """Row of each node in a feature table (-1 when absent); int and str ids meet as strings."""
    if (feature_ids.dtype.kind == "i") != (ids.dtype.kind == "i"):
        return pd.Index(feature_ids.astype(str)).get_indexer(ids.astype(str))
    return feature_ids.get_indexer(ids)


def _encode_features(
    frame: pd.DataFrame, types: dict[str, str], ids: np.ndarray, node: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Encode a side-feature table for the nodes ``ids`` (in index order).

    token -> int64 codes, 0 = missing; token_seq -> multi-hot float32 (text when the vocabulary
    exceeds :data:`MAX_MULTI_HOT`); float -> float32, missing = 0; float_seq -> float32 rows
    padded with 0. Returns the attributes and their description (vocabularies) for the metadata.
    """
    rows = _align_ids(frame.index, ids)
    present = rows >= 0
    attrs: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name, typ in types.items():
        if name in RESERVED_NODE_ATTRS:
            raise GraphrecError(f"{node} feature {name!r}: the name is reserved by the graph schema")
        col = frame[name]
        if typ == "float_vec":  # one float vector per node (PyG's x), kept as a matrix
            values = col.to_numpy()
            width = len(values[0]) if len(values) else 0
            mat = np.zeros((len(ids), width), dtype=np.float32)
            if present.any():
                mat[present] = np.stack(values[rows[present]]).astype(np.float32)
            attrs[name] = torch.from_numpy(mat)
            info[name] = {"type": typ}
            continue
        if typ == "float":
            vals = np.zeros(len(ids), dtype=np.float32)
            v = col.to_numpy(dtype=np.float32, na_value=np.nan)[rows[present]]
            vals[present] = np.nan_to_num(v, nan=0.0)
            attrs[name] = torch.from_numpy(vals)
            info[name] = {"type": typ}
            continue
        text = col.astype(str).to_numpy()[np.where(present, rows, 0)]
        text = np.where(present, text, "")
        if typ == "token":
            vocab, codes = np.unique(text, return_inverse=True)
            if vocab[0] != "":  # keep code 0 for "missing"
                vocab, codes = np.concatenate([[""], vocab]), codes + 1
            attrs[name] = torch.from_numpy(codes.astype(np.int64))
            info[name] = {"type": typ, "vocab": vocab.tolist()}
        elif typ == "token_seq":
            tokens = [t.split() for t in text]
            lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
            flat = np.array([t for ts in tokens for t in ts], dtype=object)
            vocab, codes = (np.unique(flat, return_inverse=True) if len(flat)
                            else (np.array([], dtype=object), np.array([], dtype=np.int64)))
            if len(vocab) > MAX_MULTI_HOT:
                attrs[name] = [str(t) for t in text]
                info[name] = {"type": "text"}
            else:
                multi = torch.zeros(len(ids), len(vocab))
                row = torch.from_numpy(np.repeat(np.arange(len(ids)), lengths))
                multi[row, torch.from_numpy(codes.astype(np.int64))] = 1.0
                attrs[name] = multi
                info[name] = {"type": "multi_hot", "vocab": [str(v) for v in vocab]}
        else:  # float_seq
            seqs = [np.array(t.split(), dtype=np.float32) if t else np.zeros(0, np.float32) for t in text]
            width = max((len(s) for s in seqs), default=0)
            mat = np.zeros((len(ids), width), dtype=np.float32)
            for i, s in enumerate(seqs):  # one row per node, not per interaction
                mat[i, : len(s)] = s
            attrs[name] = torch.from_numpy(mat)
            info[name] = {"type": typ}
    info["_coverage"] = float(present.mean()) if len(ids) else 0.0
    return attrs, info


def _factorize_sorted(ids: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(ids, sort=True)``; integer ids in a range a few times their count (the
    usual case) by a presence table instead of a hash table, a few passes over the column."""
    values = ids.to_numpy()
    if values.dtype == np.int64 and len(values):
        low, high = int(values.min()), int(values.max())
        if high - low < 8 * len(values) + 1024:
            present = np.zeros(high - low + 1, dtype=bool)
            shifted = values - low
            present[shifted] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return code_of[shifted], pd.Index(np.flatnonzero(present) + low)
    return pd.factorize(ids, sort=True)


def _duplicated(keys: Any, keep: str | bool) -> np.ndarray:
    """``pandas.Series.duplicated(keep=...)`` of ``keys``: for int64 keys by one stable sort,
    which is fast here because the edges come user-major (the keys are nearly sorted already)."""
    if not isinstance(keys, np.ndarray):
        return pd.Series(keys).duplicated(keep=keep).to_numpy()  # a MultiIndex
    order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    same_next = np.zeros(len(keys), dtype=bool)
    same_next[:-1] = ranked[1:] == ranked[:-1]
    same_prev = np.zeros(len(keys), dtype=bool)
    same_prev[1:] = same_next[:-1]
    dup = {"first": same_prev, "last": same_next, False: same_prev | same_next}[keep]
    out = np.empty(len(keys), dtype=bool)
    out[order] = dup
    return out


def build(
    raw: RawData,
    dedup: str = "last",
    min_rating: float | None = None,
    kcore: int = 0,
) -> Dataset:
    """Build the schema graph from a reader's output.

    Args:
        raw: what a reader returned.
        dedup: duplicate (user, item) pairs keep the ``"last"`` interaction (latest time, else
            latest in file order: the user's current opinion) or the ``"first"``. Counted in
            ``meta["duplicates"]``.
        min_rating: keep only interactions rated at least this (the implicit threshold).
        kcore: iteratively drop users and items with fewer than ``kcore`` interactions.
    """
    if dedup not in DEDUP_POLICIES:
        raise GraphrecError(f"--dedup: unknown policy {dedup!r}; choose one of {DEDUP_POLICIES}")
    if kcore < 0:
        raise GraphrecError(f"--kcore: must be >= 0, got {kcore}")
    frame = raw.frame.reset_index(drop=True)
    n_read = len(frame)
    meta: dict[str, Any] = {"source": raw.source, "format": raw.format, "read": n_read,
                            **raw.notes}

    if min_rating is not None:
        if RATING not in frame:
            raise GraphrecError(f"--min-rating: {raw.source} has no ratings to threshold")
        frame = frame[frame[RATING].to_numpy() >= min_rating]
        meta["min_rating"] = float(min_rating)
        meta["below_min_rating"] = n_read - len(frame)

    # Dense ids: sorted raw ids, so integer ids 0..n-1 map to themselves. Dropping duplicates
    # keeps one copy of every pair, so the ids are the same before and after.
    user_codes, user_raw = _factorize_sorted(frame["user"])
    item_codes, item_raw = _factorize_sorted(frame["item"])
    columns = {name: frame[name].to_numpy() for name in (RATING, TIME, PART) if name in frame}
    # The edge order of the graph, (user, time, file order), made once: a pair's copies are then
    # in time order (file order on equal times) for keeping the last or the first. The frame
    # itself is never reordered; ``rows`` indexes it.
    rows = _edge_order(user_codes, columns.get(TIME))
    user, item = user_codes[rows].astype(np.int64), item_codes[rows].astype(np.int64)
    part = columns[PART][rows] if PART in columns else None

    # Duplicates: within each predefined part, then across parts (that would be leakage).
    n_before = len(rows)
    if len(user_raw) * len(item_raw) < 2**60:  # one int64 key per pair: hashing one column
        pair = user * len(item_raw) + item
        keys: Any = pair * 4 + part if part is not None else pair
    else:
        pair = pd.MultiIndex.from_arrays([user, item])
        keys = pd.MultiIndex.from_arrays([user, item] + ([part] if part is not None else []))
    keep = ~_duplicated(keys, dedup)
    if not keep.all():
        rows, user, item, pair = rows[keep], user[keep], item[keep], pair[keep]
    if part is not None:
        cross = _duplicated(pair, False)
        if cross.any():
            first = int(np.flatnonzero(cross)[0])
            raise GraphrecError(
                f"{raw.source}: user {_plain(user_raw[user[first]])!r} has item "
                f"{_plain(item_raw[item[first]])!r} in both the training and the test file "
                f"({int(cross.sum()) // 2} such pairs); that would leak test data")
    meta["duplicates"] = n_before - len(rows)
    meta["dedup"] = dedup

    if kcore > 1:
        keep = _kcore(user, item, kcore)
        meta["kcore"] = kcore
        meta["kcore_removed"] = int((~keep).sum())
        rows, user, item = rows[keep], user[keep], item[keep]
        kept_users, user = np.unique(user, return_inverse=True)  # codes keep the raw-id order
        kept_items, item = np.unique(item, return_inverse=True)
        user_raw, item_raw = user_raw[kept_users], item_raw[kept_items]
    if len(rows) == 0:
        raise GraphrecError(f"{raw.source}: no interactions left after filtering "
                            f"(min_rating={min_rating}, kcore={kcore})")
    users, items = IdMap.from_index(user_raw), IdMap.from_index(item_raw)
    edge_attrs = {}
    if RATING in columns:
        edge_attrs[RATING] = torch.from_numpy(columns[RATING][rows].astype(np.float32))
    if TIME in columns:
        edge_attrs[TIME] = torch.from_numpy(columns[TIME][rows].astype(np.int64))
    if PART in columns:
        edge_attrs[PART] = torch.from_numpy(columns[PART][rows].astype(np.int8))

    features: dict[str, Any] = {}
    node_attrs: dict[str, dict[str, Any]] = {USER: {}, ITEM: {}}
    for node, idmap, table in ((USER, users, raw.user_features), (ITEM, items, raw.item_features)):
        if table is not None:
            node_attrs[node], features[node] = _encode_features(
                table, raw.feature_types[node], idmap.raw, node
            )
    graph = make_graph(
        len(users), len(items),
        torch.from_numpy(user), torch.from_numpy(item),
        edge_attrs, node_attrs[USER], node_attrs[ITEM],
    )
    meta["features"] = features
    meta["has_rating"] = RATING in columns
    meta["has_time"] = TIME in columns
    meta["given_split"] = bool(PART in columns and (columns[PART] == PART_TEST).any())
    return Dataset(graph, users, items, meta)


# --------------------------------------------------------------------------------------------
# Summary, save and load


def summary(ds: Dataset) -> dict[str, Any]:
    """Counts a user wants to see after conversion: sizes, density, sequence lengths."""
    lengths = user_sequences(ds.graph)[0].diff().float()
    out: dict[str, Any] = {
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "density": ds.num_interactions / max(1, ds.num_users * ds.num_items),
        "seq_len_min": int(lengths.min()),
        "seq_len_median": float(lengths.median()),
        "seq_len_mean": float(lengths.mean()),
        "seq_len_max": int(lengths.max()),
        "duplicates_removed": ds.meta.get("duplicates", 0),
    }
    store = ds.graph[EDGE]
    if RATING in store:
        out["rating_min"] = float(store[RATING].min())
        out["rating_max"] = float(store[RATING].max())
    if TIME in store:
        out["time_min"] = int(store[TIME].min())
        out["time_max"] = int(store[TIME].max())
    if PART in store:
        out["test_interactions"] = int((store[PART] == PART_TEST).sum())
    for key in ("below_min_rating", "kcore_removed", "test_dropped_unseen",
                "test_dropped_overlap", "valid_dropped_unseen", "valid_dropped_overlap"):
        if key in ds.meta:
            out[key] = ds.meta[key]
    for node in (USER, ITEM):
        feats = {k: v for k, v in ds.meta.get("features", {}).get(node, {}).items() if k != "_coverage"}
        if feats:
            out[f"{node}_features"] = ", ".join(f"{k} ({v['type']})" for k, v in feats.items())
    text = ds.meta.get("text")
    if text and "text_emb" in ds.graph[ITEM]:
        emb = ds.graph[ITEM]["text_emb"]
        out["item_text_emb"] = (f"[{emb.size(0)}, {emb.size(1)}] {text['dtype']} from "
                                f"{','.join(text['cols'])} by {text['model']}")
    return out


def ids_to_saved(ids: IdMap) -> torch.Tensor | list[str]:
    """An id map as weights_only-loadable data: an int64 tensor, or a list of strings."""
    return torch.from_numpy(ids.raw.astype(np.int64)) if ids.is_int else [str(x) for x in ids.raw]


def ids_from_saved(obj: torch.Tensor | list[str]) -> IdMap:
    """The inverse of :func:`ids_to_saved`."""
    if isinstance(obj, torch.Tensor):
        return IdMap(obj.numpy().astype(np.int64))
    return IdMap(np.array(obj, dtype=object))


def save(ds: Dataset, path: str | Path) -> None:
    """Write a dataset to one file, atomically; :func:`load` reads it with ``weights_only=True``."""
    g = ds.graph
    payload = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "meta": json.dumps(ds.meta),
        "user_ids": ids_to_saved(ds.users),
        "item_ids": ids_to_saved(ds.items),
        "num_users": ds.num_users,
        "num_items": ds.num_items,
        "edges": {"edge_index": g[EDGE].edge_index, **edge_attrs_of(g)},
        "user_attrs": node_attrs_of(g, USER),
        "item_attrs": node_attrs_of(g, ITEM),
    }
    atomic_torch_save(path, payload)


def load(path: str | Path) -> Dataset:
    """Read a file written by :func:`save` (``graphrec convert``), without executing pickled
    code.

    For PyG users: ``load(path).graph`` is a plain :class:`~torch_geometric.data.HeteroData`
    (node types ``user`` and ``item``, edge types ``('user', 'interacts', 'item')`` and its
    reverse, ratings and times as edge attributes, side features on the node stores), ready for
    PyG's loaders, transforms and layers; ``load(path).users`` / ``.items`` map its node indices
    to raw ids. It carries no derived state, so PyG transforms keep it consistent. The other
    way, a PyG graph with its own names comes in with ``--format pyg``
    (:mod:`graphrec.data.pyg`)."""
    path = Path(path)
    payload = load_artifact(path, FILE_FORMAT,
                            "graphrec graph file (a saved PyG graph reads with --format pyg)",
                            "no such file")
    if payload.get("version") != FILE_VERSION:
        raise GraphrecError(f"{path}: graph file version {payload.get('version')} is not supported "
                            f"(this graphrec reads version {FILE_VERSION}); convert it again")
    edges = dict(payload["edges"])
    ei = edges.pop("edge_index")
    # Edges were saved sorted, so make_graph's stable sort keeps their order exactly.
    graph = make_graph(payload["num_users"], payload["num_items"], ei[0], ei[1], edges,
                       payload["user_attrs"], payload["item_attrs"])
    return Dataset(graph, ids_from_saved(payload["user_ids"]), ids_from_saved(payload["item_ids"]),
                   json.loads(payload["meta"]))


__all__ = ["IdMap", "Dataset", "make_graph", "check_schema", "user_sequences", "edge_subgraph",
           "build", "summary", "save", "load", "DEDUP_POLICIES"]
