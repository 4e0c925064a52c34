"""Judge one holdout: the metrics of the three contenders and the promotion decision.

The judging core the score task (:func:`flight_delays.score.run`) and the backtest
(:func:`flight_delays.backtest.replay_run`) share, so a replayed run is judged exactly as a
nightly one. Pure: frames, arrays and settings in, an :class:`Evaluation` out; inputs are
never mutated. Every number comes from :func:`flight_delays.model.scoring.regression_metrics`,
the decision from :func:`flight_delays.model.promotion.decide`. Where the predictions come from
(loading models, the registry's champion, fitting the baseline) is the callers' business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from flight_delays.base import schema
from flight_delays.model import promotion, scoring
from flight_delays.store.config import ScoreSettings

IDENTIFIERS = [schema.DAY, "carrier", "flight", "origin", "dest", "sched_dep_time"]
# Who is scored, and the column of each in the ``predictions`` artifact.
CONTENDERS = {"model": "predicted", "champion": "champion", "baseline": "baseline"}
PREDICTION_COLUMNS = [*IDENTIFIERS, schema.SCHED_HOUR, "actual", *CONTENDERS.values()]

Predictions = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Evaluation:
    """What one holdout says about the contenders.

    ``metrics`` maps ``model`` (the challenger), ``champion`` and ``baseline`` to their
    :func:`~flight_delays.model.scoring.regression_metrics`; ``predictions`` is the frame
    the ``predictions`` artifact holds (:data:`PREDICTION_COLUMNS`); ``decision`` is the promotion
    decision on the challenger."""

    metrics: dict[str, dict[str, float]]
    predictions: pd.DataFrame
    decision: promotion.Decision

    @property
    def mae(self) -> dict[str, float]:
        """The holdout MAE (minutes) of each contender."""
        return {name: values["mae"] for name, values in self.metrics.items()}


def score_predictions(
    holdout: pd.DataFrame,
    predictions: Mapping[str, Predictions],
    within_minutes: float,
) -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Metrics of each contender against ``holdout[schema.TARGET]`` (minutes).

    ``holdout`` needs the identifier columns (local_date, carrier, flight, origin, dest,
    sched_dep_time), sched_hour and arr_delay. ``predictions`` maps each name of
    :data:`CONTENDERS` (model, champion, baseline) to values aligned with its rows.
    Returns ``({name: metrics}, frame)`` where the frame has the identifiers, sched_hour,
    ``actual`` and one column per contender (``predicted`` for the model).
    """
    needed = [*IDENTIFIERS, schema.SCHED_HOUR, schema.TARGET]
    missing = [col for col in needed if col not in holdout.columns]
    if missing:
        raise ValueError(f"holdout is missing column(s): {', '.join(missing)}")
    if set(predictions) != set(CONTENDERS):
        raise ValueError(
            f"predictions must be given for {sorted(CONTENDERS)}, got {sorted(predictions)}"
        )
    values = {name: np.asarray(predictions[name], dtype=float) for name in CONTENDERS}
    for name, pred in values.items():
        if len(pred) != len(holdout):
            raise ValueError(
                f"{name} predictions have {len(pred)} values for {len(holdout)} holdout rows"
            )
    actual = holdout[schema.TARGET].to_numpy(dtype=float)
    metrics = {
        name: scoring.regression_metrics(actual, pred, within_minutes)
        for name, pred in values.items()
    }
    frame = holdout[[*IDENTIFIERS, schema.SCHED_HOUR]].reset_index(drop=True)
    frame = frame.assign(actual=actual, **{CONTENDERS[name]: pred for name, pred in values.items()})
    return metrics, frame


def evaluate(
    holdout: pd.DataFrame,
    challenger: Predictions,
    champion: Predictions,
    baseline: Predictions,
    settings: ScoreSettings,
    *,
    day: date,
    champion_day: date | None,
    champion_name: str | None = None,
    baseline_since: date | None = None,
) -> Evaluation:
    """Score the challenger, the champion and the baseline on ``holdout`` and decide on
    promotion.

    ``challenger``, ``champion`` and ``baseline`` are predictions (minutes) aligned with
    the rows of ``holdout`` (see :func:`score_predictions` for its columns); while the
    baseline is champion, ``champion`` holds the baseline's predictions and
    ``champion_day`` is None. ``day`` is the challenger's processed day; ``champion_name``
    describes the champion in the decision's reason (default:
    :func:`flight_delays.model.promotion.champion_name` of ``champion_day``). ``settings``
    gives the ``within_minutes`` threshold of the metrics and the promotion margin.

    Raises ValueError on missing columns or misaligned predictions (and on non-finite
    values, from :func:`flight_delays.model.scoring.regression_metrics`).
    """
    metrics, frame = score_predictions(
        holdout,
        {"model": challenger, "champion": champion, "baseline": baseline},
        settings.within_minutes,
    )
    decision = promotion.decide(
        metrics["model"]["mae"],
        metrics["champion"]["mae"],
        day,
        champion_day,
        settings.promotion_margin,
        promotion.champion_name(champion_day) if champion_name is None else champion_name,
        baseline_mae=metrics["baseline"]["mae"],
        baseline_since=baseline_since,
    )
    return Evaluation(metrics, frame, decision)
