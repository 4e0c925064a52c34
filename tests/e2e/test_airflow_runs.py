"""Run the real DAG through Airflow on a seeded warehouse and check what it leaves."""

from __future__ import annotations

import json
import math
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flight_delays.store import artifacts
from flight_delays.store.config import ProjectPaths

pytestmark = pytest.mark.e2e

STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]
FIGURES = {
    "predicted_vs_actual.png",
    "residuals.png",
    "mae_by_hour.png",
    "calibration.png",
    "metric_history.png",
    "drift.png",
}


def check_artifacts(paths: ProjectPaths, day: date, window_days: int = 14) -> dict:
    """Every artifact of ``day`` exists and is sane; returns metrics.json."""
    manifest = json.loads((artifacts.INTERIM.path(paths.root, day) / "manifest.json").read_text())
    days = [entry["day"] for entry in manifest["days"]]
    assert len(days) == window_days and days[-1] == day.isoformat()
    for entry in days:
        partition = artifacts.RAW_PARTITION.path(paths.root, date.fromisoformat(entry))
        assert (partition / "flights.parquet").is_file()
        assert (partition / "weather.parquet").is_file()
    for name in ("features.parquet", "train.parquet", "holdout.parquet"):
        assert (artifacts.PROCESSED.path(paths.root, day) / name).is_file(), name
    metrics = json.loads(artifacts.METRICS.path(paths.root, day).read_text())
    # The model of the run that published the day's results, in that run's own folder.
    run_id = metrics["challenger"]["run_id"]
    assert Path(metrics["challenger"]["model"]) == artifacts.RUN_MODEL.path(paths.root, day, run_id)
    assert artifacts.RUN_MODEL.path(paths.root, day, run_id).stat().st_size > 0
    card = json.loads(artifacts.DAY_MODEL_CARD.path(paths.root, day).read_text())
    assert card["train_rows"] > 0 and card["run_id"] == run_id
    assert (
        artifacts.DAY_MODEL_CARD.path(paths.root, day).read_bytes()
        == artifacts.RUN_MODEL_CARD.path(paths.root, day, run_id).read_bytes()
    )

    for who in ("model", "baseline"):
        assert set(metrics[who]) >= {"mae", "rmse", "median_ae", "r2"}
        assert all(math.isfinite(v) for v in metrics[who].values() if isinstance(v, float))

    # The baseline's MAE, recomputed here from the saved predictions without the package.
    predictions = pd.read_parquet(artifacts.OUTPUT.path(paths.root, day) / "predictions.parquet")
    assert len(predictions) == metrics["holdout_rows"] > 0
    assert predictions[["actual", "predicted", "baseline"]].notna().all().all()
    held_days = pd.to_datetime(predictions["local_date"]).dt.date
    assert held_days.max() == day
    independent = float(np.mean(np.abs(predictions["baseline"] - predictions["actual"])))
    assert metrics["baseline"]["mae"] == pytest.approx(independent, rel=1e-9)
    independent = float(np.mean(np.abs(predictions["predicted"] - predictions["actual"])))
    assert metrics["model"]["mae"] == pytest.approx(independent, rel=1e-9)

    figures = {p.name for p in artifacts.FIGURES.path(paths.root, day).glob("*.png")}
    assert figures == FIGURES
    for name in FIGURES:
        assert (artifacts.FIGURES.path(paths.root, day) / name).read_bytes()[
            :8
        ] == b"\x89PNG\r\n\x1a\n"
    report = (artifacts.REPORT_DIR.path(paths.root, day) / "index.html").read_text()
    assert metrics["decision"]["reason"].split(":")[0] in report
    assert {"model", "champion", "baseline", "decision", "drift"} <= set(metrics)
    # Input drift of a real 2013 day against its window: measured, nothing flagged.
    drift = metrics["drift"]
    assert drift["skipped"] is None and drift["flagged"] == [], drift
    assert "Input drift" in report
    return metrics


