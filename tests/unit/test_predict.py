"""flight_delays.predict and flight_delays.model.serving: every scheduled flight of a day gets
the champion's prediction, idempotently, without reading the day's outcomes; the nightly
run scores what was served."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flight_delays import cli, featurize, ingest, predict
from flight_delays.base import schema
from flight_delays.intake import contracts, raw_partitions
from flight_delays.model import fitted, history, serving
from flight_delays.store import artifacts, registry
from flight_delays.store.config import PARAMS_RELATIVE, SplitSettings, load_settings

SEEDED = (date(2013, 3, 20), date(2013, 4, 2))
TRAINED = date(2013, 3, 31)  # the nightly run that trains the champion
DAY = date(2013, 4, 1)  # the day predicted, then scored by its own nightly run
PARAMS = {
    "ingest": {"window_days": 8},
    "split": {"holdout_days": 2, "recent_days": 2, "history_days": 4},
    "train": {"max_iter": 20, "learning_rate": 0.2, "min_samples_leaf": 20, "bagging_models": 1},
    "score": {"promotion_margin": 0.0},
}


@pytest.fixture(scope="module")
def warehouse(seeded_warehouse) -> Path:
    return seeded_warehouse(*SEEDED)


@pytest.fixture
def project(warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root on a copy of the seeded warehouse (the embedded default source)."""
    root = tmp_path / "project"
    (root / "include").mkdir(parents=True)
    (root / PARAMS_RELATIVE).write_text(yaml.safe_dump(PARAMS))
    db = artifacts.SOURCE_DB.path(root)
    db.parent.mkdir(parents=True)
    db.write_bytes(warehouse.read_bytes())
    monkeypatch.delenv("FLIGHT_DELAYS_SOURCE_URL", raising=False)
    return root


def _scheduled(root: Path, day: date) -> int:
    with sqlite3.connect(artifacts.SOURCE_DB.path(root)) as conn:
        return conn.execute(
            "select count(*) from flights where local_date = ?", (day.isoformat(),)
        ).fetchone()[0]


def _engine(root: Path):
    return registry.connect(load_settings(root).registry_url)


def test_the_baseline_champion_predicts_every_scheduled_flight_once(project: Path) -> None:
    result = predict.run(DAY, root=project, run_id="scheduled__a")

    scheduled = _scheduled(project, DAY)
    assert scheduled > 500  # a real weekday of the three New York airports
    frame = pd.read_parquet(result["predictions"])
    assert result["rows"] == len(frame) == scheduled  # cancelled flights too
    assert Path(result["predictions"]) == artifacts.SERVED_PREDICTIONS.path(project, DAY)
    assert result["champion"] == "baseline" and result["model_sha256"] is None
    np.testing.assert_array_equal(frame["predicted_arr_delay"], frame["baseline_arr_delay"])
    assert np.isfinite(frame["predicted_arr_delay"]).all()
    engine = _engine(project)
    stored = serving.predictions_of(engine, DAY)
    assert len(stored) == scheduled and set(stored["run_id"]) == {"scheduled__a"}
    # The same day again: one set, the newer run's.
    predict.run(DAY, root=project, run_id="scheduled__b")
    again = serving.predictions_of(engine, DAY)
    assert len(again) == scheduled and set(again["run_id"]) == {"scheduled__b"}
    engine.dispose()
    # The nightly ingest's days before the day were fetched, the day itself was not.
    settings = load_settings(project)
    assert artifacts.RAW_PARTITION.path(settings.paths.root, date(2013, 3, 31)).exists()
    assert not artifacts.RAW_PARTITION.path(settings.paths.root, DAY).exists()


def test_the_days_outcomes_are_never_read(project: Path) -> None:
    before = pd.read_parquet(predict.run(DAY, root=project, run_id="r")["predictions"])
    with sqlite3.connect(artifacts.SOURCE_DB.path(project)) as conn:
        conn.execute(
            "update flights set arr_delay = 999, dep_delay = 999 where local_date = ?",
            (DAY.isoformat(),),
        )
    after = pd.read_parquet(predict.run(DAY, root=project, run_id="r")["predictions"])
    pd.testing.assert_frame_equal(before, after)


def test_the_past_features_are_the_nightly_featurize_ones_made_once(project: Path) -> None:
    """Predict featurizes its past window into the day partitions, under the same keys
    as the nightly featurize: the nightly run of the day before then computes nothing."""
    predict.run(DAY, root=project, run_id="r")
    nightly = DAY - timedelta(days=1)
    ingest.run(nightly, root=project)
    counts = featurize.run(nightly, root=project)
    assert counts["days_reused"] == counts["days"] == PARAMS["ingest"]["window_days"]
    assert counts["days_computed"] == 0


