"""flight_delays.model.evaluation: the judging core the score task and the backtest share."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from flight_delays.base import schema
from flight_delays.model import evaluation
from flight_delays.store.config import ScoreSettings

DAY = date(2013, 6, 9)
SETTINGS = ScoreSettings(within_minutes=5.0, promotion_margin=0.1)


def _holdout(actual: list[float]) -> pd.DataFrame:
    """A small holdout: the identifiers, sched_hour and the actual arrival delays."""
    n = len(actual)
    return pd.DataFrame(
        {
            schema.DAY: [DAY] * n,
            "carrier": ["AA", "B6", "DL", "UA"][:n],
            "flight": list(range(100, 100 + n)),
            "origin": ["JFK", "LGA", "EWR", "JFK"][:n],
            "dest": ["BOS", "ATL", "ORD", "SFO"][:n],
            "sched_dep_time": [700, 815, 1230, 1805][:n],
            schema.SCHED_HOUR: [7, 8, 12, 18][:n],
            schema.TARGET: actual,
        }
    )


def test_evaluate_scores_the_three_contenders_and_promotes_over_the_baseline() -> None:
    holdout = _holdout([0.0, 10.0, 20.0, 30.0])
    before = holdout.copy()
    challenger = [2.0, 10.0, 20.0, 34.0]  # MAE 1.5
    baseline = np.full(4, 15.0)  # MAE 10

    judged = evaluation.evaluate(
        holdout, challenger, baseline, baseline, SETTINGS, day=DAY, champion_day=None
    )

    assert judged.mae == pytest.approx({"model": 1.5, "champion": 10.0, "baseline": 10.0})
    assert judged.metrics["model"]["share_within"] == pytest.approx(1.0)
    assert judged.metrics["baseline"]["share_within"] == pytest.approx(0.5)
    assert judged.metrics["model"]["within_minutes"] == 5.0
    assert judged.decision.promote
    assert judged.decision.label == "promoted"
    assert "vs baseline 10.00 min" in judged.decision.reason
    assert list(judged.predictions.columns) == evaluation.PREDICTION_COLUMNS
    np.testing.assert_array_equal(judged.predictions["predicted"], challenger)
    np.testing.assert_array_equal(judged.predictions["champion"], baseline)
    np.testing.assert_array_equal(judged.predictions["actual"], holdout[schema.TARGET])
    pd.testing.assert_frame_equal(holdout, before)


def test_evaluate_applies_the_margin_of_the_settings() -> None:
    holdout = _holdout([0.0, 10.0, 20.0, 30.0])
    baseline = np.full(4, 15.0)  # MAE 10
    challenger = [0.0, 10.0, 26.0, 36.0]  # MAE 3: 70 % better than the baseline

    loose = evaluation.evaluate(
        holdout, challenger, baseline, baseline, SETTINGS, day=DAY, champion_day=None
    )
    strict = evaluation.evaluate(
        holdout,
        challenger,
        baseline,
        baseline,
        ScoreSettings(within_minutes=5.0, promotion_margin=0.8),
        day=DAY,
        champion_day=None,
    )

    assert loose.decision.promote
    assert not strict.decision.promote
    assert "not better by the margin" in strict.decision.reason
    assert strict.metrics == loose.metrics


def test_evaluate_names_a_model_champion_and_keeps_a_challenger_worse_than_the_baseline() -> None:
    holdout = _holdout([0.0, 10.0, 20.0, 30.0])
    champion = [10.0, 20.0, 30.0, 40.0]  # MAE 10
    baseline = [0.0, 10.0, 20.0, 26.0]  # MAE 1
    challenger = [0.0, 10.0, 20.0, 22.0]  # MAE 2: beats the champion, not the baseline

    judged = evaluation.evaluate(
        holdout, challenger, champion, baseline, SETTINGS, day=DAY, champion_day=date(2013, 6, 2)
    )

    assert judged.mae == pytest.approx({"model": 2.0, "champion": 10.0, "baseline": 1.0})
    assert not judged.decision.promote
    assert "not better than the baseline" in judged.decision.reason
    assert "champion model of 2013-06-02" in judged.decision.reason


def test_evaluate_uses_the_given_champion_name_in_the_reason() -> None:
    holdout = _holdout([0.0, 10.0])
    judged = evaluation.evaluate(
        holdout,
        [0.0, 10.0],
        [5.0, 5.0],
        [5.0, 5.0],
        SETTINGS,
        day=DAY,
        champion_day=None,
        champion_name="baseline (champion retired)",
    )
    assert judged.decision.promote
    assert "vs baseline (champion retired) 5.00 min" in judged.decision.reason


def test_evaluate_rejects_misaligned_non_finite_and_incomplete_input() -> None:
    holdout = _holdout([0.0, 10.0, 20.0])
    three = [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="champion predictions have 2 values for 3 holdout"):
        evaluation.evaluate(holdout, three, [1.0, 2.0], three, SETTINGS, day=DAY, champion_day=None)
    with pytest.raises(ValueError, match="non-finite"):
        evaluation.evaluate(
            holdout, [1.0, np.nan, 3.0], three, three, SETTINGS, day=DAY, champion_day=None
        )
    with pytest.raises(ValueError, match=r"holdout is missing column.*arr_delay"):
        evaluation.evaluate(
            holdout.drop(columns=schema.TARGET),
            three,
            three,
            three,
            SETTINGS,
            day=DAY,
            champion_day=None,
        )


def test_score_predictions_metrics_and_frame(feature_frame_factory) -> None:
    holdout = feature_frame_factory(4, seed=7)
    holdout[schema.TARGET] = [0.0, 10.0, 20.0, 30.0]
    before = holdout.copy()
    model_pred = [5.0, 10.0, 40.0, 26.0]  # MAE 7.25
    baseline_pred = np.full(4, 15.0)  # MAE 10
    champion_pred = [0.0, 10.0, 20.0, 38.0]  # MAE 2

    metrics, predictions = evaluation.score_predictions(
        holdout,
        {"model": model_pred, "champion": champion_pred, "baseline": baseline_pred},
        5.0,
    )

    assert metrics["model"]["mae"] == pytest.approx(7.25)
    assert metrics["baseline"]["mae"] == pytest.approx(10.0)
    assert metrics["champion"]["mae"] == pytest.approx(2.0)
    assert metrics["model"]["share_within"] == pytest.approx(0.75)
    assert list(predictions.columns) == evaluation.PREDICTION_COLUMNS
    np.testing.assert_array_equal(predictions["actual"], holdout[schema.TARGET])
    np.testing.assert_array_equal(predictions["predicted"], model_pred)
    np.testing.assert_array_equal(predictions["baseline"], baseline_pred)
    np.testing.assert_array_equal(predictions["champion"], champion_pred)
    pd.testing.assert_frame_equal(holdout, before)


def test_score_predictions_rejects_misaligned_and_incomplete_input(feature_frame_factory) -> None:
    holdout = feature_frame_factory(5, seed=8)
    five = {"model": np.zeros(5), "champion": np.zeros(5), "baseline": np.zeros(5)}
    with pytest.raises(ValueError, match="model predictions have 4 values for 5 holdout rows"):
        evaluation.score_predictions(holdout, {**five, "model": np.zeros(4)}, 15.0)
    with pytest.raises(ValueError, match=r"holdout is missing column.*sched_dep_time"):
        evaluation.score_predictions(holdout.drop(columns="sched_dep_time"), five, 15)
    with pytest.raises(ValueError, match="predictions must be given for"):
        evaluation.score_predictions(holdout, {"model": np.zeros(5)}, 15)
