"""Step 1, ingest: make sure every raw partition of the training window exists, and
write the run's manifest.

A run for day D needs the ``ingest.window_days`` days ending on D. Only the days without
a write-once raw partition are read from the SQL source
(:func:`flight_delays.intake.raw_partitions.ensure_partitions`), so the first run bootstraps
the whole window and a nightly run fetches one day. Then the manifest (the catalog's
``manifest``) records the window's partitions (rows and SHA-256 of every file) for the
next steps. A processed day that is not fully in the warehouse yet is waited for
(late data: :func:`late_or_waiting`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

from flight_delays.base import dates
from flight_delays.base.errors import PipelineDataError
from flight_delays.intake import contracts, raw_partitions
from flight_delays.store import artifacts, db, step_runner
from flight_delays.store.config import load_settings

logger = logging.getLogger(__name__)


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


def _fetched_window(run: step_runner.StepRun, _inputs: dict[str, Any]) -> dict[str, Any]:
    """Fetch the window's missing raw partitions (``refetch``: the processed day again,
    the earlier partition moved aside) and describe every window day's partition.

    Late data: given ``now`` (aware; the DAG passes the clock), a processed day that is
    missing or partly loaded raises :class:`DayNotLoadedYet` until ``ingest.wait_until``
    on the next day, then :class:`LateDataError` (:func:`late_or_waiting`). Without
    ``now`` (the commands), such a day raises as any other window day."""
    settings, processed, now = run.settings, run.day, run.options.get("now")
    days = dates.window(processed, settings.ingest.window_days)
    try:
        if run.options.get("refetch"):
            raw_partitions.refetch_day(settings, processed, run.source_url)
        fetched = raw_partitions.ensure_partitions(settings, days, run.source_url)
    except (raw_partitions.NoFlightsError, contracts.IncompleteDayError) as exc:
        if now is None or getattr(exc, "day", None) != processed:
            raise
        reason = str(exc).split(": the day looks")[0].split(", so nothing")[0]
        raise late_or_waiting(
            processed, now, settings.ingest.wait_until_time, settings.ingest.wait_poke_seconds,
            reason,
        ) from exc  # fmt: skip
    partitions = [
        {
            **raw_partitions.partition_stats(d, artifacts.RAW_PARTITION.path(run.root, d)),
            "quarantined": raw_partitions.quarantined_rows(settings.paths, d),
        }
        for d in days
    ]
    return {
        "days": days,
        "partitions": partitions,
        "fetched": fetched,
        "source": db.safe_url(run.source_url),
    }


def ingest_core(
    day: date,
    _params: None,
    days: list[date],
    partitions: list[dict[str, Any]],
    fetched: list[date],
    source: str,
) -> step_runner.Result:
    """The step's core: the run's manifest (:func:`build_manifest`) and its summary."""
    manifest = build_manifest(day, days, partitions, fetched, source)
    return step_runner.Result(
        outputs={"manifest": manifest},
        summary={
            "days": len(days),
            "fetched": len(fetched),
            "flight_rows": manifest["flight_rows"],
            "quarantined_rows": manifest["quarantined_rows"],
        },
        line=f"window {days[0]}..{days[-1]} ({len(days)} days), fetched {len(fetched)} from "
        f"{source}, {manifest['flight_rows']} flight rows in the window, "
        f"{manifest['quarantined_rows']} quarantined rows",
    )


#: Fetches the window's missing raw partitions for ``day`` (from ``source_url``, default:
#: the settings' source) and writes its manifest. Every fetched day passes the data
#: contract first (:mod:`flight_delays.intake.contracts`): rows that break it go to
#: ``data/interim/quarantine/ds=<day>/`` with their reasons, the others are frozen.
#: Options: ``refetch`` (the processed day is read again) and ``now`` (late data, see
#: :func:`_fetched_window`). The XCom dict: ``{"manifest": location, "days": window days,
#: "fetched": days fetched now, "flight_rows": flights in the window, "quarantined_rows":
#: rows kept back in the window}``. Raises NoFlightsError
#: (:mod:`flight_delays.intake.raw_partitions`) for a window day the source has no flights
#: for, QuarantineShareError for a day with too many broken rows (both
#: PipelineDataError), and IncompleteDayError for a day that looks partly loaded; nothing
#: is written for such a day.
STEP = step_runner.Step(
    name="ingest",
    core=ingest_core,
    load=_fetched_window,
    writes={"manifest": artifacts.MANIFEST},
    options=("refetch", "now"),
)
run = STEP.run


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
    moved = raw_partitions.refetch_day(settings, args.day, args.source_url or settings.source_url)
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
