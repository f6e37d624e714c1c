"""Builder (dedup, thresholds, k-core, edge order, sequences, reverse edges) and save/load."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from graphrec.data import graph as graph_mod
from graphrec.data.graph import IdMap, build, edge_subgraph, load, save, user_sequences
from graphrec.data.readers import RawData, read
from graphrec.errors import GraphrecError
from graphrec.schema import (EDGE, ITEM, PART, PART_TEST, PART_TRAIN, RATING, REV_EDGE, TIME,
                             USER)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(os.environ["GRAPHREC_DATA"]) if os.environ.get("GRAPHREC_DATA") else SHARED


def raw_of(rows: list[tuple], columns=("user", "item", "rating", "time"), **kw) -> RawData:
    """A reader's output from literal rows (in file order)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    for c in ("user", "item"):
        if frame[c].map(type).eq(str).all():
            frame[c] = frame[c].astype(object)
        else:
            frame[c] = frame[c].astype(np.int64)
    if "rating" in frame:
        frame["rating"] = frame["rating"].astype(np.float32)
    if "time" in frame:
        frame["time"] = frame["time"].astype(np.int64)
    if "part" in frame:
        frame["part"] = frame["part"].astype(np.int8)
    return RawData(frame, "made-up.csv", "csv", **kw)


def raw_pairs(ds) -> list[tuple]:
    ei = ds.graph[EDGE].edge_index
    return list(zip(ds.users.to_raw(ei[0]).tolist(), ds.items.to_raw(ei[1]).tolist()))


def random_raw(seed: int, num_users: int, num_items: int, num_rows: int,
               time_range: int = 20) -> RawData:
    """Random interactions without duplicate pairs; few distinct times, so ties are common."""
    rng = random.Random(seed)
    pairs = set()
    while len(pairs) < num_rows:
        pairs.add((f"u{rng.randrange(num_users):03d}", 1000 + rng.randrange(num_items)))
    rows = [(u, i, float(rng.randint(1, 5)), rng.randrange(time_range)) for u, i in pairs]
    rng.shuffle(rows)
    return raw_of(rows)


# Asymmetric: 3 users, 5 items. File order matters for the tie-breaks below.
ASYM_ROWS = [
    ("u_b", "i3", 4.0, 5),
    ("u_a", "i1", 2.0, 7),
    ("u_b", "i1", 3.0, 5),
    ("u_a", "i2", 5.0, 3),
    ("u_b", "i2", 1.0, 5),
    ("u_a", "i0", 4.0, 7),
    ("u_c", "i4", 3.0, 1),
    ("u_c", "i0", 2.0, 0),
]


@pytest.fixture
def asym():
    return build(raw_of(ASYM_ROWS))


# --------------------------------------------------------------------------------------------
# Shape of the built graph


def test_node_counts_and_id_maps(asym):
    assert (asym.num_users, asym.num_items, asym.num_interactions) == (3, 5, 8)
    assert asym.graph[USER].num_nodes == 3 and asym.graph[ITEM].num_nodes == 5
    assert asym.users.raw.tolist() == ["u_a", "u_b", "u_c"]
    assert asym.items.raw.tolist() == ["i0", "i1", "i2", "i3", "i4"]
    ei = asym.graph[EDGE].edge_index
    assert ei.dtype == torch.int64 and ei.shape == (2, 8)
    assert int(ei[0].max()) == 2 and int(ei[1].max()) == 4  # item 4 > any user index
    assert sorted(raw_pairs(asym)) == sorted((u, i) for u, i, _, _ in ASYM_ROWS)


def test_reverse_edge_type_is_the_flipped_edge_index(asym):
    g = asym.graph
    assert set(g.edge_types) == {EDGE, REV_EDGE}
    assert torch.equal(g[REV_EDGE].edge_index, g[EDGE].edge_index.flip(0))
    for name in (RATING, TIME):
        assert torch.equal(g[REV_EDGE][name], g[EDGE][name])


