"""Both DAGs on the live stack: a promotion by the training DAG emits a champion asset
event, which starts the prediction DAG; it serves every flight scheduled for the next
day into the warehouse, and the next nightly run scores what was served."""

from __future__ import annotations

import time
from datetime import date

import pytest
import sqlalchemy as sa
from stack_helpers import DAG_ID, TIMINGS, Stack, run_path

from flight_delays.model import serving
from flight_delays.store import artifacts, registry
from flight_delays.store.db import open_engine

pytestmark = pytest.mark.stack

PREDICT_DAG = "flight_delays_predict"
# With the stack's settings the model of 20 April 2013 beats the baseline by about 11 %
# (promoted over a baseline champion); 21 April is the day it serves.
TRAINED, SERVED = date(2013, 4, 20), date(2013, 4, 21)


def scheduled_flights(stack: Stack, day: date) -> int:
    engine = open_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            query = sa.text("select count(*) from flights where local_date = :day")
            return int(conn.execute(query, {"day": day}).scalar_one())
    finally:
        engine.dispose()


def trigger(stack: Stack, day: date) -> dict:
    """A training run for flight day ``day`` (its 02:00 run on the next day), to success."""
    next_day = date.fromordinal(day.toordinal() + 1)
    run = stack.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": f"rest_{day}", "logical_date": f"{next_day}T02:00:00-04:00"},
    )
    return stack.wait_for_run(run["dag_run_id"], timeout=420)


def wait_for_run_of(stack: Stack, event_id: int, timeout: float = 240) -> dict:
    """The prediction run that consumed the asset event ``event_id``, once it succeeded.
    (An event made while the DAG was paused started no run: Airflow queues asset events
    only for unpaused DAGs.)"""
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.ok(
            "GET", f"/dags/{PREDICT_DAG}/dagRuns", params={"run_type": "asset_triggered"}
        )["dag_runs"]
        for run in runs:
            path = run_path(run["dag_run_id"], PREDICT_DAG)
            consumed = stack.ok("GET", f"{path}/upstreamAssetEvents")["asset_events"]
            if event_id in {e["id"] for e in consumed}:
                return stack.wait_for_run(run["dag_run_id"], timeout=300, dag_id=PREDICT_DAG)
        assert time.monotonic() < deadline, f"no run of {PREDICT_DAG} consumed event {event_id}"
        time.sleep(2)


def wait_until_idle(stack: Stack, timeout: float = 420) -> None:
    """Until the scheduled run the unpause makes (catchup is off: the latest 02:00) exists
    and no training run is queued or running, so none changes the champion under this
    test."""
    deadline = time.monotonic() + timeout
    while not stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})[
        "dag_runs"
    ]:
        assert time.monotonic() < deadline, "the scheduler made no scheduled run"
        time.sleep(2)
    while True:
        active = stack.ok(
            "GET", f"/dags/{DAG_ID}/dagRuns", params={"state": ["queued", "running"]}
        )["dag_runs"]
        if not active:
            return
        assert time.monotonic() < deadline, f"training runs still active: {active}"
        time.sleep(3)


def test_a_promotion_triggers_the_predictions_of_the_next_day(live_dag: Stack):
    stack = live_dag
    engine = registry.connect(stack.warehouse_url)
    wait_until_idle(stack)
    # Other live tests may have promoted a model of a later (replayed) day, or stepped one
    # down on such a day, and no 2013 run may replace either: start from the plain
    # baseline, as after a rollback.
    champion = registry.current_champion(engine)
    if champion.kind != "baseline" or champion.processed_day is not None:
        registry.rollback(engine, "live test: predictions start from the baseline", baseline=True)
    stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": False})
    try:
        started = time.monotonic()
        run = trigger(stack, TRAINED)
        tasks = stack.ok("GET", f"{run_path(run['dag_run_id'])}/taskInstances")
        states = {t["task_id"]: t["state"] for t in tasks["task_instances"]}
        assert states["score"] == "success" and states["publish"] == "success", states
        champion = registry.current_champion(engine)
        assert (champion.kind, champion.processed_day) == ("model", TRAINED)

        # The champion event, with the model's hash and MAE.
        events = stack.ok(
            "GET",
            "/assets/events",
            params={"source_dag_id": DAG_ID, "source_run_id": run["dag_run_id"]},
        )["asset_events"]
        (event,) = [e for e in events if e["source_task_id"] == "publish"]
        assert event["extra"]["model_sha256"] == champion.model_sha256
        assert event["extra"]["day"] == TRAINED.isoformat() and event["extra"]["mae"] > 0

        predicted = wait_for_run_of(stack, event["id"])
        TIMINGS["promotion to served predictions"] = f"{time.monotonic() - started:.1f} s"
        served = serving.predictions_of(engine, SERVED)
        assert len(served) == scheduled_flights(stack, SERVED) > 500
        assert set(served["model_sha256"]) == {champion.model_sha256}
        assert set(served["run_id"]) == {predicted["dag_run_id"]}
        assert artifacts.SERVED_PREDICTIONS.path(stack.root, SERVED).is_file()

        # The night after the served day: its run scores what was served.
        trigger(stack, SERVED)
        scores = serving.served_scores(engine).set_index("flight_day")
        assert SERVED in scores.index
        score = scores.loc[SERVED]
        assert 0 < score["flights"] <= len(served)
        assert score["served_mae"] > 0 and score["baseline_mae"] > 0
    finally:
        stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": True})
        engine.dispose()
