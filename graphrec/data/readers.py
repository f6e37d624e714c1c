"""Readers: one function per file format, each returning the same raw frame.

Every reader returns a :class:`RawData` whose ``frame`` has the columns ``user`` and ``item`` (raw
ids: int64 when every id in the column is a plain integer, else strings) and, when the source has
them, ``rating`` (float32), ``time`` (int64 seconds) and ``part`` (int8, for predefined train/test
files). Side features come as frames keyed by raw id, with a RecBole-style type per column.

Bad input raises :class:`~graphrec.errors.GraphrecError` with the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from graphrec.errors import GraphrecError
from graphrec.names import FORMATS, OVERLAP_POLICIES, UNSEEN_POLICIES
from graphrec.schema import PART_TEST, PART_TRAIN, PART_VALID

FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")

# Column names tried, in order, when a CSV/TSV/Parquet file does not name them by flags.
USER_ALIASES = ("user", "user_id", "userid", "userId", "uid", "visitorid", "customer_id")
ITEM_ALIASES = ("item", "item_id", "itemid", "itemId", "movieId", "movie_id", "iid", "product_id")
RATING_ALIASES = ("rating", "ratings", "score", "stars")
TIME_ALIASES = ("timestamp", "time", "ts", "datetime", "date", "unix_timestamp")

_INT_RE = r"(?:0|-?[1-9][0-9]*)"  # canonical integers only: "007" and "-0" stay strings
# integers as float-formatting tools write them ("12.0"): the same ids as "12"
_INT_FLOAT_RE = _INT_RE + r"(?:\.0+)?"
# timestamps beyond these seconds do not fit int64 (a timestamp of 1e30 is a broken file)
_MAX_SECONDS = float(2**63 - 1024)
_PROGRESS_BYTES = 64 << 20  # show a progress bar for inputs larger than this


@dataclass
class ColumnNames:
    """Which columns of a delimited or Parquet file hold the user, item, rating and time.

    ``None`` means: look for a usual name (``user_id``, ``userId``, ...); rating and time are
    optional. ``header=False`` reads headerless files, where the names are 0-based positions.
    """

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    time: str | None = None
    header: bool = True


@dataclass
class RawData:
    """What a reader returns: interactions plus optional side features, all in raw ids."""

    frame: pd.DataFrame
    source: str
    format: str
    user_features: pd.DataFrame | None = None
    item_features: pd.DataFrame | None = None
    feature_types: dict[str, dict[str, str]] = field(default_factory=dict)
    #: counts the reader reports (held-out rows dropped by a policy), copied into the metadata
    notes: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Column conversion shared by every reader


def _lines(frame: pd.DataFrame, mask: np.ndarray) -> str:
    """Name the first few offending lines (1-based line numbers are kept in the index)."""
    bad = frame.index[mask][:3].tolist()
    more = "" if mask.sum() <= 3 else f" and {int(mask.sum()) - 3} more"
    return "line " + ", ".join(str(i) for i in bad) + more


def convert_ids(values: pd.Series, what: str, path: str) -> pd.Series:
    """Raw ids: int64 when every id is a plain integer (``12`` and ``12.0`` alike, the way
    float-formatting exports write integers), else stripped strings. Empty is an error."""
    s = values.astype("string").str.strip()
    empty = (s.isna() | (s == "")).to_numpy()
    if empty.any():
        raise GraphrecError(f"{path}: {_lines(s.to_frame(), empty)}: empty {what} id")
    if s.str.fullmatch(_INT_RE).all() or s.str.fullmatch(_INT_FLOAT_RE).all():
        try:
            return s.str.replace(r"\.0+$", "", regex=True).astype("int64")
        except (OverflowError, ValueError):
            pass  # integers beyond int64 stay strings
    return s.astype(object)


def convert_rating(values: pd.Series, path: str) -> pd.Series:
    """Ratings as float32; a non-numeric, NaN or infinite rating is an error naming the line."""
    num = pd.to_numeric(values.astype("string").str.strip(), errors="coerce")
    bad = ~np.isfinite(num.to_numpy(dtype="float64", na_value=np.nan))
    if bad.any():
        first = values[bad].iloc[0]
        raise GraphrecError(
            f"{path}: {_lines(values.to_frame(), bad)}: rating {str(first)!r} is not a finite number"
        )
    # checked again as stored: 1e40 is finite in float64 and infinite in float32
    with np.errstate(over="ignore"):
        stored = num.to_numpy(dtype="float64").astype(np.float32)
    bad = ~np.isfinite(stored)
    if bad.any():
        first = values[bad].iloc[0]
        raise GraphrecError(
            f"{path}: {_lines(values.to_frame(), bad)}: rating {str(first)!r} is beyond float32 "
            "(ratings are stored as float32, up to 3.4e38)"
        )
    return pd.Series(stored, index=values.index)


def convert_time(values: pd.Series, path: str) -> pd.Series:
    """Timestamps as int64 seconds: numbers are taken as Unix seconds, else parsed as dates."""
    text = values.astype("string").str.strip()
    num = pd.to_numeric(text, errors="coerce")
    if not num.isna().any():
        seconds = num.to_numpy(dtype="float64")
        bad = ~np.isfinite(seconds)
        if bad.any():
            raise GraphrecError(f"{path}: {_lines(values.to_frame(), bad)}: timestamps must be finite")
        bad = np.abs(seconds) > _MAX_SECONDS
        if bad.any():
            first = values[bad].iloc[0]
            raise GraphrecError(f"{path}: {_lines(values.to_frame(), bad)}: timestamp "
                                f"{str(first)!r} is outside int64 seconds")
        return num.astype("float64").round().astype("int64")
    try:
        parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=text.index)
    bad = parsed.isna().to_numpy()
    if bad.any():
        # Name the lines that are neither first; else the column mixes numbers and dates.
        neither = bad & num.isna().to_numpy()
        what = "is neither a number of seconds nor a date"
        if not neither.any():
            neither, what = bad, "is a number where other lines hold dates"
        first = values[neither].iloc[0]
        raise GraphrecError(
            f"{path}: {_lines(values.to_frame(), neither)}: timestamp {str(first)!r} {what}"
        )
    # pandas >= 3 parses strings at microsecond (not nanosecond) resolution: divide by a
    # Timedelta, which is right at any resolution.
    epoch = pd.Timestamp(0, tz="UTC")
    return ((parsed - epoch) // pd.Timedelta(seconds=1)).astype("int64")


def _not_utf8(path: Path, error: UnicodeDecodeError | None = None) -> str:
    """One line for a file that is not UTF-8 text: binary data, or where the first byte that is
    not UTF-8 sits (found by decoding the file again, since a parser's error offset is within
    its buffer), and what to do about it."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            if b"\0" in chunk:
                at = offset + chunk.index(b"\0")
                return f"{path}: not a text file (binary data at byte {at})"
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                where = offset + e.start
                line += chunk[:e.start].count(b"\n")
                return (f"{path}: not UTF-8 text (byte 0x{chunk[e.start]:02x} at line {line}, "
                        f"offset {where}); re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8")
            offset += len(chunk)
            line += chunk.count(b"\n")
    return f"{path}: not UTF-8 text ({error.reason if error else 'undecodable'})"


