"""flight_delays.train: pipeline shape, fit validation, unseen categories, model files."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
import yaml
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from flight_delays import train
from flight_delays.base import schema
from flight_delays.model import fitted
from flight_delays.store import artifacts, io
from flight_delays.store.config import TrainSettings

# One small booster on all features (the plain model); BAGGED: the day-bagged kind.
FAST = TrainSettings(
    max_iter=20, min_samples_leaf=5, max_leaf_nodes=15, max_features=1.0, bagging_models=1
)
BAGGED = replace(FAST, bagging_models=3, bagging_day_fraction=0.5, max_features=0.5)


class RememberRows(BaseEstimator, RegressorMixin):
    """Predicts the mean target it saw; remembers the first column of its rows."""

    def fit(self, X, y):
        self.seen_ = np.asarray(X)[:, 0].copy()
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


class NotAModelPart:
    """A type no skops trust list knows: a file holding it must be refused, before
    anything of it is built (``built`` counts the objects skops rebuilt from a file)."""

    built = 0

    def __init__(self) -> None:
        self.payload = [1, 2, 3]

    def __setstate__(self, state: dict) -> None:
        type(self).built += 1
        self.__dict__.update(state)


@pytest.fixture(scope="module")
def fitted_model(feature_frame_factory) -> Pipeline:
    return train.fit_model(feature_frame_factory(300, seed=3), FAST)


def test_build_pipeline_uses_settings_and_marks_categoricals() -> None:
    pipeline = train.build_pipeline(FAST)
    booster = pipeline.steps[-1][1]
    assert isinstance(booster, HistGradientBoostingRegressor)
    params = booster.get_params()
    for key, value in FAST.hyperparameters().items():
        assert params[key] == value
    n_cat = len(schema.CATEGORICAL_FEATURES)
    assert list(booster.categorical_features) == [True] * n_cat + [False] * len(
        schema.NUMERIC_FEATURES
    )


def test_fit_model_predicts_in_minutes_and_leaves_input_alone(feature_frame_factory) -> None:
    frame = feature_frame_factory(300, seed=4)
    before = frame.copy()
    model = train.fit_model(frame, FAST)
    pd.testing.assert_frame_equal(frame, before)
    pred = fitted.predict(model, frame)
    assert pred.shape == (300,)
    assert np.isfinite(pred).all()
    # The features carry real signal: in-sample the model must beat predicting the median.
    target = frame[schema.TARGET].to_numpy()
    assert np.mean(np.abs(pred - target)) < np.mean(np.abs(np.median(target) - target))
    # The encoder learned the training categories (sorted, as OrdinalEncoder keeps them).
    encoder = model.named_steps["features"].named_transformers_["categorical"]
    assert list(encoder.categories_[0]) == sorted(frame["carrier"].unique())


def test_fit_model_names_missing_feature_column(feature_frame_factory) -> None:
    frame = feature_frame_factory(50).drop(columns=["wind_gust", "dest"])
    with pytest.raises(ValueError, match=r"missing feature column.*dest.*wind_gust"):
        train.fit_model(frame, FAST)


def test_fit_model_rejects_missing_target_as_upstream_bug(feature_frame_factory) -> None:
    frame = feature_frame_factory(50)
    frame.loc[[3, 7], schema.TARGET] = np.nan
    with pytest.raises(ValueError, match=r"2 of 50 training rows .*arr_delay.*featurize"):
        train.fit_model(frame, FAST)


def test_predict_handles_unseen_and_missing_categories(fitted_model, feature_frame_factory) -> None:
    frame = feature_frame_factory(6, seed=5)
    frame["carrier"] = pd.array(["ZZ", "AA", "AA", None, "B6", "UA"], dtype="str")
    frame["dest"] = pd.array(["XYZ"] * 6, dtype="str")
    pred = fitted.predict(fitted_model, frame)
    assert pred.shape == (6,)
    assert np.isfinite(pred).all()


def test_serving_predictions_retires_only_a_model_whose_features_are_gone(
    fitted_model, feature_frame_factory
) -> None:
    frame = feature_frame_factory(8, seed=3)
    predicted, retired = fitted.serving_predictions(fitted_model, frame)
    assert retired is None
    np.testing.assert_array_equal(predicted, fitted.predict(fitted_model, frame))

    class Renamed:  # trained when a feature had another name
        feature_names_in_ = (*schema.FEATURES[1:], "old_name")

    predicted, retired = fitted.serving_predictions(Renamed(), frame)
    assert predicted is None
    assert retired == "trained on feature(s) the pipeline no longer has: old_name"


def test_a_model_that_does_not_name_its_features_is_refused(feature_frame_factory) -> None:
    # Not retired quietly: a model without feature names is no model of this pipeline.
    class Anonymous:
        def predict(self, frame):  # pragma: no cover - never reached
            return np.zeros(len(frame))

    with pytest.raises(TypeError, match="Anonymous does not name the features"):
        fitted.serving_predictions(Anonymous(), feature_frame_factory(4))


def test_thread_limit_reads_environment(monkeypatch) -> None:
    monkeypatch.delenv(fitted.ENV_THREADS, raising=False)
    assert fitted.thread_limit() == 2
    monkeypatch.setenv(fitted.ENV_THREADS, "1")
    assert fitted.thread_limit() == 1
    monkeypatch.setenv(fitted.ENV_THREADS, "zero")
    with pytest.raises(ValueError, match=fitted.ENV_THREADS):
        fitted.thread_limit()


def test_model_file_round_trip_with_trusted_list(tmp_path, feature_frame_factory) -> None:
    bagged = train.fit_model(feature_frame_factory(300, seed=3), BAGGED)
    path = fitted.save_model(bagged, tmp_path / "model.skops")
    # The hard-coded list is exactly what this pipeline needs: nothing more, nothing less.
    assert sorted(skops.io.get_untrusted_types(file=path)) == sorted(fitted.TRUSTED_TYPES)
    loaded = fitted.load_model(path, expected_sha256=io.sha256(path))
    frame = feature_frame_factory(40, seed=6)
    np.testing.assert_array_equal(fitted.predict(loaded, frame), fitted.predict(bagged, frame))
    # stored deflated: one file per processed day adds up
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_single_booster_file_loads_too(fitted_model, tmp_path, feature_frame_factory) -> None:
    path = fitted.save_model(fitted_model, tmp_path / "model.skops")
    loaded = fitted.load_model(path, expected_sha256=io.sha256(path))
    frame = feature_frame_factory(40, seed=6)
    np.testing.assert_array_equal(
        fitted.predict(loaded, frame), fitted.predict(fitted_model, frame)
    )


def test_load_model_refuses_untrusted_type(fitted_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(NotAModelPart, "built", 0)
    path = tmp_path / "model.skops"
    smuggled = Pipeline(
        [
            ("features", fitted_model.named_steps["features"]),
            ("model", fitted_model.named_steps["model"]),
        ]
    )
    smuggled.extra = NotAModelPart()
    skops.io.dump(smuggled, path)
    # Refused by the type check even with the file's own hash: the hash proves who wrote
    # the file, not what it holds.
    with pytest.raises(fitted.UntrustedModelError, match=r"test_train\.NotAModelPart"):
        fitted.load_model(path, expected_sha256=io.sha256(path))
    assert NotAModelPart.built == 0, "an untrusted object was built before the refusal"
    # The counter counts: trusted, the same file builds one.
    skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    assert NotAModelPart.built == 1


def test_load_model_refuses_other_estimators_and_changed_files(fitted_model, tmp_path) -> None:
    other = tmp_path / "linear.skops"
    skops.io.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), other)
    with pytest.raises(fitted.UntrustedModelError, match="LinearRegression"):
        fitted.load_model(other, expected_sha256=io.sha256(other))
    path = fitted.save_model(fitted_model, tmp_path / "model.skops")
    with pytest.raises(fitted.UntrustedModelError, match="SHA-256"):
        fitted.load_model(path, expected_sha256="0" * 64)


def test_load_model_missing_file_names_train_task(tmp_path) -> None:
    with pytest.raises(io.MissingArtifactError, match="'train' task"):
        fitted.load_model(tmp_path / "nope.skops", expected_sha256="0" * 64)


def test_run_writes_model_and_card_into_the_runs_folder_and_records_their_hashes(
    split_artifacts,
) -> None:
    from flight_delays.store import registry

    art = split_artifacts
    paths = art["settings"].paths
    run_id = "scheduled__2024-03-11T07:00:00+00:00"
    result = train.run(
        art["day"].isoformat(), root=art["root"], params_file=art["params_file"], run_id=run_id
    )

    run_dir = artifacts.RUN_MODEL_DIR.path(paths.root, art["day"], run_id)
    assert (
        run_dir
        == artifacts.MODEL_DAY.path(paths.root, art["day"])
        / "run=scheduled__2024-03-11T07:00:00+00:00"
    )
    assert result == {
        "model": str(run_dir / "model.skops"),
        "model_card": str(run_dir / "model_card.json"),
        "model_sha256": io.sha256(run_dir / "model.skops"),
        "run_id": run_id,
        "train_rows": len(art["train"]),
    }
    card = json.loads(Path(result["model_card"]).read_text())
    assert card["processed_day"] == "2024-03-10"
    assert card["run_id"] == run_id
    assert card["train_window"] == {"first_day": "2024-03-01", "last_day": "2024-03-07"}
    assert card["train_rows"] == len(art["train"])
    assert card["hyperparameters"]["max_iter"] == 20
    assert card["estimator"] == "sklearn.ensemble.HistGradientBoostingRegressor"
    assert card["bagging"] is None
    assert card["features"]["categorical"] + card["features"]["numeric"] == schema.FEATURES
    assert card["target"] == {"name": "arr_delay", "units": "minutes", "meaning": "arrival delay"}
    assert card["inputs"]["manifest"]["sha256"] == io.sha256(art["manifest_path"])
    assert card["inputs"]["train"]["sha256"] == io.sha256(art["train_path"])
    assert card["model"]["sha256"] == io.sha256(result["model"])
    assert set(card["libraries"]) == {"python", "sklearn", "pandas", "numpy", "skops"}
    assert any("perfect forecast" in note for note in card["notes"])
    loaded = fitted.load_model(result["model"], expected_sha256=result["model_sha256"])
    assert isinstance(loaded, Pipeline)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.skops", "model_card.json"]
    # The hashes score checks against live in the registry, outside the model folder.
    engine = registry.connect(art["settings"].registry_url)
    recorded = registry.find_challenger(engine, art["day"], run_id)
    engine.dispose()
    assert recorded == registry.Challenger(
        processed_day=art["day"],
        run_id=run_id,
        model_path=result["model"],
        model_sha256=io.sha256(result["model"]),
        card_path=result["model_card"],
        card_sha256=io.sha256(result["model_card"]),
        train_rows=len(art["train"]),
    )


def test_a_retried_train_replaces_only_its_own_runs_record(split_artifacts) -> None:
    from flight_delays.store import registry

    art = split_artifacts
    kw = {"root": art["root"], "params_file": art["params_file"]}
    train.run(art["day"], run_id="run-a", **kw)
    other = train.run(art["day"], run_id="run-b", **kw)
    retried = train.run(art["day"], run_id="run-a", **kw)
    engine = registry.connect(art["settings"].registry_url)
    try:
        assert registry.find_challenger(engine, art["day"], "run-a").model_path == retried["model"]
        assert registry.find_challenger(engine, art["day"], "run-b").model_path == other["model"]
        # A run that trained nothing (a task run alone) gets the one trained last.
        assert registry.find_challenger(engine, art["day"], "tasks-test").run_id == "run-a"
        assert registry.find_challenger(engine, art["day"].replace(day=9), "run-a") is None
    finally:
        engine.dispose()


def test_run_without_a_run_id_is_a_run_of_its_own(split_artifacts) -> None:
    art = split_artifacts
    kw = {"root": art["root"], "params_file": art["params_file"]}
    first, second = train.run(art["day"], **kw), train.run(art["day"], **kw)
    assert first["run_id"].startswith(f"local__{art['day']}__")
    assert first["run_id"] != second["run_id"] and first["model"] != second["model"]


def test_load_model_reads_the_file_once(fitted_model, tmp_path, monkeypatch) -> None:
    import builtins
    import io as stdlib_io

    path = fitted.save_model(fitted_model, tmp_path / "model.skops")
    digest = io.sha256(path)
    opened = []
    real_open = builtins.open

    def counting_open(file, *args, **kwargs):
        if Path(str(file)) == path:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(stdlib_io, "open", counting_open)
    model = fitted.load_model(path, expected_sha256=digest)
    assert len(opened) == 1  # hashed, type-checked and loaded from the same bytes
    assert isinstance(model, Pipeline)


def test_run_with_day_bagging_says_so_in_the_card(split_artifacts) -> None:
    art = split_artifacts
    params = yaml.safe_load(Path(art["params_file"]).read_text())
    params["train"].update(bagging_models=2, bagging_day_fraction=0.5)
    params_file = Path(art["root"]) / "bagged.yaml"
    params_file.write_text(yaml.safe_dump(params))
    result = train.run(art["day"].isoformat(), root=art["root"], params_file=params_file)
    card = json.loads(Path(result["model_card"]).read_text())
    assert card["bagging"] == {"n_models": 2, "day_fraction": 0.5}
    assert card["estimator"].startswith("flight_delays.train.DayBaggedRegressor of 2 ")
    assert "bagging_models" not in card["hyperparameters"]
    assert any("mean of 2 boosters" in note for note in card["notes"])
    model = fitted.load_model(result["model"], expected_sha256=card["model"]["sha256"])
    assert len(model.named_steps["model"].estimators_) == 2


def test_run_without_split_output_names_split_task(tmp_path, model_params_file) -> None:
    with pytest.raises(io.MissingArtifactError, match="'split' task") as info:
        train.run("2024-03-10", root=tmp_path, params_file=model_params_file)
    assert info.value.path.name == "train.parquet"


def test_monotonic_constraints_follow_the_schema(feature_frame_factory) -> None:
    booster = train.build_pipeline(FAST).steps[-1][1]
    columns = schema.CATEGORICAL_FEATURES + schema.NUMERIC_FEATURES
    constraints = dict(zip(columns, booster.monotonic_cst, strict=True))
    assert constraints["precip"] == 1 and constraints["visib"] == -1
    assert constraints["past_flight_delay"] == 1 and constraints["carrier"] == 0
    assert {name for name, sign in constraints.items() if sign} == set(schema.MONOTONIC_FEATURES)
    # Fitted: more rain never lowers a prediction, all else equal.
    model = train.fit_model(feature_frame_factory(400, seed=11), FAST)
    row = feature_frame_factory(1, seed=12)
    rainier = pd.concat([row.assign(precip=p) for p in (0.0, 0.05, 0.2, 1.0)], ignore_index=True)
    assert np.all(np.diff(fitted.predict(model, rainier)) >= 0)


def test_a_feature_without_any_value_is_ignored_with_a_warning(
    feature_frame_factory, caplog
) -> None:
    frame = feature_frame_factory(200, seed=13).assign(past_flight_delay=np.nan)
    before = frame.copy()
    with caplog.at_level("WARNING", logger="flight_delays.train"):
        model = train.fit_model(frame, FAST)
    assert "past_flight_delay" in caplog.text
    pd.testing.assert_frame_equal(frame, before)
    holdout = feature_frame_factory(20, seed=14)
    varied = holdout.assign(past_flight_delay=np.linspace(-50, 50, 20))
    np.testing.assert_array_equal(
        fitted.predict(model, holdout.assign(past_flight_delay=np.nan)),
        fitted.predict(model, varied),
    )


# --- day bagging ------------------------------------------------------------------------


def _days_frame(n_days: int = 10, per_day: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    days = np.repeat(pd.date_range("2024-01-01", periods=n_days).to_numpy(), per_day)
    day_index = np.repeat(np.arange(n_days, dtype=float), per_day)
    X = np.column_stack([day_index, np.ones_like(day_index)])
    return X, 10.0 * day_index, days


def test_day_bagging_fits_each_model_on_whole_days_and_averages() -> None:
    X, y, days = _days_frame()
    bag = train.DayBaggedRegressor(RememberRows(), n_models=4, day_fraction=0.7, random_state=1)
    bag.fit(X, y, days=days)
    assert len(bag.estimators_) == 4
    seen = [set(model.seen_) for model in bag.estimators_]
    for model in bag.estimators_:
        assert len(set(model.seen_)) == 7  # 70 % of the 10 days
        assert len(model.seen_) == 7 * 4  # every flight of a chosen day, none of the others
    assert len({frozenset(days_seen) for days_seen in seen}) > 1  # the models differ
    expected = np.mean([model.mean_ for model in bag.estimators_])
    np.testing.assert_allclose(bag.predict(X[:3]), expected)
    again = train.DayBaggedRegressor(RememberRows(), n_models=4, day_fraction=0.7, random_state=1)
    assert [set(m.seen_) for m in again.fit(X, y, days=days).estimators_] == seen


def test_day_bagging_refuses_bad_settings_and_missing_days() -> None:
    X, y, days = _days_frame()
    with pytest.raises(ValueError, match="days"):
        train.DayBaggedRegressor(RememberRows()).fit(X, y)
    with pytest.raises(ValueError, match="day_fraction"):
        train.DayBaggedRegressor(RememberRows(), day_fraction=0.0).fit(X, y, days=days)
    with pytest.raises(ValueError, match="n_models"):
        train.DayBaggedRegressor(RememberRows(), n_models=0).fit(X, y, days=days)


def test_fit_model_with_bagging_averages_boosters(feature_frame_factory) -> None:
    frame = feature_frame_factory(300, seed=21)
    model = train.fit_model(frame, BAGGED)
    bag = model.named_steps["model"]
    assert isinstance(bag, train.DayBaggedRegressor)
    assert len(bag.estimators_) == 3
    assert all(isinstance(b, HistGradientBoostingRegressor) for b in bag.estimators_)
    assert all(b.max_features == 0.5 for b in bag.estimators_)
    pred = fitted.predict(model, frame)
    encoded = model.named_steps["features"].transform(frame[schema.FEATURES])
    np.testing.assert_allclose(pred, np.mean([b.predict(encoded) for b in bag.estimators_], 0))
    with pytest.raises(ValueError, match="local_date"):
        train.fit_model(frame.drop(columns=[schema.DAY]), BAGGED)


class RecordThreads(RememberRows):
    """RememberRows that also records the fitting thread and its OpenMP thread count."""

    def fit(self, X, y):
        import threading

        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        self.thread_ = threading.get_ident()
        self.openmp_threads_ = _openmp_effective_n_threads()
        return super().fit(X, y)


def test_parallel_and_serial_bagging_fit_the_same_models(feature_frame_factory) -> None:
    frame = feature_frame_factory(300, seed=22)
    models = {}
    for n_jobs in (1, 2):
        pipeline = train.build_pipeline(BAGGED)
        pipeline.set_params(model__n_jobs=n_jobs)
        models[n_jobs] = pipeline.fit(
            frame[schema.FEATURES], frame[schema.TARGET], model__days=frame[schema.DAY]
        )
    holdout = feature_frame_factory(60, seed=23)
    np.testing.assert_array_equal(
        fitted.predict(models[1], holdout), fitted.predict(models[2], holdout)
    )
    # Booster k saw the same days and the same seed in both fits.
    for serial, parallel in zip(
        models[1].named_steps["model"].estimators_,
        models[2].named_steps["model"].estimators_,
        strict=True,
    ):
        assert serial.random_state == parallel.random_state
        assert serial.n_iter_ == parallel.n_iter_


def test_parallel_bagging_uses_worker_threads_with_one_openmp_thread_each() -> None:
    import threading

    X, y, days = _days_frame()
    bag = train.DayBaggedRegressor(RecordThreads(), n_models=4, day_fraction=0.5, n_jobs=2)
    bag.fit(X, y, days=days)
    threads = {model.thread_ for model in bag.estimators_}
    assert threading.get_ident() not in threads and 1 <= len(threads) <= 2
    assert {model.openmp_threads_ for model in bag.estimators_} == {1}
    serial = train.DayBaggedRegressor(RecordThreads(), n_models=2, n_jobs=1).fit(X, y, days=days)
    assert {model.thread_ for model in serial.estimators_} == {threading.get_ident()}


def test_fit_model_fits_boosters_on_the_allowed_threads(feature_frame_factory, monkeypatch) -> None:
    monkeypatch.setenv(fitted.ENV_THREADS, "2")
    assert train.build_pipeline(BAGGED).named_steps["model"].n_jobs == 2
    monkeypatch.setenv(fitted.ENV_THREADS, "1")
    assert train.build_pipeline(BAGGED).named_steps["model"].n_jobs == 1


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True])
def test_day_bagging_refuses_a_bad_number_of_jobs(n_jobs) -> None:
    X, y, days = _days_frame()
    with pytest.raises(ValueError, match="n_jobs must be an integer >= 1"):
        train.DayBaggedRegressor(RememberRows(), n_jobs=n_jobs).fit(X, y, days=days)


def _booster_on_pipeline_columns(**params) -> HistGradientBoostingRegressor:
    booster = train.build_pipeline(replace(FAST, min_samples_leaf=50)).steps[-1][1]
    return booster.set_params(**{"random_state": 11, **params})


@pytest.mark.parametrize("early_stopping", ["auto", True])
def test_fit_rows_splits_as_the_booster_would_and_fits_the_same_model(
    feature_frame_factory, early_stopping
) -> None:
    # Over 11,112 rows: the booster holds out 10 % for early stopping itself. fit_rows
    # makes that split outside (to hold one copy of the rows less) and must give the
    # very model fitting on the rows would give.
    frame = feature_frame_factory(14_000, seed=5)
    X = train.build_pipeline(FAST).steps[0][1].fit_transform(frame[schema.FEATURES])
    y = frame[schema.TARGET].to_numpy(dtype=float)
    rows = np.flatnonzero(np.random.default_rng(0).random(len(y)) < 0.9)
    booster = _booster_on_pipeline_columns(early_stopping=early_stopping)
    assert train._own_validation_split(booster, len(rows)) is not None  # the split path
    ours = train.fit_rows(booster, X, y, rows)
    theirs = _booster_on_pipeline_columns(early_stopping=early_stopping).fit(X[rows], y[rows])
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.validation_score_, theirs.validation_score_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_fit_rows_leaves_the_split_to_the_booster_when_it_cannot_be_made_outside(
    feature_frame_factory,
) -> None:
    # 10,500 rows: "auto" stops early on them but would not on their 90 %; no random
    # state: the split cannot be repeated; no early stopping: no split at all.
    for booster, n in [
        (_booster_on_pipeline_columns(), 10_500),
        (_booster_on_pipeline_columns(random_state=None), 50_000),
        (_booster_on_pipeline_columns(early_stopping=False), 50_000),
        (LinearRegression(), 50_000),
    ]:
        assert train._own_validation_split(booster, n) is None
    frame = feature_frame_factory(300, seed=2)
    X, y = frame[["distance"]].to_numpy(), frame[schema.TARGET].to_numpy(dtype=float)
    fitted = train.fit_rows(RememberRows(), X, y, np.arange(0, 300, 3))
    np.testing.assert_array_equal(fitted.seen_, X[::3, 0])


def test_fit_model_fits_what_pipeline_fit_fits(feature_frame_factory) -> None:
    # fit_model fits the encoder and the model in two calls (to hand memory back in
    # between): the same fitted pipeline as Pipeline.fit of build_pipeline.
    frame = feature_frame_factory(400, seed=13)
    ours = train.fit_model(frame, BAGGED)
    theirs = train.build_pipeline(BAGGED).fit(
        frame[schema.FEATURES],
        frame[schema.TARGET].to_numpy(dtype=float),
        model__days=frame[schema.DAY].to_numpy(),
    )
    np.testing.assert_array_equal(fitted.predict(ours, frame), fitted.predict(theirs, frame))
    assert list(ours.feature_names_in_) == schema.FEATURES


def days_frame(rows_per_day: dict[str, int]) -> pd.DataFrame:
    """A frame with ``rows_per_day`` rows on each day (YYYY-MM-DD), rows numbered."""
    days = [pd.Timestamp(day) for day, n in rows_per_day.items() for _ in range(n)]
    return pd.DataFrame({schema.DAY: days, "row": range(len(days))})


def test_newest_days_keeps_whole_days_from_the_newest_within_the_bound() -> None:
    frame = days_frame({"2013-06-03": 3, "2013-06-01": 4, "2013-06-02": 5})  # any order
    kept, rows, days = train.newest_days(frame, 9)
    # 06-03 (3) and 06-02 (5) fit in 9; 06-01 would make 12.
    assert sorted(kept[schema.DAY].dt.day.unique()) == [2, 3]
    assert (len(kept), rows, days) == (8, 4, 1)
    assert kept["row"].tolist() == [0, 1, 2, 7, 8, 9, 10, 11]  # the rows as they were
    # The newest day is kept whole even when it alone is over the bound.
    alone, rows, days = train.newest_days(frame, 2)
    assert (alone[schema.DAY].dt.day.unique().tolist(), rows, days) == ([3], 9, 2)
    # Within the bound, or with none, the frame itself.
    for bound in (12, None):
        assert train.newest_days(frame, bound) == (frame, 0, 0)


def test_newest_days_over_the_bound_without_days_names_the_setting() -> None:
    frame = days_frame({"2013-06-01": 3}).drop(columns=[schema.DAY])
    with pytest.raises(ValueError, match=rf"over train.max_rows \(2\), and no '{schema.DAY}'"):
        train.newest_days(frame, 2)


@pytest.mark.parametrize("over", [0, 1])
def test_a_table_within_max_rows_is_read_once_and_whole(
    split_artifacts, caplog, monkeypatch, over: int
) -> None:
    # At the bound the table is read once, every row (its footer tells the count); one row
    # over, the day column first, then the newest days.
    art = split_artifacts
    rows = len(art["train"])
    params = yaml.safe_load(art["params_file"].read_text())
    params["train"]["max_rows"] = rows - over
    art["params_file"].write_text(yaml.safe_dump(params))
    reads, read = [], io.read_parquet

    def spy(path, artifact, columns=None, filters=None):
        reads.append((artifact.name, columns, filters is None))
        return read(path, artifact, columns=columns, filters=filters)

    monkeypatch.setattr(io, "read_parquet", spy)
    result = train.run(art["day"].isoformat(), root=art["root"], params_file=art["params_file"])
    card = json.loads(Path(result["model_card"]).read_text())
    if over:
        assert reads == [("train_table", [schema.DAY], True), ("train_table", None, False)]
        assert card["train_rows_left_out"]["rows"] > 0
        return
    assert reads == [("train_table", None, True)]
    assert result["train_rows"] == rows
    assert card["train_rows_left_out"] == {"max_rows": rows, "rows": 0, "days": 0}
    assert "left out" not in caplog.text


@pytest.mark.parametrize("over", [False, True])
def test_the_card_names_the_table_the_model_was_fitted_on_when_a_re_split_replaces_it(
    split_artifacts, monkeypatch, over: bool
) -> None:
    # A re-split writes the day's train table again while train runs: after the footer
    # (past train.max_rows, between the day column and the rows), or during the fit. The
    # model is fitted on the table as train found it, and its card names those bytes.
    art = split_artifacts
    found = art["train_path"].read_bytes()
    newest_day = art["train"][schema.DAY].max()
    if over:
        params = yaml.safe_load(art["params_file"].read_text())
        params["train"]["max_rows"] = len(art["train"]) - 1
        art["params_file"].write_text(yaml.safe_dump(params))
    read, fit = io.read_parquet, train.fit_encoded

    def re_split() -> None:
        io.write_parquet(art["train"][art["train"][schema.DAY] == newest_day], art["train_path"])

    def read_then_re_split(path, artifact, columns=None, filters=None):
        frame = read(path, artifact, columns=columns, filters=filters)
        re_split()
        return frame

    def re_split_then_fit(encoded):
        re_split()
        return fit(encoded)

    if over:
        monkeypatch.setattr(io, "read_parquet", read_then_re_split)
    monkeypatch.setattr(train, "fit_encoded", re_split_then_fit)
    result = train.run(art["day"].isoformat(), root=art["root"], params_file=art["params_file"])
    card = json.loads(Path(result["model_card"]).read_text())
    assert art["train_path"].read_bytes() != found
    assert card["inputs"]["train"]["sha256"] == hashlib.sha256(found).hexdigest()
    # Rows of the table as found: all of them, or all but its oldest day past the bound.
    oldest = (art["train"][schema.DAY] == art["train"][schema.DAY].min()).sum()
    assert result["train_rows"] == len(art["train"]) - (oldest if over else 0)


def test_the_train_step_leaves_the_oldest_days_out_past_max_rows_and_says_so(
    split_artifacts, caplog
) -> None:
    art = split_artifacts
    params = yaml.safe_load(art["params_file"].read_text())
    per_day = art["train"][schema.DAY].value_counts().sort_index(ascending=False)
    bound = int(per_day.iloc[:3].sum())  # the newest three days, exactly
    params["train"]["max_rows"] = bound
    art["params_file"].write_text(yaml.safe_dump(params))
    result = train.run(art["day"].isoformat(), root=art["root"], params_file=art["params_file"])
    card = json.loads(Path(result["model_card"]).read_text())
    assert result["train_rows"] == card["train_rows"] == bound
    assert card["train_rows_left_out"] == {
        "max_rows": bound,
        "rows": len(art["train"]) - bound,
        "days": len(per_day) - 3,
    }
    assert card["train_window"] == {"first_day": "2024-03-05", "last_day": "2024-03-07"}
    assert f"left out: the table is over train.max_rows ({bound} rows)" in caplog.text
