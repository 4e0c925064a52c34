"""The raw partitions: each day of the warehouse frozen once, checked at the door.

Each day lives in a write-once raw partition ``data/raw/ds=YYYY-MM-DD/`` holding the
catalog's ``raw_flights`` and ``raw_weather`` (columns of :data:`schema.FLIGHT_COLUMNS`
and :data:`schema.WEATHER_COLUMNS`; ``local_date`` and ``original_date`` as
``datetime64[ns]``). :func:`ensure_partitions` reads only the days without one from the
SQL source, so the first run bootstraps the whole window and a nightly run fetches one
day. The nightly ``ingest`` step and ``predict`` both go through it.

A partition is committed by its marker, the catalog's ``raw_commit`` (the SHA-256 and
rows of its files), always written last, so a killed task never leaves a partition that
counts as present (:func:`committed`). On a local disk the files and the marker are
written into a hidden temporary folder beside the partition, which is renamed into
place; in an object store, where a folder is only a key prefix and cannot be renamed,
each file is one PUT and the marker a conditional PUT that only one writer can make. A
writer that finds the partition committed, or loses the marker to another, discards its
own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_delays.base.errors import PipelineDataError
from flight_delays.intake import contracts, demo, source
from flight_delays.store import artifacts, db, io, storage
from flight_delays.store.config import ProjectPaths, Settings
from flight_delays.store.storage import ArtifactPath

logger = logging.getLogger(__name__)


# A raw partition's files, by their names in the folder (the catalog's entries).
FLIGHTS_FILE = artifacts.RAW_FLIGHTS.filename


WEATHER_FILE = artifacts.RAW_WEATHER.filename


PARTITION_FILES = (FLIGHTS_FILE, WEATHER_FILE)


COMMIT_FILE = artifacts.RAW_COMMIT.filename


class NoFlightsError(PipelineDataError):
    """The source holds no flights for a day of the window: names the day and the source."""

    def __init__(self, day: date, source_url: str) -> None:
        self.day = day
        self.source_url = source_url
        hint = ""
        if day >= demo.FIRST_DAY:
            hint = (
                f"; for the demo warehouse, seed the replay cycle that covers it: "
                f"`{source.SEED_COMMAND} --cycles {demo.cycle_of(day)}`"
            )
        super().__init__(
            f"no flights for {day.isoformat()} in the source {source_url}, so nothing was "
            f"written for that day: the source must cover the whole window{hint}"
        )


class BrokenPartitionError(PipelineDataError):
    """A raw partition folder exists but lacks a file or holds an unreadable one."""


def missing_days(window_days: Sequence[date], existing_days: Iterable[date]) -> list[date]:
    """The days of ``window_days`` (in their order) that are not in ``existing_days``."""
    existing = set(existing_days)
    return [day for day in window_days if day not in existing]


# --- file side -----------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def committed(partition: ArtifactPath) -> bool:
    """Whether the raw partition folder ``partition`` is there for good.

    Object store: only when its commit marker is, since the marker is the last object a
    writer puts. Local disk: when the folder is, since it appears whole, marker included,
    by one rename (so partitions written before markers existed count as well).
    """
    if storage.is_local(partition):
        return partition.exists()
    return (partition / COMMIT_FILE).exists()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_partition(final: ArtifactPath, flights: pd.DataFrame, weather: pd.DataFrame) -> bool:
    """Write a raw partition folder and its commit marker; never touch a committed one.

    Returns True if this call committed ``final``, False if it was already committed
    (e.g. a concurrent run committed its own copy first; ours is discarded).
    """
    final = storage.locate(final)
    if committed(final):
        return False
    files = {FLIGHTS_FILE: _parquet(flights), WEATHER_FILE: _parquet(weather)}
    marker = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "rows": len(frame)}
        for (name, data), frame in zip(files.items(), (flights, weather), strict=True)
    }
    files[COMMIT_FILE] = (json.dumps({"files": marker}, indent=2, sort_keys=True) + "\n").encode()
    if storage.is_local(final):
        return _rename_into_place(final, files)
    # An object store: the data files first, each one PUT, then the marker, which only
    # one writer can create. Two writers of a day read the same complete day in the same
    # order, so their files are the same bytes; if the source changed between their
    # reads, the files no longer match the marker and partition_stats says so.
    for name in PARTITION_FILES:
        io.write_bytes(files[name], final / name)
    try:
        io.write_bytes(files[COMMIT_FILE], final / COMMIT_FILE, exclusive=True)
    except FileExistsError:
        logger.info("partition %s was committed meanwhile: kept it, discarded ours", final)
        return False
    return True


def _rename_into_place(final: Path, files: Mapping[str, bytes]) -> bool:
    """Local disk: the files (marker last) into a hidden folder beside ``final``, renamed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the partition is shared data
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            _fsync(tmp / name)
        try:
            # rename(2) of a folder onto an existing non-empty one fails: no overwrite.
            os.rename(tmp, final)
        except OSError:
            if final.exists():
                logger.info("partition %s appeared meanwhile: kept it, discarded ours", final)
                return False
            raise
        _fsync(final.parent)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _marker(path: ArtifactPath) -> dict[str, Any] | None:
    """The partition's commit marker's file entries (None: a local partition written
    before markers existed)."""
    marker = path / COMMIT_FILE
    return io.read_json(marker, artifacts.RAW_COMMIT)["files"] if marker.is_file() else None


