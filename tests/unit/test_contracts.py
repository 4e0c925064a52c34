"""Unit tests for flight_delays.intake.contracts: the row checks at the door, on inline frames."""

from __future__ import annotations

import gc
import weakref
from datetime import date

import pandas as pd
import pytest

from flight_delays.base import schema
from flight_delays.intake import contracts, source

DAY = date(2013, 7, 5)


def flights(**changes: list) -> pd.DataFrame:
    """Two valid flights as a database returns them (object columns), with ``changes``."""
    frame = pd.DataFrame(
        {
            "local_date": [DAY, DAY],
            "original_date": [DAY, DAY],
            "replay_cycle": [0, 0],
            "carrier": ["UA", "AA"],
            "flight": [1, 2],
            "tailnum": ["N1", None],
            "origin": ["EWR", "JFK"],
            "dest": ["ORD", "LAX"],
            "sched_dep_time": [600, 2359],
            "sched_arr_time": [800, 300],
            "dep_time": [605, None],
            "dep_delay": [5.0, None],
            "arr_time": [810, None],
            "arr_delay": [10.0, None],
            "air_time": [120.0, None],
            "distance": [719, 2475],
        }
    ).astype(object)
    for name, values in changes.items():
        frame[name] = pd.Series(values, dtype=object)
    return frame


def test_valid_rows_pass_typed_and_the_input_is_not_modified() -> None:
    raw = flights()
    before = raw.copy()
    checked = contracts.check_flights(raw, DAY, source.FLIGHT_DTYPES)
    pd.testing.assert_frame_equal(raw, before)
    assert checked.quarantine.empty and checked.counts == {}
    # Typed exactly as the trusted conversion of the same rows types them.
    pd.testing.assert_frame_equal(checked.good, source.conform(raw, source.FLIGHTS))


BROKEN = [
    ({"distance": [-5, 719]}, "distance", "distance -5 miles is not positive"),
    ({"distance": [0, 719]}, "distance", "distance 0 miles is not positive"),
    ({"arr_delay": [1441.0, None]}, "delay_bounds", "arr_delay 1441 minutes is beyond ±24 h"),
    ({"dep_delay": [-1500.0, None]}, "delay_bounds", "dep_delay -1500 minutes"),
    ({"sched_dep_time": [2460, 2359]}, "hhmm", "sched_dep_time 2460 is not a valid HHMM"),
    ({"sched_arr_time": [2401, 300]}, "hhmm", "sched_arr_time 2401"),
    ({"carrier": ["ZZ", "AA"]}, "unknown_carrier", "unknown carrier 'ZZ'"),
    ({"origin": ["BOS", "JFK"]}, "unknown_origin", "unknown origin airport 'BOS'"),
    ({"dest": ["or", "LAX"]}, "dest_code", "dest 'or' is not a three-letter airport code"),
    ({"flight": ["12a", 2]}, "not_a_number", "flight '12a' is not a number"),
    ({"flight": [1.5, 2]}, "not_whole", "flight 1.5 is not a whole number"),
    ({"flight": ["inf", 2]}, "not_a_number", "flight 'inf' is not a number"),
    ({"arr_delay": [float("-inf"), None]}, "not_a_number", "arr_delay -inf is not a number"),
    # Not cast to a wrong integer (1e30 became -9223372036854775808, kept).
    ({"distance": [1e30, 719]}, "whole_range", "is beyond the whole numbers stored exactly"),
    ({"carrier": [None, "AA"]}, "required_null", "carrier is null"),
    ({"local_date": [date(2013, 7, 6), DAY]}, "other_day", "is not the fetched day"),
    ({"air_time": [0.0, None]}, "air_time_bounds", "air_time 0 minutes"),
    # Read by pandas as the year 1 among real dates: a day no flight has, not a crash.
    ({"original_date": ["12a", DAY]}, "not_a_date", "original_date '12a' is not a date"),
    ({"original_date": ["9999-01-01", DAY]}, "not_a_date", "is not a date"),
]


@pytest.mark.parametrize(("changes", "check", "reason"), BROKEN)
def test_a_broken_value_quarantines_its_row_with_a_reason(
    changes: dict, check: str, reason: str
) -> None:
    checked = contracts.check_flights(flights(**changes), DAY, source.FLIGHT_DTYPES)
    assert len(checked.good) == 1 and len(checked.quarantine) == 1
    assert check in checked.quarantine.loc[0, contracts.CHECKS].split(",")
    assert reason in checked.quarantine.loc[0, contracts.REASON]
    assert checked.counts[check] == 1


