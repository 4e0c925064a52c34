"""Step 2, featurize: the window's feature table, from the raw partitions ingest listed.

The features and the day partitions they are put together from are the model layer's
(:mod:`flight_delays.model.flight_features`); this step reads the manifest, writes the table
and its counts, and logs the summary line.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow
import pyarrow.parquet as pq

from flight_delays.base.dates import parse_day
from flight_delays.model import day_features, flight_features
from flight_delays.store import artifacts, io
from flight_delays.store.config import load_settings
from flight_delays.store.storage import ArtifactPath

logger = logging.getLogger(__name__)

TASK = "featurize"


def _manifest_days(manifest: Any, path: Path, day: date) -> list[date]:
    try:
        days = [parse_day(entry["day"]) for entry in manifest["days"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"ingest manifest {path} must hold 'days': a list of objects with an ISO 'day'"
        ) from exc
    if not days:
        raise ValueError(f"ingest manifest {path} lists no days")
    late = sorted(d for d in days if d > day)
    if late:
        # A partition after the processed day would leak the future into training.
        raise ValueError(
            f"ingest manifest {path} lists days after {day}: "
            f"{', '.join(d.isoformat() for d in late)}"
        )
    return sorted(set(days))


def _write_table(table: pyarrow.Table, final: ArtifactPath) -> ArtifactPath:
    # What DataFrame.to_parquet(index=False) writes for the table's frame: the same bytes.
    return io.atomic_write(final, lambda tmp: pq.write_table(table, tmp, compression="snappy"))


def run(
    day: str | date, root: str | Path | None = None, params_file: str | Path | None = None
) -> dict[str, Any]:
    """Build the ``features`` artifact (``processed(day)``) from the raw partitions ingest listed.

    Reads the ``manifest`` artifact (written by the ``ingest`` task) and, for every
    day in its ``days`` list, the ``day_features`` partition when it was made from the
    same raw files by the same code, else its ``raw_flights`` and ``raw_weather``
    artifacts (then the partition is written); a missing file raises
    :class:`flight_delays.store.io.MissingArtifactError` naming ``ingest``. Writes
    atomically, beside the table, the ``feature_counts`` artifact: ``{"rows": n,
    "days": partitions read, "days_reused": ..., "days_computed": ..., **counts}`` with
    the counts of :func:`build_features` (the run report shows them). Returns the same
    dict and ``"features": path``.
    """
    started = time.perf_counter()
    settings = load_settings(root, params_file)
    day = parse_day(day)
    paths = settings.paths
    manifest_path = artifacts.MANIFEST.path(paths.root, day)
    manifest = io.read_json(manifest_path, artifacts.MANIFEST)
    days = _manifest_days(manifest, manifest_path, day)
    recorded = {parse_day(e["day"]): day_features.recorded(e) for e in manifest["days"]}
    table, counts, reused = flight_features.window_features(paths.root, days, recorded)
    contract = counts.pop("contract", {})
    if counts["failed_contract"]:
        logger.warning(
            "featurize %s: left out %d flights of older partitions that break the data "
            "contract (%s); re-fetch their days to quarantine them at the door",
            day,
            counts["failed_contract"],
            ", ".join(f"{k}: {v}" for k, v in contract.items()),
        )
    # Rows ingest quarantined at the door for the window's days (manifests before the
    # contracts existed have no such count).
    counts["quarantined_rows"] = int(manifest.get("quarantined_rows", 0))
    target = _write_table(table, artifacts.FEATURES.path(paths.root, day))
    summary = {
        "rows": table.num_rows,
        "days": len(days),
        "days_reused": reused,
        "days_computed": len(days) - reused,
        **counts,
    }
    io.write_json(summary, artifacts.FEATURE_COUNTS.path(paths.root, day))
    logger.info(
        "featurize %s: %d days (%d reused from day partitions, %d computed), %d flights "
        "in -> %d rows out (dropped %d duplicate flights, averaged %d duplicate weather "
        "rows, masked %d implausible weather readings, %d flights without weather, "
        "excluded %d without arr_delay, %d quarantined at ingest) in %.1f s -> %s",
        day,
        len(days),
        reused,
        len(days) - reused,
        counts["flights_in"],
        table.num_rows,
        counts["duplicate_flights"],
        counts["duplicate_weather"],
        counts["implausible_weather"],
        counts["missing_weather"],
        counts["excluded_no_arr_delay"],
        counts["quarantined_rows"],
        time.perf_counter() - started,
        target,
    )
    return {"features": str(target), **summary}