def partition_stats(day: date, path: ArtifactPath) -> dict[str, Any]:
    """Rows (from the Parquet footers) and SHA-256 of the files of one raw partition,
    checked against its commit marker."""
    redo = (
        f"partitions are write-once: fetch the day again with `python -m flight_delays.ingest "
        f"refetch --day {day.isoformat()}` (the copy is kept in data/raw/superseded/), or "
        f"delete {path} to have the next ingest run fetch it"
    )
    absent = [name for name in PARTITION_FILES if not (path / name).is_file()]
    if absent:
        raise BrokenPartitionError(f"raw partition {path} lacks {', '.join(absent)}; {redo}")
    marker = _marker(path)
    stats: dict[str, Any] = {"day": day, "path": str(path), "sha256": {}}
    for name, rows_key, entry in (
        (FLIGHTS_FILE, "flight_rows", artifacts.RAW_FLIGHTS),
        (WEATHER_FILE, "weather_rows", artifacts.RAW_WEATHER),
    ):
        data = io.read_bytes(path / name, entry)  # once: the rows and the hash come from these
        try:
            stats[rows_key] = pq.read_metadata(pa.BufferReader(data)).num_rows
        except pa.ArrowException as exc:
            raise BrokenPartitionError(
                f"raw partition file {path / name} is not readable Parquet ({exc}); {redo}"
            ) from exc
        digest = stats["sha256"][name] = hashlib.sha256(data).hexdigest()
        if marker is not None and marker.get(name, {}).get("sha256") != digest:
            raise BrokenPartitionError(
                f"raw partition file {path / name} differs from the one its commit marker "
                f"{COMMIT_FILE} recorded (changed after it was committed); {redo}"
            )
    return stats


def _next_version(folder: ArtifactPath) -> ArtifactPath:
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return folder / next(f"v{n}" for n in range(1, len(taken) + 2) if f"v{n}" not in taken)


def supersede(paths: ProjectPaths, day: date) -> ArtifactPath | None:
    """Move ``day``'s raw partition and its quarantine aside, unchanged, to
    ``data/raw/superseded/ds=D/v<N>/`` so the next ingest fetches the day again.

    Returns the folder they went to, or None when the day had no partition. The files
    keep their bytes, and the manifests of earlier runs keep their SHA-256 sums to
    compare with. Local disk: renames. Object store: copies, then deletes, with the
    commit marker deleted first, so the day stops counting as present before any of its
    files goes (:func:`flight_delays.store.storage.move_folder`).
    """
    partition = artifacts.RAW_PARTITION.path(paths.root, day)
    if not partition.exists():
        return None
    target = _next_version(artifacts.SUPERSEDED.path(paths.root, day))
    storage.move_folder(partition, target, last=(COMMIT_FILE,))
    if artifacts.QUARANTINE.path(paths.root, day).exists():
        storage.move_folder(artifacts.QUARANTINE.path(paths.root, day), target / "quarantine")
    logger.info("re-fetch %s: moved its partition (and quarantine) to %s", day, target)
    return target


#: Days read from the source together, in one query a table: a month bounds the rows in
#: memory (about 30k flights of the demo warehouse).
FETCH_DAYS = 31


def _fetch(
    engine: Any, tables: dict[str, Any], days: Sequence[date], settings: Settings, shown: str
) -> Iterator[tuple[date, tuple[contracts.Checked, contracts.Checked, dict[str, Any]]]]:
    """Read ``days`` from the source, :data:`FETCH_DAYS` at a time (one query a table,
    and one for the flight counts that the completeness check compares with), and yield
    each day in order, checked against the contract. A day that is empty or partly
    loaded raises when its turn comes, so the caller has frozen the days before it, as
    a day-by-day read would have. Writes nothing."""
    for start in range(0, len(days), FETCH_DAYS):
        chunk = days[start : start + FETCH_DAYS]
        read = source.read_days(engine, chunk, tables)
        counts = source.flight_counts(
            engine, {usual for day in chunk for usual in source.usual_days(day)}, tables
        )
        # The contract, once over the chunk's rows (its cost is mostly per call).
        flights = contracts.check_flights_days(
            {day: read[day][0] for day in chunk}, source.FLIGHT_DTYPES
        )
        weather = contracts.check_weather_days(
            {day: read[day][1] for day in chunk}, source.WEATHER_DTYPES
        )
        for day in chunk:
            checked = (flights[day], weather[day])
            yield day, _check(engine, tables, day, read[day], checked, counts, settings, shown)


