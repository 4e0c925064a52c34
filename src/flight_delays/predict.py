"""Serve the champion: the predicted arrival delay of every flight scheduled for a day.

The prediction DAG (``dags/flight_delays_predict.py``) runs this every morning at 05:00
New York time for that day, and again whenever the champion changes. It scores *all*
scheduled flights, cancelled ones included (nobody knows yet which will be), with the
registry's current champion: the model, or the naive baseline while the baseline is
champion. A model serves only the days after the one it was trained for
(:func:`too_new`): that day or an earlier one (a backfill of predictions) gets the
baseline. The baseline's prediction is kept beside it, so the nightly run can compare
both with what happened (:mod:`flight_delays.model.serving`).

Features are the training features, built by the same functions:

- the schedule and the weather of the day come from the warehouse. The model was
  trained on the observed weather of each flight's hour as if it were a perfect
  forecast (its model card says so); here the weather the warehouse holds for the day
  when the predictions are made stands in for the forecast: in the demo that is the
  whole day. In production the hours not yet observed are absent: a flight's own hour
  then reads as missing (which the booster routes as missing), but the sums and extremes
  around the hour and over the day cover the reported hours only, so they understate the
  day (docs/reliability.md, "Known gaps");
- the past-day delay statistics come from the ``ingest.window_days`` days before the
  day (their raw partitions, fetched like the nightly ingest fetches them when one is
  missing): the day's flights see the day before as a holdout's first day does. When the
  last days before it are late (not, or only partly, in the warehouse: the night's
  ``late_data`` alert), the statistics end before the first of them, and the day is
  served as day N of a holdout that starts there, as the model was trained to (N up to
  ``split.holdout_days``; beyond, the run fails naming the late day);
- no actual outcome of the day is read: the schedule's arrival delays are dropped
  before anything else.

Pure core: :func:`schedule_features` and :func:`predict_day`. The step (:data:`STEP`, on
the runner of :mod:`flight_delays.store.step_runner`) writes the ``served_predictions``
artifact and replaces the day's rows of the warehouse table ``predictions``, both
idempotent per day.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from flight_delays.base import dates, schema
from flight_delays.base.errors import PipelineDataError
from flight_delays.intake import contracts, raw_partitions, source
from flight_delays.model import fitted, flight_features, history, scoring, serving
from flight_delays.store import artifacts, db, registry, step_runner
from flight_delays.store.config import SplitSettings

log = logging.getLogger(__name__)


class NoScheduleError(PipelineDataError):
    """The warehouse holds no flight scheduled for the day to predict (or none that
    passes the data contract)."""


class ChampionFileMissingError(PipelineDataError):
    """The registry's champion model has no file in the model store: a retry cannot
    bring it back, nor can retraining (the file is the one the registry promoted)."""


# --- pure core --------------------------------------------------------------------------
def schedule_features(schedule: pd.DataFrame, weather: pd.DataFrame) -> pd.DataFrame:
    """The base features (:func:`flight_delays.model.flight_features.build_features`) of every
    scheduled flight in ``schedule``, without a target column.

    build_features keeps the flights that have an arrival delay (the training rows); a
    schedule has none yet, so each flight gets a placeholder of 0 that is dropped at
    once: the schedule's own ``arr_delay`` is never read. ``weather``: the day's hourly
    weather (may be empty)."""
    unknown = schedule.assign(**{schema.TARGET: 0.0})
    table, _counts = flight_features.build_features(unknown, weather)
    return table.drop(columns=[schema.TARGET])


def predict_day(
    day: date,
    past: pd.DataFrame,
    scheduled: pd.DataFrame,
    split_settings: SplitSettings,
    model: Any | None,
    history_end: date | None = None,
) -> tuple[pd.DataFrame, str | None]:
    """Predict the arrival delay (minutes) of the ``scheduled`` flights of ``day``.

    ``past``: featurize's table of the days before ``history_end`` (with arrival delays);
    ``scheduled``: :func:`schedule_features` of the day. The past-day statistics are
    added as for a holdout starting on ``history_end`` (default ``day``; an earlier day
    when the last days are late, so the day's flights are day N of that holdout, with
    ``history_lag_days`` N). ``model``: the champion model, or None
    while the baseline is champion. Returns the flight identity (``flight_day``,
    carrier, flight, origin, dest, sched_dep_time), ``predicted_arr_delay`` (the
    champion's) and ``baseline_arr_delay`` (the baseline fitted on ``past``), one row
    per scheduled flight; and None, or why the champion model could not serve. A
    champion model that cannot score the day (its features are no longer the pipeline's:
    one was removed or renamed since it was trained) is retired for the day, as the
    nightly score retires it: the baseline serves, and the reason says so. Inputs are
    not modified."""
    if scheduled.empty:
        raise ValueError(f"no scheduled flights to predict for {day}")
    days = pd.to_datetime(scheduled[schema.DAY]).dt.date.unique()
    if list(days) != [day]:
        raise ValueError(f"scheduled flights of {day} expected, got days {sorted(days)}")
    cutoff = day if history_end is None else history_end
    if cutoff > day:
        raise ValueError(f"history_end {cutoff} is after the day to predict {day}")
    statistics = history.history_statistics(split_settings.recent_days, split_settings.history_days)
    _past, frame = history.add_history_features(
        past,
        scheduled,
        cutoff=cutoff,
        block_days=split_settings.holdout_days,
        statistics=statistics,
    )
    baseline = scoring.OriginHourMedianBaseline().fit(past).predict(frame)
    served, retired = baseline, None
    if model is not None:
        predicted, retired = fitted.serving_predictions(model, frame)
        served = baseline if predicted is None else predicted
    identity = frame[[schema.DAY, "carrier", "flight", "origin", "dest", "sched_dep_time"]]
    table = identity.rename(columns={schema.DAY: "flight_day"}).assign(
        flight_day=lambda f: pd.to_datetime(f["flight_day"]).dt.date,
        predicted_arr_delay=np.asarray(served, dtype=float),
        baseline_arr_delay=np.asarray(baseline, dtype=float),
    )
    return table, retired


# --- the step ---------------------------------------------------------------------------
def _read_schedule(url: str, day: date, min_share: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The day's flights and weather from the warehouse, through the data contract (rows
    that break it are not predicted; their number is returned). A schedule that looks
    partly loaded (fewer flights than ``min_share`` of the same weekday's usual count, as
    ingest judges a day) raises IncompleteDayError, which Airflow retries: part of a day
    is not served as if it were all of it. The weather is not judged: at 05:00 a real
    feed holds the night's hours only."""
    engine = db.open_engine(url)
    try:
        tables = source.reflect_source(engine)
        flights_raw, weather_raw = source.read_day(engine, day, tables)
        usual = (
            None
            if flights_raw.empty
            else source.usual_flights(
                source.flight_counts(engine, source.usual_days(day), tables), day
            )
        )
    finally:
        engine.dispose()
    if flights_raw.empty:
        raise NoScheduleError(
            f"no flights scheduled for {day.isoformat()} in the warehouse "
            f"{db.safe_url(url)}: nothing to predict"
        )
    if short := contracts.fewer_flights_than_usual(day, len(flights_raw), usual, min_share):
        raise contracts.IncompleteDayError(
            f"{short}: the schedule looks partly loaded in {db.safe_url(url)}, so no "
            "prediction was made; the task is retried, and a later run serves the whole day"
        )
    flights = contracts.check_flights(flights_raw, day, source.FLIGHT_DTYPES)
    weather = contracts.check_weather(weather_raw, day, source.WEATHER_DTYPES)
    if flights.good.empty:
        raise NoScheduleError(
            f"all {len(flights.quarantine)} flights scheduled for {day.isoformat()} in the "
            f"warehouse {db.safe_url(url)} break the data contract "
            f"({contracts.checks_by_rows(flights.counts)}): nothing to predict"
        )
    return flights.good, weather.good, len(flights.quarantine)


def _champion_model(run: step_runner.StepRun, champion: registry.Champion) -> Any | None:
    """The champion's model, None while the baseline is champion. Its file missing from
    the model store (and from where the registry recorded it) is a data error that says
    how to recover: a retry would fail the same way."""
    if champion.kind == "baseline":
        return None
    path = registry.model_file(champion.model_path, champion.model_sha256, run.root)
    try:
        return fitted.load_model(path, expected_sha256=champion.model_sha256)
    except FileNotFoundError as exc:
        raise ChampionFileMissingError(
            f"the champion (model of {champion.processed_day}, version {champion.version}, "
            f"SHA-256 {champion.model_sha256}) has no file: not in the model store, nor at "
            f"{champion.model_path} where it was recorded. Restore the model store from a "
            "backup (docs/guide-backups.md), or roll back to a champion whose file is there "
            "(`python -m flight_delays.store.registry rollback --reason ...`); retraining "
            "makes a new model, not this file"
        ) from exc


def _past_days(run: step_runner.StepRun) -> tuple[list[date], date]:
    """The days the past-day statistics read (their raw partitions frozen, fetched when
    missing), and the first day they may not read: the day itself, or the first of the
    last days before it that are late, when it is at most ``split.holdout_days`` days
    back (a training row of the model saw statistics that old). Raises the late day's
    error (NoFlightsError, IncompleteDayError) otherwise."""
    settings, day = run.settings, run.day
    past_days = dates.window(day - timedelta(days=1), settings.ingest.window_days)
    try:
        raw_partitions.ensure_partitions(settings, past_days, run.source_url)
        return past_days, day
    except (raw_partitions.NoFlightsError, contracts.IncompleteDayError) as exc:
        late = getattr(exc, "day", None)
        if late not in past_days:
            raise
        holdout_day = (day - late).days + 1  # the day's place in a holdout from ``late``
        if holdout_day > settings.split.holdout_days:
            raise
        log.warning(
            "predict %s: %s is late in the warehouse (%s): the past-day statistics end on "
            "%s, and the day is served as day %d of a holdout that starts on %s",
            day,
            late,
            exc,
            late - timedelta(days=1),
            holdout_day,
            late,
        )
        return past_days[: past_days.index(late)], late


def _served_inputs(run: step_runner.StepRun, _inputs: dict[str, Any]) -> dict[str, Any]:
    """The past window's features (as the nightly featurize makes them: from the day
    partitions, fetched when missing, past rows that break the data contract left out),
    the day's schedule and weather from the warehouse, and the registry's champion."""
    past_days, history_end = _past_days(run)
    past_table, _counts, _reused = flight_features.window_features(run.root, past_days, {})
    flights, weather, left_out = _read_schedule(
        run.source_url, run.day, run.settings.ingest.min_day_share
    )
    champion = registry.current_champion(run.registry())
    return {
        "past": past_table.to_pandas(),
        "scheduled": schedule_features(flights, weather),
        "left_out": left_out,
        "champion": champion,
        "model": None if too_new(champion, run.day) else _champion_model(run, champion),
        "run_id": run.run_id,
        "history_end": history_end,
    }


def too_new(champion: registry.Champion, day: date) -> str | None:
    """Why the champion model may not serve ``day``, or None: a model serves only the days
    after the one it was trained for. On the morning of a day, the newest model is the one
    of the day before; an older day (a backfill of predictions, a manual ``day``) served by
    a later model would be predicted with a model that may have seen its flights, and that
    score would then be counted as served."""
    if champion.kind != "model" or champion.processed_day is None:
        return None
    if champion.processed_day < day:
        return None
    return (
        f"trained for {champion.processed_day}, not before {day}: a model serves only the "
        "days after its own, which it cannot have seen"
    )


def predict_core(
    day: date,
    params: SplitSettings,
    past: pd.DataFrame,
    scheduled: pd.DataFrame,
    left_out: int,
    champion: registry.Champion,
    model: Any | None,
    run_id: str,
    history_end: date,
) -> step_runner.Result:
    """The step's core: :func:`predict_day`, each row marked with what served it (the
    champion model, or the baseline: the baseline champion, or a champion model retired
    for the day, or one too new for it: :func:`too_new`) and the run."""
    newer = too_new(champion, day)
    if newer is not None:
        model = None
    frame, retired = predict_day(day, past, scheduled, params, model, history_end)
    by_model = model is not None and retired is None
    frame = frame.assign(
        champion_kind="model" if by_model else "baseline",
        champion_day=champion.processed_day if by_model else None,
        champion_version=champion.version,
        model_sha256=champion.model_sha256 if by_model else None,
        run_id=run_id,
    )[serving.PREDICTION_COLUMNS]
    name = "baseline" if champion.kind == "baseline" else f"model of {champion.processed_day}"
    if newer is not None:
        log.warning("predict %s: the champion %s is not used (%s): the baseline serves",
                    day, name, newer)  # fmt: skip
        name = f"baseline (champion {name} not used: {newer})"
    elif retired is not None:
        log.warning(
            "predict %s: the champion %s cannot score the day (%s): the baseline serves",
            day,
            name,
            retired,
        )
        name = f"baseline (champion {name} retired: {retired})"
    return step_runner.Result(
        outputs={"predictions": frame},
        summary={
            "rows": len(frame),
            "champion": name,
            "champion_version": champion.version,
            "model_sha256": champion.model_sha256 if by_model else None,
            "left_out": left_out,
            "history_end": history_end.isoformat(),
        },
        line=f"{len(frame)} scheduled flights, champion {name} (version {champion.version}), "
        f"{left_out} rows left out by the data contract"
        + ("" if history_end == day else f"; past-day statistics end before {history_end}"),
    )


def _replace_rows(
    run: step_runner.StepRun, _written: dict[str, Any], result: step_runner.Result
) -> dict[str, Any]:
    """Replace the day's rows of the warehouse table ``predictions`` (idempotent)."""
    frame = result.outputs["predictions"]
    return {"rows": serving.replace_predictions(run.registry(), run.day, frame)}


#: Predicts every flight scheduled for ``day`` with the registry's champion; writes the
#: ``served_predictions`` artifact and replaces the day's rows of the warehouse table
#: ``predictions``. The XCom dict: ``{"predictions": location, "rows": n, "champion":
#: "baseline", "model of <day>", or "baseline (champion model of <day> not used: <why>)"
#: / "... retired: <why>)" when the baseline serves in its place, "champion_version": v,
#: "model_sha256": sha or None,
#: "left_out": rows that broke the data contract, "history_end": the first day the past-day
#: statistics did not read (the day, or the first late day before it)}``. ``run_id``
#: names the run in the table (default: a new local one).
STEP = step_runner.Step(
    name="predict",
    core=predict_core,
    load=_served_inputs,
    writes={"predictions": artifacts.SERVED_PREDICTIONS},
    params=lambda settings: settings.split,
    record=_replace_rows,
    run_id=True,
)
run = STEP.run


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flight_delays.predict --day D``: serve day D's predictions without
    Airflow (what the ``flight_delays_predict`` DAG's task runs)."""
    parser = argparse.ArgumentParser(prog="python -m flight_delays.predict", description=__doc__)
    parser.add_argument("--day", required=True, type=dates.parse_day, help="YYYY-MM-DD")
    parser.add_argument("--root", default=None, help="project root (default: FLIGHT_DELAYS_HOME)")
    parser.add_argument("--source-url", default=None, help="SQLAlchemy URL of the warehouse")
    parser.add_argument("--registry-url", default=None, help="SQLAlchemy URL of the registry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(
            args.day, args.root, source_url=args.source_url, registry_url=args.registry_url
        )
    except PipelineDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows, champion = result["rows"], result["champion"]
    print(f"{rows} flights predicted by the {champion}: {result['predictions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
