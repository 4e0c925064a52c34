"""flight_delays.score: the pure scorer, unseen categories, and the file wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flight_delays import io, schema, score, train
from flight_delays.scoring import OriginHourMedianBaseline


def test_score_predictions_metrics_and_frame(feature_frame_factory) -> None:
    holdout = feature_frame_factory(4, seed=7)
    holdout[schema.TARGET] = [0.0, 10.0, 20.0, 30.0]
    before = holdout.copy()
    model_pred = [5.0, 10.0, 40.0, 26.0]  # MAE 7.25
    baseline_pred = np.full(4, 15.0)  # MAE 10
    champion_pred = [0.0, 10.0, 20.0, 38.0]  # MAE 2

    metrics, predictions = score.score_predictions(
        holdout,
        {"model": model_pred, "champion": champion_pred, "baseline": baseline_pred},
        5.0,
    )

    assert metrics["model"]["mae"] == pytest.approx(7.25)
    assert metrics["baseline"]["mae"] == pytest.approx(10.0)
    assert metrics["champion"]["mae"] == pytest.approx(2.0)
    assert metrics["model"]["share_within"] == pytest.approx(0.75)
    assert list(predictions.columns) == score.PREDICTION_COLUMNS
    np.testing.assert_array_equal(predictions["actual"], holdout[schema.TARGET])
    np.testing.assert_array_equal(predictions["predicted"], model_pred)
    np.testing.assert_array_equal(predictions["baseline"], baseline_pred)
    np.testing.assert_array_equal(predictions["champion"], champion_pred)
    pd.testing.assert_frame_equal(holdout, before)


def test_score_predictions_rejects_misaligned_and_incomplete_input(feature_frame_factory) -> None:
    holdout = feature_frame_factory(5, seed=8)
    five = {"model": np.zeros(5), "champion": np.zeros(5), "baseline": np.zeros(5)}
    with pytest.raises(ValueError, match="model predictions have 4 values for 5 holdout rows"):
        score.score_predictions(holdout, {**five, "model": np.zeros(4)}, 15.0)
    with pytest.raises(ValueError, match=r"holdout is missing column.*sched_dep_time"):
        score.score_predictions(holdout.drop(columns="sched_dep_time"), five, 15)
    with pytest.raises(ValueError, match="predictions must be given for"):
        score.score_predictions(holdout, {"model": np.zeros(5)}, 15)


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


def test_run_writes_metrics_matching_an_independent_recomputation(split_artifacts) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params)

    result = score.run(day.isoformat(), root=root, params_file=params)

    out = art["settings"].paths.output(day)
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
    assert list(predictions.columns) == score.PREDICTION_COLUMNS

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


def test_run_refuses_a_model_file_changed_after_training(split_artifacts) -> None:
    art = split_artifacts
    trained = train.run(art["day"], root=art["root"], params_file=art["params_file"])
    Path(trained["model"]).write_bytes(Path(trained["model"]).read_bytes() + b"\0")
    with pytest.raises(train.UntrustedModelError, match="changed after training"):
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


def test_first_run_is_compared_with_the_baseline_champion_and_recorded(split_artifacts) -> None:
    from flight_delays import registry

    art = split_artifacts
    train.run(art["day"], root=art["root"], params_file=art["params_file"])
    result = score.run(art["day"], root=art["root"], params_file=art["params_file"])
    metrics = json.loads(Path(result["metrics"]).read_text())

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


def _promote_current_model(art) -> Path:
    """Run train + score with a promotion margin of 0, so the fixture's model wins."""
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["score"]["promotion_margin"] = 0.0
    params.write_text(yaml.safe_dump(values))
    train.run(art["day"], root=art["root"], params_file=params)
    metrics = score.run(art["day"], root=art["root"], params_file=params)
    assert metrics["decision"] == "promoted", "the fixture's model should beat the baseline"
    return art["settings"].paths.model_store


def test_a_rerun_of_the_same_day_keeps_the_champion_and_scores_it(split_artifacts) -> None:
    art = split_artifacts
    _promote_current_model(art)
    again = score.run(art["day"], root=art["root"], params_file=art["params_file"])
    metrics = json.loads(Path(again["metrics"]).read_text())
    assert again["decision"] == "kept"
    assert metrics["champion_info"]["kind"] == "model"
    assert metrics["champion"]["mae"] == pytest.approx(metrics["model"]["mae"])  # same model
    assert "never replaces a newer one" in metrics["decision"]["reason"]


def test_a_champion_file_that_differs_from_the_registry_is_refused(split_artifacts) -> None:
    art = split_artifacts
    store = _promote_current_model(art)
    (stored,) = store.glob("*.skops")
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(train.UntrustedModelError, match="changed after training"):
        score.run(art["day"], root=art["root"], params_file=art["params_file"])
