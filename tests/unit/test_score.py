"""flight_delays.score: unseen categories and the step (the pure judging core is
tested in test_evaluation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flight_delays import score, train
from flight_delays.base import schema
from flight_delays.model import evaluation, fitted
from flight_delays.model.scoring import OriginHourMedianBaseline
from flight_delays.store import artifacts, io
from flight_delays.store.config import TrainSettings

FAST_TRAIN = TrainSettings(max_iter=10, min_samples_leaf=5, bagging_models=1)


def test_unseen_categories_counts_values_and_rows() -> None:
    train_frame = pd.DataFrame({"carrier": ["AA", "B6"], "dest": ["BOS", "ATL"]})
    holdout = pd.DataFrame(
        {"carrier": ["AA", "NK", "NK", None], "dest": ["SFO", "LAX", "BOS", "BOS"]}
    )
    got = score.unseen_categories(train_frame, holdout, ["carrier", "dest"])
    assert got == {
        "carrier": {"values": 1, "rows": 2, "examples": ["NK"]},
        "dest": {"values": 2, "rows": 2, "examples": ["LAX", "SFO"]},
    }


@pytest.mark.parametrize("dtype", ["str", "string", "category", object])
def test_unseen_categories_are_plain_strings_for_every_column_dtype(dtype) -> None:
    # The metrics artifact is JSON: the examples must be str whatever the frame's dtype
    # (the warehouse's Arrow strings, a categorical, plain objects).
    train_frame = pd.DataFrame({"dest": pd.Series(["BOS", "ATL", None], dtype=dtype)})
    holdout = pd.DataFrame({"dest": pd.Series(["SFO", "BOS", "SFO", None, "LAX"], dtype=dtype)})
    got = score.unseen_categories(train_frame, holdout, ["dest"])
    assert got == {"dest": {"values": 2, "rows": 3, "examples": ["LAX", "SFO"]}}
    assert all(type(value) is str for value in got["dest"]["examples"])
    json.dumps(got)


def test_run_writes_metrics_matching_an_independent_recomputation(split_artifacts) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params)

    result = score.run(day.isoformat(), root=root, params_file=params)

    out = artifacts.OUTPUT.path(art["settings"].paths.root, day)
    assert result["metrics"] == str(out / "metrics.json")
    assert result["predictions"] == str(out / "predictions.parquet")
    metrics = json.loads(Path(result["metrics"]).read_text())
    predictions = pd.read_parquet(result["predictions"])
    holdout = art["holdout"]

    # Recompute by hand from the written predictions, without the scoring module.
    model_mae = float(np.mean(np.abs(predictions["predicted"] - predictions["actual"])))
    baseline_mae = float(np.mean(np.abs(predictions["baseline"] - predictions["actual"])))
    assert metrics["model"]["mae"] == pytest.approx(model_mae, rel=1e-12)
    assert metrics["baseline"]["mae"] == pytest.approx(baseline_mae, rel=1e-12)
    assert result["model_mae"] == pytest.approx(model_mae, rel=1e-12)
    assert result["baseline_mae"] == pytest.approx(baseline_mae, rel=1e-12)

    # The baseline column is the origin x hour median learned on train.parquet.
    expected_baseline = OriginHourMedianBaseline().fit(art["train"]).predict(holdout)
    np.testing.assert_allclose(predictions["baseline"], expected_baseline)
    np.testing.assert_array_equal(predictions["actual"], holdout[schema.TARGET])
    assert list(predictions.columns) == evaluation.PREDICTION_COLUMNS

    assert metrics["day"] == "2024-03-10"
    assert metrics["units"] == "minutes"
    assert metrics["holdout_rows"] == len(holdout) == metrics["model"]["n"]
    assert (metrics["holdout_start"], metrics["holdout_end"]) == ("2024-03-08", "2024-03-10")
    # The fixture's holdout has dest SFO on 5 rows and carrier NK on 2, unseen in training.
    assert metrics["unseen_categories"]["dest"] == {"values": 1, "rows": 5, "examples": ["SFO"]}
    assert metrics["unseen_categories"]["carrier"] == {"values": 1, "rows": 2, "examples": ["NK"]}
    assert metrics["unseen_categories"]["origin"]["values"] == 0
    assert sum(metrics["baseline_fallbacks"].values()) == len(holdout)
    assert np.isfinite(predictions["predicted"]).all()
    # What the data contract kept out of the window, from featurize's counts.
    assert metrics["data_quality"] == {"quarantined_rows": 3, "failed_contract": 0}
    # Input drift: the fixture's day has about 50 flights, below drift.min_rows (300):
    # not measured, said so, and nothing flagged.
    day_rows = int((pd.to_datetime(holdout[schema.DAY]).dt.date == day).sum())
    drift = metrics["drift"]
    assert drift["statistic"] == "psi" and (drift["warn"], drift["alert"]) == (0.1, 0.25)
    assert drift["skipped"] == (
        f"too few flights to measure drift: the day has {day_rows} rows, fewer than "
        "drift.min_rows = 300"
    )
    assert drift["flagged"] == [] and drift["max"] is None
    assert set(drift["features"]) == set(schema.FEATURES)
    assert result["drift"] == {
        "flagged": [],
        "max": None,
        "alert": drift["alert"],
        "skipped": drift["skipped"],
    }


def test_run_refuses_a_model_file_changed_after_training(split_artifacts) -> None:
    art = split_artifacts
    trained = train.run(art["day"], root=art["root"], params_file=art["params_file"])
    Path(trained["model"]).write_bytes(Path(trained["model"]).read_bytes() + b"\0")
    with pytest.raises(fitted.UntrustedModelError, match="changed after training"):
        score.run(art["day"], root=art["root"], params_file=art["params_file"])


def test_run_missing_model_names_train_task(split_artifacts) -> None:
    art = split_artifacts
    with pytest.raises(io.MissingArtifactError, match="'train' task"):
        score.run(art["day"], root=art["root"], params_file=art["params_file"])


def test_run_missing_holdout_names_split_task(split_artifacts) -> None:
    art = split_artifacts
    train.run(art["day"], root=art["root"], params_file=art["params_file"])
    art["holdout_path"].unlink()
    with pytest.raises(io.MissingArtifactError, match="'split' task") as info:
        score.run(art["day"], root=art["root"], params_file=art["params_file"])
    assert info.value.path.name == "holdout.parquet"


def test_first_run_is_compared_with_the_baseline_champion_and_recorded(
    split_artifacts, caplog
) -> None:
    from flight_delays.store import registry

    art = split_artifacts
    train.run(art["day"], root=art["root"], params_file=art["params_file"])
    with caplog.at_level("INFO", logger="flight_delays.score"):
        result = score.run(art["day"], root=art["root"], params_file=art["params_file"])
    metrics = json.loads(Path(result["metrics"]).read_text())
    # The log says the decision and why, as the registry records it.
    assert f"{result['decision']} ({metrics['decision']['reason']})" in caplog.text

    assert metrics["champion"] == metrics["baseline"]
    assert metrics["champion_info"]["kind"] == "baseline"
    promoted = metrics["model"]["mae"] <= metrics["baseline"]["mae"] * 0.99
    assert metrics["decision"]["promoted"] is promoted
    assert "baseline" in metrics["decision"]["reason"]

    engine = registry.connect(art["settings"].registry_url)
    runs = registry.history(engine)
    assert len(runs) == 1
    assert runs.loc[0, "challenger_mae"] == pytest.approx(metrics["model"]["mae"])
    assert runs.loc[0, "decision"] == result["decision"]
    champion = registry.current_champion(engine)
    assert (champion.kind == "model") is promoted


def _margin(art, margin: float) -> Path:
    """Set score.promotion_margin in the fixture's params file; returns the file."""
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["score"]["promotion_margin"] = margin
    params.write_text(yaml.safe_dump(values))
    return params


