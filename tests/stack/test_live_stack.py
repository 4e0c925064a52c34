"""The no-Docker stack for real: PostgreSQL metastore and warehouse, scheduler,
dag-processor, api-server and triggerer under supervisord, driven through the REST API v2
and the airflow CLI. One stack for the session (see conftest.py); the browser tests are
in test_ui.py."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from flight_stack import procs, settings
from stack_helpers import (
    DAG_ID,
    TIMINGS,
    TZ,
    Stack,
    backfill_logical_days,
    check_day,
    fingerprint,
    run_path,
)

from flight_delays.base.dates import processed_day
from flight_delays.store import artifacts
from flight_delays.store.config import ProjectPaths

pytestmark = pytest.mark.stack

STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]


def rendered_day(stack: Stack, run_id: str, task: str = "ingest") -> str:
    """The `day` the task instance was rendered with (op_kwargs), via the REST API."""
    ti = stack.ok("GET", f"{run_path(run_id)}/taskInstances/{task}")
    return ti["rendered_fields"]["op_kwargs"]["day"]


def ny(timestamp: str) -> pendulum.DateTime:
    return pendulum.parse(timestamp).in_timezone(TZ)


def at_0200(moment: pendulum.DateTime) -> bool:
    """02:00 New York time; on the spring-forward day, when 02:00 does not exist, 03:00."""
    wall = pendulum.datetime(moment.year, moment.month, moment.day, 2, 0, tz=TZ)
    return moment == wall


def test_up_twice_is_harmless_and_status_shows_every_component(stack: Stack):
    cfg = settings.Config.from_env(stack.env)
    pid = procs.supervisor_pid(cfg)
    assert pid
    # The components' temporary files are the stack's: the scheduler's forkserver keeps its
    # socket in the state folder, not in /tmp, where every stack used to leave it.
    tmp = stack.state / "tmp"
    assert list(tmp.glob("pymp-*/listener-*")), list(tmp.iterdir())
    (tmp / "in-use").write_text("")
    again = stack.script("up")
    assert "already running" in again.stdout
    assert procs.supervisor_pid(cfg) == pid
    assert (tmp / "in-use").exists(), "`up` of a running stack emptied its temporary folder"
    (tmp / "in-use").unlink()
    status = stack.script("status").stdout
    assert "health: healthy" in status
    memory = [" ".join(line.split()[:4]) for line in status.splitlines() if "processes)" in line]
    TIMINGS["RSS at idle, MiB (main process / with its children)"] = "; ".join(memory)
    for component in ("scheduler", "dag-processor", "api-server", "triggerer", "postgres"):
        assert f"    {component} " in status, status
    # Secrets are generated once and readable by their owner only.
    for name in ("secrets.json", "generated.env", "airflow/simple_auth_manager_passwords.json"):
        assert (stack.state / name).stat().st_mode & 0o777 == 0o600, name


def test_rest_trigger_with_a_logical_date_processes_the_day_before(live_dag: Stack):
    stack = live_dag
    started = time.monotonic()
    run = stack.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": "rest_2013-03-16", "logical_date": "2013-03-16T02:00:00-04:00"},
    )
    run = stack.wait_for_run(run["dag_run_id"])
    TIMINGS["trigger (REST) to success, one run"] = f"{time.monotonic() - started:.1f} s"
    assert run["run_type"] == "manual"
    assert rendered_day(stack, run["dag_run_id"]) == "2013-03-15"
    metrics = check_day(stack.root, date(2013, 3, 15))
    assert metrics["model"]["mae"] != metrics["baseline"]["mae"]


def test_model_reports_page_over_http_lists_the_scored_run(live_dag: Stack):
    """The plugin on the real api-server: closed without a login or with a forged token,
    and with a token it lists the run the REST test scored (the registry is the stack's
    warehouse) and links it to its Airflow run."""
    import httpx

    stack = live_dag
    base = f"{stack.api_url}/model-reports"
    assert httpx.get(f"{base}/api/runs", timeout=30).status_code == 401
    forged = stack.token()[:-4] + ("AAAA" if not stack.token().endswith("AAAA") else "BBBB")
    refused = httpx.get(f"{base}/api/runs", headers={"Authorization": f"Bearer {forged}"})
    assert refused.status_code in (401, 403) and "runs" not in refused.text
    headers = {"Authorization": f"Bearer {stack.token()}"}
    data = httpx.get(f"{base}/api/runs", headers=headers, timeout=30).json()
    days = [run["processed_day"] for run in data["runs"]]
    assert "2013-03-15" in days
    run = data["runs"][days.index("2013-03-15")]
    assert run["decision"] in ("promoted", "kept") and run["reason"]
    assert run["run_id"] == "rest_2013-03-16"
    assert run["grid"] == f"../dags/{DAG_ID}/runs/rest_2013-03-16"
    assert data["champion"]["kind"] in ("baseline", "model")
    report = httpx.get(f"{base}/{run['report']}", headers=headers, timeout=30)
    assert report.status_code == 200 and "Holdout metrics" in report.text
    page = httpx.get(f"{base}/", headers=headers, timeout=30)
    assert "Current champion" in page.text and "2013-03-15" in page.text


def test_the_page_reads_through_a_role_that_can_only_select(live_dag: Stack):
    """The stack gives the api-server flight_delays_warehouse_reader: its role reads the
    registry's tables (made by the owner after the grant) and can change none of them."""
    from db_support import assert_select_only

    generated = settings.parse_env((live_dag.state / "generated.env").read_text())
    assert_select_only(
        generated[settings.READER_CONN_ENV].replace("postgresql://", "postgresql+psycopg://")
    )