def test_edges_sorted_by_user_then_time_ties_in_file_order(asym):
    g = asym.graph
    ei = g[EDGE].edge_index
    # u_a: i2 (t=3), then i1 and i0 at t=7 in file order (i1 first, against index order);
    # u_b: i3, i1, i2 all at t=5, file order; u_c: i0 (t=0) before i4 (t=1).
    assert ei[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert ei[1].tolist() == [2, 1, 0, 3, 1, 2, 0, 4]
    assert g[EDGE][TIME].tolist() == [3, 7, 7, 5, 5, 5, 0, 1]
    assert g[EDGE][RATING].tolist() == [5.0, 2.0, 4.0, 4.0, 3.0, 1.0, 2.0, 3.0]
    assert g[EDGE][RATING].dtype == torch.float32 and g[EDGE][TIME].dtype == torch.int64
    ptr, items = user_sequences(g)
    assert ptr.tolist() == [0, 3, 6, 8]
    assert items.tolist() == [2, 1, 0, 3, 1, 2, 0, 4]
    assert set(g[USER].keys()) == {"num_nodes"}  # no derived state on the graph


def test_without_time_edges_keep_file_order_per_user():
    ds = build(raw_of([(r[0], r[1]) for r in ASYM_ROWS], columns=("user", "item")))
    ei = ds.graph[EDGE].edge_index
    assert ei[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert ei[1].tolist() == [1, 2, 0, 3, 1, 2, 4, 0]
    assert set(ds.graph[EDGE].keys()) == {"edge_index"}


def seq_reference(raw: RawData, ds) -> tuple[list[int], list[int], list[tuple]]:
    """Slow reference: for each user in raw-id order, items by (time, file position)."""
    per_user: dict = {}
    for pos, (u, i, r, t) in enumerate(raw.frame[["user", "item", "rating", "time"]]
                                       .itertuples(index=False)):
        per_user.setdefault(u, []).append((t, pos, i, r))
    ptr, items, edges = [0], [], []
    for u in sorted(per_user):
        for t, _, i, r in sorted(per_user[u]):
            items.append(int(ds.items.to_index(i)[0]))
            edges.append((u, i, r, t))
        ptr.append(len(items))
    return ptr, items, edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequences_and_edge_order_match_a_slow_reference(seed):
    raw = random_raw(seed, num_users=17, num_items=41, num_rows=160, time_range=6)
    ds = build(raw)
    assert (ds.num_users, ds.num_items) != (ds.num_items, ds.num_users)
    ptr, items, edges = seq_reference(raw, ds)
    g = ds.graph
    got_ptr, got_items = user_sequences(g)
    assert got_ptr.tolist() == ptr
    assert got_items.tolist() == items
    assert got_ptr.dtype == torch.int64 and got_items.dtype == torch.int64
    # edges in any order (as PyG transforms leave them): by (user, time, edge position)
    perm = torch.randperm(g[EDGE].num_edges, generator=torch.Generator().manual_seed(seed))
    shuffled = HeteroData()
    shuffled[USER].num_nodes, shuffled[ITEM].num_nodes = ds.num_users, ds.num_items
    shuffled[EDGE].edge_index = g[EDGE].edge_index[:, perm]
    shuffled[EDGE][TIME] = g[EDGE][TIME][perm]
    u, i = shuffled[EDGE].edge_index.tolist()
    order = sorted(range(len(u)), key=lambda e: (u[e], shuffled[EDGE][TIME][e].item(), e))
    again = user_sequences(shuffled)
    assert again[0].tolist() == ptr and again[1].tolist() == [i[e] for e in order]
    got = list(zip(*[x.tolist() for x in (ds.users.to_raw(g[EDGE].edge_index[0]),
                                            ds.items.to_raw(g[EDGE].edge_index[1]),
                                            g[EDGE][RATING], g[EDGE][TIME])]))
    assert got == edges


def test_integer_ids_zero_based_map_to_themselves():
    raw = raw_of([(2, 4, 1.0, 0), (0, 0, 1.0, 0), (1, 3, 1.0, 0), (2, 1, 1.0, 0), (0, 2, 1.0, 0)])
    ds = build(raw)
    assert ds.users.is_int and ds.users.raw.tolist() == [0, 1, 2]
    assert ds.items.raw.tolist() == [0, 1, 2, 3, 4]
    assert sorted(zip(*ds.graph[EDGE].edge_index.tolist())) == sorted(
        (u, i) for u, i, _, _ in raw.frame.itertuples(index=False))


def test_id_map_lookups():
    ints = IdMap(np.array([3, 7, 9], dtype=np.int64))
    assert ints.to_index([9, "3", " 7"]).tolist() == [2, 0, 1]
    assert ints.to_raw(torch.tensor([1, 2])).tolist() == [7, 9]
    for bad in ("7.5", "x", 8):
        with pytest.raises(GraphrecError, match="unknown user"):
            ints.to_index(bad, what="user")
    strs = IdMap(np.array(["007", "7", "u_a"], dtype=object))
    assert strs.to_index(["7", 7, "007"]).tolist() == [1, 1, 0]
    with pytest.raises(GraphrecError, match="'u_b'"):
        strs.to_index("u_b")


def test_edge_subgraph_keeps_nodes_and_features(asym):
    mask = asym.graph[EDGE][TIME] >= 5
    sub = edge_subgraph(asym.graph, mask)
    assert sub[USER].num_nodes == 3 and sub[ITEM].num_nodes == 5
    assert torch.equal(sub[EDGE].edge_index, asym.graph[EDGE].edge_index[:, mask])
    assert user_sequences(sub)[0].tolist() == [0, 2, 5, 5]


# --------------------------------------------------------------------------------------------
# Duplicates, thresholds, k-core

DUP_ROWS = [
    ("u_a", "i1", 1.0, 5),
    ("u_a", "i1", 2.0, 3),
    ("u_a", "i1", 4.0, 9),   # latest time
    ("u_a", "i1", 5.0, 1),   # earliest time, last in file
    ("u_b", "i0", 3.0, 2),
    ("u_b", "i0", 1.0, 2),   # same time: file order decides
    ("u_b", "i2", 2.0, 4),
    ("u_c", "i3", 3.0, 6),
]


def rating_of(ds, user, item) -> tuple[float, int]:
    ei = ds.graph[EDGE].edge_index
    u, i = ds.users.to_index(user)[0], ds.items.to_index(item)[0]
    hit = ((ei[0] == u) & (ei[1] == i)).nonzero().flatten()
    assert hit.numel() == 1
    return float(ds.graph[EDGE][RATING][hit]), int(ds.graph[EDGE][TIME][hit])


@pytest.mark.parametrize("policy,expected", [
    ("last", {("u_a", "i1"): (4.0, 9), ("u_b", "i0"): (1.0, 2)}),
    ("first", {("u_a", "i1"): (5.0, 1), ("u_b", "i0"): (3.0, 2)}),
])
def test_dedup_policy_by_time(policy, expected):
    ds = build(raw_of(DUP_ROWS), dedup=policy)
    assert ds.meta["duplicates"] == 4 and ds.meta["dedup"] == policy
    assert ds.num_interactions == 4
    assert (ds.num_users, ds.num_items) == (3, 4)
    for (u, i), want in expected.items():
        assert rating_of(ds, u, i) == want
    assert rating_of(ds, "u_c", "i3") == (3.0, 6)
    assert len(set(raw_pairs(ds))) == ds.num_interactions


def test_dedup_without_time_uses_file_order():
    rows = [(u, i, r) for u, i, r, _ in DUP_ROWS]
    last = build(raw_of(rows, columns=("user", "item", "rating")), dedup="last")
    first = build(raw_of(rows, columns=("user", "item", "rating")), dedup="first")
    ei = last.graph[EDGE].edge_index
    ratings = dict(zip(zip(last.users.to_raw(ei[0]), last.items.to_raw(ei[1])),
                       last.graph[EDGE][RATING].tolist()))
    assert ratings[("u_a", "i1")] == 5.0 and ratings[("u_b", "i0")] == 1.0
    ei = first.graph[EDGE].edge_index
    ratings = dict(zip(zip(first.users.to_raw(ei[0]), first.items.to_raw(ei[1])),
                       first.graph[EDGE][RATING].tolist()))
    assert ratings[("u_a", "i1")] == 1.0 and ratings[("u_b", "i0")] == 3.0
    assert last.meta["duplicates"] == first.meta["duplicates"] == 4


@pytest.mark.parametrize("seed,policy,timed", [(0, "last", True), (1, "first", True),
                                                (2, "last", False), (3, "first", False)])
def test_dedup_matches_a_slow_reference(seed, policy, timed):
    """Many duplicates, tied times: the kept copy of each pair is the last (first) by
    (time, file position), found by a plain loop."""
    rng = random.Random(seed)
    rows = [(f"u{rng.randrange(6)}", rng.randrange(9), float(rng.randint(1, 5)), rng.randrange(4))
            for _ in range(300)]
    if not timed:
        rows = [r[:3] for r in rows]
    ds = build(raw_of(rows, columns=("user", "item", "rating", "time")[:len(rows[0])]),
               dedup=policy)
    kept: dict = {}
    for pos, row in enumerate(rows):
        key = (row[2 + 1] if timed else 0, pos)
        old = kept.get(row[:2])
        better = old is None or (key >= old[0] if policy == "last" else key < old[0])
        if better:
            kept[row[:2]] = (key, row[2])
    ei = ds.graph[EDGE].edge_index
    got = dict(zip(zip(ds.users.to_raw(ei[0]), ds.items.to_raw(ei[1])),
                   ds.graph[EDGE][RATING].tolist()))
    assert got == {pair: rating for pair, (_, rating) in kept.items()}
    assert ds.meta["duplicates"] == len(rows) - len(kept)


def test_dedup_rejects_unknown_policy():
    with pytest.raises(GraphrecError, match="--dedup"):
        build(raw_of(DUP_ROWS), dedup="mean")


def test_min_rating():
    ds = build(raw_of(ASYM_ROWS), min_rating=3.0)
    kept = sorted((u, i) for u, i, r, _ in ASYM_ROWS if r >= 3.0)
    assert len(kept) == 5 and sorted(raw_pairs(ds)) == kept
    assert ds.graph[EDGE][RATING].min() >= 3.0
    assert ds.meta["below_min_rating"] == len(ASYM_ROWS) - len(kept)
    assert ds.meta["min_rating"] == 3.0
    # Nodes left without interactions are gone (u_c rated nothing >= 4; i1, i4 neither).
    ds = build(raw_of(ASYM_ROWS), min_rating=4.0)
    assert ds.users.raw.tolist() == ["u_a", "u_b"]
    assert ds.items.raw.tolist() == ["i0", "i2", "i3"]
    assert ds.graph[EDGE].edge_index.tolist() == [[0, 0, 1], [1, 0, 2]]  # i2 (t=3), i0 (t=7)
    with pytest.raises(GraphrecError, match="no ratings"):
        build(raw_of([(r[0], r[1]) for r in ASYM_ROWS], columns=("user", "item")), min_rating=3)
    with pytest.raises(GraphrecError, match="no interactions left"):
        build(raw_of(ASYM_ROWS), min_rating=6.0)


def kcore_reference(pairs: list[tuple], k: int) -> set[tuple]:
    """Slow iterative k-core: drop users/items with fewer than k interactions until stable."""
    pairs = list(pairs)
    while True:
        du = Counter(u for u, _ in pairs)
        di = Counter(i for _, i in pairs)
        kept = [(u, i) for u, i in pairs if du[u] >= k and di[i] >= k]
        if len(kept) == len(pairs):
            return set(kept)
        pairs = kept


@pytest.mark.parametrize("seed,k", [(0, 3), (1, 4), (2, 5)])
def test_kcore_matches_a_slow_reference(seed, k):
    raw = random_raw(seed, num_users=70, num_items=45, num_rows=420)
    pairs = list(zip(raw.frame["user"], raw.frame["item"]))
    want = kcore_reference(pairs, k)
    assert 0 < len(want) < len(pairs)  # the fixture actually exercises the filter
    ds = build(raw, kcore=k)
    assert set(raw_pairs(ds)) == want and ds.num_interactions == len(want)
    assert ds.meta["kcore_removed"] == len(pairs) - len(want)
    ei = ds.graph[EDGE].edge_index
    assert int(torch.bincount(ei[0], minlength=ds.num_users).min()) >= k
    assert int(torch.bincount(ei[1], minlength=ds.num_items).min()) >= k
    assert ds.num_users == len({u for u, _ in want}) and ds.num_items == len({i for _, i in want})
    # Indices stay dense after filtering.
    assert ds.users.raw.tolist() == sorted({u for u, _ in want})


def test_kcore_errors():
    with pytest.raises(GraphrecError, match="--kcore"):
        build(raw_of(ASYM_ROWS), kcore=-1)
    with pytest.raises(GraphrecError, match="no interactions left"):
        build(raw_of(ASYM_ROWS), kcore=10)


def test_part_attribute_and_cross_part_duplicates():
    rows = [(0, 1, PART_TRAIN), (0, 2, PART_TRAIN), (1, 1, PART_TRAIN), (1, 1, PART_TRAIN),
            (1, 2, PART_TEST), (0, 3, PART_TRAIN)]
    ds = build(raw_of(rows, columns=("user", "item", "part")))
    assert ds.meta["duplicates"] == 1 and ds.meta["given_split"] is True
    g = ds.graph
    assert g[EDGE][PART].dtype == torch.int8
    assert [(u, i, p) for u, i, p in zip(*g[EDGE].edge_index.tolist(), g[EDGE][PART].tolist())] == [
        (0, 0, PART_TRAIN), (0, 1, PART_TRAIN), (0, 2, PART_TRAIN), (1, 0, PART_TRAIN),
        (1, 1, PART_TEST)]
    with pytest.raises(GraphrecError, match="both the training and the test"):
        build(raw_of(rows + [(0, 1, PART_TEST)], columns=("user", "item", "part")))


# --------------------------------------------------------------------------------------------
# save / load


def assert_same_dataset(a, b):
    ga, gb = a.graph, b.graph
    assert set(ga.node_types) == set(gb.node_types)
    assert set(ga.edge_types) == set(gb.edge_types)
    for key in list(ga.node_types) + list(ga.edge_types):
        sa, sb = ga[key], gb[key]
        assert set(sa.keys()) == set(sb.keys()), key
        for name in sa.keys():
            va, vb = sa[name], sb[name]
            if isinstance(va, torch.Tensor):
                assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype, (key, name)
                assert torch.equal(va, vb), (key, name)
            else:
                assert type(va) is type(vb) and va == vb, (key, name)
    for ma, mb in ((a.users, b.users), (a.items, b.items)):
        assert ma.raw.dtype == mb.raw.dtype
        assert ma.raw.tolist() == mb.raw.tolist()
        assert [type(x) for x in ma.raw.tolist()] == [type(x) for x in mb.raw.tolist()]
    assert a.meta == b.meta


@pytest.fixture
def featured(tmp_path, monkeypatch):
    """String user ids, int item ids, every feature kind, ratings and times."""
    monkeypatch.setattr(graph_mod, "MAX_MULTI_HOT", 4)  # so a small title column becomes text
    (tmp_path / "shop.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u_b\t30\t4\t100\nu_a\t10\t5\t50\nu_a\t30\t2\t70\nu_c\t20\t1\t10\nu_b\t10\t3\t100\n")
    (tmp_path / "shop.item").write_text(
        "item_id:token\ttitle:token_seq\tclass:token_seq\tyear:token\tprice:float\tvec:float_seq\n"
        "10\tThe Big One\tAction Comedy\t1999\t2.5\t1 2 3\n"
        "20\tSmall Two\tDrama\t2001\t\t4\n"
        "30\tThree Again\t\t1999\t7\t\n")
    (tmp_path / "shop.user").write_text("user_id:token\tage:token\nu_a\t20\nu_b\t30\n")
    ds = build(read(tmp_path / "shop.inter"))
    assert ds.meta["features"]["item"]["title"]["type"] == "text"
    assert ds.meta["features"]["item"]["class"]["type"] == "multi_hot"
    assert ds.graph[ITEM]["title"] == ["The Big One", "Small Two", "Three Again"]
    assert ds.graph[ITEM]["vec"].tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert not ds.users.is_int and ds.items.is_int
    return ds


def test_save_load_round_trip_is_exact(featured, tmp_path):
    path = tmp_path / "out" / "graph.pt"
    save(featured, path)
    loaded = load(path)
    assert_same_dataset(featured, loaded)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "graphrec-graph"
    assert payload["user_ids"] == ["u_a", "u_b", "u_c"]
    assert torch.equal(payload["item_ids"], torch.tensor([10, 20, 30]))
    assert [p.name for p in path.parent.iterdir()] == ["graph.pt"]  # no temp file left behind


def test_save_load_round_trip_with_parts_and_int_ids(tmp_path):
    (tmp_path / "train.txt").write_text("0 1 2\n1 0\n3 2 4\n")
    (tmp_path / "test.txt").write_text("0 4\n3 1\n")
    ds = build(read(tmp_path))
    path = tmp_path / "g.pt"
    save(ds, path)
    loaded = load(path)
    assert_same_dataset(ds, loaded)
    assert loaded.graph[EDGE][PART].dtype == torch.int8
    assert int((loaded.graph[EDGE][PART] == PART_TEST).sum()) == 2
    assert loaded.users.is_int and loaded.users.raw.dtype == np.int64


def test_save_load_round_trip_real_movielens(tmp_path):
    u_data = DATA / "ml-100k" / "u.data"
    if not u_data.exists():
        pytest.skip(f"real data set not found at {u_data} (set GRAPHREC_DATA)")
    ds = build(read(u_data), min_rating=4, kcore=5)
    save(ds, tmp_path / "ml.pt")
    assert_same_dataset(ds, load(tmp_path / "ml.pt"))


def test_load_rejects_other_files(tmp_path):
    torch.save({"a": torch.zeros(3)}, tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(512))
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("other.pt", "tensor.pt", "random.bin", "empty.pt", "missing.pt"):
        with pytest.raises(GraphrecError) as e:
            load(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_load_rejects_other_versions(featured, tmp_path):
    save(featured, tmp_path / "g.pt")
    payload = torch.load(tmp_path / "g.pt", weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "v99.pt")
    with pytest.raises(GraphrecError, match="version 99"):
        load(tmp_path / "v99.pt")


# --------------------------------------------------------------------------------------------
# PyG's own transforms leave nothing inconsistent: sequences are read from the edges


def _sequences_by_hand(graph) -> dict[int, list[int]]:
    """Each user's items ordered by (time, edge position), from the edge list."""
    ei, time = graph[EDGE].edge_index.tolist(), graph[EDGE][TIME].tolist()
    rows: dict[int, list[tuple[int, int, int]]] = {}
    for e, (u, i, t) in enumerate(zip(ei[0], ei[1], time)):
        rows.setdefault(u, []).append((t, e, i))
    return {u: [i for _, _, i in sorted(r)] for u, r in rows.items()}


def _as_dict(ptr, items) -> dict[int, list[int]]:
    return {u: items[ptr[u]:ptr[u + 1]].tolist() for u in range(ptr.numel() - 1)
            if ptr[u + 1] > ptr[u]}


@pytest.fixture
def pyg_graph():
    from conftest import random_graph
    return random_graph(num_users=9, num_items=14, per_user=(2, 9), seed=11)


def test_sequences_after_pyg_subgraph(pyg_graph):
    keep = torch.tensor([1, 4, 7])
    sub = pyg_graph.subgraph({USER: keep})
    assert sub[USER].num_nodes == 3 and sub[ITEM].num_nodes == 14
    full = _as_dict(*user_sequences(pyg_graph))
    got = _as_dict(*user_sequences(sub))
    assert got == {k: full[int(u)] for k, u in enumerate(keep.tolist()) if int(u) in full}


def test_to_homogeneous_keeps_the_graph(pyg_graph):
    homo = pyg_graph.to_homogeneous()
    U, I = pyg_graph[USER].num_nodes, pyg_graph[ITEM].num_nodes
    assert homo.num_nodes == U + I and homo.edge_index.size(1) == 2 * pyg_graph[EDGE].num_edges
    assert set(homo.keys()) <= {"edge_index", "node_type", "edge_type", "time", "rating"}
    # users then items, as graphrec's adjacency numbers them: the same undirected graph
    dense = torch.zeros(U + I, U + I)
    dense[homo.edge_index[0], homo.edge_index[1]] = 1.0
    from graphrec.nn.propagation import normalized_adjacency
    assert torch.equal(dense != 0, normalized_adjacency(pyg_graph).to_dense() != 0)


def test_random_link_split_leaks_nothing_into_sequences(pyg_graph):
    import torch_geometric.transforms as T

    torch.manual_seed(0)
    train, valid, test = T.RandomLinkSplit(num_val=0.1, num_test=0.2, edge_types=EDGE,
                                           rev_edge_types=REV_EDGE,
                                           add_negative_train_samples=False)(pyg_graph)
    seqs = _as_dict(*user_sequences(train))
    pairs = {(u, i) for u, row in seqs.items() for i in row}
    assert pairs == set(map(tuple, train[EDGE].edge_index.T.tolist()))
    held = test[EDGE].edge_label_index[:, test[EDGE].edge_label == 1]
    assert not pairs & set(map(tuple, held.T.tolist()))  # no test item in any sequence
    assert seqs == _sequences_by_hand(train)  # still in time order


def test_sequences_after_pyg_batching(pyg_graph):
    from torch_geometric.data import Batch

    from conftest import random_graph
    other = random_graph(num_users=4, num_items=6, per_user=(1, 5), seed=12)
    batch = Batch.from_data_list([pyg_graph, other])
    assert batch[USER].num_nodes == 13 and batch[ITEM].num_nodes == 20
    got = _as_dict(*user_sequences(batch))
    want = _as_dict(*user_sequences(pyg_graph))
    want.update({u + 9: [i + 14 for i in row] for u, row in _as_dict(*user_sequences(other)).items()})
    assert got == want


def _reference_build(frame, dedup, kcore):
    """The builder as first written, in pandas steps: sort by time, drop duplicate pairs,
    factorize, k-core, order edges by (user, time, file order)."""
    f = frame.sort_values("time", kind="stable") if "time" in frame else frame
    f = f.drop_duplicates(["user", "item"], keep=dedup)
    if kcore > 1:
        while True:
            uc, ic = f["user"].map(f["user"].value_counts()), f["item"].map(f["item"].value_counts())
            kept = f[(uc >= kcore) & (ic >= kcore)]
            if len(kept) == len(f):
                break
            f = kept
    u, users = pd.factorize(f["user"], sort=True)
    i, items = pd.factorize(f["item"], sort=True)
    order = np.lexsort((np.arange(len(f)), u))  # f is time-sorted: user, then that order
    return u[order], i[order], f["time"].to_numpy()[order], list(users), list(items)


@pytest.mark.parametrize("seed,dedup,kcore,string_ids", [
    (0, "last", 0, False), (1, "first", 0, True), (2, "last", 3, False), (3, "first", 2, True)])
def test_build_matches_the_pandas_reference(seed, dedup, kcore, string_ids):
    """Duplicates (with tied times), k-core and edge order, against the step-by-step builder."""
    rng = np.random.default_rng(seed)
    n = 5000
    frame = pd.DataFrame({"user": rng.integers(0, 300, n), "item": rng.integers(0, 200, n),
                          "time": rng.integers(0, 50, n)})  # many ties and repeated pairs
    if string_ids:
        frame["user"] = ("u" + frame["user"].astype(str)).astype(object)
    from graphrec.data.readers import RawData
    ds = build(RawData(frame, "ref", "csv"), dedup=dedup, kcore=kcore)
    u, i, t, users, items = _reference_build(frame, dedup, kcore)
    ei = ds.graph[EDGE].edge_index
    assert ei[0].tolist() == u.tolist() and ei[1].tolist() == i.tolist()
    assert ds.graph[EDGE].time.tolist() == t.tolist()
    assert list(ds.users.raw) == users and list(ds.items.raw) == items
    assert ds.meta["duplicates"] == n - len(frame.drop_duplicates(["user", "item"]))