def _promote_current_model(art, run_id: str = "scheduled__2024-03-11") -> Path:
    """Run train + score with a promotion margin of 0, so the fixture's model wins."""
    params = _margin(art, 0.0)
    train.run(art["day"], root=art["root"], params_file=params, run_id=run_id)
    metrics = score.run(art["day"], root=art["root"], params_file=params, run_id=run_id)
    assert metrics["decision"] == "promoted", "the fixture's model should beat the baseline"
    return artifacts.MODEL_STORE.path(art["settings"].paths.root)


def _registry(art):
    from flight_delays.store import registry

    return registry.connect(art["settings"].registry_url)


def test_a_rerun_of_a_promoted_day_is_a_run_of_its_own_and_demotes_nothing(
    split_artifacts,
) -> None:
    art = split_artifacts
    _promote_current_model(art, run_id="scheduled__2024-03-11")
    engine = _registry(art)
    before = score.registry.current_champion(engine)
    assert before.run_id == "scheduled__2024-03-11"

    train.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="manual__re")
    again = score.run(
        art["day"], root=art["root"], params_file=art["params_file"], run_id="manual__re"
    )

    assert again["decision"] == "kept"
    metrics = json.loads(Path(again["metrics"]).read_text())
    assert metrics["run_id"] == "manual__re"
    assert metrics["challenger"]["run_id"] == "manual__re"
    assert metrics["champion_info"]["run_id"] == "scheduled__2024-03-11"
    assert "same day 2024-03-10 by an earlier run" in metrics["decision"]["reason"]
    runs = score.registry.history(engine).set_index("run_id")
    assert list(runs.index) == ["scheduled__2024-03-11", "manual__re"]  # one row per run
    assert runs.loc["scheduled__2024-03-11", "decision"] == "promoted"  # not "kept over"
    assert runs.loc["manual__re", "decision"] == "kept"
    assert score.registry.current_champion(engine) == before  # not demoted, not bumped
    engine.dispose()


