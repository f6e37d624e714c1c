"""Item indexes for retrievers: exact search and faiss approximate nearest neighbours.

Any :class:`~graphrec.models.base.Retriever` scores a user by inner products of its user vector
with the item vectors, so its top items are a maximum-inner-product search (MIPS) over
``item_vectors()``. :class:`ItemIndex` answers that search:

* ``exact``: one matrix product and ``topk`` (torch), on the vectors' device;
* ``flat``: faiss ``IndexFlatIP``, exact inner products on faiss's kernels;
* ``ivf`` (IVF-Flat), ``ivfpq`` (IVF with product-quantized codes) and ``hnsw`` (HNSW graph):
  approximate. Their geometry is L2, where they are accurate, so the inner products are turned
  into distances first (Bachrach et al., RecSys 2014): each item vector gets one more coordinate
  ``sqrt(M^2 - |v|^2)`` (``M`` the largest item norm) and each query a 0, so the nearest items in
  L2 are exactly those of largest inner product. The candidates an index returns are then
  scored exactly (inner products of the real vectors) and ordered by that score.

Seen items are dropped with an adaptive over-fetch: a batch asks for ``k`` plus a margin, rows
left with fewer than ``k`` unseen items ask again with four times as many, and a row that the
approximate index cannot fill (IVF lists too small, a nearly exhausted catalogue) is scored
exactly, so ``k`` unseen items always come back when the user has them.

An index is saved with ``faiss.write_index`` beside a JSON description (kind, settings, item
count, dimension, a hash of the vectors) and loaded with ``faiss.read_index``: no pickled code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.names import INDEX_KINDS
from graphrec.utils import atomic_write_json

log = logging.getLogger(__name__)

APPROXIMATE = ("ivf", "ivfpq", "hnsw")
#: settings fixed when an index is built (the others apply at search time)
BUILD_SETTINGS = ("kind", "nlist", "hnsw_m", "ef_construction", "pq_bytes")
FORMAT = "graphrec-index"


@dataclass
class IndexConfig:
    """Index settings; defaults chosen from ``benchmarks/ann.py`` (see the README).

    Args:
        kind: one of :data:`INDEX_KINDS` (``exact``, the default, is no approximation; ``hnsw``
            is the recommended approximate index).
        nlist: IVF lists (0: ``4 * sqrt(items)``, at most 4,096, and at most one list per 39
            items so that each list trains on 39 points).
        nprobe: IVF lists visited per query (0: a sixteenth of the lists, which gave recall@100
            of 0.95 or more on every table of the benchmark).
        hnsw_m: HNSW links per node (``M``).
        ef_construction: HNSW candidate list while building.
        ef_search: HNSW candidate list while searching (at least ``k`` is used); 1,024 keeps
            the loss of test Recall@20 on Gowalla under 0.002.
        pq_bytes: IVF-PQ code bytes for the vectors' own coordinates, one 8-bit code per
            sub-vector of ``dim / pq_bytes`` coordinates (0: a quarter of the dimension, else a
            half, else all of it); it must divide the dimension. The coordinate the
            inner-product transform adds gets a code byte of its own (zero-padded to a
            sub-vector's width), so that its large values never drown the others' error.
        threads: faiss threads (0: faiss's default, one per core).
    """

    kind: str = "exact"
    nlist: int = 0
    nprobe: int = 0
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 1024
    pq_bytes: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise GraphrecError(f"--index: unknown index {self.kind!r}; choose one of "
                                f"{', '.join(INDEX_KINDS)}")
        for name in ("nlist", "nprobe", "pq_bytes", "threads"):
            if getattr(self, name) < 0:
                raise GraphrecError(f"index option {name}: must be >= 0, got {getattr(self, name)}")
        for name in ("hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise GraphrecError(f"index option {name}: must be at least 1, got "
                                    f"{getattr(self, name)}")


def vectors_digest(vectors: Tensor) -> str:
    """A hash of float32 item vectors: a saved index belongs to the vectors it was built from."""
    data = vectors.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]


class ItemIndex:
    """A top-k inner-product search over ``vectors [I, F]`` (a retriever's item vectors).

    Args:
        vectors: the item vectors (kept: candidates are scored exactly from them).
        cfg: kind and settings.
    """

    def __init__(self, vectors: Tensor, cfg: IndexConfig | None = None,
                 _built: object | None = None, _max_norm: float | None = None) -> None:
        self.cfg = cfg = cfg or IndexConfig()
        if vectors.dim() != 2 or vectors.size(0) < 1:
            raise GraphrecError(f"index: need item vectors [items, dim], got {tuple(vectors.shape)}")
        if not bool(torch.isfinite(vectors).all()):
            raise GraphrecError("index: the item vectors are not all finite")
        self.vectors = vectors.detach()
        self.num_items, self.dim = (int(d) for d in vectors.shape)
        self.max_norm = 0.0
        self.faiss = None
        if cfg.kind == "exact":
            return
        import faiss  # a dependency, imported here so that exact search never pays for it

        if cfg.threads:
            faiss.omp_set_num_threads(cfg.threads)
        host = self._np_vectors = self._host(self.vectors)  # a view where the vectors allow it
        if cfg.kind == "flat":
            self.faiss = _built or faiss.IndexFlatIP(self.dim)
            if _built is None:
                self.faiss.add(host)
            return
        self.max_norm = (_max_norm if _max_norm is not None
                         else float(np.linalg.norm(host, axis=1).max()))
        if _built is not None:
            self.faiss = _built
        else:
            self.faiss = self._build(faiss, self._augment_items(host))

    # -- building -------------------------------------------------------------------------

    @staticmethod
    def _host(x: Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().float().cpu().numpy())

    def nprobe(self) -> int:
        """IVF lists searched per query: the option, or a sixteenth of the lists."""
        return self.cfg.nprobe or max(1, self.faiss.nlist // 16)

    def pq_bytes(self) -> int:
        """IVF-PQ sub-quantizers: the option, or a quarter (a half, all) of the dimension."""
        if self.cfg.pq_bytes:
            return self.cfg.pq_bytes
        return next(self.dim // q for q in (4, 2, 1) if self.dim % q == 0)

    def _extra(self) -> int:
        """Columns added to every vector: the transform's one; for IVF-PQ, a whole sub-vector
        (the transform's coordinate, then zeros), so it is quantized on its own."""
        return self.dim // self.pq_bytes() if self.cfg.kind == "ivfpq" else 1

    def _augment_items(self, host: np.ndarray) -> np.ndarray:
        """``[v, sqrt(M^2 - |v|^2), 0...]``: L2 neighbours of ``[q, 0, 0...]`` are the top inner
        products."""
        sq = np.maximum(self.max_norm ** 2 - (host.astype(np.float64) ** 2).sum(1), 0.0)
        pad = np.zeros((len(host), self._extra() - 1), np.float32)
        return np.ascontiguousarray(np.hstack([host, np.sqrt(sq)[:, None].astype(np.float32), pad]))

    def nlist(self) -> int:
        """IVF lists: the option, or ``4 * sqrt(items)`` up to 4,096 (k-means training grows
        with the list count); at most ``items / 39`` (faiss's k-means wants 39 training points
        per centroid) and at least 1."""
        n = self.cfg.nlist or min(4096, int(4 * math.sqrt(self.num_items)))
        return max(1, min(n, self.num_items // 39 or 1))

    def _build(self, faiss, data: np.ndarray):  # type: ignore[no-untyped-def]
        cfg, d = self.cfg, data.shape[1]
        if cfg.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m)
            index.hnsw.efConstruction = cfg.ef_construction
            index.add(data)
            return index
        nlist = self.nlist()
        if cfg.nlist and cfg.nlist > self.num_items:
            raise GraphrecError(f"index option nlist: {cfg.nlist} lists for {self.num_items} "
                                "items; at most one list per item")
        quantizer = faiss.IndexFlatL2(d)
        if cfg.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist)
        else:
            m = self.pq_bytes()
            if self.dim % m:
                raise GraphrecError(f"index option pq_bytes: {m} does not divide the vectors' "
                                    f"dimension {self.dim}; choose a divisor of it")
            m += 1  # the transform's coordinate, a sub-vector of its own
            # 8-bit codes need 256 * 39 training points; fewer items get fewer bits
            nbits = max(1, min(8, int(math.log2(max(2, self.num_items // 39)))))
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, nbits)
        index.cp.seed = 1234  # faiss's default, stated: k-means is deterministic
        index.train(data)
        index.add(data)
        return index

    # -- searching ------------------------------------------------------------------------

    def _candidates(self, queries: np.ndarray, fetch: int, widen: int) -> np.ndarray:
        """Item indices ``[B, fetch]`` the index proposes (-1 where it has no more), searching
        ``widen`` times the configured lists (IVF) or beam (HNSW)."""
        import faiss

        if self.cfg.kind in APPROXIMATE:
            queries = np.hstack([queries, np.zeros((len(queries), self._extra()), np.float32)])
        params = None
        if self.cfg.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.cfg.ef_search * widen  # faiss searches at least `fetch`
        elif self.cfg.kind in ("ivf", "ivfpq"):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.faiss.nlist, self.nprobe() * widen)
        return self.faiss.search(np.ascontiguousarray(queries), fetch, params=params)[1]

    def search(self, queries: Tensor, k: int, exclude: History | None = None
               ) -> tuple[Tensor, Tensor]:
        """The top ``k`` items by inner product for each of ``queries [B, F]``, leaving out each
        row's ``exclude`` items: ``(scores [B, k], items [B, k])``, best first, scores exact.
        Rows with fewer than ``k`` items left are padded with score -inf and item -1.

        faiss indexes search on the host, in rounds: each asks for ``k`` plus a margin (twice
        ``k`` plus the batch's median number of excluded items); rows left with fewer than ``k``
        items then search again with four times the depth and the lists or beam, and rows
        still short once the depth reaches the catalogue are scored exactly."""
        if queries.dim() != 2 or queries.size(1) != self.dim:
            raise GraphrecError(f"index: queries of shape {tuple(queries.shape)} for an index "
                                f"of dimension {self.dim}")
        if k < 1:
            raise GraphrecError(f"-k: must be at least 1, got {k}")
        kk = min(k, self.num_items)
        if self.faiss is None:
            return _exact(queries, self.vectors.to(queries.device), kk, exclude, k)
        q = self._host(queries)
        vectors = self._np_vectors
        b = len(q)
        if exclude is not None:
            ex_ptr = exclude.ptr.cpu().numpy()
            ex_items = exclude.items.cpu().numpy()
            counts = np.diff(ex_ptr)
        else:
            counts = np.zeros(b, dtype=np.int64)
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_i = np.full((b, k), -1, dtype=np.int64)
        todo = np.arange(b)
        margin = int(np.median(counts)) if exclude is not None and b else 0
        fetch = min(self.num_items, 2 * kk + margin)
        widen = 1
        while todo.size:
            labels = self._candidates(q[todo], fetch, widen)  # [T, fetch]
            valid = labels >= 0
            if exclude is not None and counts[todo].any():
                valid &= ~_member(ex_ptr, ex_items, todo, labels, self.num_items)
            wanted = np.minimum(kk, self.num_items - counts[todo])
            done = valid.sum(1) >= wanted
            if done.any():
                rows, lab = todo[done], labels[done]
                scores = np.einsum("bf,bcf->bc", q[rows], vectors[np.maximum(lab, 0)])
                scores[~valid[done]] = -np.inf
                order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
                top_s = np.take_along_axis(scores, order, 1)
                top_i = np.where(np.isfinite(top_s), np.take_along_axis(lab, order, 1), -1)
                out_s[rows, :kk], out_i[rows, :kk] = top_s, top_i
            todo = todo[~done]
            if todo.size and fetch >= self.num_items:  # the index cannot fill them: exact
                sub = (History.of(exclude.ptr.cpu(), exclude.items.cpu(), torch.from_numpy(todo))
                       if exclude is not None else None)
                s_, i_ = _exact(torch.from_numpy(q[todo]), torch.from_numpy(vectors), kk, sub, k)
                out_s[todo], out_i[todo] = s_.numpy(), i_.numpy()
                break
            fetch, widen = min(self.num_items, 4 * fetch), 4 * widen
        return (torch.from_numpy(out_s).to(queries.device),
                torch.from_numpy(out_i).to(queries.device))

    # -- saving ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``PATH.faiss`` (faiss's own format, nothing for ``exact``) and ``PATH.json``,
        each atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.faiss is not None:
            import faiss

            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                faiss.write_index(self.faiss, tmp)
                os.replace(tmp, path.with_suffix(".faiss"))
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        atomic_write_json(path.with_suffix(".json"), {
            "format": FORMAT, "version": 1, "config": asdict(self.cfg),
            "num_items": self.num_items, "dim": self.dim, "max_norm": self.max_norm,
            "vectors": vectors_digest(self.vectors)})

    @classmethod
    def load(cls, path: str | Path, vectors: Tensor, cfg: IndexConfig | None = None
             ) -> "ItemIndex | None":
        """The index saved at ``path`` for these item ``vectors``; ``None`` when there is none,
        it was built from other vectors (a retrained model) or with other build settings than
        ``cfg``'s, so the caller builds anew (search settings, ``nprobe`` and ``ef_search``, are
        taken from ``cfg``). An index of another item count or dimension is an error: it
        belongs to another model."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GraphrecError(f"{meta_path}: not a graphrec index description ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise GraphrecError(f"{meta_path}: not a graphrec index description")
        num_items, dim = int(vectors.size(0)), int(vectors.size(1))
        if (meta.get("num_items"), meta.get("dim")) != (num_items, dim):
            raise GraphrecError(f"{meta_path}: the index holds {meta.get('num_items')} items of "
                                f"dimension {meta.get('dim')}, the model {num_items} of {dim}; "
                                "it belongs to another run (delete it to rebuild)")
        if meta.get("vectors") != vectors_digest(vectors):
            return None
        saved = IndexConfig(**meta["config"])
        if cfg is not None:
            if any(getattr(saved, f) != getattr(cfg, f) for f in BUILD_SETTINGS):
                return None
            saved.nprobe, saved.ef_search, saved.threads = cfg.nprobe, cfg.ef_search, cfg.threads
        cfg = saved
        built = None
        if cfg.kind != "exact":
            import faiss

            try:
                built = faiss.read_index(str(path.with_suffix(".faiss")))
            except RuntimeError as e:
                raise GraphrecError(f"{path.with_suffix('.faiss')}: not a faiss index "
                                    f"({str(e).splitlines()[0][:120]})") from None
            if built.ntotal != num_items:
                raise GraphrecError(f"{path.with_suffix('.faiss')}: holds {built.ntotal} "
                                    f"vectors, expected {num_items}")
        return cls(vectors, cfg, built, float(meta.get("max_norm", 0.0)))


def index_path(run_dir: str | Path, kind: str) -> Path:
    """Where a run folder keeps its saved index of ``kind`` (``.faiss`` and ``.json`` beside)."""
    return Path(run_dir) / f"index-{kind}"


def parse_index_options(kind: str, options: list[str]) -> IndexConfig:
    """An :class:`IndexConfig` of ``kind`` from ``KEY=VALUE`` strings (``--index-set``); unknown
    keys and non-integer values are one-line errors naming them."""
    from dataclasses import fields

    values: dict[str, int] = {}
    known = {f.name for f in fields(IndexConfig)} - {"kind"}
    for text in options:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise GraphrecError(f"--index-set: expected KEY=VALUE with KEY one of "
                                f"{', '.join(sorted(known))}, got {text!r}")
        try:
            values[key] = int(raw)
        except ValueError:
            raise GraphrecError(f"--index-set: {key} must be an integer, got {raw!r}") from None
    return IndexConfig(kind=kind, **values)


def _member(ptr: np.ndarray, items: np.ndarray, rows: np.ndarray, labels: np.ndarray,
            num_items: int) -> np.ndarray:
    """Whether ``labels [T, C]`` are among the excluded items of their row (``rows [T]`` index
    the CSR ``(ptr, items)``), by one sorted-key search, no loop over rows."""
    start, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    if counts.sum() == 0:
        return np.zeros(labels.shape, dtype=bool)
    row_of = np.repeat(np.arange(len(rows)), counts)
    offset = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    keys = np.sort(row_of * num_items + items[offset + np.arange(counts.sum())])
    query = np.arange(len(rows))[:, None] * num_items + labels
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[pos] == query


def _exact(queries: Tensor, vectors: Tensor, kk: int, exclude: History | None, k: int
           ) -> tuple[Tensor, Tensor]:
    """Exact top ``kk`` of ``queries @ vectors.T`` without ``exclude``, padded to ``k``; in
    chunks of query rows so that one chunk's scores stay near 2^26 floats."""
    step = max(1, (1 << 26) // max(1, vectors.size(0)))
    tops_s, tops_i = [], []
    for s in range(0, queries.size(0), step):
        scores = queries[s:s + step] @ vectors.T  # [b, I]
        if exclude is not None:
            sub = History.of(exclude.ptr, exclude.items, torch.arange(
                s, min(s + step, queries.size(0)), device=exclude.ptr.device))
            row = torch.repeat_interleave(torch.arange(scores.size(0), device=queries.device),
                                          sub.ptr.diff().to(queries.device))
            scores[row, sub.items.to(queries.device)] = -math.inf
        top_s, top_i = torch.topk(scores, kk, dim=1)
        tops_s.append(top_s)
        tops_i.append(top_i.where(torch.isfinite(top_s), -1))
    top_s, top_i = torch.cat(tops_s), torch.cat(tops_i)
    if kk < k:
        pad = k - kk
        top_s = torch.cat([top_s, top_s.new_full((top_s.size(0), pad), -math.inf)], 1)
        top_i = torch.cat([top_i, top_i.new_full((top_i.size(0), pad), -1)], 1)
    return top_s, top_i


__all__ = ["INDEX_KINDS", "IndexConfig", "ItemIndex", "vectors_digest", "index_path",
           "parse_index_options", "retriever_index"]


def retriever_index(scorer: object, cfg: IndexConfig, run_dir: str | Path | None = None
                    ) -> "ItemIndex":
    """The index of ``cfg.kind`` over a retriever's item vectors (``scorer.item_vectors()``),
    loaded from ``run_dir`` when one was saved there for these vectors and settings, else built
    (and saved there, when a folder is given and writable)."""
    vectors = scorer.item_vectors().detach()  # type: ignore[attr-defined]
    path = index_path(run_dir, cfg.kind) if run_dir is not None else None
    if path is not None:
        loaded = ItemIndex.load(path, vectors, cfg)
        if loaded is not None:
            return loaded
    index = ItemIndex(vectors, cfg)
    if path is not None:
        try:
            index.save(path)
        except OSError as e:
            log.warning("index: not saved in %s (%s)", path.parent, e.strerror or e)
    return index
