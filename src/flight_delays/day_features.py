"""Per-day feature partitions: one flight day's features, computed once and reused by
every run whose training window holds that day (the catalog's ``day_features``).

Every feature of a row is a function of its own day's flights and weather
(:func:`flight_delays.featurize.build_features` groups, joins and rolls within a day), so
a run's feature table is its window's day tables put end to end. A backfill of 30 days
with a 90-day window then featurizes each day once instead of 90 times, and a nightly
run featurizes the one new day.

A partition is reused only when it was made from the same inputs by the same code. Its
:class:`Key` (the day, the SHA-256 of the raw partition's files, the feature code's
fingerprint) is written into the partition file itself, in the Parquet footer's
key-value metadata, with the day's counts: one file, written atomically
(:func:`flight_delays.io.atomic_path`), so key and rows can never come from two writers.
A re-fetched raw day or a change of the feature code gives another key, and the day is
computed again (and the partition replaced). Two runs writing one day write the same
bytes; a reader finds the old file or the new one, whole. A partition that cannot be
read is reported by :func:`load` (a warning naming it) and computed again.
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_delays import artifacts, io, schema
from flight_delays.frames import to_day
from flight_delays.storage import ArtifactPath

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
    frame: pd.DataFrame, key: Key, counts: Mapping[str, Any], final: ArtifactPath
) -> ArtifactPath:
    """Write ``frame`` (the day's features) to ``final`` atomically, with ``key`` and
    ``counts`` in the file's footer. The pandas metadata is kept, so reading it back
    gives the same dtypes as :func:`pandas.read_parquet` of ``frame.to_parquet``."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    payload = json.dumps({"key": key.as_dict(), "counts": dict(counts)}, sort_keys=True)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), METADATA_KEY: payload.encode()}
    )
    with io.atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def load(path: ArtifactPath, key: Key) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The features and counts stored at ``path`` if it was made for ``key``; None when
    there is no partition, it was made from other inputs or other code (stale), or it
    cannot be read (a warning names it: it is computed again, never half used)."""
    if not path.exists():
        return None
    try:
        # One read: the key from the footer, the rows from the same bytes (to_pandas
        # follows the pandas metadata, as pandas.read_parquet does).
        table = pq.read_table(pa.BufferReader(path.read_bytes()))
        stored = json.loads((table.schema.metadata or {})[METADATA_KEY])
        if stored["key"] != key.as_dict():
            logger.info("day features %s are stale (made from other inputs or code)", path)
            return None
        return table.to_pandas(), dict(stored["counts"])
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as exc:
        logger.warning(
            "day features %s cannot be read (%s: %s); computing the day again",
            path,
            type(exc).__name__,
            exc,
        )
        return None


# --- a window from its days ---------------------------------------------------------------
#: A day's (or a window's) raw flights and weather -> its feature table and counts
#: (:func:`flight_delays.featurize.featurize_rows`).
Compute: TypeAlias = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, dict[str, Any]]]
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


def one_day(
    root: ArtifactPath, day: date, raw_sha256: dict[str, str] | None, code: str, compute: Compute
) -> tuple[pd.DataFrame, dict[str, Any], bool]:
    """``day``'s features and counts, and whether they were reused: read from its
    partition when it was made from the raw files ``raw_sha256`` names (None: hash them
    now) by the code ``code``, else computed from the raw partition and stored. Raises
    _OtherDays for a raw partition holding rows of other days."""
    target = artifacts.DAY_FEATURES.path(root, day)
    raw = None
    if raw_sha256 is None:
        raw = _raw(root, day)
        raw_sha256 = _hashes(raw)
    found = load(target, Key(day.isoformat(), raw_sha256, code))
    if found is not None:
        return (*found, True)
    raw = raw or _raw(root, day)
    flights, weather = (pd.read_parquet(_bytes_io.BytesIO(raw[e.filename])) for e in RAW_FILES)
    for frame in (flights, weather):
        if len(frame) and not (to_day(frame[schema.DAY]) == pd.Timestamp(day)).all():
            raise _OtherDays(day)
    features, counts = compute(flights, weather)
    # The key names the bytes read here, the ones the features come from.
    write(features, Key(day.isoformat(), _hashes(raw), code), counts, target)
    return features, counts, False


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


def window(
    root: ArtifactPath,
    days: list[date],
    raw_sha256: Mapping[date, dict[str, str] | None],
    code: str,
    compute: Compute,
) -> tuple[pd.DataFrame, dict[str, Any], int]:
    """``compute`` of the window ``days`` (sorted), put together from its days'
    partitions (:func:`one_day`), with the counts added up; and how many days were
    reused. The table is ``compute`` of the window's raw rows, row for row, as long as
    ``compute`` groups, joins and sorts within a day (the first sort key) and each raw
    partition holds its own day only; a window with a partition that does not is
    computed at once from its raw rows (a warning names the partition)."""
    pieces: list[pd.DataFrame] = []
    parts: list[dict[str, Any]] = []
    reused = 0
    for d in days:
        try:
            frame, counts, was_reused = one_day(root, d, raw_sha256.get(d), code, compute)
        except _OtherDays:
            logger.warning(
                "raw partition %s holds rows dated on other days: featurizing the window "
                "at once, without day partitions; re-fetch the day to clean it",
                artifacts.RAW_PARTITION.path(root, d),
            )
            flights, weather = (
                pd.concat([io.read_parquet(e.path(root, x), e) for x in days], ignore_index=True)
                for e in RAW_FILES
            )
            return (*compute(flights, weather), 0)
        pieces.append(frame)
        parts.append(counts)
        reused += was_reused
    # Days are disjoint and sorted, so the days end to end are the window's table; an
    # empty day (every flight cancelled) is left out so it cannot change a dtype.
    kept = [p for p in pieces if len(p)] or pieces[:1]
    return pd.concat(kept, ignore_index=True), _sum_counts(parts), reused
