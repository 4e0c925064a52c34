"""source.read_days from PostgreSQL: the COPY path (flight_delays.intake.pg_copy) gives the
frames the row-by-row path gives, day by day, and falls back to it for a warehouse whose
values do not parse as the contract's types. On a throw-away PostgreSQL cluster."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, timedelta

import pandas as pd
import pytest
from pg_cluster import throwaway_cluster
from sqlalchemy import Engine, create_engine, text

from flight_delays.intake import demo, pg_copy, source
from flight_delays.store.db import open_engine

FIRST, LAST = date(2013, 2, 7), date(2013, 2, 10)  # the 8th: a snowstorm, many cancelled
NO_NULL_DAY = date(2013, 2, 9)  # made to hold no null dep_time below
ABSENT = date(2013, 2, 20)  # not seeded: empty frames
DAYS = [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)] + [ABSENT]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with throwaway_cluster() as url:
        demo.seed(url, [0], original_range=(FIRST, LAST))
        engine = open_engine(url)
        try:
            with engine.begin() as conn:
                # An integer column with nulls on other days but none on this one, and an
                # empty string beside the nulls of a text column.
                conn.execute(
                    text(
                        "UPDATE flights SET dep_time = 1 WHERE local_date = :d AND dep_time IS NULL"
                    ),
                    {"d": NO_NULL_DAY},
                )
                conn.execute(
                    text("UPDATE flights SET tailnum = '' WHERE local_date = :d AND flight < 100"),
                    {"d": FIRST},
                )
        finally:
            engine.dispose()
        yield url


def _row_by_row(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> dict:
    with monkeypatch.context() as patch:
        patch.setattr(pg_copy, "copies", lambda engine: False)
        return source.read_days(engine, DAYS)


def _assert_same(got: dict, expected: dict) -> None:
    assert list(got) == list(expected) == sorted(DAYS)
    for day in DAYS:
        for ours, theirs in zip(got[day], expected[day], strict=True):
            pd.testing.assert_frame_equal(ours, theirs)


def test_the_copy_path_gives_the_row_paths_frames_day_by_day(engine, monkeypatch):
    assert pg_copy.copies(engine)  # PostgreSQL through psycopg: the fast path is taken
    read = pg_copy.read_tables
    calls = []
    monkeypatch.setattr(pg_copy, "read_tables", lambda *a: calls.append(a) or read(*a))
    copied = source.read_days(engine, DAYS)
    assert len(calls) == 1
    expected = _row_by_row(engine, monkeypatch)
    _assert_same(copied, expected)
    flights, weather = copied[FIRST]
    assert len(flights) > 500 and len(weather) == 72  # three airports, 24 hours
    assert (flights["tailnum"] == "").any() and flights["tailnum"].isna().any()
    assert copied[NO_NULL_DAY][0]["dep_time"].dtype == "int64"
    assert copied[date(2013, 2, 8)][0]["dep_time"].dtype == "float64"  # cancellations
    assert copied[ABSENT][0].empty and list(copied[ABSENT][0].columns) == list(flights.columns)


def test_a_warehouse_whose_values_do_not_parse_is_read_row_by_row(pg_url, monkeypatch, caplog):
    # A warehouse that keeps the day as a timestamp: the contract accepts it, the CSV's
    # "2013-02-07 00:00:00" is no date for Arrow.
    admin = create_engine(open_engine(pg_url).url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("DROP DATABASE IF EXISTS stamped"))
            conn.execute(text("CREATE DATABASE stamped"))
    finally:
        admin.dispose()
    url = pg_url.rsplit("/", 1)[0] + "/stamped"
    demo.seed(url, [0], original_range=(FIRST, FIRST))
    engine = open_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE weather ALTER COLUMN local_date TYPE timestamp"))
        with caplog.at_level(logging.INFO, logger="flight_delays.intake.source"):
            read = source.read_days(engine, [FIRST])
        assert "row by row: table weather" in caplog.text
        with monkeypatch.context() as patch:
            patch.setattr(pg_copy, "copies", lambda engine: False)
            expected = source.read_days(engine, [FIRST])
        for ours, theirs in zip(read[FIRST], expected[FIRST], strict=True):
            pd.testing.assert_frame_equal(ours, theirs)
    finally:
        engine.dispose()
