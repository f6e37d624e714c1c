"""Item indexes against brute-force inner-product search: exclusion, over-fetch, fallback,
settings and the saved form."""

from __future__ import annotations

import json
import math

import pytest
import torch

from graphrec.batches import History
from graphrec.errors import GraphrecError
from graphrec.serve.index import INDEX_KINDS, IndexConfig, ItemIndex, parse_index_options

NUM_ITEMS, DIM = 300, 12


@pytest.fixture(scope="module")
def table():
    g = torch.Generator().manual_seed(0)
    items = torch.randn(NUM_ITEMS, DIM, generator=g) * torch.rand(NUM_ITEMS, 1, generator=g) * 3
    queries = torch.randn(40, DIM, generator=g)
    # random seen sets; rows 0-2 have seen all but 4 items
    rows = []
    for r in range(40):
        n = NUM_ITEMS - 4 if r < 3 else int(torch.randint(0, 60, (1,), generator=g))
        rows.append(torch.randperm(NUM_ITEMS, generator=g)[:n].tolist())
    return items, queries, History.from_lists(rows)


def brute_force(items, queries, k, exclude):
    scores = queries @ items.T
    for r in range(queries.size(0)):
        seen = exclude.items[exclude.ptr[r]:exclude.ptr[r + 1]]
        scores[r, seen] = -math.inf
    top_s, top_i = torch.topk(scores, k, dim=1)
    return top_s, top_i.where(torch.isfinite(top_s), -1)


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw", "ivf"])
@pytest.mark.parametrize("k", [1, 10, 30])
def test_search_equals_brute_force(kind, k, table):
    """On a small table these find the exact answer (HNSW's beam and the probed IVF lists
    cover it), seen items excluded, heavy rows padded with -1 past their 4 unseen items."""
    items, queries, exclude = table
    cfg = {"ivf": IndexConfig(kind, nprobe=64), "hnsw": IndexConfig(kind, ef_search=NUM_ITEMS)
           }.get(kind, IndexConfig(kind))
    scores, top = ItemIndex(items, cfg).search(queries, k, exclude)
    want_s, want = brute_force(items, queries, k, exclude)
    assert [set(r) - {-1} for r in top.tolist()] == [set(r) - {-1} for r in want.tolist()]
    torch.testing.assert_close(scores, want_s, rtol=1e-5, atol=1e-5)
    assert (top[:3] >= 0).sum(1).tolist() == [min(k, 4)] * 3


def test_ivfpq_and_thin_ivf_still_return_k_unseen_items(table):
    """Lossy codes and IVF probing one list: every row still gets min(k, unseen) distinct
    unseen items, exactly scored, best first (rows the index cannot fill are scored exactly)."""
    items, queries, exclude = table
    for cfg in (IndexConfig("ivfpq"), IndexConfig("ivf", nprobe=1)):
        scores, top = ItemIndex(items, cfg).search(queries, 20, exclude)
        for r in range(queries.size(0)):
            seen = set(exclude.items[exclude.ptr[r]:exclude.ptr[r + 1]].tolist())
            got = [i for i in top[r].tolist() if i >= 0]
            assert len(got) == min(20, NUM_ITEMS - len(seen)) and len(set(got)) == len(got)
            assert not set(got) & seen
            torch.testing.assert_close(scores[r, :len(got)], queries[r] @ items[got].T,
                                       rtol=1e-5, atol=1e-5)
            assert scores[r, :len(got)].tolist() == sorted(scores[r, :len(got)].tolist(),
                                                           reverse=True)


@pytest.mark.parametrize("kind", [k for k in INDEX_KINDS if k != "exact"])
def test_saved_index_round_trip_without_pickle(kind, table, tmp_path):
    items, queries, exclude = table
    index = ItemIndex(items, IndexConfig(kind))
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx.json").read_text())
    assert meta["num_items"] == NUM_ITEMS and meta["dim"] == DIM and meta["config"]["kind"] == kind
    assert (tmp_path / "idx.faiss").read_bytes()[:4] != b"\x80\x04\x95\x00"[:4]  # not a pickle
    again = ItemIndex.load(tmp_path / "idx", items, IndexConfig(kind))
    assert again is not None
    for a, b in zip(index.search(queries, 10, exclude), again.search(queries, 10, exclude)):
        assert torch.equal(a, b)
    with pytest.raises(GraphrecError, match="belongs to another run"):
        ItemIndex.load(tmp_path / "idx", items[:, :5], IndexConfig(kind))


def test_bad_settings_are_errors(table):
    items = table[0]
    for cfg, message in ((dict(kind="annoy"), "unknown index 'annoy'"),
                         (dict(kind="hnsw", ef_search=0), "ef_search: must be at least 1"),
                         (dict(kind="ivf", nlist=-1), "nlist: must be >= 0")):
        with pytest.raises(GraphrecError, match=message):
            IndexConfig(**cfg)
    with pytest.raises(GraphrecError, match="nlist: 400 lists for 300 items"):
        ItemIndex(items, IndexConfig("ivf", nlist=400))
    with pytest.raises(GraphrecError, match="pq_bytes: 5 does not divide"):
        ItemIndex(items, IndexConfig("ivfpq", pq_bytes=5))
    with pytest.raises(GraphrecError, match="not all finite"):
        ItemIndex(torch.full((3, 2), math.nan), IndexConfig("flat"))
    with pytest.raises(GraphrecError, match="queries of shape"):
        ItemIndex(items, IndexConfig("exact")).search(torch.randn(2, DIM + 1), 3)
    assert parse_index_options("hnsw", ["ef_search=64"]).ef_search == 64
