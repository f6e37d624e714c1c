"""Readers: every format on small made-up files, format detection, real files, bad input."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graphrec.data import build, read
from graphrec.data import readers
from graphrec.data.readers import (ColumnNames, detect_format, read_atomic_features,
                                   read_lightgcn, read_movielens_100k)
from graphrec.errors import GraphrecError
from graphrec.data.graph import user_sequences
from graphrec.schema import EDGE, ITEM, PART, PART_TEST, PART_TRAIN, USER

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(os.environ["GRAPHREC_DATA"]) if os.environ.get("GRAPHREC_DATA") else SHARED


def shared_path(*parts: str) -> Path:
    """A path under the real data folder; skips the test with a reason when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data set not found at {path} (put it under {SHARED} or set "
                    "GRAPHREC_DATA to the folder holding ml-100k/ and gowalla/)")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def edge_pairs(ds) -> list[tuple]:
    """The graph's interactions as (raw user, raw item) pairs, in edge order."""
    ei = ds.graph[EDGE].edge_index
    return list(zip(ds.users.to_raw(ei[0]).tolist(), ds.items.to_raw(ei[1]).tolist()))


def frame_pairs(raw) -> list[tuple]:
    return list(zip(raw.frame["user"].tolist(), raw.frame["item"].tolist()))


# --------------------------------------------------------------------------------------------
# Each format on a made-up file

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t51\t2\t880606923\n"


def test_movielens_100k(tmp_path):
    path = write(tmp_path / "u.data", U_DATA)
    raw = read(path)
    assert raw.format == "ml-100k"
    f = raw.frame
    assert list(f.columns) == ["user", "item", "rating", "time"]
    assert f["user"].dtype == np.int64 and f["item"].dtype == np.int64
    assert f["rating"].dtype == np.float32 and f["time"].dtype == np.int64
    assert f["user"].tolist() == [196, 186, 22, 196]
    assert f["item"].tolist() == [242, 302, 377, 51]
    assert f["rating"].tolist() == [3.0, 3.0, 1.0, 2.0]
    assert f["time"].tolist() == [881250949, 891717742, 878887116, 880606923]
    assert raw.item_features is None and raw.user_features is None
    ds = build(raw)
    assert ds.users.raw.tolist() == [22, 186, 196]  # sorted raw ids -> 0..n-1
    assert ds.items.raw.tolist() == [51, 242, 302, 377]
    assert sorted(edge_pairs(ds)) == sorted(frame_pairs(raw))


def test_movielens_100k_ignores_grouplens_u_item_but_takes_atomic_item(tmp_path):
    """The GroupLens release has pipe-separated u.item/u.user beside u.data: not atomic files."""
    path = write(tmp_path / "u.data", U_DATA)
    write(tmp_path / "u.item", "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya|0|1\n")
    write(tmp_path / "u.user", "196|49|M|writer|55105\n")
    raw = read(path)
    assert raw.item_features is None and raw.user_features is None
    write(tmp_path / "ml-100k.item", "item_id:token\tclass:token_seq\n242\tComedy\n51\tDrama War\n")
    raw = read(path)
    assert raw.item_features is not None
    assert raw.item_features.loc[51, "class"] == "Drama War"
    assert raw.feature_types["item"] == {"class": "token_seq"}
    assert raw.user_features is None


def test_movielens_dat(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
                                           "6040::1097::4::956715518\n")
    raw = read(path)
    assert raw.format == "ml-dat"
    f = raw.frame
    assert f["user"].tolist() == [1, 1, 6040]
    assert f["item"].tolist() == [1193, 661, 1097]
    assert f["rating"].tolist() == [5.0, 3.0, 4.0]
    assert f["time"].tolist() == [978300760, 978302109, 956715518]
    assert f["time"].dtype == np.int64


def test_movielens_ratings_csv(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
                                           "1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
                                           "7,31,4.5,1260759185\n")
    raw = read(path)
    assert raw.format == "csv"
    f = raw.frame
    assert f["user"].tolist() == [1, 1, 7]
    assert f["item"].tolist() == [31, 1029, 31]
    assert f["rating"].tolist() == [2.5, 3.0, 4.5]
    assert f["time"].tolist() == [1260759144, 1260759179, 1260759185]