def _finish(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    """Convert the raw string columns of a reader's frame to the canonical types."""
    if len(frame) == 0:
        raise GraphrecError(f"{path}: no interactions (empty file)")
    out = pd.DataFrame(index=frame.index)
    out["user"] = convert_ids(frame["user"], "user", path)
    out["item"] = convert_ids(frame["item"], "item", path)
    if "rating" in frame:
        out["rating"] = convert_rating(frame["rating"], path)
    if "time" in frame:
        out["time"] = convert_time(frame["time"], path)
    if "part" in frame:
        out["part"] = frame["part"].astype("int8")
    return out


# --------------------------------------------------------------------------------------------
# Delimited text: a typed pyarrow parse for clean files, the checked pandas parse otherwise
#
# The fast path parses the wanted columns with pyarrow (ids as text, rating and time as
# float64, as the checked path reads them) and converts them with the same rules. Anything it
# does not take as clean (a parse error, a null, an empty id, a bad number, a date column)
# returns None, and the file is read again by the checked path, whose one-line errors name the
# line. So both give the same frame for a clean file, and the same error for a bad one.


def _first_fields(path: Path, sep: str) -> list[str] | None:
    """The first line's fields (the header, or a count of the columns), or None if unreadable."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            line = fh.readline()
    except (OSError, UnicodeDecodeError):
        return None
    if not line.strip():
        return None
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    return next(csv.reader([line], delimiter=sep, quoting=quoting), None)


_POW10 = np.array([10**k for k in range(19)], dtype=np.int64)


def _canonical_ints(column: Any) -> np.ndarray | None:
    """The ids as int64 when every one is written as a canonical integer (no sign but ``-``, no
    leading zero, no space), checked without a regex: the text is as long as the number's
    digits. None otherwise."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values = pc.cast(column, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if len(values) and values.min() == np.iinfo(np.int64).min:
        return None
    magnitude = np.abs(values)
    # digits by one comparison per power of ten up to the largest id (a binary search per
    # value, np.searchsorted, took 5x longer); a canonical integer is ASCII, so bytes = digits
    digits = np.ones(len(values), dtype=np.int64)
    top = int(magnitude.max()) if len(values) else 0
    for power in _POW10[1:]:
        if power > top:
            break
        digits += magnitude >= power
    length = pc.binary_length(column).to_numpy()
    return values if np.array_equal(length, digits + (values < 0)) else None


def _fast_ids(column: Any, what: str) -> pd.Series | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count == 0:
        ints = _canonical_ints(column)
        if ints is not None:
            return pd.Series(ints, name=what)
    text = pc.utf8_trim_whitespace(column)
    if text.null_count or bool(pc.any(pc.equal(text, "")).as_py()):
        return None  # the checked path names the line
    for pattern in (_INT_RE, _INT_FLOAT_RE):
        if bool(pc.all(pc.match_substring_regex(text, f"^{pattern}$")).as_py()):
            try:
                digits = pc.replace_substring_regex(text, r"\.0+$", "") if pattern != _INT_RE else text
                return pd.Series(pc.cast(digits, pa.int64()).to_numpy(), name=what)
            except (pa.ArrowInvalid, OverflowError):
                break  # integers beyond int64 stay strings
    return pd.Series(text.to_numpy(zero_copy_only=False), name=what, dtype=object)


def _fast_table(path: Path, sep: str, header: bool, n_fields: int,
                wanted: dict[str, str]) -> pd.DataFrame | None:
    """``{canonical name: file column}`` of ``path`` (``n_fields`` per line, as its first line
    has) as the canonical frame, or None."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return None
    names = None if header else [str(i) for i in range(n_fields)]
    types = {c: (pa.string() if k in ("user", "item") else pa.float64())
             for k, c in wanted.items()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            # a blank line (kept as a line number by the checked path) is not clean: fall back
            parse_options=pacsv.ParseOptions(delimiter=sep, ignore_empty_lines=False,
                                             quote_char=False if sep == "\t" else '"'),
            convert_options=pacsv.ConvertOptions(column_types=types,
                                                 include_columns=list(wanted.values()),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowKeyError, KeyError, OSError,
            UnicodeDecodeError):
        return None
    if table.num_rows == 0:
        return None
    first = 2 if header else 1  # the index is the line number, as the checked path keeps it
    out = pd.DataFrame(index=pd.RangeIndex(first, first + table.num_rows))
    for key in ("user", "item"):
        ids = _fast_ids(table.column(wanted[key]), key)
        if ids is None:
            return None
        out[key] = ids.set_axis(out.index)
    if "rating" in wanted:
        col = table.column(wanted["rating"])
        if col.null_count:
            return None
        values = col.to_numpy()
        with np.errstate(over="ignore"):
            stored = values.astype(np.float32)
        if not (np.isfinite(values).all() and np.isfinite(stored).all()):
            return None
        out["rating"] = stored
    if "time" in wanted:
        col = table.column(wanted["time"])
        if col.null_count:
            return None
        seconds = col.to_numpy()
        if not (np.isfinite(seconds).all() and (np.abs(seconds) <= _MAX_SECONDS).all()):
            return None
        out["time"] = np.round(seconds).astype("int64")  # as pandas' float64 -> int64
    return out


# --------------------------------------------------------------------------------------------
# Delimited text: the checked parse


def _parse_csv(path: Path, kwargs: dict, names: list[str] | None) -> pd.DataFrame:
    """``pd.read_csv`` with a progress bar for large files."""
    size = path.stat().st_size
    if size <= _PROGRESS_BYTES:
        return pd.read_csv(path, **kwargs)
    chunks = []
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path.name}") as bar:
        with open(path, "rb") as fh:
            reader = pd.read_csv(fh, chunksize=1 << 20, **kwargs)
            for chunk in reader:
                chunks.append(chunk)
                bar.update(fh.tell() - bar.n)
    return pd.concat(chunks) if chunks else pd.DataFrame(columns=names)


def _read_delimited(
    path: Path, sep: str, header: bool, names: list[str] | None = None, n_fields: int | None = None
) -> pd.DataFrame:
    """Read a delimited file as strings, index = 1-based line numbers, blank lines dropped."""
    kwargs = dict(
        sep=sep,
        header=0 if header else None,
        names=names,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        index_col=False,  # never take a first column as the index when lines have extra fields
        engine="c",
        # Tab-separated files (u.data, RecBole atomic files) have no quoting: a field starting
        # with '"' is text, and an unmatched quote must not swallow the lines after it.
        quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # extra fields: error, not loss
            frame = _parse_csv(path, kwargs, names)
    except pd.errors.EmptyDataError:
        raise GraphrecError(f"{path}: no interactions (empty file)") from None
    except pd.errors.ParserError as e:
        raise GraphrecError(f"{path}: {str(e).strip().splitlines()[-1]}") from None
    except pd.errors.ParserWarning:
        raise GraphrecError(
            f"{path}: lines have more fields than {'the header names' if header else 'expected'}"
        ) from None
    except UnicodeDecodeError as e:
        raise GraphrecError(_not_utf8(path, e)) from None
    frame.index = frame.index + (2 if header else 1)
    frame = frame[~(frame == "").all(axis=1).to_numpy()]  # blank lines
    if n_fields is not None and len(frame):
        missing = (frame.iloc[:, n_fields - 1] == "").to_numpy()
        if missing.any():
            raise GraphrecError(f"{path}: {_lines(frame, missing)}: expected {n_fields} fields")
    return frame


def read_movielens_100k(path: str | Path) -> RawData:
    """MovieLens ``u.data``: ``user<TAB>item<TAB>rating<TAB>timestamp``, no header."""
    path = Path(path)
    fields = _first_fields(path, "\t")
    fast = (_fast_table(path, "\t", False, 4, {"user": "0", "item": "1", "rating": "2", "time": "3"})
            if fields is not None and len(fields) == 4 else None)
    if fast is None:
        fast = _finish(_read_delimited(path, "\t", False, ["user", "item", "rating", "time"],
                                       n_fields=4), str(path))
    raw = RawData(fast, str(path), "ml-100k")
    # The GroupLens release ships its own pipe-separated u.item/u.user beside u.data.
    return _with_side_features(raw, path, ignore=("u.item", "u.user"))


def read_movielens_dat(path: str | Path) -> RawData:
    """MovieLens 1M/10M ``ratings.dat``: ``user::item::rating::timestamp``, no header."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise GraphrecError(_not_utf8(path, e)) from None
    # pandas' C parser takes one-character separators only; '::' -> tab keeps it fast.
    buf = io.StringIO(text.replace("::", "\t"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # extra fields: error, not loss
            frame = pd.read_csv(
                buf, sep="\t", header=None, names=["user", "item", "rating", "time"], dtype=str,
                keep_default_na=False, skip_blank_lines=False, index_col=False, engine="c",
            )
    except pd.errors.EmptyDataError:
        raise GraphrecError(f"{path}: no interactions (empty file)") from None
    except pd.errors.ParserError as e:
        raise GraphrecError(f"{path}: {str(e).strip().splitlines()[-1]}") from None
    except pd.errors.ParserWarning:
        raise GraphrecError(f"{path}: lines have more than 4 fields separated by '::'") from None
    frame.index = frame.index + 1  # 1-based line numbers; blank lines are kept until here
    frame = frame[~(frame == "").all(axis=1).to_numpy()]
    missing = (frame["time"] == "").to_numpy()
    if missing.any():
        raise GraphrecError(f"{path}: {_lines(frame, missing)}: expected 4 fields separated by '::'")
    return RawData(_finish(frame, str(path)), str(path), "ml-dat")


def _pick(columns: list[str], wanted: str | None, aliases: tuple[str, ...], what: str,
          path: Path, required: bool, flag: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise GraphrecError(
                f"{path}: no column {wanted!r} (given by {flag}); columns are {columns}"
            )
        return wanted
    lower = {c.lower(): c for c in columns}
    for a in aliases:
        if a.lower() in lower:
            return lower[a.lower()]
    if required:
        raise GraphrecError(
            f"{path}: no {what} column found among {columns}; name it with {flag}"
        )
    return None


def _column_names(columns: list[str], cols: ColumnNames, path: Path) -> dict[str, str]:
    """``{"user": column, "item": column, ["rating": ..., "time": ...]}`` of a file's columns,
    found by the usual names or named in ``cols``."""
    names = {
        "user": _pick(columns, cols.user, USER_ALIASES, "user", path, True, "--user-col"),
        "item": _pick(columns, cols.item, ITEM_ALIASES, "item", path, True, "--item-col"),
        "rating": _pick(columns, cols.rating, RATING_ALIASES, "rating", path, False, "--rating-col"),
        "time": _pick(columns, cols.time, TIME_ALIASES, "time", path, False, "--time-col"),
    }
    if names["user"] == names["item"]:
        raise GraphrecError(f"{path}: user and item columns are both {names['user']!r}")
    return {k: c for k, c in names.items() if c is not None}


def _select(frame: pd.DataFrame, cols: ColumnNames, path: Path) -> pd.DataFrame:
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    names = _column_names(columns, cols, path)
    return frame[list(names.values())].set_axis(list(names), axis=1)


def read_table(path: str | Path, sep: str = ",", columns: ColumnNames | None = None) -> RawData:
    """A CSV/TSV file with user, item and optional rating/time columns (MovieLens
    ``ratings.csv`` included). Columns are found by usual names or named in ``columns``."""
    path = Path(path)
    cols = columns or ColumnNames()
    if not cols.header:  # headerless: the first two fields are user and item unless named
        cols = dataclasses.replace(cols, user=cols.user or "0", item=cols.item or "1")
    fields = _first_fields(path, sep)
    if fields and len(set(fields)) == len(fields):
        names = [str(i) for i in range(len(fields))] if not cols.header else fields
        try:
            wanted = _column_names(names, cols, path)
        except GraphrecError:
            wanted = None  # the checked path says what is wrong
        fast = _fast_table(path, sep, cols.header, len(fields), wanted) if wanted else None
        if fast is not None:
            return RawData(fast, str(path), "tsv" if sep == "\t" else "csv")
    frame = _read_delimited(path, sep, cols.header)
    if not cols.header:
        frame.columns = [str(i) for i in range(frame.shape[1])]
    selected = _select(frame, cols, path)
    return RawData(_finish(selected, str(path)), str(path), "tsv" if sep == "\t" else "csv")


def read_parquet(path: str | Path, columns: ColumnNames | None = None) -> RawData:
    """A Parquet file with user, item and optional rating/time columns."""
    path = Path(path)
    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise GraphrecError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise GraphrecError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    frame.index = pd.RangeIndex(1, len(frame) + 1)  # "line" = row number for Parquet
    selected = _select(frame, columns or ColumnNames(), path)
    return RawData(_finish(selected, str(path)), str(path), "parquet")


# --------------------------------------------------------------------------------------------
# RecBole atomic files


def _atomic_header(path: Path) -> tuple[list[str], list[str]]:
    with open(path) as fh:
        first = fh.readline().rstrip("\r\n")
    if not first:
        raise GraphrecError(f"{path}: empty file (an atomic file starts with a typed header)")
    names, types = [], []
    for field_ in first.split("\t"):
        if ":" not in field_:
            raise GraphrecError(
                f"{path}: line 1: header field {field_!r} has no type (expected name:token, "
                "name:token_seq, name:float or name:float_seq)"
            )
        name, typ = field_.rsplit(":", 1)
        if typ not in FEATURE_TYPES:
            raise GraphrecError(f"{path}: line 1: unknown field type {typ!r} in {field_!r}")
        names.append(name)
        types.append(typ)
    return names, types


def read_atomic_inter(path: str | Path, columns: ColumnNames | None = None) -> RawData:
    """RecBole atomic ``.inter`` file; ``<stem>.item`` / ``<stem>.user`` beside it are read as
    side features when present."""
    path = Path(path)
    names, _ = _atomic_header(path)
    frame = _read_delimited(path, "\t", True)
    frame.columns = names
    selected = _select(frame, columns or ColumnNames(), path)
    raw = RawData(_finish(selected, str(path)), str(path), "atomic")
    return _with_side_features(raw, path)


def read_atomic_features(path: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A RecBole ``.item``/``.user`` file: the first column is the raw id, the rest typed features.

    Returns the frame (index = raw id, converted like interaction ids) and ``{column: type}``.
    """
    path = Path(path)
    names, types = _atomic_header(path)
    frame = _read_delimited(path, "\t", True)
    if frame.shape[1] != len(names):
        raise GraphrecError(f"{path}: header names {len(names)} fields, rows have {frame.shape[1]}")
    frame.columns = names
    ids = convert_ids(frame[names[0]], "id", str(path))
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise GraphrecError(f"{path}: id {dup!r} appears on more than one line")
    feats = frame.drop(columns=names[0])
    for name, typ in zip(names[1:], types[1:]):
        col = feats[name].astype("string").str.strip()
        if typ == "float":
            num = pd.to_numeric(col.replace("", pd.NA), errors="coerce")
            bad = (num.isna() & (col != "")).to_numpy()
            if bad.any():
                raise GraphrecError(f"{path}: {_lines(feats, bad)}: {name} value "
                                    f"{col[bad].iloc[0]!r} is not a number")
            feats[name] = num.astype("float32")
        elif typ == "float_seq":
            tokens = col.str.split().explode().dropna()
            bad_tokens = pd.to_numeric(tokens, errors="coerce").isna()
            if bad_tokens.any():
                bad = feats.index.isin(tokens.index[bad_tokens.to_numpy()])
                raise GraphrecError(f"{path}: {_lines(feats, bad)}: {name} value "
                                    f"{tokens[bad_tokens].iloc[0]!r} is not a number")
    feats.index = pd.Index(ids.to_numpy(), name="id")
    return feats, dict(zip(names[1:], types[1:]))


def _with_side_features(raw: RawData, path: Path, ignore: tuple[str, ...] = ()) -> RawData:
    """Attach ``.item``/``.user`` atomic files found beside ``path``: ``<stem>.item`` first, else
    the only ``*.item`` file in the folder. Files named in ``ignore`` are not atomic files (the
    GroupLens ``u.item``/``u.user`` beside ``u.data``) and are never taken."""
    for kind in ("item", "user"):
        candidates = [path.with_suffix(f".{kind}")]
        if not candidates[0].exists() or candidates[0].name in ignore:
            candidates = sorted(p for p in path.parent.glob(f"*.{kind}") if p.name not in ignore)
        if len(candidates) == 1 and candidates[0].is_file():
            feats, types = read_atomic_features(candidates[0])
            setattr(raw, f"{kind}_features", feats)
            raw.feature_types[kind] = types
    return raw


# --------------------------------------------------------------------------------------------
# LightGCN / NGCF adjacency lists


def _read_adjacency(path: Path) -> pd.DataFrame:
    """``user item item ...`` per line -> a frame of (user, item) strings with line numbers."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise GraphrecError(_not_utf8(path, e)) from None
    lines = text.splitlines()
    iterator = tqdm(lines, desc=f"reading {path.name}", unit="line",
                    disable=len(text) < _PROGRESS_BYTES)
    rows = [line.split() for line in iterator]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.array([t for r in rows for t in r], dtype=object)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    has = lengths > 0
    line_no = np.arange(1, len(rows) + 1)
    users = flat[starts[has]]
    n_items = lengths[has] - 1
    item_mask = np.ones(len(flat), dtype=bool)
    item_mask[starts[has]] = False
    frame = pd.DataFrame(
        {"user": np.repeat(users, n_items), "item": flat[item_mask]},
        index=np.repeat(line_no[has], n_items),
    )
    return frame


def _fits_int64(value: object) -> bool:
    """Whether ``value`` is the text of an integer that fits int64."""
    text = str(value)
    return bool(pd.Series([text]).str.fullmatch(_INT_RE).iloc[0]) and -2**63 <= int(text) < 2**63


def read_lightgcn(train: str | Path, test: str | Path | None = None, unseen: str = "error",
                  overlap: str = "error") -> RawData:
    """The LightGCN/NGCF pair ``train.txt``/``test.txt`` (one line per user:
    ``user item item ...``). Edges carry ``part`` = train or test; test ids must occur in train
    (``unseen``, ``overlap``: the policies of :func:`combine_parts`).
    """
    train = Path(train)
    parts = [_read_adjacency(train)]
    if not len(parts[0]):
        empty = not train.read_bytes().strip()
        raise GraphrecError(f"{train}: no interactions (" + (
            "empty file)" if empty else "every line holds a user id without items; the format "
            "is 'user item item ...' per line)"))
    if test is not None:
        test = Path(test)
        parts.append(_read_adjacency(test))
    frames = [_finish(p, str(f)) for p, f in zip(parts, [train, test])]
    for frame, f in zip(frames, [train, test]):
        for col in ("user", "item"):
            if frame[col].dtype.kind != "i":  # the format numbers users and items
                bad = ~frame[col].map(_fits_int64).to_numpy()  # an error path: a loop is fine
                raise GraphrecError(f"{f}: {_lines(frame, bad)}: {col} id "
                                    f"{str(frame[col][bad].iloc[0])!r} is not a 64-bit integer "
                                    "(LightGCN files hold integer ids)")
    source = str(train.parent if test else train)
    raws = [RawData(f, str(path), "lightgcn") for f, path in zip(frames, [train, test])]
    if len(raws) == 1:
        return RawData(frames[0].assign(part=PART_TRAIN), source, "lightgcn")
    combined = combine_parts(raws[0], raws[1], None, unseen, overlap)
    combined.source = source
    return combined




def combine_parts(train: RawData, test: RawData, valid: RawData | None = None,
                  unseen: str = "error", overlap: str = "error") -> RawData:
    """A predefined split from separate files: one frame whose ``part`` column says train,
    test or valid, with the training file's side features.

    Held-out rows must be evaluable. ``unseen``: a held-out user or item that never occurs in
    training is an error naming the line (``"error"``), or the row is dropped and counted
    (``"drop"``). ``overlap``: a held-out (user, item) pair that is also a training pair is an
    error (``"error"``: it would leak), or the held-out row is dropped and counted
    (``"drop-from-test"``). The counts are in ``notes`` and the graph's metadata.
    """
    if unseen not in UNSEEN_POLICIES:
        raise GraphrecError(f"--unseen-test: unknown policy {unseen!r}; choose one of "
                            f"{', '.join(UNSEEN_POLICIES)}")
    if overlap not in OVERLAP_POLICIES:
        raise GraphrecError(f"--overlap: unknown policy {overlap!r}; choose one of "
                            f"{', '.join(OVERLAP_POLICIES)}")
    held = [(test, PART_TEST, "test")] + ([(valid, PART_VALID, "valid")] if valid else [])
    frames = [train.frame.drop(columns=["part"], errors="ignore")] + \
             [r.frame.drop(columns=["part"], errors="ignore") for r, _, _ in held]
    for col in ("user", "item"):  # ints in one file, a string in another: compare as text
        if len({f[col].dtype.kind for f in frames}) > 1:
            for f in frames:
                f[col] = f[col].astype(str).astype(object)
    common = [c for c in frames[0].columns if all(c in f for f in frames[1:])]
    tr = frames[0]
    notes: dict[str, int] = {}
    out = [tr[common].assign(part=PART_TRAIN)]
    for (raw, code, name), frame in zip(held, frames[1:]):
        absent = np.zeros(len(frame), dtype=bool)
        for col in ("user", "item"):
            missing = ~frame[col].isin(pd.unique(tr[col])).to_numpy()
            if missing.any() and unseen == "error":
                first = frame[col][missing].tolist()[0]  # a Python value for the repr
                raise GraphrecError(
                    f"{raw.source}: {_lines(frame, missing)}: {col} {first!r} does not occur in "
                    f"the training file {Path(train.source).name} (--unseen-test drop drops "
                    "such rows)")
            absent |= missing
        pairs = pd.MultiIndex.from_frame(frame[["user", "item"]])
        known = pairs.isin(pd.MultiIndex.from_frame(tr[["user", "item"]]))
        if known.any() and overlap == "error":
            first = [frame["user"][known].tolist()[0], frame["item"][known].tolist()[0]]
            raise GraphrecError(
                f"{raw.source}: {_lines(frame, known)}: user {first[0]!r} has item {first[1]!r} "
                f"in the training file {Path(train.source).name} too ({int(known.sum())} such "
                "rows; that would leak; --overlap drop-from-test drops them)")
        if absent.any():
            notes[f"{name}_dropped_unseen"] = int(absent.sum())
        if (known & ~absent).any():
            notes[f"{name}_dropped_overlap"] = int((known & ~absent).sum())
        out.append(frame[~(absent | known)][common].assign(part=code))
    frame = pd.concat(out, ignore_index=True)
    frame["part"] = frame["part"].astype("int8")
    return RawData(frame, train.source, train.format, train.user_features, train.item_features,
                   train.feature_types, notes)


# --------------------------------------------------------------------------------------------
# Format detection and the one entry point


def detect_format(path: Path) -> str:
    """Guess the format from the file name, extension and first line; error when ambiguous."""
    if path.is_dir():
        if (path / "train.txt").exists():
            return "lightgcn"
        inters = sorted(path.glob("*.inter"))
        if len(inters) == 1:
            return "atomic"
        raise GraphrecError(
            f"{path}: a folder must hold train.txt (and test.txt) or one .inter file; "
            "name the file itself instead"
        )
    if not path.exists():
        raise GraphrecError(f"{path}: no such file or folder")
    name, suffix = path.name.lower(), path.suffix.lower()
    if name == "u.data":
        return "ml-100k"
    if suffix == ".inter":
        return "atomic"
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".dat":
        return "ml-dat"
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".txt":
        with open(path, errors="replace") as fh:
            first = fh.readline()
        if "\t" not in first and len(first.split()) >= 2:
            return "lightgcn"
    raise GraphrecError(
        f"{path}: cannot tell the format from the name; pass --format, one of {', '.join(FORMATS)}"
    )


def read(
    inputs: list[str | Path] | str | Path,
    format: str | None = None,
    columns: ColumnNames | None = None,
    edge_type: str | tuple | None = None,
    sep: str | None = None,
    unseen: str = "error",
    overlap: str = "error",
) -> RawData:
    """Read interactions from one file, a LightGCN train/test pair or a folder.

    Args:
        inputs: a path or a list of paths. Two paths are a LightGCN train/test pair.
        format: one of :data:`FORMATS`, or ``None`` to detect it (a saved PyG graph is a
            ``.pt`` file like graphrec's own: name it with ``pyg``).
        columns: column names for ``csv``/``tsv``/``parquet``/``atomic`` inputs.
        edge_type: ``pyg`` only: the interaction edge type, ``"SRC,REL,DST"``.
        sep: the field delimiter of a delimited file (one character, ``\\t`` for a tab); the
            file then reads as ``csv`` (or the ``tsv`` it is named as) whatever its name.
        unseen, overlap: a LightGCN pair's policies for messy test rows (:func:`combine_parts`).
    """
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not paths:
        raise GraphrecError("no input given")
    if format is not None and format not in FORMATS:
        raise GraphrecError(f"--format: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    for p in paths:
        if not p.exists():
            raise GraphrecError(f"{p}: no such file or folder")
    if sep is not None:
        sep = {"\\t": "\t", "tab": "\t", "space": " "}.get(sep, sep)
        if len(sep) != 1 or sep in ('"', "\n", "\r"):
            raise GraphrecError(f"--sep: expected one character (or \\t), got {sep!r}")
        if format not in (None, "csv", "tsv"):
            raise GraphrecError(f"--sep: only for delimited files (csv, tsv), not --format {format}")
        format = format or "csv"
    fmt = format or detect_format(paths[0])
    if fmt == "lightgcn":
        if len(paths) == 1 and paths[0].is_dir():
            folder = paths[0]
            test = folder / "test.txt"
            return read_lightgcn(folder / "train.txt", test if test.exists() else None,
                                 unseen, overlap)
        if len(paths) > 2:
            raise GraphrecError("the lightgcn format takes train.txt and at most one test.txt")
        return read_lightgcn(paths[0], paths[1] if len(paths) == 2 else None, unseen, overlap)
    if len(paths) != 1:
        raise GraphrecError(f"the {fmt} format takes one input file, got {len(paths)}")
    path = paths[0]
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if fmt != "atomic" or len(inters) != 1:
            raise GraphrecError(f"{path}: is a folder; name the {fmt} file itself")
        path = inters[0]
    if edge_type is not None and fmt != "pyg":
        raise GraphrecError("--edge-type: only for --format pyg")
    if fmt == "pyg":
        from graphrec.data.pyg import read_pyg

        return read_pyg(path, edge_type)
    if fmt == "ml-100k":
        return read_movielens_100k(path)
    if fmt == "ml-dat":
        return read_movielens_dat(path)
    if fmt == "csv":
        return read_table(path, sep or ",", columns)
    if fmt == "tsv":
        return read_table(path, sep or "\t", columns)
    if fmt == "parquet":
        return read_parquet(path, columns)
    return read_atomic_inter(path, columns)


__all__ = [
    "FORMATS", "ColumnNames", "RawData", "read", "combine_parts", "detect_format", "read_movielens_100k",
    "read_movielens_dat", "read_table", "read_parquet", "read_atomic_inter",
    "read_atomic_features", "read_lightgcn",
]
