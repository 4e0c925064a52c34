"""Unit tests for flight_delays.intake.source: the table contract and the day reads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, text

from flight_delays.base import schema
from flight_delays.intake import demo, source

RANGE = (date(2013, 1, 1), date(2013, 1, 3))


def count(url: str, table: str, where: str = "1 = 1") -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {where}")).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite warehouse with cycles 0 and 1 of the first three days of 2013."""
    url = f"sqlite:///{tmp_path_factory.mktemp('source') / 'warehouse.sqlite'}"
    demo.seed(url, [0, 1], original_range=RANGE)
    return url


# --- contract ----------------------------------------------------------------------------
def test_tables_follow_the_column_contract() -> None:
    assert [c.name for c in source.FLIGHTS.columns] == schema.FLIGHT_COLUMNS
    assert [c.name for c in source.WEATHER.columns] == schema.WEATHER_COLUMNS
    assert {ix.columns.keys()[0] for ix in source.FLIGHTS.indexes} == {schema.DAY}
    assert {ix.columns.keys()[0] for ix in source.WEATHER.indexes} == {schema.DAY}


# --- fetch_day ---------------------------------------------------------------------------
def test_fetch_day_reads_one_local_date_with_the_contract_dtypes(seeded: str) -> None:
    engine = create_engine(seeded)
    try:
        flights, weather = source.fetch_day(engine, "2014-01-01")  # cycle 1 of 2013-01-02
        empty_flights, empty_weather = source.fetch_day(engine, date(2020, 1, 1))
    finally:
        engine.dispose()

    assert len(flights) == count(seeded, "flights", "local_date = '2014-01-01'") > 0
    assert len(weather) == count(seeded, "weather", "local_date = '2014-01-01'") > 0
    assert list(flights.columns) == schema.FLIGHT_COLUMNS
    assert list(weather.columns) == schema.WEATHER_COLUMNS
    assert (flights[schema.DAY] == pd.Timestamp("2014-01-01")).all()
    assert (flights[schema.ORIGINAL_DAY] == pd.Timestamp("2013-01-02")).all()
    assert flights.dtypes.astype(str).to_dict() == source.FLIGHT_DTYPES
    assert weather.dtypes.astype(str).to_dict() == source.WEATHER_DTYPES
    assert flights[schema.DAY].dtype == "datetime64[ns]"
    sort_key = flights[schema.FLIGHT_KEY]
    pd.testing.assert_frame_equal(sort_key, sort_key.sort_values(schema.FLIGHT_KEY))
    # A day the source does not hold: empty frames, same columns and dtypes.
    assert empty_flights.empty and empty_weather.empty
    assert empty_flights.dtypes.astype(str).to_dict() == source.FLIGHT_DTYPES
    assert empty_weather.dtypes.astype(str).to_dict() == source.WEATHER_DTYPES


def test_fetch_day_names_a_missing_table_and_the_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'only_weather.sqlite'}"
    engine = create_engine(url)
    try:
        source.WEATHER.create(engine)
        with pytest.raises(source.SourceSchemaError) as caught:
            source.fetch_day(engine, date(2013, 1, 1))
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "'flights'" in message and "missing" in message
    assert "only_weather.sqlite" in message
    assert "flight_delays.intake.demo seed" in message


def test_fetch_day_names_the_missing_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'partial.sqlite'}"
    metadata = MetaData()
    dropped = {"dest", "arr_delay"}
    Table(
        "flights",
        metadata,
        *(Column(c.name, c.type) for c in source.FLIGHTS.columns if c.name not in dropped),
    )
    Table("weather", metadata, *(Column(c.name, c.type) for c in source.WEATHER.columns))
    engine = create_engine(url)
    try:
        metadata.create_all(engine)
        with pytest.raises(source.SourceSchemaError) as caught:
            source.fetch_day(engine, date(2013, 1, 1))
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "'flights'" in message and "partial.sqlite" in message
    assert "dest" in message and "arr_delay" in message
    assert "'weather'" not in message


def test_a_missing_sqlite_file_is_reported_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(source.SourceSchemaError, match="does not exist"):
            source.fetch_day(engine, date(2013, 1, 1))
    finally:
        engine.dispose()
    assert not path.exists()


def test_unknown_columns_in_a_source_table_are_ignored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'extra.sqlite'}"
    metadata = MetaData()
    Table(
        "flights",
        metadata,
        *(Column(c.name, c.type) for c in source.FLIGHTS.columns),
        Column("note", String(10)),
    )
    Table(
        "weather",
        metadata,
        *(Column(c.name, c.type) for c in source.WEATHER.columns),
        Column("extra", Float),
        Column("id", Integer),
    )
    engine = create_engine(url)
    try:
        metadata.create_all(engine)
        flights, weather = source.fetch_day(engine, date(2013, 1, 1))
    finally:
        engine.dispose()
    assert list(flights.columns) == schema.FLIGHT_COLUMNS
    assert list(weather.columns) == schema.WEATHER_COLUMNS