def test_a_row_failing_several_checks_gives_every_reason_once() -> None:
    checked = contracts.check_flights(
        flights(distance=[-5, 719], arr_delay=[9999.0, None]), DAY, source.FLIGHT_DTYPES
    )
    row = checked.quarantine.loc[0]
    assert row[contracts.CHECKS] == "delay_bounds,distance"
    assert row[contracts.REASON] == (
        "arr_delay 9999 minutes is beyond ±24 h; distance -5 miles is not positive"
    )
    # Quarantined values are kept as fetched (as text), not coerced.
    assert row["distance"] == "-5" and row["carrier"] == "UA"


def test_midnight_2400_and_missing_actuals_are_valid() -> None:
    checked = contracts.check_flights(flights(dep_time=[2400, None]), DAY, source.FLIGHT_DTYPES)
    assert checked.quarantine.empty


FALL_BACK = date(2013, 11, 3)  # 01:00-02:00 twice in New York: DST ends


def weather_rows(day: date, hours: list, temps: list, original: date | None = None):
    n = len(hours)
    return pd.DataFrame(
        {
            "local_date": [day] * n,
            "original_date": [original or day] * n,
            "replay_cycle": [0] * n,
            "origin": ["EWR"] * n,
            "hour": hours,
            **{m: temps for m in ("temp", "dewp", "humid", "wind_dir")},
            **{m: [None] * n for m in ("wind_speed", "wind_gust", "precip", "pressure", "visib")},
        }
    ).astype(object)


def test_weather_hour_out_of_range_is_quarantined_and_repeated_hour_kept() -> None:
    weather = weather_rows(FALL_BACK, [1, 1, 24], [50.0, 51.0, 52.0])
    checked = contracts.check_weather(weather, FALL_BACK, source.WEATHER_DTYPES)
    assert len(checked.good) == 2  # hour 1 twice: the hour repeated when DST ends
    assert checked.quarantine[contracts.REASON].tolist() == ["hour 24 is not 0-23"]


def test_a_repeated_weather_hour_on_another_day_is_a_duplicate() -> None:
    # Two readings of 05:00 at one airport: which is right is unknown, both go; an exact
    # copy goes alone. Averaging them would hide a broken feed.
    weather = weather_rows(DAY, [5, 5, 7, 7, 8], [30.0, 90.0, 60.0, 60.0, 61.0])
    checked = contracts.check_weather(weather, DAY, source.WEATHER_DTYPES)
    assert checked.good["hour"].tolist() == [7, 8]
    assert checked.counts == {"conflicting_duplicate": 2, "duplicate": 1}
    assert (
        "several different rows for one airport and hour"
        in (checked.quarantine.loc[0, contracts.REASON])
    )
    # Hour 1 is no exception on an ordinary day; on the DST day a third reading of it is
    # one too many, and a replayed row keeps the exception of its original 2013 day.
    assert len(contracts.check_weather(weather_rows(DAY, [1, 1], [1.0, 2.0]), DAY,
                                       source.WEATHER_DTYPES).quarantine) == 2  # fmt: skip
    three = weather_rows(FALL_BACK, [1, 1, 1], [1.0, 2.0, 3.0])
    assert len(contracts.check_weather(three, FALL_BACK, source.WEATHER_DTYPES).good) == 0
    replayed = weather_rows(date(2026, 11, 8), [1, 1], [1.0, 2.0], original=FALL_BACK)
    checked = contracts.check_weather(replayed, date(2026, 11, 8), source.WEATHER_DTYPES)
    assert len(checked.good) == 2


def test_share_over_the_threshold_is_refused_with_day_checks_and_place() -> None:
    checked = contracts.check_flights(flights(distance=[-5, 719]), DAY, source.FLIGHT_DTYPES)
    empty = contracts.check_weather(
        pd.DataFrame(columns=list(source.WEATHER_DTYPES)), DAY, source.WEATHER_DTYPES
    )
    summary = contracts.quarantine_summary(DAY, checked, empty)
    assert summary["share"] == 0.5
    contracts.refuse_share(summary, 0.5, "/q")  # at the threshold: accepted
    with pytest.raises(
        contracts.QuarantineShareError, match=r"2013-07-05: 1 rows \(50.0%\).*distance: 1 rows.*/q"
    ):
        contracts.refuse_share(summary, 0.1, "/q")


