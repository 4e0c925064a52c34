"""Train the challenger: a histogram gradient-boosting regressor of arrival delay (minutes).

Pure core: :func:`build_pipeline` and :func:`fit_model` (frames and settings in, a
fitted pipeline out; inputs are never mutated).

Day bagging (``train.bagging_models`` > 1): the pipeline's last step is a
:class:`DayBaggedRegressor`, the mean of several boosters, each fitted on a random share
(``train.bagging_day_fraction``) of the training *days*, whole days in or out. Most of
the signal is day-level (a stormy day delays every flight) and a 90-day window holds
only ~80 training days, so a single booster's response to day-level inputs leans on a
few memorised days; averaging boosters that each miss a different fifth of the days
smooths it (chosen with :mod:`flight_delays.backtest` on the first half of the weekly
holdouts). The boosters are fitted ``FLIGHT_DELAYS_THREADS`` at a time, one OpenMP
thread each (the same model as a serial fit). With one model the last step is the plain
HistGradientBoostingRegressor, fitted on every day.
The step: :data:`STEP` declares it for the runner (:mod:`flight_delays.store.step_runner`):
it reads the ``train_table`` artifact of the split task, writes the ``run_model`` and
``run_model_card`` artifacts into the run's folder ``models/ds=<day>/run=<run id>/`` and
records their SHA-256 in the registry.
:mod:`flight_delays.model.fitted` writes the model file, reads it back with an explicit
list of trusted types, and predicts.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from flight_delays.base import memory, schema
from flight_delays.model.fitted import (
    bounded_threads,
    check_feature_columns,
    dump_model,
    library_versions,
    thread_limit,
)
from flight_delays.store import artifacts, io, registry, step_runner
from flight_delays.store.config import TrainSettings

log = logging.getLogger(__name__)

WEATHER_NOTE = (
    "Weather features are the observed weather at the origin in the scheduled departure "
    "hour, the hours around it and over the whole flight day, used as if it were a "
    "perfect forecast: live accuracy with a real forecast will be lower."
)
HISTORY_NOTE = (
    "Past-day features (recent_*, past_*) are medians of the arrival delays of earlier "
    "days only: for a holdout row, the days before the holdout; for a training row, the "
    "days before its block of holdout length (flight_delays.model.history)."
)

BAGGING_NOTE = (
    "The prediction is the mean of {n_models} boosters, each fitted on a random "
    "{day_fraction:.0%} of the training days (whole days; DayBaggedRegressor); booster k "
    "uses random_state + k."
)


# --- pure core --------------------------------------------------------------------------


def monotonic_constraints() -> list[int]:
    """``monotonic_cst`` of the booster, aligned with the pipeline's columns (categorical
    block first, then ``schema.NUMERIC_FEATURES``): +1/-1 for the features of
    ``schema.MONOTONIC_FEATURES``, 0 (free) for the others."""
    return [0] * len(schema.CATEGORICAL_FEATURES) + [
        schema.MONOTONIC_FEATURES.get(name, 0) for name in schema.NUMERIC_FEATURES
    ]


class DayBaggedRegressor(RegressorMixin, BaseEstimator):
    """Mean prediction of ``n_models`` clones of ``estimator``, each fitted on the rows of
    a random ``day_fraction`` of the distinct days (``days``, one value per row, passed to
    :meth:`fit`), drawn without replacement; clone k gets ``random_state + k`` if it
    takes a random state. The days drawn depend only on ``random_state`` and the set
    of days, so a refit on the same frame gives the same model.

    ``n_jobs`` clones are fitted at once, each in a thread of its own with one OpenMP
    thread: on 2 cores two single-threaded boosters run about twice as fast as one
    booster on two threads, whose histogram loops are too short to keep both busy. Every
    clone gets one OpenMP thread whatever ``n_jobs`` is, so a parallel and a serial fit
    give the same model."""

    def __init__(
        self,
        estimator: Any = None,
        n_models: int = 5,
        day_fraction: float = 0.8,
        random_state: int | None = None,
        n_jobs: int = 1,
    ) -> None:
        self.estimator = estimator
        self.n_models = n_models
        self.day_fraction = day_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, days: Any = None) -> DayBaggedRegressor:
        if self.estimator is None:
            raise ValueError("DayBaggedRegressor needs an estimator")
        if self.n_models < 1:
            raise ValueError(f"n_models must be >= 1, got {self.n_models}")
        if not 0 < self.day_fraction <= 1:
            raise ValueError(f"day_fraction must be in (0, 1], got {self.day_fraction}")
        if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise ValueError(f"n_jobs must be an integer >= 1, got {self.n_jobs!r}")
        if days is None:
            raise ValueError("DayBaggedRegressor.fit needs the day of every row (days=...)")
        days = np.asarray(days)
        y = np.asarray(y, dtype=float)
        if len(days) != len(y):
            raise ValueError(f"days has {len(days)} values for {len(y)} rows")
        distinct = np.unique(days)
        per_model = max(1, round(self.day_fraction * len(distinct)))
        # Every draw is made here, in order, before any fit: the same days for clone k
        # however many clones are fitted at once.
        rng = np.random.default_rng(self.random_state)
        draws = [rng.choice(distinct, size=per_model, replace=False) for _ in range(self.n_models)]

        def fit_one(k: int) -> Any:
            estimator = clone(self.estimator)
            if self.random_state is not None and "random_state" in estimator.get_params():
                estimator.set_params(random_state=self.random_state + k)
            # The OpenMP thread count is per calling thread: set it in this one.
            with threadpool_limits(limits=1, user_api="openmp"):
                return fit_rows(estimator, X, y, np.flatnonzero(np.isin(days, draws[k])))

        workers = min(self.n_jobs, self.n_models)
        if workers == 1:
            self.estimators_ = [fit_one(k) for k in range(self.n_models)]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                self.estimators_ = list(pool.map(fit_one, range(self.n_models)))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.mean([estimator.predict(X) for estimator in self.estimators_], axis=0)


def _own_validation_split(estimator: Any, n_rows: int) -> int | None:
    """The seed of the validation split ``estimator`` would make itself when fitted on
    ``n_rows`` rows, or None when it makes none or it cannot be made the same way
    outside (see :func:`fit_rows`)."""
    if not isinstance(estimator, HistGradientBoostingRegressor):
        return None
    params = estimator.get_params()
    fraction, seed = params["validation_fraction"], params["random_state"]
    if params["scoring"] != "loss" or not isinstance(fraction, float):
        return None
    if not isinstance(seed, int) or params["early_stopping"] is False:
        return None
    # "auto" decides on the rows it is given: on the training share alone it must decide
    # as it would on all of them (n > 10,000), so that nothing changes but who splits.
    n_train = n_rows - int(np.ceil(fraction * n_rows))
    if params["early_stopping"] == "auto" and n_train <= 10_000:
        return None
    # HistGradientBoostingRegressor.fit: rng = check_random_state(random_state); its
    # first draw seeds train_test_split (and the binning's subsample).
    return int(np.random.RandomState(seed).randint(np.iinfo(np.uint32).max, dtype="u8"))


def fit_rows(estimator: Any, X: Any, y: np.ndarray, rows: np.ndarray) -> Any:
    """``estimator`` fitted on the rows ``rows`` (positions) of ``X`` and ``y``.

    A HistGradientBoostingRegressor with early stopping holds out a validation share of
    what it is given: fitted on ``X[rows]`` it keeps three copies of the rows alive for
    the whole fit (the subset and its two parts). Here the booster's own split (the
    same ``train_test_split`` call with the same seed) is made on the row positions and
    the two parts are taken from ``X`` and passed as training and validation data, so
    the booster holds two copies and the model is the same (a test compares them): at
    a 365-day window with two boosters at once, ~130 MB less at the peak
    (docs/benchmarks.md, "The 365-day window: memory of the train step"). Any other
    estimator, or a booster whose split cannot be made the same way outside, is fitted
    on ``X[rows]``."""
    take = (lambda a, i: a.iloc[i]) if hasattr(X, "iloc") else (lambda a, i: a[i])
    seed = _own_validation_split(estimator, len(rows))
    if seed is None:
        return estimator.fit(take(X, rows), y[rows])
    fraction = estimator.get_params()["validation_fraction"]
    train_rows, val_rows = train_test_split(rows, test_size=fraction, random_state=seed)
    return estimator.fit(
        take(X, train_rows), y[train_rows], X_val=take(X, val_rows), y_val=y[val_rows]
    )


def build_pipeline(train_settings: TrainSettings) -> Pipeline:
    """An unfitted pipeline: ordinal-encode ``schema.CATEGORICAL_FEATURES`` (unknown and
    missing categories become NaN, which the booster routes as missing), pass
    ``schema.NUMERIC_FEATURES`` through, then HistGradientBoostingRegressor with the
    encoded columns declared categorical and the monotonic constraints of
    ``schema.MONOTONIC_FEATURES`` (with ``bagging_models`` > 1: a
    :class:`DayBaggedRegressor` of such boosters, whose ``fit`` needs ``model__days``).
    Output: predicted arr_delay in minutes."""
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
    )
    features = ColumnTransformer(
        [
            ("categorical", encoder, list(schema.CATEGORICAL_FEATURES)),
            ("numeric", "passthrough", list(schema.NUMERIC_FEATURES)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    # The ColumnTransformer emits the categorical block first, in this order.
    categorical_mask = [True] * len(schema.CATEGORICAL_FEATURES) + [False] * len(
        schema.NUMERIC_FEATURES
    )
    model = HistGradientBoostingRegressor(
        **train_settings.hyperparameters(),
        categorical_features=categorical_mask,
        monotonic_cst=monotonic_constraints(),
    )
    if train_settings.bagged:
        model = DayBaggedRegressor(
            model,
            **train_settings.bagging(),
            random_state=train_settings.random_state,
            n_jobs=thread_limit(),
        )
    return Pipeline([("features", features), ("model", model)])


@dataclass(frozen=True)
class EncodedTraining:
    """A training frame made ready for the model: ``pipeline`` (:func:`build_pipeline`,
    its encoder fitted, its model not yet), ``matrix`` (the encoder's output), ``target``
    (minutes) and ``days`` (each row's day; None without day bagging)."""

    pipeline: Pipeline
    matrix: np.ndarray
    target: np.ndarray
    days: np.ndarray | None


def newest_days(frame: pd.DataFrame, max_rows: int | None) -> tuple[pd.DataFrame, int, int]:
    """``frame`` cut to its newest whole days that hold at most ``max_rows`` rows
    (``train.max_rows``), and the rows and days it left out. The newest day is kept even
    when it alone is over; ``frame`` itself when it fits, or ``max_rows`` is None."""
    if max_rows is None or len(frame) <= max_rows:
        return frame, 0, 0
    if schema.DAY not in frame.columns:
        raise ValueError(
            f"training frame has {len(frame):,} rows, over train.max_rows ({max_rows:,}), "
            f"and no {schema.DAY!r} column to keep its newest days by"
        )
    first, rows, days = _first_kept_day(frame[schema.DAY].value_counts(), max_rows)
    return frame[(frame[schema.DAY] >= first).to_numpy()], rows, days


def _first_kept_day(rows_per_day: pd.Series, max_rows: int) -> tuple[Any, int, int]:
    """From the rows of each day (indexed by day): the oldest day :func:`newest_days`
    keeps, and the rows and days it leaves out."""
    per_day = rows_per_day.sort_index(ascending=False)
    kept = (per_day.cumsum() <= max_rows).to_numpy(copy=True)
    kept[0] = True  # the newest day, whole, even alone over the bound
    return per_day.index[kept][-1], int(per_day[~kept].sum()), int((~kept).sum())


def fit_model(train_frame: pd.DataFrame, train_settings: TrainSettings) -> Pipeline:
    """Fit :func:`build_pipeline` on ``train_frame``, cut to ``train.max_rows``
    (:func:`newest_days`): :func:`encode_training` then :func:`fit_encoded`, the same
    pipeline as ``Pipeline.fit`` (a test compares them).

    Needs every column in ``schema.FEATURES``, ``schema.DAY`` when day bagging is on,
    and ``schema.TARGET`` (arr_delay, minutes,
    finite: featurize drops flights without an arrival delay, so a missing one here is a
    bug upstream and raises ValueError). The frame is not modified.

    A numeric feature with no value at all in the frame (a past-day statistic when the
    window is shorter than its lookback allows, or a weather measure never reported) is
    fitted as a constant 0, with a warning: the booster cannot bin an all-missing
    column, and a constant one is never split on, so the model ignores the feature.
    """
    train_frame = newest_days(train_frame, train_settings.max_rows)[0]
    return fit_encoded(encode_training(train_frame, train_settings))


def encode_training(train_frame: pd.DataFrame, train_settings: TrainSettings) -> EncodedTraining:
    """The first half of :func:`fit_model`: check ``train_frame`` (the errors below), fit
    the pipeline's encoder on it and encode it. Nothing of the frame is kept, so a caller
    that drops its own reference frees the frame before the model is fitted (the train
    step does: ~90 MiB less at the peak of a 365-day window).

    Needs every column in ``schema.FEATURES``, ``schema.DAY`` when day bagging is on,
    and ``schema.TARGET`` (finite; see :func:`fit_model`)."""
    check_feature_columns(train_frame, "training frame")
    if schema.TARGET not in train_frame.columns:
        raise ValueError(f"training frame is missing the target column {schema.TARGET!r}")
    if len(train_frame) == 0:
        raise ValueError("training frame is empty: nothing to fit")
    if train_settings.bagged and schema.DAY not in train_frame.columns:
        raise ValueError(
            f"training frame is missing {schema.DAY!r}, which day bagging "
            "(train.bagging_models > 1) needs"
        )
    target = pd.to_numeric(train_frame[schema.TARGET], errors="coerce").to_numpy(dtype=float)
    bad = int((~np.isfinite(target)).sum())
    if bad:
        raise ValueError(
            f"{bad} of {len(target)} training rows have a missing or non-finite "
            f"{schema.TARGET}; featurize should have dropped them (bug upstream)"
        )
    features = train_frame[schema.FEATURES]
    empty = [col for col in schema.NUMERIC_FEATURES if features[col].isna().all()]
    if empty:
        log.warning(
            "training frame has no value of %d feature(s), which the model will ignore: %s",
            len(empty),
            ", ".join(empty),
        )
        features = features.assign(**dict.fromkeys(empty, 0.0))
    pipeline = build_pipeline(train_settings)
    days = train_frame[schema.DAY].to_numpy() if train_settings.bagged else None
    (_, encoder), _model = pipeline.steps
    with bounded_threads():
        matrix = encoder.fit_transform(features, target)
    return EncodedTraining(pipeline, matrix, target, days)


def fit_encoded(encoded: EncodedTraining) -> Pipeline:
    """The second half of :func:`fit_model`: fit the model of ``encoded.pipeline`` on the
    encoded matrix; returns the pipeline, now fitted.

    What Pipeline.fit does in one call is done in two so that what the encoding freed
    (its object arrays and column copies, ~200 MB at a 365-day window) is handed back
    first: the boosters' threads allocate from glibc arenas of their own and could not
    reuse it."""
    memory.release_freed()
    _encoder, (_, model) = encoded.pipeline.steps
    fit_params = {} if encoded.days is None else {"days": encoded.days}
    with bounded_threads():
        model.fit(encoded.matrix, encoded.target, **fit_params)
    return encoded.pipeline


def _day_iso(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


# --- the step ---------------------------------------------------------------------------


def _encoded(run: step_runner.StepRun, _inputs: dict[str, Any]) -> dict[str, Any]:
    """The training table, read and encoded into the model's matrix. Done while loading
    so that the table is dropped before the fit (:func:`encode_training`; ~90 MiB less at
    the peak of a 365-day window, ten times that at ten times the flights). Past
    ``train.max_rows`` (the file's footer tells) only the newest days are read
    (:func:`newest_days`: the days column first, then the rows from the first day kept),
    said in the log and the card."""
    # Pinned by the runner: every read below sees the bytes the model card names.
    path = run.sources["train"]
    max_rows, filters, dropped_rows, dropped_days = run.settings.train.max_rows, None, 0, 0
    # The footer first: a table that fits (the real data's, always) is read once.
    if max_rows is not None and io.parquet_rows(path, artifacts.TRAIN_TABLE) > max_rows:
        days = io.read_parquet(path, artifacts.TRAIN_TABLE, columns=[schema.DAY])[schema.DAY]
        first, dropped_rows, dropped_days = _first_kept_day(days.value_counts(), max_rows)
        filters = [(schema.DAY, ">=", first)]
        del days
    train_frame = io.read_parquet(path, artifacts.TRAIN_TABLE, filters=filters)
    if dropped_rows:
        log.warning(
            "train: the %d oldest day(s), %d rows, left out: the table is over "
            "train.max_rows (%d rows)", dropped_days, dropped_rows, max_rows
        )  # fmt: skip
    days = train_frame[schema.DAY].agg(["min", "max"])
    return {
        "encoded": [encode_training(train_frame, run.settings.train)],
        "train_rows": len(train_frame),
        "window": {"first_day": _day_iso(days["min"]), "last_day": _day_iso(days["max"])},
        "left_out": {"max_rows": max_rows, "rows": dropped_rows, "days": dropped_days},
    }


def model_card(
    day: date,
    params: TrainSettings,
    train_rows: int,
    window: dict[str, str],
    left_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the model card says of the model (the runner adds the run id, the inputs and
    the model file with their SHA-256)."""
    bagged = params.bagged
    return {
        "processed_day": day.isoformat(),
        "train_window": window,
        "train_rows": train_rows,
        # train.max_rows, and the oldest days it left out of the training table.
        "train_rows_left_out": left_out,
        "estimator": (
            f"flight_delays.train.DayBaggedRegressor of {params.bagging_models} "
            "sklearn.ensemble.HistGradientBoostingRegressor"
            if bagged
            else "sklearn.ensemble.HistGradientBoostingRegressor"
        ),
        "hyperparameters": params.hyperparameters(),
        "bagging": params.bagging() if bagged else None,
        "features": {
            "categorical": list(schema.CATEGORICAL_FEATURES),
            "numeric": list(schema.NUMERIC_FEATURES),
        },
        "target": {"name": schema.TARGET, "units": "minutes", "meaning": "arrival delay"},
        "libraries": library_versions(),
        "threads": thread_limit(),
        "monotonic_constraints": dict(schema.MONOTONIC_FEATURES),
        "notes": [WEATHER_NOTE, HISTORY_NOTE]
        + ([BAGGING_NOTE.format(**params.bagging())] if bagged else []),
    }


def train_core(
    day: date,
    params: TrainSettings,
    encoded: list[EncodedTraining],
    train_rows: int,
    window: dict[str, str],
    left_out: dict[str, Any] | None = None,
) -> step_runner.Result:
    """The step's core: the fitted model's file bytes and its card. ``encoded`` is a
    one-item list, emptied here, so the encoded matrix is freed once the model is fitted
    (the runner's inputs would keep it through the writes otherwise)."""
    model_bytes = dump_model(fit_encoded(encoded.pop()))
    return step_runner.Result(
        outputs={
            "model": model_bytes,
            "model_card": model_card(day, params, train_rows, window, left_out),
        },
        summary={"train_rows": train_rows},
        line=f"{train_rows} rows in ({window['first_day']}..{window['last_day']}) -> "
        f"{params.bagging_models} booster(s) out, {len(model_bytes) / 1e6:.1f} MB",
    )


def _record(
    run: step_runner.StepRun, written: dict[str, Any], _result: step_runner.Result
) -> dict[str, Any]:
    """Record both files' SHA-256 in the registry, for the score task to check."""
    model, card = written["model"], written["model_card"]
    registry.record_challenger(
        run.registry(),
        registry.Challenger(
            processed_day=run.day,
            run_id=run.run_id,
            model_path=str(model.path),
            model_sha256=model.sha256,
            card_path=str(card.path),
            card_sha256=card.sha256,
            train_rows=_result.summary["train_rows"],
        ),
    )
    return {"model_sha256": model.sha256, "run_id": run.run_id}


#: Trains on the ``train_table`` artifact; writes the ``run_model`` and ``run_model_card``
#: artifacts into the run's own folder ``models/ds=<day>/run=<run_id>/`` and records both
#: files' SHA-256 in the registry (``registry_url``, default: the settings' registry) for
#: the score task to check. ``run_id`` names the DAG run (default: a new local one). The
#: XCom dict: ``{"model", "model_card", "model_sha256", "run_id", "train_rows"}``.
STEP = step_runner.Step(
    name="train",
    core=train_core,
    # The table is read by the load hook (only its newest days past train.max_rows).
    requires={"train": artifacts.TRAIN_TABLE, "manifest": artifacts.MANIFEST},
    load=_encoded,
    writes={"model": artifacts.RUN_MODEL, "model_card": artifacts.RUN_MODEL_CARD},
    params=lambda settings: settings.train,
    record=_record,
    card="model_card",
    run_id=True,
)
run = STEP.run