def test_the_scheduled_run_is_at_0200_and_processes_the_day_that_just_ended(live_dag: Stack):
    stack = live_dag
    # Unpausing made the scheduler create the run of the latest 02:00 (catchup=False).
    deadline = time.monotonic() + 60
    while True:
        runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})
        if runs["dag_runs"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert runs["dag_runs"], "no scheduled run after unpausing"
    for run in runs["dag_runs"]:
        logical = ny(run["logical_date"])
        assert at_0200(logical), run["logical_date"]
        assert run["data_interval_start"] == run["data_interval_end"]  # cron trigger: zero
        run = stack.wait_for_run(run["dag_run_id"])
        day = logical.date() - timedelta(days=1)  # the New York day that ended 2 h before
        assert rendered_day(stack, run["dag_run_id"]) == day.isoformat()
        check_day(stack.root, day)

    dag = stack.ok("GET", f"/dags/{DAG_ID}")
    upcoming = ny(dag["next_dagrun_logical_date"])
    assert at_0200(upcoming), dag["next_dagrun_logical_date"]
    assert dag["next_dagrun_run_after"] == dag["next_dagrun_logical_date"]
    latest = max(ny(r["logical_date"]) for r in runs["dag_runs"])
    assert upcoming.date() == latest.date() + timedelta(days=1)
    assert upcoming > pendulum.now(TZ) - timedelta(hours=1)  # the next one, not a past one
    # The next run will process the New York day that ends at the midnight before it.
    when = datetime.fromisoformat(dag["next_dagrun_logical_date"].replace("Z", "+00:00"))
    assert processed_day(when) == upcoming.date() - timedelta(days=1)


def test_a_trigger_without_logical_date_processes_the_latest_complete_day(live_dag: Stack):
    stack = live_dag
    run = stack.ok("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
    assert run["logical_date"] is None
    run = stack.wait_for_run(run["dag_run_id"])
    # The New York day before the trigger time: the latest complete flight day.
    day = ny(run["run_after"]).date() - timedelta(days=1)
    assert rendered_day(stack, run["dag_run_id"]) == day.isoformat()
    check_day(stack.root, day)


def test_backfill_of_three_days_leaves_one_artifact_set_per_day(live_dag: Stack):
    stack = live_dag
    before = fingerprint(stack.root)
    started = time.monotonic()
    # Runs at 02:00 on 21, 22 and 23 March (to-date is midnight, so not the 24th's run):
    # they process the flight days 20, 21 and 22 March.
    command = ("backfill", "create", "--dag-id", DAG_ID,
               "--from-date", "2013-03-21", "--to-date", "2013-03-24")  # fmt: skip
    stack.airflow(*command)
    logical = backfill_logical_days(" ".join(command))
    runs = stack.backfill_runs([day.isoformat() for day in logical])
    assert len(runs) == 3, runs
    runs = [stack.wait_for_run(run["dag_run_id"], timeout=420) for run in runs]
    TIMINGS["backfill of 3 days, wall time"] = f"{time.monotonic() - started:.1f} s"
    days = sorted(ny(r["logical_date"]).date() - timedelta(days=1) for r in runs)
    assert days == [date(2013, 3, 20), date(2013, 3, 21), date(2013, 3, 22)]
    assert days == [day - timedelta(days=1) for day in logical]
    for run in runs:
        day = ny(run["logical_date"]).date() - timedelta(days=1)
        assert rendered_day(stack, run["dag_run_id"], "chart") == day.isoformat()
        check_day(stack.root, day)

    after = fingerprint(stack.root)
    changed = sorted(name for name, value in before.items() if after.get(name) != value)
    assert not changed, f"the backfill overwrote or removed artifacts of other days: {changed}"
    new_days = {name.split("ds=")[1][:10] for name in set(after) - set(before)}
    processed = [day.isoformat() for day in days]
    assert set(processed) <= new_days
    for day in processed:
        outputs = [n for n in after if n.startswith(f"data/output/ds={day}/")]
        assert sorted(Path(n).name for n in outputs) == ["metrics.json", "predictions.parquet"]


def test_tasks_test_runs_each_task_in_order_against_the_stack(live_dag: Stack):
    stack = live_dag
    # `airflow tasks test` makes a temporary RUNNING run in the metastore: pause the DAG
    # so that the scheduler does not start that run's tasks as well.
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    paths = ProjectPaths(stack.root)
    day = date(2013, 4, 5)
    writes = {
        "ingest": artifacts.INTERIM.path(paths.root, day) / "manifest.json",
        "featurize": artifacts.PROCESSED.path(paths.root, day) / "features.parquet",
        "split": artifacts.PROCESSED.path(paths.root, day) / "holdout.parquet",
        "train": artifacts.MODEL_DAY.path(paths.root, day) / "model.skops",
        "score": artifacts.OUTPUT.path(paths.root, day) / "metrics.json",
        "chart": artifacts.FIGURES.path(paths.root, day),
    }
    try:
        for step in STEPS:
            result = stack.airflow("tasks", "test", DAG_ID, step, "2013-04-06")
            output = result.stdout + result.stderr
            # `airflow tasks test` exits 0 even when the task fails: read its outcome.
            assert "Task failed with exception" not in output, output[-4000:]
            written = writes[step]
            if step == "train":  # the day's folder, or a run's folder inside it
                assert list(written.parent.rglob(written.name)), f"train wrote no {written}"
            else:
                assert written.exists(), f"{step} did not write {written}"
    finally:
        stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    check_day(stack.root, day)
    # Its temporary runs are gone again.
    runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert not [r for r in runs if (r["logical_date"] or "").startswith("2013-04-06")]