def test_completeness_names_the_reason() -> None:
    assert contracts.completeness(DAY, 900, 72, 1000, True, 0.5) is None
    assert "fewer than 50% of the usual 1000 for a Friday" in contracts.completeness(
        DAY, 400, 72, 1000, True, 0.5
    )
    assert contracts.completeness(DAY, 400, 72, None, True, 0.5) is None  # no reference
    assert "no weather" in contracts.completeness(DAY, 900, 0, 1000, False, 0.5)
    assert contracts.completeness(DAY, 900, 0, 1000, True, 0.5) is None  # a gap in the feed


def test_counts_are_failing_rows_per_check_across_columns() -> None:
    checked = contracts.check_flights(
        flights(sched_dep_time=[2460, 2460], sched_arr_time=[2401, 300]), DAY, source.FLIGHT_DTYPES
    )
    # Row 0 fails hhmm in two columns, row 1 in one: two rows failed the check.
    assert checked.counts == {"hhmm": 2}
    assert checked.quarantine[contracts.CHECKS].tolist() == ["hhmm,hhmm", "hhmm"]


def test_reasons_read_type_first_then_in_column_order() -> None:
    checked = contracts.check_flights(
        flights(carrier=["ZZ", "AA"], dep_delay=["x", None], distance=[-5, 719]),
        DAY,
        source.FLIGHT_DTYPES,
    )
    assert checked.quarantine.loc[0, contracts.REASON] == (
        "dep_delay 'x' is not a number; unknown carrier 'ZZ'; distance -5 miles is not positive"
    )


def test_a_negative_or_fractional_replay_cycle_is_quarantined() -> None:
    checked = contracts.check_flights(flights(replay_cycle=[-1, 0]), DAY, source.FLIGHT_DTYPES)
    assert checked.quarantine[contracts.REASON].tolist() == ["replay_cycle -1 is negative"]
    weather = pd.DataFrame(
        {
            "local_date": [DAY] * 2,
            "original_date": [DAY] * 2,
            "replay_cycle": [0, 1.5],
            "origin": ["EWR", "JFK"],
            "hour": [1, 2],
            **{m: [None] * 2 for m in schema.WEATHER_MEASURES},
        }
    ).astype(object)
    checked = contracts.check_weather(weather, DAY, source.WEATHER_DTYPES)
    assert checked.quarantine[contracts.REASON].tolist() == [
        "replay_cycle 1.5 is not a whole number"
    ]
    assert checked.good["replay_cycle"].tolist() == [0]


def test_every_declared_check_names_its_reason() -> None:
    for contract in (contracts.RAW_FLIGHTS_SCHEMA, contracts.RAW_WEATHER_SCHEMA):
        checks = [c for column in contract.columns.values() for c in column.checks]
        for check in [*checks, *contract.checks]:
            assert check.name and check.error, f"{contract.name}: {check} has no reason"


def test_dtypes_that_are_not_the_contracts_are_refused() -> None:
    wrong = {**source.FLIGHT_DTYPES, "distance": "float64"}
    with pytest.raises(ValueError, match="not its contract's"):
        contracts.check_flights(flights(), DAY, wrong)


# --- the boundaries (issue 20: planted bugs no test caught) ------------------------------
def weather(hours: list) -> pd.DataFrame:
    """One EWR weather row per entry of ``hours``, as a database returns them."""
    n = len(hours)
    return pd.DataFrame(
        {
            "local_date": [DAY] * n,
            "original_date": [DAY] * n,
            "replay_cycle": [0] * n,
            "origin": ["EWR"] * n,
            "hour": hours,
            **{m: [50.0] * n for m in schema.WEATHER_MEASURES},
        }
    ).astype(object)


def test_a_flight_of_distance_zero_is_quarantined_and_one_mile_is_not() -> None:
    # A route of 0 miles is no flight: the bound is strictly positive (check "distance").
    checked = contracts.check_flights(flights(distance=[0, 1]), DAY, source.FLIGHT_DTYPES)
    assert checked.quarantine[contracts.REASON].tolist() == ["distance 0 miles is not positive"]
    assert checked.quarantine[contracts.CHECKS].tolist() == ["distance"]
    assert checked.counts == {"distance": 1}
    assert checked.good["distance"].tolist() == [1]