def test_a_promoted_model_serves_and_its_day_is_scored_the_next_night(project: Path) -> None:
    trained = cli.run_steps(cli.STEPS, TRAINED, root=project)
    assert trained["score"]["decision"] == "promoted"  # margin 0: the model beats the baseline
    served = predict.run(DAY, root=project, run_id="scheduled__p")
    assert served["champion"] == f"model of {TRAINED}" and served["model_sha256"]
    frame = pd.read_parquet(served["predictions"])
    assert not np.allclose(frame["predicted_arr_delay"], frame["baseline_arr_delay"])

    nightly = cli.run_steps(cli.STEPS, DAY, root=project)  # the night after DAY

    metrics = pd.read_json(
        artifacts.METRICS.path(load_settings(project).paths.root, DAY), typ="series"
    )
    score = metrics["served"]
    # An independent recomputation: the served predictions against the raw actuals.
    raw = pd.read_parquet(artifacts.RAW_FLIGHTS.path(project, DAY))
    key = ["carrier", "flight", "origin", "sched_dep_time"]
    joined = frame.merge(raw[[*key, "arr_delay"]].dropna(), on=key)
    assert score["flights"] == len(joined) < len(frame)  # cancelled flights have no delay
    assert score["served_mae"] == pytest.approx(
        (joined["predicted_arr_delay"] - joined["arr_delay"]).abs().mean()
    )
    assert score["baseline_mae"] == pytest.approx(
        (joined["baseline_arr_delay"] - joined["arr_delay"]).abs().mean()
    )
    assert score["champion_day"] == TRAINED.isoformat()
    engine = _engine(project)
    table = serving.served_scores(engine)
    assert list(table["flight_day"]) == [DAY]
    assert table.loc[0, "served_mae"] == pytest.approx(score["served_mae"])
    engine.dispose()
    assert nightly["score"]["decision"] in ("promoted", "kept", "stepped down")