@pytest.mark.parametrize("sep,name,fmt", [(",", "events.csv", "csv"), ("\t", "events.tsv", "tsv")])
def test_generic_table_with_named_columns_and_string_ids(tmp_path, sep, name, fmt):
    rows = [("shopper", "sku", "stars", "when", "note"),
            ("u_b", "i-007", "4", "30", "x"),
            ("u_a", "i-1", "5", "10", "y"),
            ("u_b", "i-1", "1", "20", "z"),
            ("u_c", "i-42", "3", "40", "w")]
    path = write(tmp_path / name, "".join(sep.join(r) + "\n" for r in rows))
    cols = ColumnNames(user="shopper", item="sku", rating="stars", time="when")
    raw = read(path, columns=cols)
    assert raw.format == fmt
    f = raw.frame
    assert list(f.columns) == ["user", "item", "rating", "time"]
    assert f["user"].dtype == object and f["item"].dtype == object
    assert f["user"].tolist() == ["u_b", "u_a", "u_b", "u_c"]
    assert f["item"].tolist() == ["i-007", "i-1", "i-1", "i-42"]
    assert f["rating"].tolist() == [4.0, 5.0, 1.0, 3.0]
    assert f["time"].tolist() == [30, 10, 20, 40]

    ds = build(raw)
    # Contiguous indices in sorted raw-id order, and a round trip through the id maps.
    assert ds.users.raw.tolist() == ["u_a", "u_b", "u_c"]
    assert ds.items.raw.tolist() == ["i-007", "i-1", "i-42"]
    assert ds.users.to_index(["u_c", "u_a", "u_b"]).tolist() == [2, 0, 1]
    assert ds.items.to_index("i-007").tolist() == [0]
    assert ds.users.to_raw(ds.users.to_index(["u_b", "u_c"])).tolist() == ["u_b", "u_c"]
    assert ds.items.to_raw(torch.tensor([2, 0])).tolist() == ["i-42", "i-007"]
    with pytest.raises(GraphrecError, match="i-8"):
        ds.items.to_index(["i-1", "i-8"])
    assert sorted(edge_pairs(ds)) == sorted(frame_pairs(raw))
    # Only named columns are read: the extra "note" column is not an attribute.
    assert set(ds.graph[EDGE].keys()) == {"edge_index", "rating", "time"}


def test_table_without_rating_and_time_columns(tmp_path):
    path = write(tmp_path / "clicks.csv", "visitorid,product_id\nv1,p1\nv2,p1\n")
    raw = read(path)
    assert list(raw.frame.columns) == ["user", "item"]
    ds = build(raw)
    assert ds.meta["has_rating"] is False and ds.meta["has_time"] is False


def test_headerless_file_with_positional_columns(tmp_path):
    # Columns: time, item, user, rating: the positions are deliberately not in user/item order.
    path = write(tmp_path / "log.csv", "100,i9,u_x,4\n200,i3,u_y,2\n\n300,i9,u_y,5\n")
    cols = ColumnNames(user="2", item="1", rating="3", time="0", header=False)
    raw = read(path, columns=cols)
    f = raw.frame
    assert f["user"].tolist() == ["u_x", "u_y", "u_y"]
    assert f["item"].tolist() == ["i9", "i3", "i9"]
    assert f["rating"].tolist() == [4.0, 2.0, 5.0]
    assert f["time"].tolist() == [100, 200, 300]
    assert f.index.tolist() == [1, 2, 4]  # line numbers survive a blank line
    # unnamed, a headerless file's first two fields are user and item
    f = read(path, columns=ColumnNames(header=False)).frame
    assert list(f.columns) == ["user", "item"] and f["user"].tolist() == [100, 200, 300]


def test_space_separated_user_item_lines(tmp_path):
    """As BERT4Rec's data sets ship: `user item` per line, read with --sep ' ' --no-header."""
    path = write(tmp_path / "ml-1m.txt", "1 10\n1 11\n2 10\n3 12\n")
    raw = read(path, columns=ColumnNames(header=False), sep=" ")
    assert raw.frame["user"].tolist() == [1, 1, 2, 3] and raw.frame["item"].tolist() == [10, 11, 10, 12]
    assert read(path, columns=ColumnNames(header=False), sep="space").frame.equals(raw.frame)
    with pytest.raises(GraphrecError, match="--sep: expected one character"):
        read(path, sep="ab")
    with pytest.raises(GraphrecError, match="--sep: only for delimited files"):
        read(path, format="lightgcn", sep=" ")


def test_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "inter.parquet"
    pd.DataFrame({
        "customer_id": ["c-2", "c-1", "c-2"],
        "product_id": [10, 30, 20],
        "score": [1.5, 2.0, 5.0],
        "ts": [3, 1, 2],
    }).to_parquet(path)
    raw = read(path)
    assert raw.format == "parquet"
    f = raw.frame
    assert f["user"].tolist() == ["c-2", "c-1", "c-2"]
    assert f["item"].dtype == np.int64 and f["item"].tolist() == [10, 30, 20]
    assert f["rating"].dtype == np.float32 and f["rating"].tolist() == [1.5, 2.0, 5.0]
    assert f["time"].tolist() == [3, 1, 2]
    # Named columns override the aliases.
    raw2 = read(path, columns=ColumnNames(user="product_id", item="customer_id"))
    assert raw2.frame["user"].tolist() == [10, 30, 20]
    assert raw2.frame["item"].tolist() == ["c-2", "c-1", "c-2"]


ATOMIC_INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                "u_a\ti-007\t4\t100\n"
                "u_b\ti-1\t5\t200\n"
                "u_a\ti-1\t3\t50\n"
                "u_c\ti-9\t1\t70\n")