def test_a_retry_after_the_commit_finds_its_row_and_rewrites_nothing(
    split_artifacts, monkeypatch
) -> None:
    art = split_artifacts
    paths = art["settings"].paths
    params = _margin(art, 0.0)
    run_id = "scheduled__2024-03-11"
    train.run(art["day"], root=art["root"], params_file=params, run_id=run_id)

    def killed_after_commit(settings, row):
        raise SystemExit("killed after the registry commit")

    monkeypatch.setattr(score, "_publish", killed_after_commit)
    with pytest.raises(SystemExit):
        score.run(art["day"], root=art["root"], params_file=params, run_id=run_id)
    monkeypatch.undo()
    assert not artifacts.METRICS.path(paths.root, art["day"]).exists()
    engine = _registry(art)
    champion = score.registry.current_champion(engine)
    assert champion.run_id == run_id  # the first attempt's promotion was committed

    # A new scoring would now keep the champion (a 99 % margin, and the champion is
    # this day's own model): the retry must return the recorded decision instead.
    params = _margin(art, 0.99)
    retried = score.run(art["day"], root=art["root"], params_file=params, run_id=run_id)

    assert retried["decision"] == "promoted"
    runs = score.registry.history(engine)
    assert len(runs) == 1 and runs.loc[0, "run_id"] == run_id
    assert score.registry.current_champion(engine) == champion
    metrics = json.loads(artifacts.METRICS.path(paths.root, art["day"]).read_text())
    assert metrics["decision"]["promoted"] is True
    assert metrics["decision"]["registry_id"] == int(runs.loc[0, "id"])
    assert metrics["decision"]["margin"] == 0.0  # the recorded settings, not the new ones
    assert json.loads(runs.loc[0, "report_json"])["model"] == metrics["model"]
    assert artifacts.DAY_MODEL_CARD.path(paths.root, art["day"]).read_bytes() == (
        artifacts.RUN_MODEL_CARD.path(paths.root, art["day"], run_id).read_bytes()
    )
    engine.dispose()


def test_a_retry_leaves_a_later_run_of_the_day_published(split_artifacts, monkeypatch) -> None:
    art = split_artifacts
    paths = art["settings"].paths
    kw = {"root": art["root"], "params_file": art["params_file"]}
    train.run(art["day"], run_id="run-a", **kw)
    monkeypatch.setattr(score, "_publish", lambda settings, row: (_ for _ in ()).throw(SystemExit))
    with pytest.raises(SystemExit):
        score.run(art["day"], run_id="run-a", **kw)
    monkeypatch.undo()
    train.run(art["day"], run_id="run-b", **kw)
    score.run(art["day"], run_id="run-b", **kw)
    published = artifacts.METRICS.path(paths.root, art["day"]).read_text()

    score.run(art["day"], run_id="run-a", **kw)  # run a's retry, after run b finished

    assert artifacts.METRICS.path(paths.root, art["day"]).read_text() == published
    assert json.loads(published)["run_id"] == "run-b"
    engine = _registry(art)
    assert sorted(score.registry.history(engine)["run_id"]) == ["run-a", "run-b"]
    engine.dispose()


def test_two_runs_of_a_day_train_into_their_own_folders(split_artifacts) -> None:
    art = split_artifacts
    paths = art["settings"].paths
    kw = {"root": art["root"], "params_file": art["params_file"]}
    first = train.run(art["day"], run_id="scheduled__2024-03-11T07:00:00+00:00", **kw)
    second = train.run(art["day"], run_id="manual__2024-03-12T09:30:00+00:00", **kw)
    assert Path(first["model"]).parent != Path(second["model"]).parent
    assert Path(first["model"]).parent == artifacts.RUN_MODEL_DIR.path(
        paths.root, art["day"], first["run_id"]
    )
    assert Path(first["model"]).parent.parent == artifacts.MODEL_DAY.path(paths.root, art["day"])
    assert Path(first["model"]).is_file() and Path(second["model"]).is_file()

    result = score.run(art["day"], run_id=first["run_id"], **kw)
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["challenger"]["run_id"] == first["run_id"]
    assert metrics["model_sha256"] == first["model_sha256"] == io.sha256(first["model"])


