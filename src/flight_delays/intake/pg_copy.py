"""PostgreSQL's fast path for reading a range of days: ``COPY (SELECT ...) TO STDOUT`` as
CSV, parsed by Arrow, instead of one Python object a value.

:func:`flight_delays.intake.source.read_days` takes it when the warehouse is PostgreSQL
through psycopg 3 (the project's driver). The query is the one the row path runs (the
contract's columns of the days, ordered by the table's key on the server, so the order,
and the collation that decides it, are the same); each day's frame has the same values,
dtypes and order as the row path gives (``tests/unit/test_source_copy.py`` compares
them). The server's text for a value must parse as the contract's type (a date, an
integer, a float): a warehouse that keeps, say, a ``timestamp`` day or a ``numeric``
integer column raises :class:`CopyUnreadable` and the caller reads those rows the
row-by-row way, with the same result.

Measured in docs/benchmarks.md ("Ingest, a range of days in one query").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from io import BytesIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Date, Engine, Float, Integer, Table, select

from flight_delays.base import schema


class CopyUnreadable(ValueError):
    """The server's CSV for a table does not parse as the contract's types."""


def copies(engine: Engine) -> bool:
    """Whether ``engine`` can take the fast path (PostgreSQL through psycopg 3)."""
    return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"


def _arrow_type(sql_type: object) -> pa.DataType:
    if isinstance(sql_type, Date):
        return pa.date32()
    if isinstance(sql_type, Integer):
        return pa.int64()
    if isinstance(sql_type, Float):
        return pa.float64()
    return pa.string()


def read_tables(
    engine: Engine,
    days: Sequence[date],
    contracts: Sequence[tuple[Table, Table, Sequence[str]]],
) -> list[dict[date, pd.DataFrame]]:
    """For each (contract table, the warehouse's reflected table, key) of ``contracts``:
    the rows of ``days`` (sorted), split by day, each day present (empty frames for a day
    without rows). Raises :class:`CopyUnreadable` when a value does not parse."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            return [_read_table(cursor, engine, days, *contract) for contract in contracts]
    finally:
        raw.close()  # back to the pool; the read-only transaction is rolled back


def _read_table(
    cursor: object,
    engine: Engine,
    days: Sequence[date],
    contract: Table,
    table: Table,
    key: Sequence[str],
) -> dict[date, pd.DataFrame]:
    columns = [c.name for c in contract.columns]
    query = (
        select(*(table.c[c] for c in columns))
        .where(table.c[schema.DAY].in_(list(days)))
        .order_by(*(table.c[k] for k in key))
    )
    # The days are the pipeline's own date objects, rendered by the dialect as literals.
    sql = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    text = BytesIO()
    with cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)") as copy:  # type: ignore[attr-defined]
        for chunk in copy:
            text.write(chunk)
    if not text.getbuffer().nbytes:
        return {day: pd.DataFrame([], columns=columns) for day in days}
    text.seek(0)
    try:
        parsed = pacsv.read_csv(
            text,
            read_options=pacsv.ReadOptions(column_names=columns),
            convert_options=pacsv.ConvertOptions(
                column_types={c.name: _arrow_type(c.type) for c in contract.columns},
                # CSV's NULL is an unquoted empty field; "" is an empty string.
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise CopyUnreadable(f"table {table.name}: {exc}") from exc
    return _by_day(parsed, days, columns, contract)


def _by_day(
    parsed: pa.Table, days: Sequence[date], columns: list[str], contract: Table
) -> dict[date, pd.DataFrame]:
    """``parsed`` (sorted by day) cut into each day's frame, typed as the row path types
    them: a frame built from one day's tuples makes an integer column float only when
    that day has a null in it, and a day without rows has untyped empty columns."""
    frame = parsed.to_pandas()
    starts = np.searchsorted(
        parsed.column(schema.DAY).to_numpy(),  # date32: days since 1970, no conversion
        np.array(days, dtype="datetime64[D]"),
        side="left",
    )
    bounds = [*starts.tolist(), len(frame)]
    # Nulls counted once for the whole range; a day's count is a difference of sums.
    nulls = {
        c.name: np.concatenate([[0], np.cumsum(frame[c.name].isna().to_numpy())])
        for c in contract.columns
        if isinstance(c.type, Integer) and frame[c.name].dtype == "float64"
    }
    cut = {}
    for at, day in enumerate(days):
        first, end = bounds[at], bounds[at + 1]
        if first == end:
            cut[day] = pd.DataFrame([], columns=columns)
            continue
        part = frame.iloc[first:end].reset_index(drop=True)
        whole = [c for c, count in nulls.items() if count[end] == count[first]]
        cut[day] = part.astype(dict.fromkeys(whole, "int64")) if whole else part
    return cut
