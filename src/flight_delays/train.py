"""Train the challenger: a histogram gradient-boosting regressor of arrival delay (minutes).

Pure core: :func:`build_pipeline`, :func:`fit_model` and :func:`predict` (frames and
settings in, a fitted pipeline or predictions out; inputs are never mutated).

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
File wrapper: :func:`run` reads the ``train_table`` artifact of the split task, writes
the ``run_model`` and ``run_model_card`` artifacts into the run's folder
``models/ds=<day>/run=<run id>/`` and records their SHA-256 in the registry.
:func:`load_model` reads a model file back with an explicit list of trusted types.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import skops
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.ensemble._hist_gradient_boosting.common import (
    PREDICTOR_RECORD_DTYPE,
    X_BITSET_INNER_DTYPE,
)
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder
from threadpoolctl import threadpool_limits

from flight_delays.base import memory, schema
from flight_delays.base.dates import parse_day
from flight_delays.base.errors import PipelineDataError
from flight_delays.store import artifacts, io, registry
from flight_delays.store.config import TrainSettings, load_settings, new_run_id
from flight_delays.store.storage import ArtifactPath

# Importing skops.io builds its list of trusted scipy.special ufuncs. A ufunc has no
# __module__, so skops finds its module by calling getattr(module, name, None) on every
# module loaded so far (skops.io._utils.whichmodule, run from skops.io._trusted_types).
# In a task, Airflow is loaded first, and its deprecated-module shims (airflow.utils.
# timezone, trigger_rule, operator_resources, entry_points, airflow.serialization.serde)
# warn in their __getattr__ before checking that the name exists: ~1,160
# DeprecatedImportWarnings (FutureWarnings, which skops' own DeprecationWarning filter
# misses) for attributes nobody uses. Dumping and loading models scans nothing (measured:
# no warning), so only this import is wrapped, and only warnings about airflow attributes
# are dropped; every other warning, here and later, still shows.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"The `airflow\.[\w.]+` (attribute )?is deprecated",
        category=FutureWarning,
    )
    import skops.io

log = logging.getLogger(__name__)

ENV_THREADS = "FLIGHT_DELAYS_THREADS"
DEFAULT_THREADS = 2

#: Types a model file may hold beyond those skops trusts by default (numpy, builtins and
#: scikit-learn estimators). Each one was checked with ``skops.io.get_untrusted_types`` on
#: a file :func:`run` writes with the boosters of include/params.yaml (a test keeps the
#: list equal to what that file holds), and each is needed:
#: - TreePredictor: the fitted trees of HistGradientBoostingRegressor; without it there
#:   is no model. skops leaves it untrusted because its node arrays are read by compiled
#:   code without bounds checks: a crafted file could point a node at memory outside the
#:   tree. So it is trusted narrowly: :func:`check_trees` proves every tree's indices are
#:   in range (children after their parent, features and bitsets that exist) before the
#:   model is returned, on top of the file's SHA-256 from the registry.
#: - functools.partial + sklearn.utils.validation.check_array: a booster given
#:   ``categorical_features`` builds its own ColumnTransformer (``_preprocessor``) whose
#:   numeric columns go through FunctionTransformer(partial(check_array, ...)), so a
#:   booster of this pipeline cannot be stored without them. A partial may call any
#:   function skops trusts, so it is trusted narrowly: :func:`partials_outside` refuses
#:   a file holding a partial of anything but :data:`PARTIAL_FUNCTION`, before anything
#:   in the file is built.
#: - DayBaggedRegressor: this module's own ensemble (a list of the boosters above, plus
#:   ints and floats); trusted for the same reason as the boosters it holds.
TRUSTED_TYPES: tuple[str, ...] = (
    "flight_delays.train.DayBaggedRegressor",
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
)
#: The one function a trusted ``functools.partial`` may wrap (see :data:`TRUSTED_TYPES`).
PARTIAL_FUNCTION = "sklearn.utils.validation.check_array"

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


class UntrustedModelError(PipelineDataError):
    """A model file holds types outside the trusted list, or is not this pipeline."""


# --- threads ----------------------------------------------------------------------------


def thread_limit() -> int:
    """OpenMP/BLAS threads for fit and predict: $FLIGHT_DELAYS_THREADS, default 2."""
    raw = os.environ.get(ENV_THREADS, str(DEFAULT_THREADS))
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{ENV_THREADS} must be a positive integer, got {raw!r}")
    return value


@contextmanager
def bounded_threads() -> Iterator[None]:
    """Cap native thread pools: tasks may run in parallel on 2 cores, and unbounded
    OpenMP threads in HistGradientBoosting then slow each other down by 4-40x."""
    with threadpool_limits(limits=thread_limit()):
        yield


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


def check_feature_columns(frame: pd.DataFrame, what: str = "frame") -> None:
    """Raise ValueError naming every name in ``schema.FEATURES`` missing from ``frame``."""
    missing = [col for col in schema.FEATURES if col not in frame.columns]
    if missing:
        raise ValueError(f"{what} is missing feature column(s): {', '.join(missing)}")


@dataclass(frozen=True)
class EncodedTraining:
    """A training frame made ready for the model: ``pipeline`` (:func:`build_pipeline`,
    its encoder fitted, its model not yet), ``matrix`` (the encoder's output), ``target``
    (minutes) and ``days`` (each row's day; None without day bagging)."""

    pipeline: Pipeline
    matrix: np.ndarray
    target: np.ndarray
    days: np.ndarray | None


def fit_model(train_frame: pd.DataFrame, train_settings: TrainSettings) -> Pipeline:
    """Fit :func:`build_pipeline` on ``train_frame``: :func:`encode_training` then
    :func:`fit_encoded`, the same pipeline as ``Pipeline.fit`` (a test compares them).

    Needs every column in ``schema.FEATURES``, ``schema.DAY`` when day bagging is on,
    and ``schema.TARGET`` (arr_delay, minutes,
    finite: featurize drops flights without an arrival delay, so a missing one here is a
    bug upstream and raises ValueError). The frame is not modified.

    A numeric feature with no value at all in the frame (a past-day statistic when the
    window is shorter than its lookback allows, or a weather measure never reported) is
    fitted as a constant 0, with a warning: the booster cannot bin an all-missing
    column, and a constant one is never split on, so the model ignores the feature.
    """
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


def predict(model: Pipeline, frame: pd.DataFrame) -> np.ndarray:
    """Predicted arrival delay (minutes) for each row of ``frame`` (needs schema.FEATURES).

    Categories not seen in training are encoded as missing, not an error."""
    check_feature_columns(frame)
    with bounded_threads():
        return np.asarray(model.predict(frame[schema.FEATURES]), dtype=float)


# --- model files ------------------------------------------------------------------------


def dump_model(model: Pipeline) -> bytes:
    """``model`` in skops format, deflate-compressed. The tree arrays compress about 4.6x
    (a nightly model of 10 bagged boosters: ~16 MB stored, ~3.5 MB deflated; of the 2
    shipped now, ~0.6 MB deflated) for ~0.1 s more to load."""
    return skops.io.dumps(model, compression=zipfile.ZIP_DEFLATED)


def save_model(model: Pipeline, path: str | ArtifactPath) -> ArtifactPath:
    """Write :func:`dump_model` of ``model`` to ``path`` (local or a URL) atomically."""
    return io.write_bytes(dump_model(model), path)


def load_model(
    path: str | ArtifactPath,
    expected_sha256: str | None = None,
    *,
    allow_unverified: bool = False,
) -> Pipeline:
    """Load a pipeline written by :func:`run`, trusting only :data:`TRUSTED_TYPES` beyond
    skops' defaults, each narrowly (:func:`partials_outside`, :func:`check_trees`).

    ``expected_sha256`` is required: the hash train recorded in the registry for this
    file (never one read from a file beside the model). Without it the file is refused,
    unless ``allow_unverified=True``, which only tests and tooling labelled as such
    pass, for a file they wrote themselves.

    The file is read once; its hash, the type checks and the model all come from those
    bytes, so the file cannot change between the check and the load. Raises
    MissingArtifactError (naming the train task) if the file is absent, and
    UntrustedModelError if no hash was given, if its SHA-256 is not ``expected_sha256``,
    if it holds any other untrusted type (named), or if it is not a Pipeline ending in
    HistGradientBoostingRegressor (or a DayBaggedRegressor of them) with sound trees.
    """
    if not expected_sha256 and not allow_unverified:
        # Checked before the file is read: a caller without a hash is a bug, whatever
        # the file holds.
        raise UntrustedModelError(
            f"refusing to load {path} without its expected SHA-256: pass expected_sha256, "
            "the hash train recorded in the registry (registry.find_challenger or "
            "registry.current_champion); only tests may pass allow_unverified=True"
        )
    path = io.require(path, artifacts.RUN_MODEL)  # a local path or a URL (s3://...)
    data = path.read_bytes()
    if expected_sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise UntrustedModelError(
                f"model file {path} has SHA-256 {actual}, but the registry recorded "
                f"{expected_sha256} when it was trained: the file was changed after training"
            )
    else:
        log.warning("loading %s unverified (allow_unverified=True): tests only", path)
    # The schema is read first: it also tells a file that is no skops archive at all.
    partials = partials_outside(data, path)
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    untrusted += partials
    if untrusted:
        raise UntrustedModelError(
            f"refusing to load {path}: it holds type(s) outside the trusted list: "
            f"{', '.join(untrusted)}"
        )
    try:
        model = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Trusted types whose state does not fit them (a TreePredictor casts its nodes
        # when it is built): not a file this pipeline wrote.
        raise UntrustedModelError(f"{path} could not be built as a model: {exc}") from exc
    last = model.steps[-1][1] if isinstance(model, Pipeline) else None
    boosters = [last]
    if isinstance(last, DayBaggedRegressor):
        boosters = getattr(last, "estimators_", None)
    if not (
        isinstance(boosters, list)
        and boosters
        and all(isinstance(b, HistGradientBoostingRegressor) for b in boosters)
    ):
        raise UntrustedModelError(
            f"{path} holds a {type(model).__name__}, not this project's pipeline "
            "(Pipeline ending in HistGradientBoostingRegressor or a DayBaggedRegressor of them)"
        )
    for k, booster in enumerate(boosters):
        check_trees(booster, f"{path}, booster {k}")
    return model


def partials_outside(data: bytes, where: object = "model file") -> list[str]:
    """Every ``functools.partial`` in the skops file ``data`` that wraps something other
    than :data:`PARTIAL_FUNCTION`, named ``functools.partial of <what it wraps>``.

    Read from the file's schema, so nothing in the file is built to find them."""
    try:
        with zipfile.ZipFile(BytesIO(data)) as archive:
            tree = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UntrustedModelError(f"{where} is not a skops model file: {exc}") from exc
    found: list[str] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if (node.get("__module__"), node.get("__class__")) == ("functools", "partial"):
            content = node.get("content")
            func = content.get("func") if isinstance(content, dict) else None
            name = (
                f"{func.get('__module__')}.{func.get('__class__')}"
                if isinstance(func, dict)
                else repr(func)
            )
            if name != PARTIAL_FUNCTION:
                found.append(f"functools.partial of {name}")
        stack.extend(node.values())
    return sorted(set(found))


def check_trees(booster: HistGradientBoostingRegressor, where: str) -> None:
    """Raise UntrustedModelError unless every tree of the fitted ``booster`` is sound:
    node records of sklearn's own dtype, each split's children after it and inside the
    tree (so prediction walks forward and stops), its feature one of the booster's
    ``n_features_in_`` columns, and a categorical split's bitset one the tree holds.

    These are the indices the compiled predictor follows without bounds checks (why
    skops does not trust TreePredictor by default)."""
    n_features = getattr(booster, "n_features_in_", None)
    predictors = getattr(booster, "_predictors", None)
    if not isinstance(n_features, int) or not isinstance(predictors, list) or not predictors:
        raise UntrustedModelError(f"{where}: the booster holds no fitted trees")
    for i, iteration in enumerate(predictors):
        for tree in iteration if isinstance(iteration, list) else [iteration]:
            problem = _tree_problem(tree, n_features)
            if problem:
                raise UntrustedModelError(f"{where}, TreePredictor of iteration {i}: {problem}")


def _tree_problem(tree: Any, n_features: int) -> str | None:
    """What is wrong with ``tree`` (see :func:`check_trees`), or None."""
    if not isinstance(tree, TreePredictor):
        return f"a {type(tree).__name__}, not a TreePredictor"
    nodes = tree.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE:
        return "its nodes are not sklearn's node records"
    if nodes.ndim != 1 or len(nodes) == 0:
        return f"its nodes have shape {getattr(nodes, 'shape', None)}"
    for name in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        bitsets = getattr(tree, name)
        if not (
            isinstance(bitsets, np.ndarray)
            and bitsets.dtype == X_BITSET_INNER_DTYPE
            and bitsets.ndim == 2
            and bitsets.shape[1] == 8
        ):
            return f"{name} is not an (n, 8) array of uint32"
    split = np.flatnonzero(nodes["is_leaf"] == 0)
    n = len(nodes)
    for child in ("left", "right"):
        to = nodes[child][split].astype(np.int64)
        bad = split[(to <= split) | (to >= n)]
        if len(bad):
            k = int(bad[0])
            return f"node {k} has {child} child {int(nodes[child][k])}, not in {k + 1}..{n - 1}"
    feature = nodes["feature_idx"][split]
    bad = split[(feature < 0) | (feature >= n_features)]
    if len(bad):
        k = int(bad[0])
        return f"node {k} splits on feature {int(nodes['feature_idx'][k])} of {n_features}"
    categorical = split[nodes["is_categorical"][split] != 0]
    n_bitsets = min(len(tree.binned_left_cat_bitsets), len(tree.raw_left_cat_bitsets))
    bad = categorical[nodes["bitset_idx"][categorical] >= n_bitsets]
    if len(bad):
        k = int(bad[0])
        return f"node {k} uses bitset {int(nodes['bitset_idx'][k])} of {n_bitsets}"
    return None


def library_versions() -> dict[str, str]:
    """Versions that decide whether a model file loads and predicts the same way."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "skops": skops.__version__,
    }


def _day_iso(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


# --- file wrapper -----------------------------------------------------------------------


def _write_bytes(data: bytes, path: ArtifactPath) -> str:
    """Write ``data`` to ``path`` atomically; return the SHA-256 of the bytes written."""
    io.write_bytes(data, path)
    return hashlib.sha256(data).hexdigest()


def run(
    day: str | date,
    root: str | Path | None = None,
    params_file: str | Path | None = None,
    registry_url: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train on the ``train_table`` artifact; write the ``run_model`` and
    ``run_model_card`` artifacts into the run's own folder ``models/ds=<day>/run=<run_id>/``
    (:meth:`ProjectPaths.run_model_dir`), and record both files' SHA-256 in the registry
    (``registry_url``, default: the settings' registry) for the score task to check.

    ``run_id`` names the DAG run (default: a new local one, ``config.new_run_id``).
    Returns ``{"model": str, "model_card": str, "model_sha256": str, "run_id": str,
    "train_rows": int}``.
    """
    started = time.perf_counter()
    day = parse_day(day)
    run_id = run_id or new_run_id(day)
    settings = load_settings(root, params_file)
    train_path = artifacts.TRAIN_TABLE.path(settings.paths.root, day)
    train_frame = io.read_parquet(train_path, artifacts.TRAIN_TABLE)
    manifest_path = io.require(
        artifacts.MANIFEST.path(settings.paths.root, day), artifacts.MANIFEST
    )

    train_rows, days = len(train_frame), train_frame[schema.DAY].agg(["min", "max"])
    encoded = encode_training(train_frame, settings.train)
    del train_frame  # the model needs the encoded matrix only (~90 MiB at 365 days)
    model = fit_encoded(encoded)
    del encoded
    bagged = settings.train.bagged

    # The hashes are taken from the bytes written, not read back from the files.
    model_path = artifacts.RUN_MODEL.path(settings.paths.root, day, run_id)
    model_bytes = dump_model(model)
    model_sha = _write_bytes(model_bytes, model_path)
    card = {
        "processed_day": day.isoformat(),
        "run_id": run_id,
        "train_window": {"first_day": _day_iso(days["min"]), "last_day": _day_iso(days["max"])},
        "train_rows": train_rows,
        "estimator": (
            f"flight_delays.train.DayBaggedRegressor of {settings.train.bagging_models} "
            "sklearn.ensemble.HistGradientBoostingRegressor"
            if bagged
            else "sklearn.ensemble.HistGradientBoostingRegressor"
        ),
        "hyperparameters": settings.train.hyperparameters(),
        "bagging": settings.train.bagging() if bagged else None,
        "features": {
            "categorical": list(schema.CATEGORICAL_FEATURES),
            "numeric": list(schema.NUMERIC_FEATURES),
        },
        "target": {"name": schema.TARGET, "units": "minutes", "meaning": "arrival delay"},
        "inputs": {
            "manifest": {"path": str(manifest_path), "sha256": io.sha256(manifest_path)},
            "train": {"path": str(train_path), "sha256": io.sha256(train_path)},
        },
        "model": {"path": str(model_path), "sha256": model_sha},
        "libraries": library_versions(),
        "threads": thread_limit(),
        "monotonic_constraints": dict(schema.MONOTONIC_FEATURES),
        "notes": [WEATHER_NOTE, HISTORY_NOTE]
        + ([BAGGING_NOTE.format(**settings.train.bagging())] if bagged else []),
    }
    card_path = artifacts.RUN_MODEL_CARD.path(settings.paths.root, day, run_id)
    card_text = json.dumps(card, indent=2, sort_keys=True, default=str) + "\n"
    card_sha = _write_bytes(card_text.encode(), card_path)

    engine = registry.connect(registry_url or settings.registry_url)
    try:
        registry.record_challenger(
            engine,
            registry.Challenger(
                processed_day=day,
                run_id=run_id,
                model_path=str(model_path),
                model_sha256=model_sha,
                card_path=str(card_path),
                card_sha256=card_sha,
                train_rows=train_rows,
            ),
        )
    finally:
        engine.dispose()
    # The step's one summary line: rows in, model out, seconds, and the model's size.
    log.info(
        "train %s: %d rows in (%s..%s) -> %d booster(s) out, %.1f MB, in %.1f s -> %s",
        day,
        train_rows,
        card["train_window"]["first_day"],
        card["train_window"]["last_day"],
        settings.train.bagging_models,
        len(model_bytes) / 1e6,
        time.perf_counter() - started,
        model_path,
    )
    return {
        "model": str(model_path),
        "model_card": str(card_path),
        "model_sha256": model_sha,
        "run_id": run_id,
        "train_rows": train_rows,
    }
