"""Score the challenger, the current champion and the naive baseline on the same holdout,
and promote the challenger when it beats the champion (flight_delays.model.promotion).

Pure cores: :func:`flight_delays.model.evaluation.evaluate` (the metrics of the three
contenders and the promotion decision, shared with the backtest) and
:func:`unseen_categories` (frames in, a dict out; inputs never mutated). The step
(:data:`STEP`, on the runner of :mod:`flight_delays.store.step_runner`, with its one
written-down exception: :func:`_transaction`) scores the model its run's train task
recorded (hash-checked), records the run and the decision in the model registry
(flight_delays.store.registry; one row per run) and writes the ``predictions`` artifact
and, from the recorded row, the ``metrics`` artifact and the day's copy of the model card.
Every number comes from :func:`flight_delays.model.scoring.regression_metrics`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from flight_delays.base import schema
from flight_delays.model import evaluation, fitted, promotion, scoring, serving
from flight_delays.monitor import drift
from flight_delays.store import artifacts, io, registry, step_runner, storage
from flight_delays.store.config import Settings
from flight_delays.store.storage import ArtifactPath

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # re-scores when a concurrent run changed the champion meanwhile
UNSEEN_VALUES_LISTED = 20  # the metrics artifact lists at most this many unseen values per column


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
        # The distinct values only: a Python set of every training row's string was most
        # of the score step's own time outside the model (0.15 s a night at 75k rows, timed).
        known = train_frame[col].dropna().astype(str).unique()
        values = holdout[col].dropna().astype(str)
        is_unseen = ~values.isin(known)
        unseen = sorted(values[is_unseen].unique())
        result[col] = {
            "values": len(unseen),
            "rows": int(is_unseen.sum()),
            "examples": unseen[:UNSEEN_VALUES_LISTED],
        }
    return result


def _champion_predictions(
    champion: registry.Champion,
    holdout: pd.DataFrame,
    baseline_pred: np.ndarray,
    root: ArtifactPath,
) -> tuple[np.ndarray, str, str]:
    """The champion's predictions on ``holdout``, its kind, and how to name it.

    A champion model that cannot score this holdout (the feature set changed since it
    was trained) is retired: the comparison falls back to the baseline, and says so.
    A champion file whose hash differs from the registry's raises UntrustedModelError.
    """
    if champion.kind == "baseline":
        return baseline_pred, "baseline", "baseline"
    name = promotion.champion_name(champion.processed_day)
    path = registry.model_file(champion.model_path, champion.model_sha256, root)
    model = fitted.load_model(path, expected_sha256=champion.model_sha256)
    predicted, retired = fitted.serving_predictions(model, holdout)
    if predicted is not None:
        return predicted, "model", name
    log.warning(
        "champion %s cannot score this holdout (%s): comparing with baseline", name, retired
    )
    return baseline_pred, "baseline", f"baseline (champion {name} retired: {retired})"


@contextmanager
def day_lock(engine: Engine, day: date, folder: ArtifactPath) -> Iterator[None]:
    """Hold the lock of processed ``day``: two runs of the same day score, record and
    publish (predictions, registry row, metrics artifact) one after the other, so the
    day's files always come from one run.

    With the registry on PostgreSQL (docker-compose, `make up`, Celery workers on any
    host): an advisory lock keyed by the day in the registry's database
    (:func:`flight_delays.store.registry.day_lock`), shared by every worker and host. With a
    SQLite registry (one machine by nature): a lock on the day's output ``folder``
    (:func:`flight_delays.store.storage.lock`; for an object store, a local file)."""
    if engine.dialect.name == "postgresql":
        with registry.day_lock(engine, day):
            yield
    else:
        with storage.lock(folder):
            yield


def _read_card(path: str | ArtifactPath, expected_sha256: str) -> bytes:
    """A challenger's model card, read once and checked against the registry's hash."""
    data = io.read_bytes(path, artifacts.RUN_MODEL_CARD)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise fitted.UntrustedModelError(
            f"model card {path} has SHA-256 {actual}, but the registry recorded "
            f"{expected_sha256} when it was trained: the card was changed after training"
        )
    return data


@dataclass(frozen=True)
class _Scored:
    """What one run brings to the judging, read and predicted once; only the champion's
    side is redone when the champion changes while the run is scored."""

    challenger: registry.Challenger
    train_frame: pd.DataFrame
    holdout: pd.DataFrame
    model_pred: np.ndarray
    baseline: scoring.OriginHourMedianBaseline
    baseline_pred: np.ndarray
    data_counts: dict[str, Any]
    unseen: dict[str, Any]
    served: dict[str, Any] | None
    drift: dict[str, Any]


def _score_inputs(engine: Engine, settings: Settings, day: date, run_id: str) -> _Scored:
    """The run's challenger (checked against the registry's hashes), the split tables,
    the challenger's and the baseline's predictions on the holdout, and the served score
    of the day."""
    challenger = registry.find_challenger(engine, day, run_id)
    if challenger is None:
        raise io.MissingArtifactError(
            artifacts.MODEL_DAY.path(settings.paths.root, day), artifacts.RUN_MODEL
        )
    if challenger.run_id != run_id:
        log.info(
            "score %s: run %s trained no model; scoring the one trained last for the day, "
            "by run %s",
            day,
            run_id,
            challenger.run_id,
        )
    # The expected hashes come from the registry, never from the model folder.
    _read_card(challenger.card_path, challenger.card_sha256)
    model = fitted.load_model(challenger.model_path, expected_sha256=challenger.model_sha256)
    root = settings.paths.root
    train_frame = io.read_parquet(artifacts.TRAIN_TABLE.path(root, day), artifacts.TRAIN_TABLE)
    holdout_path = artifacts.HOLDOUT_TABLE.path(root, day)
    holdout = io.read_parquet(holdout_path, artifacts.HOLDOUT_TABLE)
    counts_path = artifacts.FEATURE_COUNTS.path(root, day)
    data_counts = (
        io.read_json(counts_path, artifacts.FEATURE_COUNTS) if counts_path.is_file() else {}
    )
    if len(holdout) == 0:
        raise ValueError(f"holdout {holdout_path} is empty: nothing to score")
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
    return _Scored(
        challenger=challenger,
        train_frame=train_frame,
        holdout=holdout,
        model_pred=fitted.predict(model, holdout),
        baseline=baseline,
        baseline_pred=baseline.predict(holdout),
        data_counts=data_counts,
        unseen=unseen,
        served=_served_score(engine, day, holdout, run_id),
        drift=input_drift(train_frame, holdout, day, settings),
    )


def input_drift(
    train_frame: pd.DataFrame, holdout: pd.DataFrame, day: date, settings: Settings
) -> dict[str, Any]:
    """The PSI of each feature between the processed ``day``'s flights (its rows of the
    holdout) and the training window (``train_frame``), as the ``drift`` entry of the
    metrics (:func:`flight_delays.monitor.drift.summary`); logs the flagged features."""
    day_rows = holdout.loc[(pd.to_datetime(holdout[schema.DAY]).dt.date == day).to_numpy()]
    summary = drift.summary(drift.compute(train_frame, day_rows, settings.drift), settings.drift)
    top = summary["max"]
    if summary["skipped"]:
        log.warning("score %s: input drift not measured: %s", day, summary["skipped"])
    elif summary["flagged"]:
        log.warning(
            "score %s: input drift: %s at or above PSI %.2f (largest: %s %.2f)",
            day,
            ", ".join(summary["flagged"]),
            settings.drift.alert,
            top["feature"],
            top["psi"],
        )
    else:
        log.info(
            "score %s: input drift: no watched feature at or above PSI %.2f (largest: %s)",
            day,
            settings.drift.alert,
            "none" if top is None else f"{top['feature']} {top['psi']:.3f}",
        )
    return summary


def _payload(
    scored: _Scored,
    judged: evaluation.Evaluation,
    champion: registry.Champion,
    champion_kind: str,
    champion_name: str,
    settings: Settings,
    day: date,
    run_id: str,
) -> dict[str, Any]:
    """The ``metrics`` artifact's content, as the run's registry row records it."""
    days = scored.holdout[schema.DAY]
    model = champion_kind == "model"
    decision, challenger = judged.decision, scored.challenger
    return {
        "day": day.isoformat(),
        "run_id": run_id,
        "units": "minutes",
        "within_minutes": settings.score.within_minutes,
        "holdout_rows": len(scored.holdout),
        "holdout_start": pd.Timestamp(days.min()).date().isoformat(),
        "holdout_end": pd.Timestamp(days.max()).date().isoformat(),
        **judged.metrics,
        "champion_info": {
            "kind": champion_kind,
            "name": champion_name,
            "day": champion.processed_day.isoformat() if model else None,
            "run_id": champion.run_id if model else None,
            "model_sha256": champion.model_sha256 if model else None,
        },
        "decision": {
            "promoted": decision.promote,
            "stepped_down": decision.step_down,
            "label": decision.label,
            "reason": decision.reason,
            "margin": settings.score.promotion_margin,
        },
        "challenger": {
            "run_id": challenger.run_id,
            "model": challenger.model_path,
            "model_card": challenger.card_path,
            "model_card_sha256": challenger.card_sha256,
        },
        # What the data contract kept out of this run's window (featurize's counts).
        "data_quality": {
            key: scored.data_counts.get(key, 0) for key in ("quarantined_rows", "failed_contract")
        },
        "unseen_categories": scored.unseen,
        # What production served for the day that just ended (None: nothing served).
        "served": scored.served,
        # PSI of each feature, the processed day against the training window.
        "drift": scored.drift,
        "baseline_fallbacks": scored.baseline.fallbacks(scored.holdout),
        "model_sha256": challenger.model_sha256,
    }


def _score_and_record(engine: Engine, settings: Settings, day: date, run_id: str) -> dict[str, Any]:
    """Score the run's challenger, the champion and the baseline on the day's holdout,
    write the ``predictions`` artifact, and record the run (and the promotion or the
    step-down, if any) in one registry transaction. Returns the recorded row."""
    scored = _score_inputs(engine, settings, day, run_id)
    challenger, holdout = scored.challenger, scored.holdout
    predictions_path = artifacts.PREDICTIONS.path(settings.paths.root, day)
    for _attempt in range(MAX_ATTEMPTS):
        champion = registry.current_champion(engine)
        champion_pred, champion_kind, champion_name = _champion_predictions(
            champion, holdout, scored.baseline_pred, settings.paths.root
        )
        champion_day = champion.processed_day if champion_kind == "model" else None
        judged = evaluation.evaluate(
            holdout,
            scored.model_pred,
            champion_pred,
            scored.baseline_pred,
            settings.score,
            day=day,
            champion_day=champion_day,
            champion_name=champion_name,
            # The baseline champion's day: when a step-down made it champion again.
            baseline_since=champion.processed_day if champion.kind == "baseline" else None,
        )
        # Rule 5: when rules 1-4 leave the champion model in place, its served scores
        # (this day's included, recorded above) may step it down within the day.
        served = serving.served_verdict(engine, champion, day, settings.score)
        decision = promotion.with_served(
            judged.decision,
            served,
            challenger_mae=judged.mae["model"],
            baseline_mae=judged.mae["baseline"],
            margin=settings.score.promotion_margin,
        )
        judged = replace(judged, decision=decision)
        metrics, decision = judged.metrics, judged.decision
        stored = (
            registry.store_model(
                challenger.model_path, challenger.model_sha256, settings.paths.root
            )
            if decision.promote
            else challenger.model_path
        )
        # Written before the row is committed, so a retry after the commit finds them;
        # the payload records their hash, so it can tell whether they are still its own.
        io.write_parquet(judged.predictions, predictions_path)
        payload = _payload(
            scored, judged, champion, champion_kind, champion_name, settings, day, run_id
        )
        payload["predictions_sha256"] = io.sha256(predictions_path)
        row = {
            "processed_day": day,
            "run_id": run_id,
            "window_start": pd.Timestamp(scored.train_frame[schema.DAY].min()).date(),
            "window_end": date.fromisoformat(payload["holdout_end"]),
            "holdout_start": date.fromisoformat(payload["holdout_start"]),
            "holdout_end": date.fromisoformat(payload["holdout_end"]),
            "holdout_rows": len(holdout),
            "model_path": str(stored),
            "model_sha256": challenger.model_sha256,
            "challenger_mae": metrics["model"]["mae"],
            "champion_mae": metrics["champion"]["mae"],
            "baseline_mae": metrics["baseline"]["mae"],
            "champion_kind": champion_kind,
            "champion_day": champion_day,
            "metrics_json": json.dumps(metrics, sort_keys=True),
            "report_json": json.dumps(payload, sort_keys=True, default=str),
            "decision": decision.label,
            "reason": decision.reason,
        }
        recorded_pk = registry.record_run(
            engine, row, decision.promote, champion.version, step_down=decision.step_down
        )
        if recorded_pk is not None:
            recorded = registry.recorded_run(engine, day, run_id)
            if recorded is None:  # pragma: no cover - the row was committed just above
                raise registry.RegistryError(f"the row of run {run_id} for {day} vanished")
            return recorded
        log.info("score %s: the champion changed while scoring; scoring again", day)
    raise registry.RegistryError(
        f"the champion changed {MAX_ATTEMPTS} times while {day} was scored: gave up"
    )


def _served_score(
    engine: Engine, day: date, holdout: pd.DataFrame, run_id: str
) -> dict[str, Any] | None:
    """Join the predictions served for ``day`` (the prediction DAG's, in the warehouse)
    to the day's actual delays in the holdout, record the served MAE next to the
    baseline's on the same flights, and return it (None: nothing was served for it)."""
    actual = holdout.loc[pd.to_datetime(holdout[schema.DAY]).dt.date == day]
    score = serving.served_score(serving.predictions_of(engine, day), actual)
    if score is None:
        log.info("score %s: no predictions were served for the day", day)
        return None
    serving.record_served_score(engine, score, run_id)
    log.info(
        "score %s: served MAE %.2f min on %d flights (baseline %.2f min), champion %s",
        day,
        score["served_mae"],
        score["flights"],
        score["baseline_mae"],
        score["champion_day"] or score["champion_kind"],
    )
    return {**score, "flight_day": day.isoformat(), "champion_day": _iso(score["champion_day"])}


def _iso(value: Any) -> str | None:
    return None if value is None else pd.Timestamp(value).date().isoformat()


def _publish(settings: Settings, row: dict[str, Any]) -> dict[str, Any] | None:
    """Write the metrics artifact, and the day's copy of the model card, from the recorded
    ``row``; returns the payload written, or None when the day's ``predictions`` artifact is
    no longer this run's (a later run of the day published its own results: they stay)."""
    if row["report_json"] is None:
        log.warning(
            "score %s: run %s was recorded before the registry kept reports (revision "
            "0002): the metrics artifact is not rewritten",
            row["processed_day"],
            row["run_id"],
        )
        return None
    payload = json.loads(row["report_json"])
    payload["decision"]["registry_id"] = row["id"]
    day = row["processed_day"]
    predictions = artifacts.PREDICTIONS.path(settings.paths.root, day)
    if not predictions.is_file() or io.sha256(predictions) != payload["predictions_sha256"]:
        log.info("score %s: a later run of the day published its results; keeping them", day)
        return None
    info = payload["challenger"]
    card = _read_card(info["model_card"], info["model_card_sha256"])
    io.write_bytes(card, artifacts.DAY_MODEL_CARD.path(settings.paths.root, day))
    io.write_json(payload, artifacts.METRICS.path(settings.paths.root, day))
    return payload


def _transaction(run: step_runner.StepRun, _inputs: dict[str, Any]) -> dict[str, Any]:
    """Score's exception to the runner (docs/architecture.md): reading the champion,
    deciding and recording happen in one registry transaction, retried when a concurrent
    run changed the champion meanwhile, and the ``predictions`` artifact is written before
    the row is committed (so a retried task finds them); the ``metrics`` artifact and the
    day's model card are written from the recorded row. So this hook does the step's I/O
    itself, under the day's lock, and the core only reads the recorded row.

    Exactly one registry row per run: when the run already has its row (a retry after the
    commit), nothing is scored or recorded again, and the outputs are written from that
    row."""
    engine = run.registry()
    with day_lock(engine, run.day, artifacts.OUTPUT.path(run.root, run.day)):
        row = registry.recorded_run(engine, run.day, run.run_id)
        retried = row is not None
        if row is None:
            row = _score_and_record(engine, run.settings, run.day, run.run_id)
        drift_entry = _record_drift(engine, row)
        _publish(run.settings, row)
    return {"row": row, "retried": retried, "drift_entry": drift_entry}


def score_core(
    day: date,
    _params: None,
    row: dict[str, Any],
    retried: bool,
    drift_entry: dict[str, Any] | None,
) -> step_runner.Result:
    """The step's summary, from the run's recorded registry row (MAE in minutes)."""
    metrics = json.loads(row["metrics_json"])
    done = (
        f"registry row {row['id']} (already recorded: nothing rewritten)"
        if retried
        else f"{row['holdout_rows']} predictions and registry row {row['id']}"
    )
    return step_runner.Result(
        outputs={},
        summary={
            "model_mae": metrics["model"]["mae"],
            "champion_mae": metrics["champion"]["mae"],
            "baseline_mae": metrics["baseline"]["mae"],
            "decision": row["decision"],
            "model_sha256": row["model_sha256"],
            "run_id": row["run_id"],
            # Flagged features and the largest PSI, for an alert (None: a row from before
            # drift was measured).
            "drift": drift.brief(drift_entry),
        },
        line=f"{row['holdout_rows']} holdout rows in -> {done}; holdout MAE challenger "
        f"{row['challenger_mae']:.2f}, champion ({promotion.champion_name(row['champion_day'])})"
        f" {row['champion_mae']:.2f}, baseline {row['baseline_mae']:.2f} min: {row['decision']}"
        f" ({row['reason']})",
    )


def _written(
    run: step_runner.StepRun, _written: dict[str, Any], _result: step_runner.Result
) -> dict[str, Any]:
    """Where the transaction wrote the day's metrics and predictions (the XCom's)."""
    return {
        "metrics": str(artifacts.METRICS.path(run.root, run.day)),
        "predictions": str(artifacts.PREDICTIONS.path(run.root, run.day)),
    }


#: Scores run ``run_id``'s challenger (the model its train task recorded in the registry;
#: for a run that trained none, the one trained last for the day), the registry's
#: champion and the baseline (fitted on the ``train_table``) on the ``holdout_table``
#: artifact; records the run and promotes the challenger if it wins (one registry
#: transaction: :func:`_transaction`); writes the ``predictions`` artifact and, from the
#: recorded row, the ``metrics`` artifact and the day's model card. ``run_id`` defaults to
#: a new local one; ``registry_url`` to the settings' registry (the warehouse). The XCom
#: dict: ``{"metrics", "predictions", "model_mae", "baseline_mae", "champion_mae",
#: "decision", "model_sha256", "run_id", "drift"}``.
STEP = step_runner.Step(
    name="score", core=score_core, load=_transaction, record=_written, run_id=True
)
run = STEP.run


def _record_drift(engine: Engine, row: dict[str, Any]) -> dict[str, Any] | None:
    """Write the run's drift rows (registry table ``drift_scores``) from its recorded
    metrics, replacing any it had (a retried task); returns the ``drift`` entry, or None
    for a row recorded before drift was measured."""
    entry = json.loads(row["report_json"]).get("drift") if row["report_json"] else None
    if entry is not None:
        registry.record_drift(engine, row["processed_day"], row["run_id"], drift.scores_of(entry))
    return entry