def test_dags_test_runs_the_whole_pipeline(project):
    # A run dated 2013-03-16 (the 02:00 run) processes the flight day 2013-03-15.
    result = project.airflow("dags", "test", "flight_delays", "2013-03-16T02:00:00-04:00")
    finished = re.search(r"DagRun Finished: .*?state=(\w+)", result.stdout + result.stderr)
    assert finished and finished.group(1) == "success", result.stdout[-3000:]
    # The in-process execution API was built for the newest version only (the DAG
    # file's hook for `airflow dags test`, plugins/command_speedups.py).
    assert "In-process execution API: API version" in result.stdout + result.stderr
    assert "building all API versions" not in result.stdout + result.stderr
    check_artifacts(ProjectPaths(project.root), date(2013, 3, 15))
    from flight_delays.base import schema
    from flight_delays.store import registry

    engine = registry.connect(project.env["FLIGHT_DELAYS_SOURCE_URL"])  # the warehouse
    try:
        drift = registry.drift_scores(engine, date(2013, 3, 15))
    finally:
        engine.dispose()
    assert sorted(drift["feature"]) == sorted(schema.FEATURES)  # one set for the run
    assert drift["psi"].notna().all() and not drift["flagged"].any()


def test_dags_test_of_the_prediction_dag_serves_every_scheduled_flight(project):
    """The prediction DAG through `airflow dags test`: its 05:00 run on 2013-03-16 serves
    that day with the registry's champion, into the parquet file and the warehouse."""
    import sqlite3

    from flight_delays.model import serving
    from flight_delays.store import artifacts, registry

    day = date(2013, 3, 16)
    result = project.airflow("dags", "test", "flight_delays_predict", "2013-03-16T05:00:00-04:00")
    finished = re.search(r"DagRun Finished: .*?state=(\w+)", result.stdout + result.stderr)
    assert finished and finished.group(1) == "success", result.stdout[-3000:]
    with sqlite3.connect(project.root / "warehouse.sqlite") as conn:
        scheduled = conn.execute(
            "select count(*) from flights where local_date = ?", (day.isoformat(),)
        ).fetchone()[0]
    frame = pd.read_parquet(artifacts.SERVED_PREDICTIONS.path(project.root, day))
    assert len(frame) == scheduled > 500
    assert frame["predicted_arr_delay"].notna().all()
    engine = registry.connect(project.env["FLIGHT_DELAYS_SOURCE_URL"])  # the warehouse
    try:
        stored = serving.predictions_of(engine, day)
        champion = registry.current_champion(engine)
    finally:
        engine.dispose()
    assert len(stored) == scheduled
    assert set(stored["champion_version"]) == {champion.version}


def test_tasks_test_runs_each_step_in_order(project):
    paths = ProjectPaths(project.root)
    day = date(2013, 4, 1)
    for step in STEPS:
        project.airflow("tasks", "test", "flight_delays", step, "2013-04-02")
    check_artifacts(paths, day)


def test_a_step_without_its_upstream_artifact_names_it_and_the_fix(project):
    result = project.airflow("tasks", "test", "flight_delays", "train", "2013-04-08", check=False)
    output = result.stdout + result.stderr
    # `airflow tasks test` exits 0 even when the task fails: read the task's own outcome.
    assert "Task failed with exception" in output
    assert "missing artifact" in output
    assert "ds=2013-04-07/train.parquet" in output
    assert "python -m flight_delays run split --day 2013-04-07" in output


def test_a_rerun_reuses_raw_partitions_and_is_idempotent(project):
    paths = ProjectPaths(project.root)
    day = date(2013, 3, 15)
    raw = artifacts.RAW_PARTITION.path(paths.root, day) / "flights.parquet"
    before = raw.stat().st_mtime_ns
    project.airflow("tasks", "test", "flight_delays", "ingest", "2013-03-16")
    manifest = json.loads((artifacts.INTERIM.path(paths.root, day) / "manifest.json").read_text())
    assert manifest["fetched"] == []
    assert raw.stat().st_mtime_ns == before
