"""Per-day feature partitions: one flight day's features, computed once and reused by
every run whose training window holds that day (the catalog's ``day_features``).

Every feature of a row is a function of its own day's flights and weather
(:func:`flight_delays.model.flight_features.build_features` groups, joins and rolls
within a day), so a run's feature table is its window's day tables put end to end. A
backfill of 30 days with a 90-day window then featurizes each day once instead of 90
times, and a nightly run featurizes the one new day. The days a run cannot reuse are
featurized together, in one call over their rows (the validations run once, not once a
day: a first run costs what featurizing the window at once costs), and the table is
split by day; the counts come out by day
(:func:`flight_delays.model.flight_features.featurize_by_day`).

A partition is reused only when it was made from the same inputs by the same code. Its
:class:`Key` (the day, the SHA-256 of the raw partition's files, the feature code's
fingerprint) is written into the partition file itself, in the Parquet footer's
key-value metadata, with the day's counts: one file, written atomically
(:func:`flight_delays.store.io.atomic_path`), so key and rows can never come from two writers.
A re-fetched raw day or a change of the feature code gives another key, and the day is
computed again (and the partition replaced). Two runs writing one day write the same
bytes (a day without rows: an empty table, whose column types may follow its batch); a
reader finds the old file or the new one, whole. A partition that cannot be
read is reported by :func:`load` (a warning naming it) and computed again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_delays.base import schema
from flight_delays.base.frames import to_day
from flight_delays.store import artifacts, io
from flight_delays.store.storage import ArtifactPath

logger = logging.getLogger(__name__)

#: The footer key holding the partition's key and counts (JSON).
METADATA_KEY = b"flight_delays.day_features"
#: The layout of what METADATA_KEY holds; a change makes every partition stale.
LAYOUT = 1
#: Libraries whose version is part of the code fingerprint: a new pandas may type or
#: order a result differently.
LIBRARIES = ("pandas", "numpy", "pyarrow", "pandera")


@dataclass(frozen=True)
class Key:
    """What a day's features were computed from: ``day`` (ISO), ``raw`` (raw partition
    file name -> SHA-256 of its bytes) and ``code`` (:func:`code_fingerprint`)."""

    day: str
    raw: Mapping[str, str] = field(hash=False)
    code: str
    layout: int = LAYOUT

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "raw": dict(sorted(self.raw.items()))}


def code_fingerprint(modules: Iterable[ModuleType]) -> str:
    """SHA-256 over the source files of ``modules`` (the code that computes a day's
    features) and the versions of :data:`LIBRARIES`: any edit of that code, or a library
    upgrade, makes every partition stale rather than risk serving features the current
    code would not compute. Conservative on purpose: recomputing is one cold run."""
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        digest.update(module.__name__.encode() + b"\0")
        digest.update(Path(module.__file__ or "").read_bytes() + b"\0")
    for library in LIBRARIES:
        digest.update(f"{library}={metadata.version(library)}\0".encode())
    return digest.hexdigest()


def write(
    frame: pd.DataFrame | pa.Table, key: Key, counts: Mapping[str, Any], final: ArtifactPath
) -> ArtifactPath:
    """Write ``frame`` (the day's features, a DataFrame or its Arrow table with the pandas
    metadata) to ``final`` atomically, with ``key`` and ``counts`` in the file's footer.
    The pandas metadata is kept, so reading it back gives the same dtypes as
    :func:`pandas.read_parquet` of ``frame.to_parquet``."""
    table = (
        frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    payload = json.dumps({"key": key.as_dict(), "counts": dict(counts)}, sort_keys=True)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY: payload.encode()}
    )
    with io.atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def _load_table(path: ArtifactPath, key: Key) -> tuple[pa.Table, dict[str, Any]] | None:
    """:func:`load`, the rows as the Arrow table read (its footer metadata kept)."""
    if not path.exists():
        return None
    try:
        # One read: the key from the footer, the rows from the same bytes. ParquetFile,
        # not read_table (its dataset layer costs ~4 ms a file), one thread (the caller
        # reads days in threads).
        buffer = pa.BufferReader(path.read_bytes())
        table = pq.ParquetFile(buffer, pre_buffer=False).read(use_threads=False)
        stored = json.loads((table.schema.metadata or {})[METADATA_KEY])
        if stored["key"] != key.as_dict():
            logger.info("day features %s are stale (made from other inputs or code)", path)
            return None
        return table, dict(stored["counts"])
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as exc:
        logger.warning(
            "day features %s cannot be read (%s: %s); computing the day again",
            path,
            type(exc).__name__,
            exc,
        )
        return None


def load(path: ArtifactPath, key: Key) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The features and counts stored at ``path`` if it was made for ``key``; None when
    there is no partition, it was made from other inputs or other code (stale), or it
    cannot be read (a warning names it: it is computed again, never half used)."""
    found = _load_table(path, key)
    # to_pandas follows the pandas metadata, as pandas.read_parquet does
    return None if found is None else (found[0].to_pandas(), found[1])


