"""Step 1, ingest: make sure every raw partition of the training window exists.

A run for day D needs the ``ingest.window_days`` days ending on D. Each day lives in a
write-once raw partition ``data/raw/ds=YYYY-MM-DD/`` holding the catalog's ``raw_flights`` and
``raw_weather`` (columns of :data:`schema.FLIGHT_COLUMNS` and
:data:`schema.WEATHER_COLUMNS`; ``local_date`` and ``original_date`` as
``datetime64[ns]``). Only the days without a partition are read from the SQL source, so
the first run bootstraps the whole window and a nightly run fetches one day.

A partition is committed by its marker, the catalog's ``raw_commit`` (the SHA-256 and rows of its
files), always written last, so a killed task never leaves a partition that counts as
present (:func:`committed`). On a local disk the files and the marker are written into a
hidden temporary folder beside the partition, which is renamed into place; in an object
store, where a folder is only a key prefix and cannot be renamed, each file is one PUT
and the marker a conditional PUT that only one writer can make. A writer that finds the
partition committed, or loses the marker to another, discards its own. Then the
manifest (the catalog's ``manifest``) records the window's partitions (rows and
SHA-256 of every file) for the next steps.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_delays.base import dates
from flight_delays.base.errors import PipelineDataError
from flight_delays.intake import contracts, demo, source
from flight_delays.store import artifacts, db, io, storage
from flight_delays.store.config import ProjectPaths, Settings, load_settings
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


class LateDataError(PipelineDataError):
    """Late data: the processed day was still missing or partly loaded in the warehouse
    when its wait ended (``ingest.wait_until`` New York time on the next day). A data
    error: the task fails at once and alerts (kind 'late_data')."""

    def __init__(self, day: date, deadline: datetime, reason: str) -> None:
        self.day = day
        self.deadline = deadline
        super().__init__(
            f"late data: {reason}; the wait for {day.isoformat()} ended at "
            f"{deadline.isoformat(timespec='minutes')} (ingest.wait_until, New York time on "
            f"the next day)"
        )


class DayNotLoadedYet(Exception):
    """The processed day is missing or partly loaded and its wait is not over: look
    again at ``retry_at`` (the DAG reschedules the task: no retry is used up)."""

    def __init__(self, day: date, retry_at: datetime, deadline: datetime, reason: str) -> None:
        self.day, self.retry_at, self.deadline = day, retry_at, deadline
        super().__init__(
            f"{day.isoformat()} is not fully in the warehouse yet ({reason}); waiting until "
            f"{deadline.isoformat(timespec='minutes')}, next look at "
            f"{retry_at.isoformat(timespec='seconds')}"
        )


# --- pure core -------------------------------------------------------------------------
#: The shortest wait between two looks at a late day. Measured on Airflow 3.3.2 with the
#: LocalExecutor: a poke's process reports its end about 5 s after the task rescheduled
#: itself; a next poke started before that report is taken for a task that ended while
#: running, and is failed into a retry (docs/monitoring.md).
MIN_POKE = timedelta(seconds=30)


def wait_deadline(day: date, wait_until: clock, tz: str = dates.TIMEZONE) -> datetime:
    """When ingest stops waiting for ``day``: ``wait_until`` local time on the next day."""
    return datetime.combine(day + timedelta(days=1), wait_until, tzinfo=ZoneInfo(tz))


def late_or_waiting(
    day: date, now: datetime, wait_until: clock, poke_seconds: int, reason: str
) -> LateDataError | DayNotLoadedYet:
    """What to do about a processed day that is missing or partly loaded at ``now``
    (aware): wait (:class:`DayNotLoadedYet`, next look in ``poke_seconds``, never after
    the deadline) while before :func:`wait_deadline`, else :class:`LateDataError`. A
    backfill of an old day is past its deadline at the first look: it fails at once."""
    deadline = wait_deadline(day, wait_until)
    if now >= deadline:
        return LateDataError(day, deadline, reason)
    # The last look is at the deadline, but never sooner than MIN_POKE after this one.
    retry_at = max(min(now + timedelta(seconds=poke_seconds), deadline), now + MIN_POKE)
    return DayNotLoadedYet(day, retry_at, deadline, reason)


def missing_days(window_days: Sequence[date], existing_days: Iterable[date]) -> list[date]:
    """The days of ``window_days`` (in their order) that are not in ``existing_days``."""
    existing = set(existing_days)
    return [day for day in window_days if day not in existing]


def build_manifest(
    day: date,
    window_days: Sequence[date],
    partitions: Sequence[Mapping[str, Any]],
    fetched: Iterable[date],
    source_url: str,
) -> dict[str, Any]:
    """The manifest of a run: which partitions of the window it used.

    Keys: ``day``, ``window_start``, ``window_end``, ``window_days``, ``source`` (URL
    without password), ``days`` (one entry per window day, oldest first: ``day``,
    ``path``, ``flight_rows``, ``weather_rows``, ``sha256``, ``fetched``), ``fetched``
    (ISO days read from the source by this run), ``flight_rows``, ``weather_rows``.

    ``partitions`` has one mapping per window day with keys ``day`` (date), ``path``,
    ``flight_rows``, ``weather_rows`` and ``sha256`` (file name -> hex digest).
    ``fetched`` are the days read from the source by this run. Dates become ISO strings;
    the inputs are not modified.
    """
    by_day = {p["day"]: p for p in partitions}
    absent = [d.isoformat() for d in window_days if d not in by_day]
    if absent:
        raise ValueError(f"no partition given for window days: {', '.join(absent)}")
    fetched_set = set(fetched)
    entries = [
        {
            "day": d.isoformat(),
            "path": str(by_day[d]["path"]),
            "flight_rows": int(by_day[d]["flight_rows"]),
            "weather_rows": int(by_day[d]["weather_rows"]),
            "sha256": dict(sorted(by_day[d]["sha256"].items())),
            "fetched": d in fetched_set,
            "quarantined": int(by_day[d].get("quarantined", 0)),
        }
        for d in window_days
    ]
    return {
        "day": day.isoformat(),
        "window_start": window_days[0].isoformat(),
        "window_end": window_days[-1].isoformat(),
        "window_days": len(window_days),
        "source": source_url,
        "days": entries,
        "fetched": [e["day"] for e in entries if e["fetched"]],
        "flight_rows": sum(e["flight_rows"] for e in entries),
        "weather_rows": sum(e["weather_rows"] for e in entries),
        "quarantined_rows": sum(e["quarantined"] for e in entries),
    }


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


def _fetch(
    engine: Any, tables: dict[str, Any], day: date, settings: Settings, shown: str
) -> tuple[contracts.Checked, contracts.Checked, dict[str, Any]]:
    """Read ``day`` from the source and check it against the contract. Raises for an
    empty or partly loaded day; writes nothing."""
    flights_raw, weather_raw = source.read_day(engine, day, tables)
    if flights_raw.empty:
        raise NoFlightsError(day, shown)
    incomplete = contracts.completeness(
        day,
        flights=len(flights_raw),
        weather=len(weather_raw),
        usual_flights=source.usual_flights(engine, day, tables),
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
    flights = contracts.check_flights(flights_raw, day, source.FLIGHT_DTYPES)
    weather = contracts.check_weather(weather_raw, day, source.WEATHER_DTYPES)
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
        if len(part.quarantine):
            io.write_parquet(part.quarantine, entry.path(paths.root, day))
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
        checked = _fetch(engine, tables, day, settings, db.safe_url(url))
    finally:
        engine.dispose()
    contracts.refuse_share(checked[2], settings.ingest.max_quarantine_share, "the source")
    moved = supersede(settings.paths, day)
    _freeze(settings.paths, day, checked, settings.ingest.max_quarantine_share)
    return moved


def ensure_partitions(settings: Settings, days: Sequence[date], url: str) -> list[date]:
    """Fetch and freeze the raw partitions of ``days`` that do not exist yet (each checked
    by the data contract first); returns the days this call wrote. Shared by the nightly
    ingest (the training window) and the prediction step (the days before the predicted
    one), so both read the source the same way."""
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
            for d in todo:
                checked = _fetch(engine, tables, d, settings, shown)
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


def run(
    day: str | date,
    root: str | Path | None = None,
    params_file: str | Path | None = None,
    source_url: str | None = None,
    refetch: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Fetch the window's missing raw partitions for ``day`` and write its manifest.

    Late data: given ``now`` (aware; the DAG passes the clock), a processed day that is
    missing or partly loaded raises :class:`DayNotLoadedYet` until ``ingest.wait_until``
    on the next day, then :class:`LateDataError` (:func:`late_or_waiting`). Without
    ``now`` (the commands), such a day raises as any other window day.

    Every fetched day passes the data contract first (:mod:`flight_delays.intake.contracts`):
    rows that break it go to ``data/interim/quarantine/ds=<day>/`` with their reasons,
    the others are frozen. ``refetch`` first moves the processed day's partition aside
    (:func:`supersede`), so the day is read from the source again.

    Returns ``{"manifest": path, "days": window days, "fetched": days fetched now,
    "flight_rows": flights in the window, "quarantined_rows": rows kept back in the
    window}``. Raises NoFlightsError for a window day the source has no flights for,
    QuarantineShareError for a day with too many broken rows (both PipelineDataError),
    and IncompleteDayError for a day that looks partly loaded; nothing is written for
    such a day.
    """
    started = time.perf_counter()
    processed = dates.parse_day(day)
    settings = load_settings(root, params_file)
    paths = settings.paths
    days = dates.window(processed, settings.ingest.window_days)
    url = source_url or settings.source_url
    shown = db.safe_url(url)
    try:
        if refetch:
            refetch_day(settings, processed, url)
        fetched = ensure_partitions(settings, days, url)
    except (NoFlightsError, contracts.IncompleteDayError) as exc:
        if now is None or getattr(exc, "day", None) != processed:
            raise
        reason = str(exc).split(": the day looks")[0].split(", so nothing")[0]
        raise late_or_waiting(
            processed, now, settings.ingest.wait_until_time, settings.ingest.wait_poke_seconds,
            reason,
        ) from exc  # fmt: skip
    partitions = [
        {
            **partition_stats(d, artifacts.RAW_PARTITION.path(paths.root, d)),
            "quarantined": quarantined_rows(paths, d),
        }
        for d in days
    ]
    manifest = build_manifest(processed, days, partitions, fetched, shown)
    path = io.write_json(manifest, artifacts.MANIFEST.path(paths.root, processed))
    logger.info(
        "ingest %s: window %s..%s (%d days), fetched %d from %s, %d flight rows in the "
        "window, %d quarantined rows, %.1f s; manifest %s",
        processed,
        days[0],
        days[-1],
        len(days),
        len(fetched),
        shown,
        manifest["flight_rows"],
        manifest["quarantined_rows"],
        time.perf_counter() - started,
        path,
    )
    return {
        "manifest": str(path),
        "days": len(days),
        "fetched": len(fetched),
        "flight_rows": manifest["flight_rows"],
        "quarantined_rows": manifest["quarantined_rows"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flight_delays.ingest refetch --day D``: fetch a corrected day again."""
    parser = argparse.ArgumentParser(prog="python -m flight_delays.ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    refetch = commands.add_parser(
        "refetch",
        help="move the day's raw partition aside (kept, unchanged) and fetch it again, "
        "with the data contract, from the source",
    )
    refetch.add_argument("--day", required=True, type=dates.parse_day, help="YYYY-MM-DD")
    refetch.add_argument("--root", default=None, help="project root (default: FLIGHT_DELAYS_HOME)")
    refetch.add_argument("--source-url", default=None, help="SQLAlchemy URL of the warehouse")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings(args.root)
    moved = refetch_day(settings, args.day, args.source_url or settings.source_url)
    result = run(args.day, settings.paths.home, source_url=args.source_url)
    print(
        f"re-fetched {args.day}: earlier partition kept in {moved}"
        if moved
        else f"fetched {args.day}"
    )
    print(f"manifest: {result['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