def test_a_tampered_model_with_a_matching_tampered_card_is_refused(split_artifacts) -> None:
    art = split_artifacts
    paths = art["settings"].paths
    kw = {"root": art["root"], "params_file": art["params_file"]}
    trained = train.run(art["day"], run_id="scheduled__2024-03-11", **kw)
    original_card = Path(trained["model_card"]).read_bytes()
    # Whoever can write the model folder swaps the model and makes the card agree.
    other = train.fit_model(art["train"].sample(frac=0.5, random_state=1), FAST_TRAIN)
    fitted.save_model(other, trained["model"])
    card = json.loads(original_card)
    card["model"]["sha256"] = io.sha256(trained["model"])
    Path(trained["model_card"]).write_text(json.dumps(card))

    with pytest.raises(fitted.UntrustedModelError, match="card was changed after training"):
        score.run(art["day"], run_id="scheduled__2024-03-11", **kw)
    # With the card put back, the swapped model is refused on its own hash.
    Path(trained["model_card"]).write_bytes(original_card)
    with pytest.raises(fitted.UntrustedModelError, match="the file was changed after training"):
        score.run(art["day"], run_id="scheduled__2024-03-11", **kw)
    assert not artifacts.METRICS.path(paths.root, art["day"]).exists()
    engine = _registry(art)
    assert score.registry.history(engine).empty  # nothing recorded
    engine.dispose()


def test_a_champion_file_that_differs_from_the_registry_is_refused(split_artifacts) -> None:
    art = split_artifacts
    store = _promote_current_model(art)
    (stored,) = store.glob("*.skops")
    stored.write_bytes(stored.read_bytes() + b"tampered")
    train.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="again")
    with pytest.raises(fitted.UntrustedModelError, match="changed after training"):
        score.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="again")


def test_a_champion_trained_on_a_feature_gone_since_is_retired_for_the_holdout(
    split_artifacts, monkeypatch, caplog
) -> None:
    """The champion model names a feature the pipeline no longer builds: score compares
    the challenger with the baseline instead, says so, and leaves the registry's champion
    to the promotion rule (as predict retires it for the day it serves)."""
    art = split_artifacts
    store = _promote_current_model(art)
    real_load = fitted.load_model

    class OldChampion:
        feature_names_in_ = (*schema.FEATURES, "taxi_out_minutes")

        def predict(self, frame):  # pragma: no cover - never reached: it is retired
            raise AssertionError("a retired champion must not predict")

    def load(path, expected_sha256=None):
        model = real_load(path, expected_sha256=expected_sha256)
        return OldChampion() if Path(str(path)).parent == store else model

    monkeypatch.setattr(fitted, "load_model", load)
    train.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="again")
    with caplog.at_level("WARNING", logger="flight_delays.score"):
        result = score.run(
            art["day"], root=art["root"], params_file=art["params_file"], run_id="again"
        )
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["champion_info"]["kind"] == "baseline"
    assert (
        "retired: trained on feature(s) the pipeline no longer has: taxi_out_minutes"
        in (metrics["champion_info"]["name"])
    )
    assert metrics["champion"] == metrics["baseline"]
    assert "cannot score this holdout" in caplog.text


def test_a_champion_that_fails_for_another_reason_fails_the_score(
    split_artifacts, monkeypatch
) -> None:
    """Only a changed feature set retires a champion: any other error fails the task
    and records nothing (no row for the run)."""
    art = split_artifacts
    _promote_current_model(art)
    train.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="again")
    real_predict = fitted.predict
    calls = []

    def predict(model, frame):
        calls.append(model)
        if len(calls) > 1:  # the challenger predicts first, then the champion
            raise ValueError("Input X contains infinity")
        return real_predict(model, frame)

    monkeypatch.setattr(fitted, "predict", predict)
    with pytest.raises(ValueError, match="contains infinity"):
        score.run(art["day"], root=art["root"], params_file=art["params_file"], run_id="again")
    engine = _registry(art)
    try:
        from flight_delays.store import registry

        assert registry.recorded_run(engine, art["day"], "again") is None
    finally:
        engine.dispose()