def test_broken_weather_rows_count_in_the_days_refusal_share() -> None:
    # Every flight keeps the contract; 2 of the 4 weather rows break it (hours 24, 25).
    good_flights = contracts.check_flights(flights(), DAY, source.FLIGHT_DTYPES)
    checked_weather = contracts.check_weather(weather([0, 1, 24, 25]), DAY, source.WEATHER_DTYPES)
    summary = contracts.quarantine_summary(DAY, good_flights, checked_weather)
    assert summary["weather"] == {"rows_in": 4, "quarantined": 2, "checks": {"hour": 2}}
    assert summary["quarantined"] == 2
    assert summary["share"] == 2 / 6  # of all the day's rows, flights and weather
    contracts.refuse_share(summary, 2 / 6, "/q")  # at the threshold: accepted
    with pytest.raises(
        contracts.QuarantineShareError,
        match=r"2013-07-05: 2 rows \(33\.3%\).*weather hour: 2 rows.*/q",
    ):
        contracts.refuse_share(summary, 0.3, "/q")


def test_a_day_whose_only_broken_rows_are_weather_rows_is_refused() -> None:
    good_flights = contracts.check_flights(flights(), DAY, source.FLIGHT_DTYPES)
    all_broken = contracts.check_weather(weather([24, 99]), DAY, source.WEATHER_DTYPES)
    summary = contracts.quarantine_summary(DAY, good_flights, all_broken)
    assert summary["share"] == 0.5
    with pytest.raises(contracts.QuarantineShareError, match="weather hour: 2 rows"):
        contracts.refuse_share(summary, 0.02, "/q")


def on_day(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """``frame``'s rows moved to ``day`` (both dates), as a database returns them."""
    return frame.assign(local_date=[day] * len(frame), original_date=[day] * len(frame)).astype(
        object
    )


def assert_same_checked(got: contracts.Checked, want: contracts.Checked) -> None:
    pd.testing.assert_frame_equal(got.good, want.good)
    pd.testing.assert_frame_equal(got.quarantine, want.quarantine)
    assert got.counts == want.counts
    assert list(got.failed) == list(want.failed)


@pytest.mark.parametrize(("changes", "check", "reason"), BROKEN)
def test_days_checked_together_give_each_day_its_own_result(changes, check, reason) -> None:
    later, empty = date(2013, 7, 6), date(2013, 7, 7)
    clean = on_day(flights(), later)
    copies = pd.concat([clean, clean.iloc[[0]]], ignore_index=True)  # an exact copy
    raw = {DAY: flights(**changes), later: copies, empty: flights().iloc[0:0]}
    together = contracts.check_flights_days(raw, source.FLIGHT_DTYPES)
    assert list(together) == [DAY, later, empty]
    for day, frame in raw.items():
        assert_same_checked(
            together[day], contracts.check_flights(frame, day, source.FLIGHT_DTYPES)
        )
    assert check in together[DAY].quarantine.loc[0, contracts.CHECKS].split(",")
    assert together[later].counts == {"duplicate": 1}


def test_weather_days_checked_together_give_each_day_its_own_result() -> None:
    later = date(2013, 7, 6)
    raw = {DAY: weather([0, 24, 1]), later: on_day(weather([5, 5, 7]), later)}
    together = contracts.check_weather_days(raw, source.WEATHER_DTYPES)
    for day, frame in raw.items():
        assert_same_checked(
            together[day], contracts.check_weather(frame, day, source.WEATHER_DTYPES)
        )
    # Hour 5 twice, the same readings: a copy, found among that day's rows alone.
    assert together[DAY].counts == {"hour": 1} and together[later].counts == {"duplicate": 1}
    assert contracts.check_weather_days({}, source.WEATHER_DTYPES) == {}


def test_the_key_checks_share_one_computation_a_frame_and_keep_no_frame_alive() -> None:
    # The copy and conflict checks of one key run the duplicate search once a frame; a
    # frame handed to the second check alone gets its own, and a frame whose validation
    # stopped after the first check is not kept alive by the checks.
    calls = []

    def duplicates(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        calls.append(len(frame))
        return frame["x"].duplicated(), frame["x"] < 0

    copies, conflicts = contracts._shared_masks(duplicates)
    frame = pd.DataFrame({"x": [1, 1, -2]})
    assert copies(frame).tolist() == [True, False, True]
    assert conflicts(frame).tolist() == [True, True, False]
    assert calls == [3]
    other = pd.DataFrame({"x": [-5]})
    assert conflicts(other).tolist() == [False]  # not the masks of `frame`
    assert calls == [3, 1]
    copies(frame)
    gone = weakref.ref(frame)
    del frame
    gc.collect()
    assert gone() is None
    assert conflicts(other).tolist() == [False]  # the dead frame's masks are not used
    assert calls == [3, 1, 3, 1]
