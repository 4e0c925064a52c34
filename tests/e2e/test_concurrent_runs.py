"""A backfill under concurrency, with real processes and no Airflow: 14 days, 4 runs at a
time, one day run twice while its first run is still going. Every run is the whole
pipeline (ingest..chart) through the package's step functions, with the run ids Airflow
would pass, in a pool of 4 spawned processes sharing one SQLite registry (the embedded
warehouse, as in `make run`). The scheduler is left out on purpose: what is tested is
what two runs can do to each other's files and registry rows, which does not depend on
who starts them; a real `airflow backfill create` needs a scheduler and its executor on
this 2-core machine."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flight_delays.store import artifacts, registry
from flight_delays.store.config import ProjectPaths
from flight_delays.store.io import sha256

pytestmark = pytest.mark.e2e

PARAMS = """\
ingest: {window_days: 14}
split: {holdout_days: 3}
train: {max_iter: 30, learning_rate: 0.1, min_samples_leaf: 20, bagging_models: 1}
"""
SEEDED = (date(2013, 2, 20), date(2013, 4, 10))
FIRST_DAY = date(2013, 3, 10)
DAYS = [FIRST_DAY + timedelta(days=k) for k in range(14)]
TWICE = date(2013, 3, 16)
ACTIVE_RUNS = 4


def run_ids() -> list[tuple[date, str]]:
    """The backfill's runs in the order a backfill queues them; the day run twice gets
    its second run right after its first, so the two overlap."""
    runs: list[tuple[date, str]] = []
    for day in DAYS:
        runs.append((day, f"backfill__{day + timedelta(days=1)}T07:00:00+00:00"))
        if day == TWICE:
            runs.append((day, f"manual__{day + timedelta(days=1)}T09:00:00+00:00"))
    return runs


def run_pipeline(root: str, day_iso: str, run_id: str) -> dict:
    """One DAG run's tasks in order, in this process, as the DAG calls them."""
    from flight_delays import chart, featurize, ingest, score, split, train

    day = day_iso
    ingest.run(day=day, root=root)
    featurize.run(day=day, root=root)
    split.run(day=day, root=root)
    trained = train.run(day=day, root=root, run_id=run_id)
    scored = score.run(day=day, root=root, run_id=run_id)
    chart.run(day=day, root=root)
    return {"day": day_iso, "run_id": run_id, "trained": trained, "scored": scored}


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory, seeded_warehouse) -> dict:
    root = tmp_path_factory.mktemp("concurrent")
    (root / "include").mkdir()
    (root / "include" / "params.yaml").write_text(PARAMS)
    url = f"sqlite:///{root / 'warehouse.sqlite'}"
    shutil.copyfile(seeded_warehouse(*SEEDED), root / "warehouse.sqlite")  # runs write to it
    # Spawned workers inherit the environment: the warehouse, and one thread each.
    env = {"FLIGHT_DELAYS_SOURCE_URL": url, "FLIGHT_DELAYS_THREADS": "1", "OMP_NUM_THREADS": "1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        # spawn, not fork: a forked child of a process that ran OpenMP can hang.
        with multiprocessing.get_context("spawn").Pool(ACTIVE_RUNS) as pool:
            jobs = [(str(root), day.isoformat(), run_id) for day, run_id in run_ids()]
            results = pool.starmap(run_pipeline, jobs, chunksize=1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    engine = registry.connect(url)
    try:
        runs = registry.history(engine)
        champion = registry.current_champion(engine)
    finally:
        engine.dispose()
    return {
        "root": root,
        "paths": ProjectPaths(root),
        "results": results,
        "runs": runs,
        "champion": champion,
    }


def test_one_registry_row_per_run(backfill):
    runs = backfill["runs"]
    days = pd.to_datetime(runs["processed_day"]).dt.date
    recorded = sorted(zip(days, runs["run_id"], strict=True))
    assert recorded == sorted(run_ids())
    assert len(runs[pd.to_datetime(runs["processed_day"]).dt.date == TWICE]) == 2


def test_one_champion_promoted_forward_only(backfill):
    runs, champion = backfill["runs"], backfill["champion"]
    promoted = runs[runs["decision"] == "promoted"].sort_values("id")
    moves = runs[runs["decision"].isin(["promoted", "stepped down"])].sort_values("id")
    assert len(promoted) >= 1
    # Every promotion, and every step-down of a decayed champion, moved it exactly once.
    assert champion.version == len(moves)
    last = moves.iloc[-1]
    if last["decision"] == "promoted":
        assert (champion.run_id, champion.model_sha256) == (last["run_id"], last["model_sha256"])
    else:  # the last move gave the baseline back the place
        assert champion.kind == "baseline"
    assert pd.to_datetime(promoted["processed_day"]).is_monotonic_increasing
    # The day run twice promoted at most once: a re-run never replaces its own day.
    twice = promoted[pd.to_datetime(promoted["processed_day"]).dt.date == TWICE]
    assert len(twice) <= 1
    if champion.kind == "model":
        assert sha256(champion.model_path) == champion.model_sha256


def test_every_run_trained_into_its_own_complete_folder(backfill):
    paths = backfill["paths"]
    folders = set()
    for result in backfill["results"]:
        trained = result["trained"]
        day = date.fromisoformat(result["day"])
        folder = artifacts.RUN_MODEL_DIR.path(paths.root, day, result["run_id"])
        folders.add(folder)
        assert Path(trained["model"]) == artifacts.RUN_MODEL.path(paths.root, day, result["run_id"])
        assert sorted(p.name for p in folder.iterdir()) == ["model.skops", "model_card.json"]
        assert sha256(trained["model"]) == trained["model_sha256"]
        card = json.loads(Path(trained["model_card"]).read_text())
        assert card["run_id"] == result["run_id"]
        assert card["model"]["sha256"] == trained["model_sha256"]
    assert len(folders) == len(run_ids())


def test_every_days_published_artifacts_come_from_one_recorded_run(backfill):
    paths, runs = backfill["paths"], backfill["runs"]
    for day in DAYS:
        metrics = json.loads(artifacts.METRICS.path(paths.root, day).read_text())
        row = runs[runs["id"] == metrics["decision"]["registry_id"]].iloc[0]
        assert row["run_id"] == metrics["run_id"]
        assert pd.Timestamp(row["processed_day"]).date() == day
        recorded = json.loads(row["report_json"])
        assert {k: v for k, v in metrics.items() if k != "decision"} == {
            k: v for k, v in recorded.items() if k != "decision"
        }
        assert sha256(artifacts.PREDICTIONS.path(paths.root, day)) == metrics["predictions_sha256"]
        run_card = artifacts.RUN_MODEL_CARD.path(paths.root, day, metrics["challenger"]["run_id"])
        assert artifacts.DAY_MODEL_CARD.path(paths.root, day).read_bytes() == run_card.read_bytes()
        assert (artifacts.REPORT_DIR.path(paths.root, day) / "index.html").is_file()
        assert len(list(artifacts.FIGURES.path(paths.root, day).glob("*.png"))) >= 4
        for name in ("features.parquet", "train.parquet", "holdout.parquet"):
            assert (artifacts.PROCESSED.path(paths.root, day) / name).is_file()


def test_no_temporary_file_is_left_behind(backfill):
    leftovers = [p for p in Path(backfill["root"]).rglob("*.tmp")]
    assert leftovers == []
