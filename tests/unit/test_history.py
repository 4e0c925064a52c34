"""flight_delays.model.history: past-day delay statistics, hand-checked on tiny frames, and the
no-leakage rules (a row never sees its own day, its block or the holdout)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from flight_delays.base import schema
from flight_delays.base.frames import MissingColumnsError
from flight_delays.model import history

CUTOFF = date(2024, 1, 15)  # first holdout day (a Monday)


def day(n: int) -> date:
    """The day ``n`` days after the cutoff (negative: before it)."""
    return CUTOFF + timedelta(days=n)


def rows(spec: list[tuple[int, float]], **columns) -> pd.DataFrame:
    """Flights from (day offset from the cutoff, arr_delay) pairs; other columns default
    to one flight AA 1 from JFK to LAX at 07:00, overridable per column with a list."""
    frame = pd.DataFrame(
        {
            schema.DAY: pd.to_datetime([day(n) for n, _ in spec]).astype("datetime64[ns]"),
            "carrier": "AA",
            "flight": 1,
            "origin": "JFK",
            "dest": "LAX",
            schema.SCHED_HOUR: 7,
            schema.TARGET: [float(delay) for _, delay in spec],
        }
    )
    for name, values in columns.items():
        frame[name] = values
    return frame


def one_stat(keys: list[str], lookback: int) -> dict[str, tuple[list[str], int]]:
    return {"stat": (keys, lookback)}


def test_history_ends_blocks_count_back_from_the_cutoff():
    days = pd.Series(pd.to_datetime([day(n) for n in (-14, -8, -7, -1, 0, 3, 6)]))
    got = history.history_ends(days, CUTOFF, block_days=7)
    assert [d.date() for d in got] == [
        day(-14),  # first day of the block -14..-8
        day(-14),
        day(-7),  # block -7..-1
        day(-7),
        CUTOFF,  # holdout rows: the cutoff itself
        CUTOFF,
        CUTOFF,
    ]
    with pytest.raises(ValueError, match="block_days"):
        history.history_ends(days, CUTOFF, block_days=0)


def test_history_statistics_maps_groups_to_their_lookbacks():
    stats = history.history_statistics(recent_days=7, history_days=28)
    assert list(stats) == [*schema.RECENT_HISTORY_GROUPS, *schema.HISTORY_GROUPS]
    assert stats["recent_origin_delay"] == (["origin"], 7)
    assert stats["past_flight_delay"] == (["carrier", "flight", "origin"], 28)
    assert [*stats, schema.HISTORY_LAG] == schema.HISTORY_FEATURES
    with pytest.raises(ValueError, match="recent_days"):
        history.history_statistics(0, 28)


def test_holdout_rows_get_the_median_of_the_lookback_before_the_cutoff():
    # 5 flights a day on days -3..-1 (delays 0..4, 10..14, 20..24) and one on day -4 (99)
    spec = [(-4, 99.0)] + [(-d, 10.0 * (3 - d) + k) for d in (3, 2, 1) for k in range(5)]
    train = rows(spec)
    holdout = rows([(0, 500.0), (2, 600.0), (6, 700.0)])
    _, got = history.add_history_features(train, holdout, CUTOFF, 7, one_stat([], 3))
    # days -3..-1: 15 delays 0..4, 10..14, 20..24 -> median 12; day -4 is outside
    assert got["stat"].tolist() == [12.0, 12.0, 12.0]
    # the age of the newest day used: 1 day for the first holdout day, 7 for the last
    assert got[schema.HISTORY_LAG].tolist() == [1, 3, 7]
    _, longer = history.add_history_features(train, holdout, CUTOFF, 7, one_stat([], 4))
    assert longer["stat"].tolist() == [12.5] * 3  # 16 delays with the 99: (12 + 13) / 2


def test_groups_are_medians_per_key_with_too_small_groups_left_missing():
    n = history.MIN_FLIGHTS
    train = rows(
        [(-1, float(k)) for k in range(n)]  # AA from JFK: 0..n-1
        + [(-2, 100.0 + k) for k in range(n)]  # B6 from JFK: 100..
        + [(-1, 50.0)] * (n - 1),  # UA: one flight short of a median
        carrier=["AA"] * n + ["B6"] * n + ["UA"] * (n - 1),
    )
    holdout = rows([(0, 0.0)] * 4, carrier=["AA", "B6", "UA", "NK"])
    _, got = history.add_history_features(train, holdout, CUTOFF, 7, one_stat(["carrier"], 7))
    expected_aa = float(np.median(range(n)))
    expected_b6 = float(np.median([100.0 + k for k in range(n)]))
    assert got["stat"].tolist()[:2] == [expected_aa, expected_b6]
    assert np.isnan(got["stat"].iloc[2])  # UA: too few flights
    assert np.isnan(got["stat"].iloc[3])  # NK: never seen


def test_each_shipped_statistic_uses_its_own_group():
    n = history.MIN_FLIGHTS
    # n flights per group on day -1; the (carrier, flight, origin, dest, hour) vary so
    # that every statistic has a different answer for the holdout flight
    frame = rows(
        [(-1, 10.0)] * n  # same flight: AA 1 JFK->LAX 7h
        + [(-1, 20.0)] * n  # AA 2 JFK->LAX 7h: same carrier, route, origin-hour
        + [(-1, 30.0)] * n  # B6 3 JFK->BOS 7h: same origin-hour
        + [(-1, 40.0)] * n  # B6 4 EWR->LAX 9h: same dest only
        + [(-10, 1000.0)] * n,  # 10 days back: only the 28-day statistics see it
        flight=[1] * n + [2] * n + [3] * n + [4] * n + [1] * n,
        carrier=["AA"] * 2 * n + ["B6"] * 2 * n + ["AA"] * n,
        dest=["LAX"] * 2 * n + ["BOS"] * n + ["LAX"] * 2 * n,
        origin=["JFK"] * 3 * n + ["EWR"] * n + ["JFK"] * n,
        sched_hour=[7] * 3 * n + [9] * n + [7] * n,
    )
    holdout = rows([(0, 0.0)])  # AA 1 JFK->LAX at 7h
    stats = history.history_statistics(recent_days=7, history_days=28)
    _, got = history.add_history_features(frame, holdout, CUTOFF, 7, stats)
    row = got.iloc[0]
    assert row["recent_nyc_delay"] == 25.0  # all 4n flights of day -1: 10, 20, 30, 40
    assert row["recent_origin_delay"] == 20.0  # JFK on day -1: 10, 20, 30
    assert row["past_carrier_delay"] == 20.0  # AA: 10 x n, 20 x n, 1000 x n
    assert row["past_route_delay"] == 20.0  # JFK->LAX: 10, 20, 1000
    assert row["past_origin_hour_delay"] == 25.0  # JFK 7h: 10, 20, 30, 1000 (n each)
    assert row["past_flight_delay"] == 505.0  # AA 1 JFK: 10 x n, 1000 x n
    assert row[schema.HISTORY_LAG] == 1


def test_training_rows_see_only_days_before_their_block():
    # cutoff day 0, blocks of 2 days: days -2..-1 form one block, -4..-3 the one before
    train = rows(
        [(-5, 1.0)] * 5 + [(-4, 2.0)] * 5 + [(-3, 3.0)] * 5 + [(-2, 4.0)] * 5 + [(-1, 5.0)] * 5
    )
    holdout = rows([(0, 0.0)])
    got, held = history.add_history_features(train, holdout, CUTOFF, 2, one_stat([], 10))
    by_day = got.groupby(got[schema.DAY].dt.date)["stat"].first()
    assert np.isnan(by_day[day(-5)])  # block -6..-5: nothing before day -6 in the frame
    assert by_day[day(-4)] == by_day[day(-3)] == 1.0  # block -4..-3 sees day -5 only
    assert by_day[day(-2)] == by_day[day(-1)] == 2.0  # block -2..-1 sees days -5..-3
    lags = got.groupby(got[schema.DAY].dt.date)[schema.HISTORY_LAG].first()
    assert lags.tolist() == [2, 1, 2, 1, 2]  # day -5 is the 2nd day of block -6..-5
    assert held["stat"].tolist() == [3.0]  # holdout: days -5..-1


def test_holdout_targets_never_change_any_history_feature():
    rng = np.random.default_rng(0)
    offsets, delays = rng.integers(-30, 7, 400), rng.normal(5, 30, 400)
    spec = [(int(n), float(d)) for n, d in zip(offsets, delays, strict=True)]
    frame = rows(
        spec,
        carrier=rng.choice(["AA", "B6"], 400),
        origin=rng.choice(["JFK", "EWR"], 400),
        flight=rng.integers(1, 4, 400),
        sched_hour=rng.integers(6, 9, 400),
    )
    is_holdout = frame[schema.DAY] >= pd.Timestamp(CUTOFF)
    train, holdout = frame[~is_holdout], frame[is_holdout]
    stats = history.history_statistics(recent_days=7, history_days=28)
    before = history.add_history_features(train, holdout, CUTOFF, 7, stats)
    scrambled = holdout.assign(**{schema.TARGET: rng.normal(500, 100, len(holdout))})
    after = history.add_history_features(train, scrambled, CUTOFF, 7, stats)
    pd.testing.assert_frame_equal(before[0], after[0])
    features = schema.HISTORY_FEATURES
    pd.testing.assert_frame_equal(before[1][features], after[1][features])
    assert before[1][features[:-1]].notna().any().all()  # the test compares real values
    # and a training row never sees its own block: change the last block's delays
    last_block = train[schema.DAY] >= pd.Timestamp(day(-7))
    changed = train.assign(**{schema.TARGET: train[schema.TARGET].where(~last_block, 999.0)})
    again = history.add_history_features(changed, holdout, CUTOFF, 7, stats)[0]
    pd.testing.assert_frame_equal(
        before[0].loc[last_block, features], again.loc[last_block, features]
    )


def test_inputs_are_not_modified_and_rows_keep_their_order():
    train = rows([(-2, 1.0), (-1, 2.0), (-3, 3.0)])
    holdout = rows([(1, 0.0), (0, 0.0)])
    train_copy, holdout_copy = train.copy(), holdout.copy()
    got_train, got_holdout = history.add_history_features(
        train, holdout, CUTOFF, 7, one_stat([], 7)
    )
    pd.testing.assert_frame_equal(train, train_copy)
    pd.testing.assert_frame_equal(holdout, holdout_copy)
    pd.testing.assert_frame_equal(got_train[train.columns], train)
    pd.testing.assert_frame_equal(got_holdout[holdout.columns], holdout)


def test_train_rows_on_or_after_the_cutoff_are_refused_as_leakage():
    train = rows([(-1, 1.0), (0, 2.0)])
    with pytest.raises(ValueError, match=r"1 train rows .* on or after .*2024-01-15.*leak"):
        history.add_history_features(train, rows([(0, 0.0)]), CUTOFF, 7, one_stat([], 7))


def test_missing_columns_and_bad_lookbacks_are_named():
    train, holdout = rows([(-1, 1.0)]), rows([(0, 0.0)])
    with pytest.raises(MissingColumnsError, match=r"train .*dest"):
        history.add_history_features(
            train.drop(columns="dest"), holdout, CUTOFF, 7, one_stat(["origin", "dest"], 7)
        )
    with pytest.raises(MissingColumnsError, match=rf"train .*{schema.TARGET}"):
        history.add_history_features(
            train.drop(columns=schema.TARGET), holdout, CUTOFF, 7, one_stat([], 7)
        )
    with pytest.raises(ValueError, match="lookback of stat must be >= 1"):
        history.add_history_features(train, holdout, CUTOFF, 7, one_stat([], 0))