# --- a window from its days ---------------------------------------------------------------
#: A window's raw flights and weather -> its feature table and counts
#: (:func:`flight_delays.model.flight_features.featurize_rows`).
Compute: TypeAlias = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, dict[str, Any]]]
#: Some days' raw flights and weather, and the days -> their feature table (sorted by
#: day first) and each day's counts (:func:`flight_delays.model.flight_features.featurize_by_day`).
ComputeDays: TypeAlias = Callable[
    [pd.DataFrame, pd.DataFrame, list[date]],
    tuple[pd.DataFrame, Mapping[date, dict[str, Any]]],
]
#: Threads reading and writing partitions: file and object-store I/O and Parquet
#: decoding, which release the GIL; a 364-day window reads 363 small files.
THREADS = 8
#: A raw partition's files, in the order ``Compute`` takes them.
RAW_FILES = (artifacts.RAW_FLIGHTS, artifacts.RAW_WEATHER)


class _OtherDays(Exception):
    """A raw partition holds rows dated on another day: its features are not its own."""


def _raw(root: ArtifactPath, day: date) -> dict[str, bytes]:
    return {entry.filename: io.read_bytes(entry.path(root, day), entry) for entry in RAW_FILES}


def _hashes(raw: Mapping[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()}


def recorded(entry: Mapping[str, Any]) -> dict[str, str] | None:
    """The SHA-256 of a day's raw files as an ingest manifest's day ``entry`` records
    them (ingest checked them against the partition's commit marker), or None (a
    manifest without them: the files are then hashed as they are read)."""
    found = entry.get("sha256")
    if not isinstance(found, Mapping) or set(found) != {e.filename for e in RAW_FILES}:
        return None
    return {str(name): str(digest) for name, digest in found.items()}


def _stored(
    root: ArtifactPath, day: date, raw_sha256: dict[str, str] | None, code: str
) -> tuple[pa.Table, dict[str, Any]] | dict[str, bytes]:
    """``day``'s partition (table and counts) when it was made from the raw files
    ``raw_sha256`` names (None: hash them now) by the code ``code``; else the day's raw
    files (their bytes), to compute it from."""
    raw = None
    if raw_sha256 is None:
        raw = _raw(root, day)
        raw_sha256 = _hashes(raw)
    found = _load_table(
        artifacts.DAY_FEATURES.path(root, day), Key(day.isoformat(), raw_sha256, code)
    )
    return found if found is not None else (raw or _raw(root, day))


def _read(data: bytes) -> pa.Table:
    # ParquetFile, not read_table or pandas.read_parquet (their dataset layer costs ~1 ms
    # a file); one thread: the caller reads days in threads.
    return pq.ParquetFile(pa.BufferReader(data), pre_buffer=False).read(use_threads=False)


def _frames(
    days: list[date], tables: list[tuple[pa.Table, pa.Table]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw flights and weather of ``days`` (their tables, :data:`RAW_FILES` in
    order), each as one frame: what ``pandas.concat`` of the days' frames gives, with one
    conversion to pandas instead of one a day and file. _OtherDays names the first day
    whose raw partition holds rows dated on another day."""
    joined, wrong_days = [], []
    for k in range(len(RAW_FILES)):
        kept = [(d, t[k]) for d, t in zip(days, tables, strict=True) if t[k].num_rows]
        # An empty day's table is left out: it cannot change a type of the others.
        frame = _concat([t for _d, t in kept] or [tables[0][k]])
        # Each row's day must be the day of the partition it was read from.
        owner = np.repeat(np.arange(len(kept)), [t.num_rows for _d, t in kept])
        expected = np.array([np.datetime64(d, "ns") for d, _t in kept], "datetime64[ns]")[owner]
        wrong = to_day(frame[schema.DAY]).to_numpy() != expected
        if wrong.any():
            wrong_days.append(kept[owner[np.argmax(wrong)]][0])
        joined.append(frame)
    if wrong_days:
        raise _OtherDays(min(wrong_days))
    return joined[0], joined[1]


def _pandas_columns(table: pa.Table) -> str | None:
    """How pandas typed the columns of the frame ``table`` was written from (its pandas
    metadata, without the index: that holds each file's row count), as JSON."""
    found = (table.schema.metadata or {}).get(b"pandas")
    return None if found is None else _columns(found)


@functools.lru_cache(maxsize=16)
def _columns(pandas_metadata: bytes) -> str:
    # A window's days share one metadata (one code wrote them): parsed once, not 364 times.
    return json.dumps(json.loads(pandas_metadata).get("columns"), sort_keys=True)


def _end_to_end(tables: list[pa.Table]) -> pa.Table | None:
    """``tables`` end to end in one Arrow concatenation, under the first's schema metadata
    (its pandas metadata; :data:`METADATA_KEY` left out), an empty table left out (it
    cannot change a type of the others); None when they are typed apart, in Arrow or in
    their pandas metadata (``int64`` and ``Int64`` are both Arrow's int64): files of
    older code, which pandas must join (:func:`_concat`, :func:`_joined`)."""
    kept = _nonempty(tables)
    first = _pandas_columns(kept[0])
    if any(_pandas_columns(t) != first for t in kept[1:]):
        return None
    metadata = {k: v for k, v in (kept[0].schema.metadata or {}).items() if k != METADATA_KEY}
    try:
        return pa.concat_tables([t.replace_schema_metadata(metadata) for t in kept])
    except pa.ArrowInvalid:
        return None


def _pandas_concat(tables: list[pa.Table]) -> pd.DataFrame:
    """What ``pandas.concat`` of the tables' frames gives: the types promoted as pandas
    always did (the path of tables :func:`_end_to_end` refuses)."""
    return pd.concat([t.to_pandas() for t in _nonempty(tables)], ignore_index=True)


def _nonempty(tables: list[pa.Table]) -> list[pa.Table]:
    """The tables with rows (an empty one cannot change a type of the others), or the
    first when none has: its columns and types are the result's."""
    return [t for t in tables if t.num_rows] or tables[:1]


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    """``tables`` end to end as one frame, as ``pandas.concat(..., ignore_index=True)``
    of their frames gives it, with one conversion to pandas when they agree in type."""
    joined = _end_to_end(tables)
    if joined is None:
        return _pandas_concat(tables)
    # a guard: the first file's pandas metadata may name an index of its own rows
    return joined.to_pandas().reset_index(drop=True)


def _compute(
    root: ArtifactPath,
    raws: Mapping[date, Mapping[str, bytes]],
    code: str,
    compute: ComputeDays,
    pool: ThreadPoolExecutor,
) -> dict[date, tuple[pa.Table, dict[str, Any]]]:
    """Compute ``raws``' days in one batch (one ``compute`` call over their rows, the
    cost of featurizing them at once), split the table by day and store each day's
    partition; a day without rows gets an empty one (the batch's column types) and
    zero counts. Raises _OtherDays for a raw partition holding another day's rows."""
    days = sorted(raws)
    tables = list(pool.map(lambda d: tuple(_read(raws[d][e.filename]) for e in RAW_FILES), days))
    flights, weather = _frames(days, tables)
    del tables
    features, counts = compute(flights, weather, days)
    table = pa.Table.from_pandas(features, preserve_index=False)
    # The table is sorted by day first: each day is one run of rows, sliced without a copy.
    stamps = features[schema.DAY].to_numpy()
    bounds = [
        np.searchsorted(stamps, np.datetime64(pd.Timestamp(d)), side=side)
        for d in days
        for side in ("left", "right")
    ]
    done = {
        d: (table.slice(lo, hi - lo), counts[d])
        for d, lo, hi in zip(days, bounds[::2], bounds[1::2], strict=True)
    }

    def store(day: date) -> None:
        # The key names the bytes read here, the ones the features come from.
        key = Key(day.isoformat(), _hashes(raws[day]), code)
        write(done[day][0], key, done[day][1], artifacts.DAY_FEATURES.path(root, day))

    list(pool.map(store, days))
    return done


#: Days computed in one ``compute`` call. One call over many days costs about what one
#: day costs (the validations run once a call), but holds every intermediate frame of
#: its rows at once: a cold 365-day window at ten times the flights peaked at 4.8 GB in
#: one call. A month a call keeps the per-call saving and bounds the memory by a month.
BATCH_DAYS = 31


def _batches(days: list[date]) -> list[list[date]]:
    """``days`` (sorted) in runs of at most :data:`BATCH_DAYS`."""
    return [days[k : k + BATCH_DAYS] for k in range(0, len(days), BATCH_DAYS)]


def _sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts added up; a mapping (counts by reason) is added up key by key."""
    total: dict[str, Any] = {}
    for counts in parts:
        for name, value in counts.items():
            if isinstance(value, Mapping):
                inner = total.setdefault(name, {})
                for reason, n in value.items():
                    inner[reason] = inner.get(reason, 0) + n
            else:
                total[name] = total.get(name, 0) + value
    return total


def _joined(tables: list[pa.Table]) -> pa.Table:
    """The days' tables end to end (no pandas conversion per day), with the pandas
    metadata of the days' files (the key left out)."""
    joined = _end_to_end(tables)
    if joined is None:
        return pa.Table.from_pandas(_pandas_concat(tables), preserve_index=False)
    return joined


def window(
    root: ArtifactPath,
    days: list[date],
    raw_sha256: Mapping[date, dict[str, str] | None],
    code: str,
    compute: ComputeDays,
    whole: Compute,
) -> tuple[pa.Table, dict[str, Any], int]:
    """``whole`` of the window ``days`` (sorted), as the Arrow table of its pandas
    frame (:func:`pyarrow.Table.from_pandas`), put together from its days' partitions,
    with the counts added up; and how many days were reused. A day is read from its
    partition when that was made from the day's raw files (``raw_sha256``; None: hash
    them now) by the code ``code``; the other days are computed together, a month
    (:data:`BATCH_DAYS`) a ``compute`` call, and stored (:func:`_compute`). The table
    is ``whole`` of the window's raw rows, row for row, as long as the computation
    groups, joins and sorts within a day (the first sort key) and each raw partition
    holds its own day only; a window with a partition that does not is computed at once
    from its raw rows by ``whole`` (a warning names the partition)."""
    with ThreadPoolExecutor(THREADS) as pool:
        found = list(pool.map(lambda d: _stored(root, d, raw_sha256.get(d), code), days))
        raws = {d: f for d, f in zip(days, found, strict=True) if isinstance(f, dict)}
        try:
            computed = {}
            for batch in _batches(sorted(raws)):
                computed.update(_compute(root, {d: raws[d] for d in batch}, code, compute, pool))
        except _OtherDays as exc:
            logger.warning(
                "raw partition %s holds rows dated on other days: featurizing the window "
                "at once, without day partitions; re-fetch the day to clean it",
                artifacts.RAW_PARTITION.path(root, exc.args[0]),
            )
            flights, weather = (
                pd.concat([io.read_parquet(e.path(root, x), e) for x in days], ignore_index=True)
                for e in RAW_FILES
            )
            features, counts = whole(flights, weather)
            return pa.Table.from_pandas(features, preserve_index=False), counts, 0
    parts = [computed.get(d, f) for d, f in zip(days, found, strict=True)]
    tables = [t for t, _c in parts]
    return _joined(tables), _sum_counts([c for _t, c in parts]), len(days) - len(raws)
