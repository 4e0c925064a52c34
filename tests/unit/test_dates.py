from datetime import UTC, date, datetime

import pendulum
import pytest

from flight_delays.base.dates import parse_day, processed_day, window


def test_nightly_run_processes_the_day_that_just_ended():
    run = pendulum.datetime(2026, 3, 16, 2, 0, tz="America/New_York")
    assert processed_day(run) == date(2026, 3, 15)


def test_utc_logical_date_is_read_in_new_york_time():
    # 03:00 UTC on the 16th is still the evening of the 15th in New York.
    run = datetime(2026, 3, 16, 3, 0, tzinfo=UTC)
    assert processed_day(run) == date(2026, 3, 14)


def test_manual_run_without_logical_date_uses_trigger_time():
    trigger = pendulum.datetime(2026, 7, 4, 15, 30, tz="America/New_York")
    assert processed_day(None, run_after=trigger) == date(2026, 7, 3)


def test_explicit_day_parameter_wins():
    run = pendulum.datetime(2026, 3, 16, 2, tz="America/New_York")
    assert processed_day(run, run, override="2013-05-01") == date(2013, 5, 1)
    assert processed_day(run, run, override="") == date(2026, 3, 15)


def test_no_date_at_all_is_an_error():
    with pytest.raises(ValueError, match="logical date"):
        processed_day(None, None)


def test_parse_day_rejects_garbage_with_the_value():
    with pytest.raises(ValueError, match="'yesterday'"):
        parse_day("yesterday")
    assert parse_day("2013-01-02T00:00:00+00:00") == date(2013, 1, 2)


def test_window_is_oldest_first_and_ends_on_the_day():
    assert window(date(2013, 3, 2), 3) == [date(2013, 2, 28), date(2013, 3, 1), date(2013, 3, 2)]
    with pytest.raises(ValueError):
        window(date(2013, 3, 2), 0)


def test_the_predicted_day_is_the_runs_own_day_or_the_one_after_a_new_champion():
    from flight_delays.base.dates import predicted_day

    five_am = datetime(2013, 3, 16, 9, 0, tzinfo=UTC)  # 05:00 in New York (EDT)
    assert predicted_day(five_am) == date(2013, 3, 16)
    # Naive datetimes are UTC: 03:00 UTC on the 17th is still the 16th in New York.
    assert predicted_day(None, datetime(2013, 3, 17, 3, 0)) == date(2013, 3, 16)
    assert predicted_day(five_am, five_am, "2013-06-01") == date(2013, 6, 1)
    assert predicted_day(five_am, five_am, None, "2013-03-20") == date(2013, 3, 21)
    with pytest.raises(ValueError, match="logical date"):
        predicted_day(None, None)