def test_a_decayed_champion_steps_down_to_the_baseline(split_artifacts, tmp_path) -> None:
    """The champion (a model of a week earlier, fitted when delays ran 2 hours longer)
    loses to the baseline on this holdout by far more than the margin, and this run's
    challenger (one tiny boosting round: about a constant) does not beat the baseline:
    the baseline becomes champion again, recorded as a move with its reason."""
    from datetime import timedelta

    from flight_delays.store import registry

    art = split_artifacts
    day, settings = art["day"], art["settings"]
    engine = _registry(art)
    # The old champion, trained on a regime that no longer holds.
    train_frame = pd.read_parquet(
        artifacts.PROCESSED.path(settings.paths.root, day) / "train.parquet"
    )
    shifted = train_frame.assign(**{schema.TARGET: train_frame[schema.TARGET] + 120.0})
    old = fitted.save_model(train.fit_model(shifted, FAST_TRAIN), tmp_path / "old.skops")
    sha = io.sha256(old)
    stored = registry.store_model(old, sha, settings.paths.root)
    old_day = day - timedelta(days=7)
    row = {
        "processed_day": old_day,
        "run_id": "scheduled__old",
        "window_start": old_day - timedelta(days=9),
        "window_end": old_day,
        "holdout_start": old_day - timedelta(days=2),
        "holdout_end": old_day,
        "holdout_rows": 100,
        "model_path": str(stored),
        "model_sha256": sha,
        "challenger_mae": 10.0,
        "champion_mae": 20.0,
        "baseline_mae": 20.0,
        "champion_kind": "baseline",
        "champion_day": None,
        "metrics_json": "{}",
        "decision": "promoted",
        "reason": "promoted in an earlier week",
    }
    assert registry.record_run(engine, row, True, 0) is not None
    # A challenger that cannot beat the baseline.
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["train"].update(max_iter=1, learning_rate=0.01)
    params.write_text(yaml.safe_dump(values))

    train.run(day, root=art["root"], params_file=params, run_id="scheduled__now")
    result = score.run(day, root=art["root"], params_file=params, run_id="scheduled__now")

    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["model"]["mae"] >= metrics["baseline"]["mae"], "precondition: weak challenger"
    assert metrics["champion"]["mae"] > metrics["baseline"]["mae"] * 1.01
    assert result["decision"] == "stepped down"
    assert metrics["decision"]["stepped_down"] is True and metrics["decision"]["promoted"] is False
    assert f"model of {old_day.isoformat()}" in metrics["decision"]["reason"]
    assert "decayed" in metrics["decision"]["reason"]
    champion = registry.current_champion(engine)
    assert champion.kind == "baseline" and champion.version == 2
    moves = registry.champion_moves(engine)
    last = moves.iloc[-1]
    assert (last["kind"], last["previous_day"]) == ("step_down", old_day)
    assert last["champion_day"] is None or pd.isna(last["champion_day"])
    assert registry.history(engine).iloc[-1]["decision"] == "stepped down"
    # A retried score of the same run changes nothing more.
    again = score.run(day, root=art["root"], params_file=params, run_id="scheduled__now")
    assert again["decision"] == "stepped down"
    assert registry.current_champion(engine).version == 2
    assert len(registry.champion_moves(engine)) == len(moves)
    engine.dispose()


def test_drift_is_measured_recorded_once_per_run_and_returned(split_artifacts) -> None:
    art = split_artifacts
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["drift"] = {"min_rows": 20}
    params.write_text(yaml.safe_dump(values))
    run_id = "scheduled__2024-03-11"
    train.run(art["day"], root=art["root"], params_file=params, run_id=run_id)

    result = score.run(art["day"], root=art["root"], params_file=params, run_id=run_id)
    again = score.run(art["day"], root=art["root"], params_file=params, run_id=run_id)

    metrics = json.loads(Path(result["metrics"]).read_text())
    drift = metrics["drift"]
    assert drift["skipped"] is None
    assert all(value is not None for value in drift["features"].values())
    # The holdout's day holds an unseen destination and carrier: a shift of its own.
    assert drift["max"]["psi"] == max(drift["features"][f] for f in drift["watched"])
    assert (
        result["drift"]
        == again["drift"]
        == {
            "flagged": drift["flagged"],
            "max": drift["max"],
            "alert": drift["alert"],
            "skipped": None,
        }
    )
    engine = _registry(art)
    rows = score.registry.drift_scores(engine, art["day"], run_id)
    engine.dispose()
    assert len(rows) == len(schema.FEATURES)  # one set, though the task ran twice
    stored = dict(zip(rows["feature"], rows["psi"], strict=True))
    assert stored == pytest.approx(drift["features"])
    assert set(rows.loc[rows["flagged"], "feature"]) == set(drift["flagged"])