ATOMIC_ITEM = ("item_id:token\tmovie_title:token_seq\tclass:token_seq\tyear:token\tprice:float\n"
               "i-1\tToy Story\tAnimation Comedy\t1995\t9.5\n"
               "i-007\tGoldenEye\tAction\t1995\t\n"
               "i-5\tNot Rated\tDrama\t2001\t3\n")  # i-5 has no interactions; i-9 has no row
ATOMIC_USER = "user_id:token\tage:token\tgender:token\nu_b\t24\tF\nu_a\t53\tM\n"


def test_atomic_inter_with_item_and_user_files(tmp_path):
    write(tmp_path / "shop.item", ATOMIC_ITEM)
    write(tmp_path / "shop.user", ATOMIC_USER)
    path = write(tmp_path / "shop.inter", ATOMIC_INTER)
    raw = read(tmp_path)  # a folder with one .inter file
    assert raw.format == "atomic"
    assert raw.frame["user"].tolist() == ["u_a", "u_b", "u_a", "u_c"]
    assert raw.frame["item"].tolist() == ["i-007", "i-1", "i-1", "i-9"]
    assert raw.frame["time"].tolist() == [100, 200, 50, 70]
    assert raw.feature_types["item"] == {"movie_title": "token_seq", "class": "token_seq",
                                         "year": "token", "price": "float"}
    assert raw.feature_types["user"] == {"age": "token", "gender": "token"}
    assert raw.item_features.index.tolist() == ["i-1", "i-007", "i-5"]
    assert raw.item_features["price"].dtype == np.float32
    assert np.isnan(raw.item_features.loc["i-007", "price"])
    assert read(path).frame.equals(raw.frame)

    ds = build(raw)
    items = ds.items.raw.tolist()
    assert items == ["i-007", "i-1", "i-9"]  # only interacted items are nodes
    store = ds.graph[ITEM]
    info = ds.meta["features"]["item"]
    assert info["class"]["type"] == "multi_hot"
    vocab = info["class"]["vocab"]
    assert sorted(vocab) == vocab and set(vocab) == {"Action", "Animation", "Comedy"}  # no Drama
    genres = {raw_id: {vocab[j] for j in torch.nonzero(row).flatten().tolist()}
              for raw_id, row in zip(items, store["class"])}
    assert genres == {"i-007": {"Action"}, "i-1": {"Animation", "Comedy"}, "i-9": set()}
    assert store["class"].dtype == torch.float32
    assert store["price"].dtype == torch.float32
    assert store["price"].tolist() == [0.0, 9.5, 0.0]  # missing -> 0, absent row -> 0
    year_vocab = info["year"]["vocab"]
    assert year_vocab[0] == ""  # code 0 = missing
    assert [year_vocab[c] for c in store["year"].tolist()] == ["1995", "1995", ""]
    assert info["_coverage"] == pytest.approx(2 / 3)
    users = ds.users.raw.tolist()
    gender_vocab = ds.meta["features"]["user"]["gender"]["vocab"]
    assert users == ["u_a", "u_b", "u_c"]
    assert [gender_vocab[c] for c in ds.graph[USER]["gender"].tolist()] == ["M", "F", ""]


def test_atomic_features_keep_zero_padded_ids_as_strings(tmp_path):
    path = write(tmp_path / "x.item", "item_id:token\tyear:token\n007\t1999\n12\t2001\n")
    feats, types = read_atomic_features(path)
    assert feats.index.tolist() == ["007", "12"]
    assert types == {"year": "token"}