def test_a_champion_trained_for_the_day_or_later_does_not_serve_it(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A backfill of predictions, or a manual day: the model of a later day may have seen the
    # day's flights (in-sample predictions, then scored as served). A model serves only the
    # days after its own; its file is not even read for an earlier one.
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"
    engine = _engine(project)
    recorded = Path(registry.current_champion(engine).model_path)
    engine.dispose()
    files = {*(project / "models" / "registry").glob("*.skops"), recorded}
    for stored in files:
        stored.rename(stored.with_suffix(".away"))
    for day in (TRAINED, TRAINED - timedelta(days=1)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="flight_delays.predict"):
            served = predict.run(day, root=project, run_id=f"backfill__{day}")
        assert served["champion"].startswith(f"baseline (champion model of {TRAINED} not used: ")
        assert f"trained for {TRAINED}, not before {day}" in served["champion"]
        assert served["model_sha256"] is None
        frame = pd.read_parquet(served["predictions"])
        assert np.allclose(frame["predicted_arr_delay"], frame["baseline_arr_delay"])
        assert set(frame["champion_kind"]) == {"baseline"} and frame["model_sha256"].isna().all()
        assert f"the champion model of {TRAINED} is not used" in caplog.text
    for stored in files:
        stored.with_suffix(".away").rename(stored)
    # The day after its own: the model serves.
    served = predict.run(DAY, root=project, run_id="scheduled__next")
    assert served["champion"] == f"model of {TRAINED}" and served["model_sha256"]


def test_a_champion_file_changed_since_its_promotion_serves_nothing(project: Path) -> None:
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"
    predict.run(DAY, root=project, run_id="scheduled__first")
    engine = _engine(project)
    stored = Path(registry.current_champion(engine).model_path)
    stored.write_bytes(stored.read_bytes() + b"tampered")
    with pytest.raises(fitted.UntrustedModelError, match="changed after training"):
        predict.run(DAY, root=project, run_id="scheduled__second")
    # The day's predictions are the last good ones, whole.
    kept = serving.predictions_of(engine, DAY)
    assert set(kept["run_id"]) == {"scheduled__first"} and len(kept) == _scheduled(project, DAY)
    engine.dispose()


def test_a_moved_project_finds_its_champion_by_its_hash(project: Path, tmp_path: Path) -> None:
    # A project restored to another folder: the registry's recorded path is the old one.
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"
    moved = Path(shutil.move(project, tmp_path / "restored"))
    engine = _engine(moved)
    recorded = registry.current_champion(engine).model_path
    engine.dispose()
    assert not Path(recorded).exists() and str(project) in recorded
    served = predict.run(DAY, root=moved, run_id="scheduled__moved")
    assert served["champion"] == f"model of {TRAINED}"
    cli.run_steps(cli.STEPS, DAY, root=moved)
    metrics = json.loads(artifacts.METRICS.path(moved, DAY).read_text())
    assert metrics["champion_info"]["kind"] == "model"  # scored against it, not retired
    assert metrics["champion_info"]["day"] == TRAINED.isoformat()
    # A stored model gone from both places is refused, naming where it was looked for.
    for stored in (moved / "models" / "registry").glob("*.skops"):
        stored.unlink()
    engine = _engine(moved)
    try:
        with pytest.raises(registry.RegistryError, match=f"{recorded} is missing"):
            registry.rollback(engine, "test", to_day=TRAINED, root=moved)
    finally:
        engine.dispose()


def test_a_champion_that_lacks_a_feature_is_retired_and_the_baseline_serves(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"
    # A feature removed after the champion was trained: the pipeline no longer has it.
    removed = "visib"
    monkeypatch.setattr(schema, "FEATURES", [f for f in schema.FEATURES if f != removed])
    with caplog.at_level("WARNING", logger="flight_delays.predict"):
        served = predict.run(DAY, root=project, run_id="scheduled__retired")
    assert served["champion"].startswith(f"baseline (champion model of {TRAINED} retired: ")
    assert removed in served["champion"] and served["model_sha256"] is None
    assert f"the champion model of {TRAINED} cannot score the day" in caplog.text
    frame = pd.read_parquet(served["predictions"])
    assert np.allclose(frame["predicted_arr_delay"], frame["baseline_arr_delay"])
    assert set(frame["champion_kind"]) == {"baseline"} and frame["model_sha256"].isna().all()
    engine = _engine(project)
    kept = serving.predictions_of(engine, DAY)
    assert len(kept) == _scheduled(project, DAY) and set(kept["champion_kind"]) == {"baseline"}
    assert registry.current_champion(engine).kind == "model"  # the registry is not changed
    engine.dispose()


def test_a_champion_that_fails_for_another_reason_is_not_retired(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a changed feature set retires the champion; any other error fails the task.
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"

    def broken(model, frame):
        raise ValueError("Input X contains infinity")

    monkeypatch.setattr(fitted, "predict", broken)
    with pytest.raises(ValueError, match="contains infinity"):
        predict.run(DAY, root=project, run_id="scheduled__broken")
    engine = _engine(project)
    assert serving.predictions_of(engine, DAY).empty  # nothing served in its place
    engine.dispose()


def test_a_day_without_flights_or_without_its_past_is_named(project: Path) -> None:
    # The warehouse ends on 2013-04-02: the 3rd has its past but no schedule.
    with pytest.raises(predict.NoScheduleError, match="2013-04-03"):
        predict.run(date(2013, 4, 3), root=project)
    # It starts on 2013-03-20: the 25th lacks the first days of its past (03-17..03-24).
    with pytest.raises(raw_partitions.NoFlightsError, match="2013-03-17"):
        predict.run(date(2013, 3, 25), root=project)
    engine = _engine(project)
    assert serving.predictions_of(engine, date(2013, 4, 3)).empty  # nothing half-written
    engine.dispose()


def _delete_flights(root: Path, day: date, keep: int = 0) -> None:
    """The warehouse without ``day``'s flights, or with only ``keep`` of them (late data)."""
    with sqlite3.connect(artifacts.SOURCE_DB.path(root)) as conn:
        conn.execute(
            "delete from flights where local_date = ? and rowid not in "
            "(select rowid from flights where local_date = ? limit ?)",
            (day.isoformat(), day.isoformat(), keep),
        )


@pytest.mark.parametrize("keep", [0, 40], ids=["missing", "partly-loaded"])
def test_a_late_day_before_the_day_ends_the_statistics_and_the_day_is_still_served(
    project: Path, warehouse: Path, keep: int, caplog
) -> None:
    # The night's late_data alert: the flights of DAY - 1 are not (all) in the warehouse
    # at 05:00. The day is served as day 2 of a holdout that starts on DAY - 1.
    late = DAY - timedelta(days=1)
    _delete_flights(project, late, keep)
    result = predict.run(DAY, root=project, run_id="scheduled__late")
    assert result["history_end"] == late.isoformat()
    assert result["rows"] == _scheduled(project, DAY)
    assert f"{late} is late in the warehouse" in caplog.text
    assert not artifacts.RAW_PARTITION.path(project, late).exists()  # nothing frozen for it
    late_served = pd.read_parquet(result["predictions"])
    # Once it has arrived, a rerun serves with the statistics up to the day before.
    shutil.copy(warehouse, artifacts.SOURCE_DB.path(project))
    result = predict.run(DAY, root=project, run_id="scheduled__on_time")
    assert result["history_end"] == DAY.isoformat()
    on_time = pd.read_parquet(result["predictions"])
    assert len(on_time) == len(late_served)
    assert not np.allclose(on_time["baseline_arr_delay"], late_served["baseline_arr_delay"])


def test_a_late_day_further_back_than_a_holdout_fails_the_run_naming_it(project: Path) -> None:
    # holdout_days is 2: the model saw statistics at most 2 days old. DAY - 2 late (and
    # DAY - 1 there) would make them 3 days old: the late day's own error, as before.
    _delete_flights(project, DAY - timedelta(days=2))
    with pytest.raises(raw_partitions.NoFlightsError, match=str(DAY - timedelta(days=2))):
        predict.run(DAY, root=project, run_id="scheduled__too_late")
    engine = _engine(project)
    assert serving.predictions_of(engine, DAY).empty
    engine.dispose()


def _flights(days: list[date], delay: float) -> pd.DataFrame:
    """Eight flights a day at one origin and hour, each day's delay ``delay`` + its day
    of month (so a statistic tells which days it read)."""
    return pd.DataFrame(
        [
            {
                schema.DAY: pd.Timestamp(d),
                "carrier": "UA",
                "flight": 100 + k,
                "origin": "EWR",
                "dest": "ORD",
                schema.SCHED_HOUR: 8,
                "sched_dep_time": 800,
                schema.TARGET: delay + d.day,
            }
            for d in days
            for k in range(8)
        ]
    )


def test_a_late_day_serves_the_day_as_day_n_of_a_holdout_that_starts_there(monkeypatch) -> None:
    # The pure core: the past ends on DAY - 2 (DAY - 1 is late). The model must get the
    # statistics a training row of day 2 of a holdout starting on DAY - 1 got: lag 2,
    # over the days before DAY - 1; not lag 1 over a window that ends on DAY.
    late = DAY - timedelta(days=1)
    past = _flights([DAY - timedelta(days=k) for k in range(10, 1, -1)], delay=10.0)
    scheduled = _flights([DAY], delay=0.0).drop(columns=[schema.TARGET])
    split = SplitSettings(**PARAMS["split"])
    seen: list[pd.DataFrame] = []

    def serving(model, frame):
        seen.append(frame)
        return np.zeros(len(frame)), None

    monkeypatch.setattr(fitted, "serving_predictions", serving)
    predict.predict_day(DAY, past, scheduled, split, object(), history_end=late)
    (frame,) = seen
    assert (frame[schema.HISTORY_LAG] == 2).all()
    statistics = history.history_statistics(split.recent_days, split.history_days)
    _train, expected = history.add_history_features(
        past, scheduled, cutoff=late, block_days=split.holdout_days, statistics=statistics
    )
    for name in statistics:
        np.testing.assert_array_equal(frame[name].to_numpy(), expected[name].to_numpy())
    # recent_days is 2: the two days before DAY - 1, i.e. DAY - 3 and DAY - 2.
    assert frame["recent_nyc_delay"].iloc[0] == 10.0 + np.median(
        [(DAY - timedelta(days=k)).day for k in (3, 2)]
    )


def test_history_end_after_the_day_is_refused() -> None:
    with pytest.raises(ValueError, match="history_end 2013-04-02 is after the day"):
        predict.predict_day(
            DAY,
            pd.DataFrame(),
            pd.DataFrame({schema.DAY: [pd.Timestamp(DAY)]}),
            SplitSettings(**PARAMS["split"]),
            None,
            history_end=DAY + timedelta(days=1),
        )


def test_a_schedule_loaded_in_part_is_not_served(project: Path) -> None:
    # 40 of the day's flights, far below half of a usual Monday: retried (not a data
    # error), and no partial set replaces the day's predictions.
    predict.run(DAY, root=project, run_id="scheduled__whole")
    _delete_flights(project, DAY, keep=40)
    with pytest.raises(contracts.IncompleteDayError, match="2013-04-01 has 40 flights"):
        predict.run(DAY, root=project, run_id="scheduled__part")
    engine = _engine(project)
    assert set(serving.predictions_of(engine, DAY)["run_id"]) == {"scheduled__whole"}
    engine.dispose()


def test_a_day_whose_every_flight_breaks_the_contract_says_so(project: Path) -> None:
    with sqlite3.connect(artifacts.SOURCE_DB.path(project)) as conn:
        conn.execute("update flights set distance = 'far' where local_date = ?", (DAY.isoformat(),))
    with pytest.raises(
        predict.NoScheduleError,
        match=r"all (\d+) flights scheduled for 2013-04-01 .* \(not_a_number: \1 rows\)",
    ):
        predict.run(DAY, root=project, run_id="scheduled__broken")


def test_a_champion_without_its_file_names_it_and_the_way_back(project: Path) -> None:
    assert cli.run_steps(cli.STEPS, TRAINED, root=project)["score"]["decision"] == "promoted"
    engine = _engine(project)
    champion = registry.current_champion(engine)
    engine.dispose()
    for stored in [*(project / "models" / "registry").glob("*.skops"), Path(champion.model_path)]:
        stored.unlink(missing_ok=True)  # the recorded path may be the store's own file
    assert not Path(champion.model_path).exists()
    with pytest.raises(predict.ChampionFileMissingError) as raised:
        predict.run(DAY, root=project, run_id="scheduled__no_file")
    message = str(raised.value)
    assert champion.model_sha256 in message and f"model of {TRAINED}" in message
    assert "guide-backups.md" in message and "registry rollback" in message


# --- served_score, the pure core --------------------------------------------------------
def _served(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "flight_day": [DAY, DAY, DAY],
            "carrier": ["UA", "B6", "DL"],
            "flight": [1, 2, 3],
            "origin": ["EWR", "JFK", "LGA"],
            "dest": ["ORD", "BOS", "ATL"],
            "sched_dep_time": [600, 700, 800],
            "predicted_arr_delay": [10.0, 0.0, 5.0],
            "baseline_arr_delay": [0.0, 0.0, 0.0],
            "champion_kind": "model",
            "champion_day": TRAINED,
            "champion_version": 1,
            "model_sha256": "ab" * 32,
            "run_id": "r",
        }
    )
    return frame.assign(**overrides)


def _actual(delays: list[float | None]) -> pd.DataFrame:
    served = _served()
    return pd.DataFrame(
        {
            "local_date": pd.to_datetime([DAY] * 3),
            "carrier": served["carrier"],
            "flight": served["flight"],
            "origin": served["origin"],
            "sched_dep_time": served["sched_dep_time"],
            "arr_delay": delays,
        }
    )


def test_served_score_leaves_out_flights_that_never_arrived() -> None:
    score = serving.served_score(_served(), _actual([20.0, 4.0, None]))
    assert score["flights"] == 2
    assert score["served_mae"] == pytest.approx((10 + 4) / 2)
    assert score["baseline_mae"] == pytest.approx((20 + 4) / 2)
    assert score["champion_day"] == TRAINED and score["flight_day"] == DAY


def test_served_score_of_nothing_served_is_none_and_bad_input_is_named() -> None:
    assert serving.served_score(_served().iloc[:0], _actual([1.0, 2.0, 3.0])) is None
    assert serving.served_score(_served(), _actual([None, None, None])) is None
    twice = pd.concat([_served(), _served().iloc[:1]], ignore_index=True)
    with pytest.raises(ValueError, match="twice"):
        serving.served_score(twice, _actual([1.0, 2.0, 3.0]))
    two_days = _served(flight_day=[DAY, DAY, TRAINED])
    with pytest.raises(ValueError, match="one day"):
        serving.served_score(two_days, _actual([1.0, 2.0, 3.0]))


def test_replace_predictions_refuses_another_days_rows(tmp_path: Path) -> None:
    engine = registry.connect(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with pytest.raises(ValueError, match="2013-04-01"):
        serving.replace_predictions(engine, DAY, _served(flight_day=[DAY, DAY, TRAINED]))
    with pytest.raises(ValueError, match="run_id"):
        serving.replace_predictions(engine, DAY, _served().drop(columns="run_id"))
    assert serving.replace_predictions(engine, DAY, _served()) == 3
    assert len(serving.predictions_of(engine, DAY)) == 3
    engine.dispose()


def test_the_command_serves_a_day_and_names_a_bad_one(project: Path, capsys) -> None:
    assert predict.main(["--day", DAY.isoformat(), "--root", str(project)]) == 0
    assert "flights predicted by the baseline" in capsys.readouterr().out
    assert predict.main(["--day", "2013-04-03", "--root", str(project)]) == 1
    assert "no flights scheduled for 2013-04-03" in capsys.readouterr().err
