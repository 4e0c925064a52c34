"""Score the challenger, the current champion and the naive baseline on the same holdout,
and promote the challenger when it beats the champion (flight_delays.promotion).

Pure core: :func:`score_predictions` and :func:`unseen_categories` (frames and arrays in,
dicts and a frame out; inputs never mutated). File wrapper: :func:`run` records the run
and the decision in the model registry (flight_delays.registry) and writes
``data/output/ds=<day>/metrics.json`` and ``predictions.parquet``.
Every number comes from :func:`flight_delays.scoring.regression_metrics`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flight_delays import io, promotion, registry, schema, scoring, train
from flight_delays.config import load_settings
from flight_delays.dates import parse_day

log = logging.getLogger(__name__)

IDENTIFIERS = [schema.DAY, "carrier", "flight", "origin", "dest", "sched_dep_time"]
# Who is scored, and the predictions.parquet column of each.
CONTENDERS = {"model": "predicted", "champion": "champion", "baseline": "baseline"}
PREDICTION_COLUMNS = [*IDENTIFIERS, schema.SCHED_HOUR, "actual", *CONTENDERS.values()]
MAX_ATTEMPTS = 5  # re-scores when a concurrent run changed the champion meanwhile
UNSEEN_VALUES_LISTED = 20  # metrics.json lists at most this many unseen values per column


def score_predictions(
    holdout: pd.DataFrame,
    predictions: Mapping[str, Sequence[float] | np.ndarray],
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


def _champion_predictions(
    champion: registry.Champion, holdout: pd.DataFrame, baseline_pred: np.ndarray
) -> tuple[np.ndarray, str, str]:
    """The champion's predictions on ``holdout``, its kind, and how to name it.

    A champion model that cannot score this holdout (the feature set changed since it
    was trained) is retired: the comparison falls back to the baseline, and says so.
    A champion file whose hash differs from the registry's raises UntrustedModelError.
    """
    if champion.kind == "baseline":
        return baseline_pred, "baseline", "baseline"
    name = promotion.champion_name(champion.processed_day)
    model = train.load_model(champion.model_path, expected_sha256=champion.model_sha256)
    try:
        return train.predict(model, holdout), "model", name
    except ValueError as exc:
        log.warning(
            "champion %s cannot score this holdout (%s): comparing with baseline", name, exc
        )
        return baseline_pred, "baseline", f"baseline (champion {name} retired: {exc})"


def run(
    day: str | date,
    root: str | Path | None = None,
    params_file: str | Path | None = None,
    registry_url: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Score ``models/ds=<day>/model.skops`` (the challenger), the registry's champion and
    the baseline (fitted on train.parquet) on ``processed/ds=<day>/holdout.parquet``;
    record the run and promote the challenger if it wins (one registry transaction);
    write ``data/output/ds=<day>/metrics.json`` and ``predictions.parquet``.

    ``registry_url`` defaults to the settings' registry (the warehouse). Returns
    ``{"metrics", "predictions", "model_mae", "baseline_mae", "champion_mae", "decision"}``
    (MAE in minutes).
    """
    started = time.perf_counter()
    day = parse_day(day)
    settings = load_settings(root, params_file)
    model_dir = settings.paths.model_dir(day)
    card = io.read_json(model_dir / train.MODEL_CARD_FILE, task="train")
    model_path = model_dir / train.MODEL_FILE
    model_sha = card["model"]["sha256"]
    model = train.load_model(model_path, expected_sha256=model_sha)
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
    baseline_pred = baseline.predict(holdout)
    model_pred = train.predict(model, holdout)
    within = settings.score.within_minutes
    days = holdout[schema.DAY]
    holdout_start = pd.Timestamp(days.min()).date()
    holdout_end = pd.Timestamp(days.max()).date()

    engine = registry.connect(registry_url or settings.registry_url)
    try:
        for _attempt in range(MAX_ATTEMPTS):
            champion = registry.current_champion(engine)
            champion_pred, champion_kind, champion_name = _champion_predictions(
                champion, holdout, baseline_pred
            )
            metrics, predictions = score_predictions(
                holdout,
                {"model": model_pred, "champion": champion_pred, "baseline": baseline_pred},
                within,
            )
            decision = promotion.decide(
                metrics["model"]["mae"],
                metrics["champion"]["mae"],
                day,
                champion.processed_day if champion_kind == "model" else None,
                settings.score.promotion_margin,
                champion_name,
                baseline_mae=metrics["baseline"]["mae"],
            )
            stored = (
                registry.store_model(model_path, model_sha, settings.paths.model_store)
                if decision.promote
                else model_path
            )
            row = {
                "processed_day": day,
                "run_id": run_id,
                "window_start": pd.Timestamp(train_frame[schema.DAY].min()).date(),
                "window_end": holdout_end,
                "holdout_start": holdout_start,
                "holdout_end": holdout_end,
                "holdout_rows": len(holdout),
                "model_path": str(stored),
                "model_sha256": model_sha,
                "challenger_mae": metrics["model"]["mae"],
                "champion_mae": metrics["champion"]["mae"],
                "baseline_mae": metrics["baseline"]["mae"],
                "champion_kind": champion_kind,
                "champion_day": champion.processed_day if champion_kind == "model" else None,
                "metrics_json": json.dumps(metrics, sort_keys=True),
                "decision": decision.label,
                "reason": decision.reason,
            }
            registry_id = registry.record_run(engine, row, decision.promote, champion.version)
            if registry_id is not None:
                break
            log.info("score %s: the champion changed while scoring; scoring again", day)
        else:
            raise registry.RegistryError(
                f"the champion changed {MAX_ATTEMPTS} times while {day} was scored: gave up"
            )
    finally:
        engine.dispose()

    payload = {
        "day": day.isoformat(),
        "units": "minutes",
        "within_minutes": within,
        "holdout_rows": len(holdout),
        "holdout_start": holdout_start.isoformat(),
        "holdout_end": holdout_end.isoformat(),
        **metrics,
        "champion_info": {
            "kind": champion_kind,
            "name": champion_name,
            "day": row["champion_day"].isoformat() if row["champion_day"] else None,
            "model_sha256": champion.model_sha256 if champion_kind == "model" else None,
        },
        "decision": {
            "promoted": decision.promote,
            "reason": decision.reason,
            "margin": settings.score.promotion_margin,
            "registry_id": registry_id,
        },
        "unseen_categories": unseen,
        "baseline_fallbacks": baseline.fallbacks(holdout),
        "model_sha256": model_sha,
    }
    out_dir = settings.paths.output(day)
    predictions_path = io.write_parquet(predictions, out_dir / "predictions.parquet")
    metrics_path = io.write_json(payload, out_dir / "metrics.json")
    # The step's one summary line: rows in and out, seconds, and the holdout MAEs.
    log.info(
        "score %s: %d holdout rows in -> %d predictions out; holdout MAE challenger %.2f, "
        "%s %.2f, baseline %.2f min: %s; in %.1f s -> %s",
        day,
        len(holdout),
        len(predictions),
        metrics["model"]["mae"],
        champion_name,
        metrics["champion"]["mae"],
        metrics["baseline"]["mae"],
        decision.label,
        time.perf_counter() - started,
        metrics_path,
    )
    return {
        "metrics": str(metrics_path),
        "predictions": str(predictions_path),
        "model_mae": metrics["model"]["mae"],
        "champion_mae": metrics["champion"]["mae"],
        "baseline_mae": metrics["baseline"]["mae"],
        "decision": decision.label,
    }