def test_lightgcn_pair(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 0\n\n2 3 1 0\n")
    write(tmp_path / "test.txt", "0 3\n2 2\n")
    for inputs in (tmp_path, [tmp_path / "train.txt", tmp_path / "test.txt"]):
        raw = read(inputs)
        assert raw.format == "lightgcn"
        f = raw.frame
        assert f["user"].tolist() == [0, 0, 1, 2, 2, 2, 0, 2]
        assert f["item"].tolist() == [1, 2, 0, 3, 1, 0, 3, 2]
        assert f[PART].tolist() == [PART_TRAIN] * 6 + [PART_TEST] * 2
    ds = build(raw)
    assert (ds.num_users, ds.num_items) == (3, 4)
    assert ds.meta["given_split"] is True
    part = ds.graph[EDGE][PART]
    assert part.dtype == torch.int8
    ei = ds.graph[EDGE].edge_index
    test_pairs = {(u, i) for u, i, p in zip(ei[0].tolist(), ei[1].tolist(), part.tolist())
                  if p == PART_TEST}
    assert test_pairs == {(0, 3), (2, 2)}
    # A train.txt alone: every edge is a training edge.
    raw = read(tmp_path / "train.txt")
    assert raw.frame[PART].tolist() == [PART_TRAIN] * 6


def test_lightgcn_string_ids_are_an_error(tmp_path):
    """LightGCN files hold integer ids; text ids are refused with the line, never turned into
    strings silently."""
    train = write(tmp_path / "train.txt", "u_a i-007 i-1\nu_b i-1\n")
    test = write(tmp_path / "test.txt", "u_b i-007\n")
    with pytest.raises(GraphrecError, match="line 1.*user id 'u_a' is not a 64-bit integer"):
        read_lightgcn(train, test)


def test_integer_looking_ids_stay_strings_when_any_id_is_not_canonical(tmp_path):
    path = write(tmp_path / "a.csv", "user,item\n007,5\n12,6\n7,5\n")
    raw = read(path)
    assert raw.frame["user"].tolist() == ["007", "12", "7"]  # "007" and "7" are different users
    assert raw.frame["item"].dtype == np.int64 and raw.frame["item"].tolist() == [5, 6, 5]
    ds = build(raw)
    assert ds.num_users == 3 and not ds.users.is_int and ds.items.is_int
    assert ds.users.to_raw(ds.users.to_index(["007", "7", "12"])).tolist() == ["007", "7", "12"]
    assert ds.users.to_index("007")[0] != ds.users.to_index("7")[0]

    path = write(tmp_path / "b.csv", "user,item\n007,x\n008,y\n")
    assert read(path).frame["user"].tolist() == ["007", "008"]
    path = write(tmp_path / "c.csv", "user,item\n7,1\n-3,2\n12,3\n")
    f = read(path).frame
    assert f["user"].dtype == np.int64 and f["user"].tolist() == [7, -3, 12]
    ds = build(read(path))
    assert ds.users.to_index(["12", 7]).tolist() == [2, 1]
    with pytest.raises(GraphrecError, match="7.5"):
        ds.users.to_index("7.5")  # not silently truncated to 7


def test_date_timestamps_are_seconds(tmp_path):
    path = write(tmp_path / "d.csv", "user,item,date\n1,2,2020-01-01\n1,3,2020-01-02 00:00:01\n")
    assert read(path).frame["time"].tolist() == [1577836800, 1577923201]


def test_large_file_path_gives_the_same_frame(tmp_path, monkeypatch):
    """Inputs above the progress threshold are read in chunks: same rows, same line numbers."""
    path = write(tmp_path / "r.csv", "user,item,rating\n1,2,3\n\n4,5,1\n6,7,x\n")
    with pytest.raises(GraphrecError, match="line 5:"):
        read(path)
    monkeypatch.setattr(readers, "_PROGRESS_BYTES", 0)
    with pytest.raises(GraphrecError, match="line 5:"):
        read(path)
    write(path, "user,item,rating\n1,2,3\n\n4,5,1\n")
    f = read(path).frame
    assert f.index.tolist() == [2, 4] and f["user"].tolist() == [1, 4]


# --------------------------------------------------------------------------------------------
# Format detection


@pytest.mark.parametrize("name,content,fmt", [
    ("u.data", U_DATA, "ml-100k"),
    ("ratings.dat", "1::2::3::4\n", "ml-dat"),
    ("ratings.csv", "userId,movieId\n1,2\n", "csv"),
    ("RATINGS.CSV", "userId,movieId\n1,2\n", "csv"),
    ("log.tsv", "user\titem\n1\t2\n", "tsv"),
    ("x.inter", "user_id:token\titem_id:token\n1\t2\n", "atomic"),
    ("train.txt", "0 1 2\n", "lightgcn"),
])
def test_detect_format_by_name(tmp_path, name, content, fmt):
    assert detect_format(write(tmp_path / name, content)) == fmt


def test_detect_format_parquet_and_folders(tmp_path):
    (tmp_path / "p.parquet").write_bytes(b"PAR1")
    assert detect_format(tmp_path / "p.parquet") == "parquet"
    folder = tmp_path / "gowalla"
    write(folder / "train.txt", "0 1\n")
    write(folder / "test.txt", "0 2\n")
    assert detect_format(folder) == "lightgcn"
    atomic = tmp_path / "atomic"
    write(atomic / "a.inter", "user_id:token\titem_id:token\n1\t2\n")
    assert detect_format(atomic) == "atomic"
    write(atomic / "b.inter", "user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(GraphrecError, match="folder"):
        detect_format(atomic)  # two .inter files: ambiguous


def test_detect_format_refuses_unknown_names(tmp_path):
    for path in (write(tmp_path / "data.foo", "1,2\n"), write(tmp_path / "tabs.txt", "1\t2\n")):
        with pytest.raises(GraphrecError) as e:
            detect_format(path)
        assert str(path) in str(e.value) and "--format" in str(e.value)


# --------------------------------------------------------------------------------------------
# Real files


def test_real_movielens_100k():
    raw = read(shared_path("ml-100k", "u.data"))
    ds = build(raw)
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100000)
    assert ds.meta["duplicates"] == 0
    assert ds.users.raw.tolist() == list(range(1, 944))
    assert ds.items.raw.tolist() == list(range(1, 1683))
    rating = ds.graph[EDGE]["rating"]
    assert rating.dtype == torch.float32
    assert sorted(rating.unique().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert ds.graph[EDGE]["time"].dtype == torch.int64
    assert int(user_sequences(ds.graph)[0].diff().min()) >= 20  # every user rated at least 20
    # The first line of u.data is 196 242 3 881250949.
    u, i = ds.users.to_index(196)[0], ds.items.to_index(242)[0]
    ei = ds.graph[EDGE].edge_index
    hit = ((ei[0] == u) & (ei[1] == i)).nonzero().flatten()
    assert hit.numel() == 1 and float(rating[hit]) == 3.0
    assert int(ds.graph[EDGE]["time"][hit]) == 881250949

    item = ds.graph[ITEM]
    info = ds.meta["features"]["item"]
    assert item["class"].shape == (1682, 19) and info["class"]["type"] == "multi_hot"
    vocab = info["class"]["vocab"]
    assert {"Action", "Comedy", "Drama", "unknown"} <= set(vocab)
    assert item["class"].sum(1).min() >= 1  # every movie has a genre ("unknown" included)
    toy = ds.items.to_index(1)[0]  # Toy Story: Animation Children's Comedy
    assert {vocab[j] for j in item["class"][toy].nonzero().flatten().tolist()} == {
        "Animation", "Children's", "Comedy"}
    assert info["movie_title"]["type"] == "text"
    titles = item["movie_title"]
    assert isinstance(titles, list) and len(titles) == 1682
    assert titles[toy] == "Toy Story"
    assert "gender" in ds.graph[USER] and ds.graph[USER]["gender"].shape == (943,)


@pytest.fixture(scope="module")
def gowalla():
    folder = shared_path("gowalla")
    return build(read(folder)), folder


def test_real_gowalla(gowalla):
    ds, folder = gowalla
    assert (ds.num_users, ds.num_items) == (29858, 40981)
    part = ds.graph[EDGE][PART]
    assert int((part == PART_TRAIN).sum()) == 810128
    assert int((part == PART_TEST).sum()) == 217242
    assert ds.num_interactions == 810128 + 217242
    assert ds.meta["given_split"] is True and ds.meta["duplicates"] == 0
    # Ids are already 0-based and contiguous: raw id i is index i.
    assert np.array_equal(ds.users.raw, np.arange(29858))
    assert np.array_equal(ds.items.raw, np.arange(40981))
    # User 0's training items are exactly the first line of train.txt.
    with open(folder / "train.txt") as fh:
        first = [int(t) for t in fh.readline().split()]
    ei = ds.graph[EDGE].edge_index
    mine = (ei[0] == first[0]) & (part == PART_TRAIN)
    assert sorted(ei[1][mine].tolist()) == sorted(first[1:])


# --------------------------------------------------------------------------------------------
# Bad input: GraphrecError naming the file (and line), on one line


def _error(fn) -> str:
    with pytest.raises(GraphrecError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_unknown_format(tmp_path):
    path = write(tmp_path / "r.csv", "user,item\n1,2\n")
    msg = _error(lambda: read(path, format="xyz"))
    assert "'xyz'" in msg and "--format" in msg and "csv" in msg


def test_undetectable_format(tmp_path):
    path = write(tmp_path / "r.foo", "user,item\n1,2\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "--format" in msg


def test_missing_columns(tmp_path):
    path = write(tmp_path / "r.csv", "who,item,rating\n1,2,3\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "user" in msg and "--user-col" in msg and "'who'" in msg
    path = write(tmp_path / "s.csv", "user,item\n1,2\n")
    msg = _error(lambda: read(path, columns=ColumnNames(user="nope")))
    assert str(path) in msg and "'nope'" in msg and "--user-col" in msg
    msg = _error(lambda: read(path, columns=ColumnNames(user="item")))
    assert str(path) in msg and "both" in msg


@pytest.mark.parametrize("name,text,line", [
    ("r.csv", "user,item,rating\n1,2,4\n1,3,good\n2,3,5\n", 3),
    ("r.csv", "user,item,rating\n\n1,2,4\n\n\n1,3,good\n2,3,5\n", 6),
    ("r.tsv", "user\titem\trating\n\n\n1\t3\t4x\n", 4),
    ("u.data", "\n\n1\t2\t3\t100\n\n1\t3\tbad\t100\n", 5),
    ("ratings.dat", "\n1::2::3::100\n\n\n1::3::bad::100\n", 5),
    ("x.inter", "user_id:token\titem_id:token\trating:float\n\n1\t2\t3\n1\t3\tfive\n", 4),
])
def test_non_numeric_rating_names_the_line(tmp_path, name, text, line):
    path = write(tmp_path / name, text)
    msg = _error(lambda: read(path))
    assert str(path) in msg and f"line {line}:" in msg and "rating" in msg


def test_nan_and_infinite_ratings(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\n1,2,4\n1,3,nan\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 3:" in msg and "'nan'" in msg
    path = write(tmp_path / "s.csv", "user,item,rating\n1,2,inf\n")
    assert "line 2:" in _error(lambda: read(path))
    path = write(tmp_path / "t.csv", "user,item,rating\n1,2,\n")  # missing rating
    assert "line 2:" in _error(lambda: read(path))


@pytest.mark.parametrize("name", ["r.csv", "u.data", "ratings.dat", "x.inter", "train.txt",
                                  "r.tsv"])
def test_empty_file(tmp_path, name):
    path = write(tmp_path / name, "")
    msg = _error(lambda: read(path, format="lightgcn" if name == "train.txt" else None))
    assert str(path) in msg and "empty" in msg


def test_header_only_file(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "no interactions" in msg


def test_u_data_line_with_too_few_or_too_many_fields(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t100\n\n1\t3\t4\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 3:" in msg and "4 fields" in msg
    path = write(tmp_path / "v" / "u.data", "1\t2\t3\t100\t7\n1\t3\t4\t100\t8\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "more fields" in msg
    path = write(tmp_path / "ratings.dat", "1::2::3::100\n1::3::4\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 2:" in msg


def test_empty_id(tmp_path):
    path = write(tmp_path / "r.csv", "user,item\n1,2\n,3\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 3:" in msg and "user" in msg


def test_lightgcn_test_ids_absent_from_training(tmp_path):
    write(tmp_path / "train.txt", "0 1 2\n1 0\n")
    test = write(tmp_path / "test.txt", "0 2\n\n1 9\n")
    msg = _error(lambda: read(tmp_path))
    assert str(test) in msg and "line 3:" in msg and "item 9" in msg and "train.txt" in msg
    write(test, "0 2\n5 1\n")
    msg = _error(lambda: read(tmp_path))
    assert str(test) in msg and "line 2:" in msg and "user 5" in msg


def test_lightgcn_same_pair_in_train_and_test(tmp_path):
    write(tmp_path / "train.txt", "0 1\n1 0 2\n")
    write(tmp_path / "test.txt", "0 2\n1 0\n")
    msg = _error(lambda: read(tmp_path))
    assert "test.txt: line 2" in msg and "user 1 has item 0" in msg
    assert "--overlap drop-from-test" in msg
    ds = build(read_lightgcn(tmp_path / "train.txt", tmp_path / "test.txt",
                             overlap="drop-from-test"))
    assert ds.meta["test_dropped_overlap"] == 1
    assert int((ds.graph[EDGE][PART] == PART_TEST).sum()) == 1


def test_predefined_split_from_any_format(tmp_path):
    """--data train.csv --test-data test.csv [--valid-data valid.csv], with the policies for
    messy public splits: test users absent from training, training pairs repeated in test."""
    from graphrec.data.readers import combine_parts

    train = write(tmp_path / "train.csv", "user,item,rating\na,1,5\na,2,4\nb,2,3\nc,3,1\n")
    test = write(tmp_path / "test.csv", "user,item,rating\na,3,2\nz,1,5\nb,2,3\nc,1,4\n")
    valid = write(tmp_path / "valid.csv", "user,item,rating\nb,1,2\n")
    tr, te, va = read(train), read(test), read(valid)
    msg = _error(lambda: combine_parts(tr, te))
    assert "test.csv: line 3: user 'z' does not occur in the training file train.csv" in msg
    assert "--unseen-test drop" in msg
    msg = _error(lambda: combine_parts(tr, te, unseen="drop"))
    assert "test.csv: line 4: user 'b' has item 2 in the training file" in msg
    raw = combine_parts(tr, te, va, unseen="drop", overlap="drop-from-test")
    assert raw.notes == {"test_dropped_unseen": 1, "test_dropped_overlap": 1}
    ds = build(raw)
    assert ds.meta["test_dropped_unseen"] == 1 and ds.meta["test_dropped_overlap"] == 1
    parts = ds.graph[EDGE][PART].tolist()
    assert sorted(parts) == [PART_TRAIN] * 4 + [1] + [PART_TEST] * 2
    with pytest.raises(GraphrecError, match="--unseen-test: unknown policy"):
        combine_parts(tr, te, unseen="keep")


def test_atomic_header_without_type(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id\n1\t2\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 1:" in msg and "'item_id'" in msg and "no type" in msg
    path = write(tmp_path / "y.inter", "user_id:token\titem_id:int\n1\t2\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "'int'" in msg
    # A bad side file beside a good .inter is reported too, under its own name.
    write(tmp_path / "x.inter", ATOMIC_INTER)
    side = write(tmp_path / "x.item", "item_id:token\ttitle\ni-1\tA\n")
    msg = _error(lambda: read(tmp_path / "x.inter"))
    assert str(side) in msg and "'title'" in msg


def test_nonexistent_path(tmp_path):
    for path in (tmp_path / "missing.csv", tmp_path / "nowhere"):
        msg = _error(lambda: read(path))
        assert str(path) in msg and "no such" in msg
    msg = _error(lambda: read([tmp_path / "missing_train.txt", tmp_path / "test.txt"],
                              format="lightgcn"))
    assert "missing_train.txt" in msg


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(os.urandom(64))
    msg = _error(lambda: read(path))
    assert str(path) in msg and "Parquet" in msg


def test_bad_timestamp_names_the_line(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,time\n1,2,5\n1,3,yesterday-ish\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 3:" in msg and "'yesterday-ish'" in msg
    path = write(tmp_path / "s.csv", "user,item,time\n1,2,2020-01-01\n\n1,3,17\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 4:" in msg and "'17'" in msg
    path = write(tmp_path / "t.csv", "user,item,time\n1,2,5\n1,3,inf\n")
    msg = _error(lambda: read(path))
    assert str(path) in msg and "line 3:" in msg and "finite" in msg


def test_reader_functions_are_also_usable_directly(tmp_path):
    path = write(tmp_path / "ratings.txt", U_DATA)  # u.data content under another name
    raw = read_movielens_100k(path)
    assert raw.frame["user"].tolist() == [196, 186, 22, 196]
    assert read(path, format="ml-100k").frame.equals(raw.frame)


# --------------------------------------------------------------------------------------------
# Side-feature values and quoting


def _atomic_with_items(tmp_path, item_text):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\n1\t2\n1\t3\n")
    (tmp_path / "x.item").write_text(item_text)
    return tmp_path / "x.inter"


@pytest.mark.parametrize("row,message", [
    ("3\tabc\t3", "line 3: price value 'abc' is not a number"),
    ("3\t\t3 x", "line 3: emb value 'x' is not a number"),
])
def test_atomic_numeric_features_must_be_numbers(tmp_path, row, message):
    path = _atomic_with_items(tmp_path, f"item_id:token\tprice:float\temb:float_seq\n2\t1.5\t1 2\n{row}\n")
    with pytest.raises(GraphrecError, match=message):
        read(path)


def test_tab_files_take_quotes_as_text(tmp_path):
    path = _atomic_with_items(tmp_path, 'item_id:token\ttitle:token_seq\n2\t"Quoted title\n3\tplain\n')
    raw = read(path)
    assert list(raw.item_features["title"]) == ['"Quoted title', "plain"]


def test_minus_zero_is_not_zero(tmp_path):
    path = tmp_path / "y.csv"
    path.write_text("user,item\n-0,a\n0,b\n")
    ds = build(read(path))
    assert list(ds.users.raw) == ["-0", "0"]


# --------------------------------------------------------------------------------------------
# --format pyg: a HeteroData that PyG made, with its own type names (built by hand, no download)


def pyg_movielens(folder, with_rev: bool = True):
    """A PyG-style graph: ('user', 'rates', 'movie') with rating and time, node features x."""
    from torch_geometric.data import HeteroData

    d = HeteroData()
    d["user"].x = torch.arange(12, dtype=torch.float32).view(4, 3)
    d["movie"].x = torch.arange(10, dtype=torch.float32).view(5, 2) + 100
    rates = ("user", "rates", "movie")
    d[rates].edge_index = torch.tensor([[0, 0, 1, 2, 3, 3], [1, 2, 0, 4, 3, 1]])
    d[rates].rating = torch.tensor([4.0, 5.0, 3.0, 2.0, 1.0, 5.0])
    d[rates].time = torch.tensor([10, 5, 3, 7, 1, 2])
    if with_rev:
        d["movie", "rev_rates", "user"].edge_index = d[rates].edge_index.flip(0)
    return d


def test_pyg_heterodata_reads_with_any_type_names(tmp_path):
    d = pyg_movielens(tmp_path)
    torch.save(d.to_dict(), tmp_path / "ml.pt")
    for edge_type in (None, "user,rates,movie"):  # the one forward edge type is found alone
        ds = build(read(tmp_path / "ml.pt", "pyg", edge_type=edge_type))
        g = ds.graph
        assert (ds.num_users, ds.num_items) == (4, 5)
        pairs = sorted(zip(*d["user", "rates", "movie"].edge_index.tolist()))
        assert sorted(zip(*g[EDGE].edge_index.tolist())) == pairs  # node indices are the ids
        ptr, items = user_sequences(g)
        assert items[ptr[0]:ptr[1]].tolist() == [2, 1]  # user 0: movie 2 (t=5) before 1 (t=10)
        assert g[EDGE].rating.dtype == torch.float32 and g[EDGE].time.dtype == torch.int64
        assert torch.equal(g[USER].features, d["user"].x) and torch.equal(g[ITEM].features, d["movie"].x)
    # a PyG InMemoryDataset file: (data dict, slices, class), still weights-only
    from torch_geometric.data import HeteroData
    torch.save((d.to_dict(), {}, HeteroData), tmp_path / "processed.pt")
    assert build(read(tmp_path / "processed.pt", "pyg")).num_interactions == 6


def test_pyg_graph_trains_from_the_command_line(tmp_path, capsys):
    from graphrec import train
    from graphrec.cli import run

    torch.save(pyg_movielens(tmp_path).to_dict(), tmp_path / "ml.pt")
    assert run(train.main, ["--data", str(tmp_path / "ml.pt"), "--format", "pyg", "--edge-type",
                            "user,rates,movie", "--model", "pop", "--no-progress",
                            "--out", str(tmp_path / "run"), "--k", "2", "--test-ratio",
                            "0.5"]) == 0
    assert "pop on" in capsys.readouterr().out


@pytest.mark.parametrize("case,message", [
    ("pickled", "not a weights-only PyG graph"),
    ("two-types", "2 edge types"),
    ("wrong-type", "--edge-type: "),
    ("bad-syntax", "--edge-type: expected SRC,REL,DST"),
    ("not-pyg", "--edge-type: only for --format pyg"),
    ("plain-dict", "not a PyG HeteroData"),
])
def test_pyg_bad_input_is_one_line(case, message, tmp_path, capsys):
    from graphrec import convert
    from graphrec.cli import run

    d = pyg_movielens(tmp_path, with_rev=False)
    path = tmp_path / "g.pt"
    edge_type = None
    fmt = "pyg"
    if case == "pickled":
        torch.save(d, path)  # the whole object: loading it would run pickled code
    elif case == "two-types":
        d["user", "likes", "movie"].edge_index = torch.tensor([[0], [0]])
        torch.save(d.to_dict(), path)
    elif case == "plain-dict":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        torch.save(d.to_dict(), path)
        edge_type = {"wrong-type": "user,watches,movie", "bad-syntax": "user-movie",
                     "not-pyg": "user,rates,movie"}[case]
        if case == "not-pyg":
            path = tmp_path / "x.csv"
            path.write_text("user,item\n1,2\n")
            fmt = "csv"
    argv = [str(path), "-o", str(tmp_path / "out.pt"), "--format", fmt]
    if edge_type:
        argv += ["--edge-type", edge_type]
    capsys.readouterr()
    assert run(convert.main, argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_graph_of_other_names_is_a_clear_error_in_propagation_and_splits():
    from graphrec.nn.propagation import normalized_adjacency
    from graphrec.split import SplitConfig, split

    d = pyg_movielens(None)
    for call in (lambda: normalized_adjacency(d), lambda: split(d, SplitConfig())):
        with pytest.raises(GraphrecError, match=r"no \('user', 'interacts', 'item'\) edges.*--format pyg"):
            call()


# --------------------------------------------------------------------------------------------
# The typed pyarrow parse against the checked one

FAST_CASES = {
    "ints.csv": "user,item,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n7,31,4.5,1260759185\n",
    "strings.csv": "user,item,stars\nu_b,i-007,4\n u_a ,i-1,5\nu_b,i-1,1\n",
    "noncanonical.csv": "user,item\n007,5\n12,6\n7,5\n",
    "intfloat.csv": "user,item,rating\n1.0,2.00,3\n4.0,5.0,1\n",
    "huge_ints.csv": "user,item\n99999999999999999999,1\n2,1\n",
    "signs.csv": "user,item\n-5,+3\n-0,4\n9223372036854775807,10\n",
    "negatives.csv": "user,item\n-5,3\n-120,4\n1000000000000000000,999999999999999999\n",
    "spaces.csv": "user,item\n 5,3\n6 ,4\n",
    "quoted.csv": 'user,item,rating\n"a,1",x,1\n"b",y,2\n',
    "blank_line.csv": "user,item,rating\n1,2,3\n\n4,5,1\n",
    "float_time.csv": "user,item,time\n1,2,1.5e9\n3,4,1600000000.4\n",
    "date_time.csv": "user,item,time\n1,2,2020-01-01\n3,4,2021-06-01 12:00:00\n",
    "bom.csv": "\ufeffuser,item\n1,2\n3,4\n",
    "tabs.tsv": 'user\titem\trating\n1\t"q\t2\n3\t4\t5\n',
    "u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
}


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_typed_parse_gives_the_checked_frame(name, tmp_path, monkeypatch):
    """Every file reads to the same frame (values, dtypes, line-number index) with the pyarrow
    parse as with the checked pandas parse alone."""
    path = write(tmp_path / name, FAST_CASES[name])
    fast = read(path).frame
    monkeypatch.setattr(readers, "_fast_table", lambda *a, **k: None)
    checked = read(path).frame
    pd.testing.assert_frame_equal(fast, checked)


@pytest.mark.parametrize("text,message", [
    ("user,item,rating\n1,2,x\n", "line 2: rating 'x' is not a finite number"),
    ("user,item,rating\n1,2,1e40\n", "line 2: rating '1e40' is beyond float32"),
    ("user,item,rating\n1,2,nan\n", "line 2: rating 'nan' is not a finite number"),
    ("user,item,rating\n1,,3\n", "line 2: empty item id"),
    ("user,item,time\n1,2,1e30\n", "line 2: timestamp '1e30' is outside int64 seconds"),
    ("user,item\n1,2,3\n", "more fields"),
    ("user,thing\n1,2\n", "no item column"),
    ("", "empty file"),
])
def test_old_error_cases_hold_with_the_typed_parse(text, message, tmp_path):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(GraphrecError, match=re.escape(message)):
        read(path)


def test_typed_parse_reads_real_ml100k_as_the_checked_parse(monkeypatch):
    path = shared_path("ml-100k", "u.data")
    fast = readers.read_movielens_100k(path).frame
    monkeypatch.setattr(readers, "_fast_table", lambda *a, **k: None)
    pd.testing.assert_frame_equal(fast, readers.read_movielens_100k(path).frame)
