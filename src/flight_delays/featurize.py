"""Step 2, featurize: the window's feature table, from the raw partitions ingest listed.

The features and the day partitions they are put together from are the model layer's
(:mod:`flight_delays.model.flight_features`); this step reads the manifest, writes the table
and its counts, and logs the summary line.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow

from flight_delays.base.dates import parse_day
from flight_delays.model import day_features, flight_features
from flight_delays.store import artifacts, step_runner

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


def _window(run: step_runner.StepRun, inputs: dict[str, Any]) -> dict[str, Any]:
    """The window's feature rows: each day's partition when it was made from the same raw
    files by the same code, else computed from its raw partitions (then written)."""
    manifest = inputs.pop("manifest")
    days = _manifest_days(manifest, artifacts.MANIFEST.path(run.root, run.day), run.day)
    recorded = {parse_day(e["day"]): day_features.recorded(e) for e in manifest["days"]}
    table, counts, reused = flight_features.window_features(run.root, days, recorded)
    # Rows ingest quarantined at the door for the window's days (manifests before the
    # contracts existed have no such count).
    counts["quarantined_rows"] = int(manifest.get("quarantined_rows", 0))
    return {"table": table, "counts": counts, "days": len(days), "reused": reused}


def featurize_core(
    day: date, _params: None, table: pyarrow.Table, counts: dict[str, Any], days: int, reused: int
) -> step_runner.Result:
    """The step's core: the feature table and its counts (the run report shows them)."""
    contract = counts.pop("contract", {})
    if counts["failed_contract"]:
        logger.warning(
            "featurize %s: left out %d flights of older partitions that break the data "
            "contract (%s); re-fetch their days to quarantine them at the door",
            day,
            counts["failed_contract"],
            ", ".join(f"{k}: {v}" for k, v in contract.items()),
        )
    summary = {
        "rows": table.num_rows,
        "days": days,
        "days_reused": reused,
        "days_computed": days - reused,
        **counts,
    }
    return step_runner.Result(
        outputs={"features": table, "feature_counts": summary},
        summary=summary,
        line=f"{days} days ({reused} reused from day partitions, {days - reused} computed), "
        f"{counts['flights_in']} flights in -> {table.num_rows} rows out (dropped "
        f"{counts['duplicate_flights']} duplicate flights, averaged "
        f"{counts['duplicate_weather']} duplicate weather rows, masked "
        f"{counts['implausible_weather']} implausible weather readings, "
        f"{counts['missing_weather']} flights without weather, excluded "
        f"{counts['excluded_no_arr_delay']} without arr_delay, {counts['quarantined_rows']} "
        "quarantined at ingest)",
    )


#: Reads the ``manifest`` artifact (written by the ``ingest`` task) and, for every day in
#: its ``days`` list, the ``day_features`` partition when it was made from the same raw
#: files by the same code, else its ``raw_flights`` and ``raw_weather`` artifacts (then
#: the partition is written); a missing file raises
#: :class:`flight_delays.store.io.MissingArtifactError` naming ``ingest``. Writes the
#: ``features`` artifact (``processed(day)``) and, beside it, ``feature_counts``: ``{"rows":
#: n, "days": partitions read, "days_reused": ..., "days_computed": ..., **counts}`` with
#: the counts of :func:`flight_features.window_features`. The XCom dict is the same with
#: the two locations.
STEP = step_runner.Step(
    name=TASK,
    core=featurize_core,
    reads={"manifest": artifacts.MANIFEST},
    load=_window,
    writes={"features": artifacts.FEATURES, "feature_counts": artifacts.FEATURE_COUNTS},
)
run = STEP.run