def _check(
    engine: Any,
    tables: dict[str, Any],
    day: date,
    raw: tuple[pd.DataFrame, pd.DataFrame],
    checked: tuple[contracts.Checked, contracts.Checked],
    counts: Mapping[date, int],
    settings: Settings,
    shown: str,
) -> tuple[contracts.Checked, contracts.Checked, dict[str, Any]]:
    """One day's rows as read and as the contract split them: raises for an empty or
    partly loaded day, else returns them with the day's quarantine summary."""
    flights_raw, weather_raw = raw
    if flights_raw.empty:
        raise NoFlightsError(day, shown)
    incomplete = contracts.completeness(
        day,
        flights=len(flights_raw),
        weather=len(weather_raw),
        usual_flights=source.usual_flights(counts, day),
        weather_later=weather_raw.empty and source.weather_after(engine, day, tables),
        min_share=settings.ingest.min_day_share,
    )
    if incomplete:
        error = contracts.IncompleteDayError(
            f"{incomplete}: the day looks partly loaded in {shown}, so it was not frozen; "
            f"the task is retried, and any later run fetches it again once it is complete"
        )
        error.day = day  # type: ignore[attr-defined]  # read by run()'s late-data rule
        raise error
    flights, weather = checked
    return flights, weather, contracts.quarantine_summary(day, flights, weather)


def _freeze(
    paths: ProjectPaths,
    day: date,
    checked: tuple[contracts.Checked, contracts.Checked, dict[str, Any]],
    max_share: float,
) -> bool:
    """Write the day's quarantine, refuse the day if too much of it broke the contract,
    else write its raw partition (write-once). True if this call wrote the partition."""
    flights, weather, summary = checked
    folder = artifacts.QUARANTINE.path(paths.root, day)
    for entry, part in (
        (artifacts.QUARANTINE_FLIGHTS, flights),
        (artifacts.QUARANTINE_WEATHER, weather),
    ):
        target = entry.path(paths.root, day)
        if len(part.quarantine):
            io.write_parquet(part.quarantine, target)
        elif target.exists():
            # An earlier fetch of the day (refused, fixed at the source since) left rows
            # that this fetch kept: beside the new summary they would be counted twice.
            storage.remove(target)
            logger.info("%s: removed the quarantine of an earlier fetch: %s", day, target)
    io.write_json(summary, artifacts.QUARANTINE_SUMMARY.path(paths.root, day))
    if summary["quarantined"]:
        logger.warning(
            "%s: quarantined %d of %d flights and %d of %d weather rows (%s) in %s",
            day,
            len(flights.quarantine),
            flights.rows_in,
            len(weather.quarantine),
            weather.rows_in,
            ", ".join(f"{k}: {v}" for k, v in {**flights.counts, **weather.counts}.items()),
            folder,
        )
    contracts.refuse_share(summary, max_share, str(folder))
    if weather.good.empty:
        logger.warning("no weather rows for %s: frozen with an empty weather file", day)
    return write_partition(
        artifacts.RAW_PARTITION.path(paths.root, day), flights.good, weather.good
    )


def refetch_day(settings: Settings, day: date, url: str) -> ArtifactPath | None:
    """Fetch ``day`` again from the source (a corrected day): checked first, then the old
    partition and quarantine are moved aside unchanged (:func:`supersede`) and the new
    ones written. A day that fails its checks leaves the old partition in place.
    Returns where the old partition went (None: there was none)."""
    engine = db.open_engine(url)
    try:
        tables = source.reflect_source(engine)
        _day, checked = next(_fetch(engine, tables, [day], settings, db.safe_url(url)))
    finally:
        engine.dispose()
    contracts.refuse_share(checked[2], settings.ingest.max_quarantine_share, "the source")
    moved = supersede(settings.paths, day)
    _freeze(settings.paths, day, checked, settings.ingest.max_quarantine_share)
    return moved


def ensure_partitions(settings: Settings, days: Sequence[date], url: str) -> list[date]:
    """Fetch and freeze the raw partitions of ``days`` that do not exist yet (each checked
    by the data contract first); returns the days this call wrote. The missing days are
    read :data:`FETCH_DAYS` at a time, one query a table, so a first run's whole window
    costs a few round trips. Shared by the nightly ingest (the training window) and the
    prediction step (the days before the predicted one), so both read the source the same
    way."""
    paths = settings.paths
    todo = missing_days(
        days, (d for d in days if committed(artifacts.RAW_PARTITION.path(paths.root, d)))
    )
    fetched: list[date] = []
    if todo:
        shown = db.safe_url(url)
        engine = db.open_engine(url)
        try:
            tables = source.reflect_source(engine)
            for d, checked in _fetch(engine, tables, todo, settings, shown):
                if _freeze(paths, d, checked, settings.ingest.max_quarantine_share):
                    fetched.append(d)
        finally:
            engine.dispose()
    return fetched


def quarantined_rows(paths: ProjectPaths, day: date) -> int:
    """Rows of ``day`` the contract kept back when it was fetched (0: none, or fetched
    before the contracts existed)."""
    summary = artifacts.QUARANTINE_SUMMARY.path(paths.root, day)
    if not summary.is_file():
        return 0
    return int(io.read_json(summary, artifacts.QUARANTINE_SUMMARY)["quarantined"])
