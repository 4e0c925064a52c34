"""flight_delays.model.scoring: metrics against hand-computed values, per-group MAE, baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flight_delays.base import schema
from flight_delays.model.scoring import (
    METRIC_KEYS,
    SHARE_WITHIN,
    OriginHourMedianBaseline,
    mae_by_group,
    regression_metrics,
)


def test_regression_metrics_match_hand_computed_values() -> None:
    actual = [0.0, 10.0, 20.0, 30.0]
    predicted = [5.0, 10.0, 40.0, 26.0]  # errors 5, 0, 20, 4 (minutes)
    got = regression_metrics(actual, predicted, within_minutes=5.0)

    assert set(got) == set(METRIC_KEYS)
    assert got["mae"] == pytest.approx((5 + 0 + 20 + 4) / 4)  # 7.25
    assert got["rmse"] == pytest.approx(math.sqrt((25 + 0 + 400 + 16) / 4))  # 10.5
    assert got["median_ae"] == pytest.approx((4 + 5) / 2)
    # R² = 1 - SS_res / SS_tot; mean 15 -> SS_tot = 225 + 25 + 25 + 225 = 500.
    assert got["r2"] == pytest.approx(1 - 441 / 500)
    assert got[SHARE_WITHIN] == pytest.approx(3 / 4)  # |error| <= 5 for 5, 0 and 4
    assert got["within_minutes"] == 5.0
    assert got["n"] == 4


def test_regression_metrics_accepts_series_and_default_threshold() -> None:
    actual = pd.Series([0.0, 100.0])
    predicted = pd.Series([15.0, 84.0])  # errors 15 (inside 15 min) and 16 (outside)
    got = regression_metrics(actual, predicted)
    assert got["within_minutes"] == 15.0
    assert got[SHARE_WITHIN] == pytest.approx(0.5)


def test_regression_metrics_single_value_has_undefined_r2() -> None:
    got = regression_metrics([3.0], [1.0])
    assert got["mae"] == 2.0
    assert math.isnan(got["r2"])


@pytest.mark.parametrize(
    ("actual", "predicted", "message"),
    [
        ([1.0, 2.0], [1.0], "differ in length"),
        ([], [], "empty"),
        ([1.0, np.nan, np.inf], [1.0, 2.0, np.nan], "2 in y_true and 1 in y_pred"),
    ],
)
def test_regression_metrics_rejects_bad_input(actual, predicted, message) -> None:
    with pytest.raises(ValueError, match=message):
        regression_metrics(actual, predicted)


def test_mae_by_group_per_group_and_counts() -> None:
    frame = pd.DataFrame(
        {
            "hour": [8, 8, 9, 9, 9],
            "actual": [10.0, 20.0, 0.0, 0.0, 0.0],
            "model": [12.0, 20.0, 3.0, -3.0, 0.0],
            "base": [0.0, 0.0, 1.0, 1.0, 1.0],
        }
    )
    before = frame.copy()
    table = mae_by_group(frame, "hour", "actual", ["model", "base"])

    assert list(table.index) == [8, 9]
    assert table.index.name == "hour"
    assert table.loc[8, "model"] == pytest.approx(1.0)
    assert table.loc[9, "model"] == pytest.approx(2.0)
    assert table.loc[8, "base"] == pytest.approx(15.0)
    assert table.loc[9, "base"] == pytest.approx(1.0)
    assert list(table["n"]) == [2, 3]
    pd.testing.assert_frame_equal(frame, before)


def test_mae_by_group_names_missing_columns() -> None:
    frame = pd.DataFrame({"hour": [1], "actual": [1.0]})
    with pytest.raises(ValueError, match=r"missing column.*predicted"):
        mae_by_group(frame, "hour", "actual", ["predicted"])


def _baseline_train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "origin": ["JFK", "JFK", "JFK", "JFK", "LGA", "LGA", "EWR"],
            schema.SCHED_HOUR: [8, 8, 8, 9, 8, 8, 20],
            schema.TARGET: [0.0, 10.0, 50.0, 100.0, -5.0, 5.0, 30.0],
        }
    )


def test_baseline_learns_group_medians() -> None:
    model = OriginHourMedianBaseline().fit(_baseline_train())
    frame = pd.DataFrame({"origin": ["JFK", "JFK", "LGA"], schema.SCHED_HOUR: [8, 9, 8]})
    np.testing.assert_allclose(model.predict(frame), [10.0, 100.0, 0.0])
    assert model.fallbacks(frame) == {"origin_hour": 3, "origin": 0, "global": 0}


def test_baseline_falls_back_to_origin_then_global_median() -> None:
    train = _baseline_train()
    model = OriginHourMedianBaseline().fit(train)
    frame = pd.DataFrame(
        {
            # JFK at 23: unseen hour -> JFK median of [0, 10, 50, 100] = 30.
            # SFO: unseen origin -> global median of all 7 targets = 10.
            # missing origin -> global; float hour 8.0 matches int hour 8.
            "origin": ["JFK", "SFO", None, "LGA"],
            schema.SCHED_HOUR: [23.0, 8.0, 8.0, 8.0],
        }
    )
    np.testing.assert_allclose(model.predict(frame), [30.0, 10.0, 10.0, 0.0])
    assert model.fallbacks(frame) == {"origin_hour": 1, "origin": 1, "global": 2}
    assert model.global_median_ == pytest.approx(float(np.median(train[schema.TARGET])))


def test_baseline_does_not_mutate_inputs() -> None:
    train = _baseline_train()
    frame = pd.DataFrame({"origin": ["JFK"], schema.SCHED_HOUR: [8]})
    train_before, frame_before = train.copy(), frame.copy()
    model = OriginHourMedianBaseline().fit(train)
    model.predict(frame)
    model.fallbacks(frame)
    pd.testing.assert_frame_equal(train, train_before)
    pd.testing.assert_frame_equal(frame, frame_before)


def test_baseline_rejects_missing_target_and_unfitted_use() -> None:
    train = _baseline_train()
    train.loc[2, schema.TARGET] = np.nan
    with pytest.raises(ValueError, match=f"1 training rows .* {schema.TARGET}"):
        OriginHourMedianBaseline().fit(train)
    with pytest.raises(RuntimeError, match="not fitted"):
        OriginHourMedianBaseline().predict(pd.DataFrame({"origin": ["JFK"], "sched_hour": [8]}))
    with pytest.raises(ValueError, match="sched_hour"):
        OriginHourMedianBaseline().fit(_baseline_train().drop(columns=[schema.SCHED_HOUR]))
