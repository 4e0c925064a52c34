"""Score the trained model and the naive baseline on the same holdout.

Pure core: :func:`score_predictions` and :func:`unseen_categories` (frames and arrays in,
dicts and a frame out; inputs never mutated). File wrapper: :func:`run` writes
``data/output/ds=<day>/metrics.json`` and ``predictions.parquet``.
Every number comes from :func:`flight_delays.scoring.regression_metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flight_delays import io, schema, scoring, train
from flight_delays.config import load_settings
from flight_delays.dates import parse_day

log = logging.getLogger(__name__)

IDENTIFIERS = [schema.DAY, "carrier", "flight", "origin", "dest", "sched_dep_time"]
PREDICTION_COLUMNS = [*IDENTIFIERS, schema.SCHED_HOUR, "actual", "predicted", "baseline"]
UNSEEN_VALUES_LISTED = 20  # metrics.json lists at most this many unseen values per column


def score_predictions(
    holdout: pd.DataFrame,
    model_pred: Sequence[float] | np.ndarray,
    baseline_pred: Sequence[float] | np.ndarray,
    within_minutes: float,
) -> tuple[dict[str, dict[str, float]], pd.DataFrame]:
    """Metrics of the model and the baseline against ``holdout[schema.TARGET]`` (minutes).

    ``holdout`` needs the identifier columns (local_date, carrier, flight, origin, dest,
    sched_dep_time), sched_hour and arr_delay; the predictions are aligned with its rows.
    Returns ``({"model": metrics, "baseline": metrics}, predictions)`` where predictions
    has the identifiers, sched_hour, ``actual``, ``predicted`` (model) and ``baseline``.
    """
    needed = [*IDENTIFIERS, schema.SCHED_HOUR, schema.TARGET]
    missing = [col for col in needed if col not in holdout.columns]
    if missing:
        raise ValueError(f"holdout is missing column(s): {', '.join(missing)}")
    model_pred = np.asarray(model_pred, dtype=float)
    baseline_pred = np.asarray(baseline_pred, dtype=float)
    for name, pred in (("model", model_pred), ("baseline", baseline_pred)):
        if len(pred) != len(holdout):
            raise ValueError(
                f"{name} predictions have {len(pred)} values for {len(holdout)} holdout rows"
            )
    actual = holdout[schema.TARGET].to_numpy(dtype=float)
    metrics = {
        "model": scoring.regression_metrics(actual, model_pred, within_minutes),
        "baseline": scoring.regression_metrics(actual, baseline_pred, within_minutes),
    }
    predictions = holdout[[*IDENTIFIERS, schema.SCHED_HOUR]].reset_index(drop=True)
    predictions = predictions.assign(actual=actual, predicted=model_pred, baseline=baseline_pred)
    return metrics, predictions


def unseen_categories(
    train_frame: pd.DataFrame,
    holdout: pd.DataFrame,
    columns: Sequence[str] = tuple(schema.CATEGORICAL_FEATURES),
) -> dict[str, dict[str, Any]]:
    """Per categorical column, the holdout values never seen in training.

    Returns ``{column: {"values": n distinct unseen values, "rows": n holdout rows with
    one, "examples": up to 20 of them, sorted}}``. Missing values are not counted: the
    model treats them as missing whether seen or not.
    """
    result: dict[str, dict[str, Any]] = {}
    for col in columns:
        known = set(train_frame[col].dropna().astype(str))
        values = holdout[col].dropna().astype(str)
        is_unseen = ~values.isin(known)
        unseen = sorted(set(values[is_unseen]))
        result[col] = {
            "values": len(unseen),
            "rows": int(is_unseen.sum()),
            "examples": unseen[:UNSEEN_VALUES_LISTED],
        }
    return result


def run(
    day: str | date, root: str | Path | None = None, params_file: str | Path | None = None
) -> dict[str, Any]:
    """Score ``models/ds=<day>/model.skops`` and the baseline (fitted on train.parquet) on
    ``processed/ds=<day>/holdout.parquet``; write ``data/output/ds=<day>/metrics.json`` and
    ``predictions.parquet``. Returns ``{"metrics": str, "predictions": str,
    "model_mae": float, "baseline_mae": float}`` (MAE in minutes)."""
    day = parse_day(day)
    settings = load_settings(root, params_file)
    model_dir = settings.paths.model_dir(day)
    card = io.read_json(model_dir / train.MODEL_CARD_FILE, task="train")
    model = train.load_model(model_dir / train.MODEL_FILE, expected_sha256=card["model"]["sha256"])
    processed = settings.paths.processed(day)
    train_frame = io.read_parquet(processed / "train.parquet", task="split")
    holdout = io.read_parquet(processed / "holdout.parquet", task="split")
    if len(holdout) == 0:
        raise ValueError(f"holdout {processed / 'holdout.parquet'} is empty: nothing to score")

    unseen = unseen_categories(train_frame, holdout)
    for col, info in unseen.items():
        if info["values"]:
            log.warning(
                "score %s: %d %s value(s) unseen in training on %d holdout rows, e.g. %s",
                day,
                info["values"],
                col,
                info["rows"],
                ", ".join(info["examples"][:5]),
            )
    baseline = scoring.OriginHourMedianBaseline().fit(train_frame)
    within = settings.score.within_minutes
    metrics, predictions = score_predictions(
        holdout, train.predict(model, holdout), baseline.predict(holdout), within
    )
    days = holdout[schema.DAY]
    payload = {
        "day": day.isoformat(),
        "units": "minutes",
        "within_minutes": within,
        "holdout_rows": len(holdout),
        "holdout_start": pd.Timestamp(days.min()).date().isoformat(),
        "holdout_end": pd.Timestamp(days.max()).date().isoformat(),
        "model": metrics["model"],
        "baseline": metrics["baseline"],
        "unseen_categories": unseen,
        "baseline_fallbacks": baseline.fallbacks(holdout),
        "model_sha256": card["model"]["sha256"],
    }
    out_dir = settings.paths.output(day)
    predictions_path = io.write_parquet(predictions, out_dir / "predictions.parquet")
    metrics_path = io.write_json(payload, out_dir / "metrics.json")
    model_mae, baseline_mae = metrics["model"]["mae"], metrics["baseline"]["mae"]
    log.info(
        "score %s: %d holdout rows, MAE model %.2f min vs baseline %.2f min -> %s",
        day,
        len(holdout),
        model_mae,
        baseline_mae,
        metrics_path,
    )
    return {
        "metrics": str(metrics_path),
        "predictions": str(predictions_path),
        "model_mae": model_mae,
        "baseline_mae": baseline_mae,
    }
