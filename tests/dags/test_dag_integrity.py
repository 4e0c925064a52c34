"""The DAG file parses, has the expected shape and policies, and stays light to parse."""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "flight_delays_pipeline.py"
STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["flight_delays"]


@pytest.fixture(scope="module")
def predict_dag(dagbag):
    return dagbag.dags["flight_delays_predict"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"flight_delays", "flight_delays_predict"}


def test_six_steps_in_a_chain_and_publish_after_score(dag):
    assert [t.task_id for t in dag.topological_sort()] == [*STEPS, "publish"]
    for upstream, downstream in itertools.pairwise(STEPS):
        expected = {downstream, "publish"} if upstream == "score" else {downstream}
        assert dag.get_task(upstream).downstream_task_ids == expected
    assert dag.get_task("ingest").upstream_task_ids == set()
    assert dag.get_task("publish").upstream_task_ids == {"score"}


@pytest.mark.parametrize("dag_id", ["flight_delays", "flight_delays_predict"])
def test_policies(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False
    assert dag.max_active_runs >= 1
    assert {"ml", "flights"} <= set(dag.tags)
    assert dag.doc_md and "What a run does" in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_delay >= timedelta(minutes=1), task.task_id
        assert task.execution_timeout is not None, task.task_id


def test_each_task_declares_what_it_makes_as_assets(dag, predict_dag):
    from flight_delays.store import artifacts

    made = {t.task_id: [a.name for a in t.outlets] for t in dag.tasks}
    assert made == {
        "ingest": [],
        "featurize": ["flight_delays_features"],
        "split": [],
        "train": ["flight_delays_model"],
        "score": ["flight_delays_metrics"],
        "chart": ["flight_delays_report"],
        "publish": ["flight_delays_champion"],
    }
    (predict,) = predict_dag.tasks
    assert [a.name for a in predict.outlets] == ["flight_delays_predictions"]
    root = dag.get_task("chart").op_kwargs["root"]
    for task in [*dag.tasks, predict]:
        for asset in task.outlets:  # URIs from the catalog, under the project root
            assert asset.uri == artifacts.asset_uri(artifacts.ASSETS[asset.name], root)
            assert asset.uri.startswith("file:///")


def test_predictions_every_morning_at_five_and_on_each_champion_change(predict_dag):
    timetable = predict_dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert timetable.timetable.expression == "0 5 * * *"
    zone = timetable.timetable.timezone
    assert getattr(zone, "name", zone) == "America/New_York"
    assert [a.name for a in timetable.asset_condition.objects] == ["flight_delays_champion"]


def test_nightly_at_two_in_new_york(dag):
    timetable = dag.timetable
    assert type(timetable).__name__ == "CronTriggerTimetable"  # zero-length intervals
    assert timetable.expression == "0 2 * * *"
    assert timetable.timezone.name == "America/New_York"


def test_every_task_passes_the_processed_day_and_root(dag):
    for task in (dag.get_task(step) for step in STEPS):
        assert set(task.op_kwargs) == {"day", "root"}
        assert "processed_day(" in task.op_kwargs["day"]
        assert Path(task.op_kwargs["root"], "include", "params.yaml").is_file()


def test_day_template_renders_to_the_day_before_the_run(dag):
    from flight_delays.base.dates import processed_day

    macro = dag.user_defined_macros["processed_day"]
    assert macro is processed_day
    run = pendulum.datetime(2013, 3, 16, 2, tz="America/New_York")
    assert macro(run, run, None) == date(2013, 3, 15)


@pytest.mark.parametrize("dag_file", [DAG_FILE, REPO / "dags" / "flight_delays_predict.py"])
def test_parsing_loads_neither_pandas_nor_sklearn(dag_file):
    probe = (
        "import runpy, sys, time\n"
        "t = time.perf_counter()\n"
        f"runpy.run_path({str(dag_file)!r})\n"
        "heavy = sorted(m for m in ('pandas', 'sklearn', 'matplotlib') if m in sys.modules)\n"
        "print('heavy=' + ','.join(heavy))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "heavy="


def test_the_test_commands_are_sped_up_and_only_they():
    # `airflow tasks test` / `dags test` save ~2 s of exit-time garbage collection and
    # ~5 s of building every execution API version (plugins/command_speedups.py); the
    # long-lived components that parse the DAG file too must get neither.
    probe = (
        "import atexit, gc, runpy, sys\n"
        "from airflow.api_fastapi.execution_api import app as api\n"
        "factory = api.create_task_execution_api_app\n"
        "registered = []\n"
        "atexit.register = lambda f, *a, **k: registered.append(f)\n"
        "for argv in sys.argv[1:]:\n"
        "    sys.argv, registered[:] = ['airflow', *argv.split()], []\n"
        "    api.create_task_execution_api_app = factory\n"
        f"    runpy.run_path({str(DAG_FILE)!r})\n"
        "    newest = api.create_task_execution_api_app is not factory\n"
        "    print(argv, '->', gc.freeze in registered, newest)\n"
    )
    commands = {
        "tasks test flight_delays split 2013-07-01": True,
        "dags test flight_delays": True,
        "dag-processor": False,
        "scheduler": False,
        "api-server": False,
        "triggerer": False,
        "dags reserialize": False,
    }
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-c", probe, *commands],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.splitlines()[-len(commands) :] == [
        f"{argv} -> {sped_up} {sped_up}" for argv, sped_up in commands.items()
    ]


class NoConnections:
    """The task context's `conn` accessor when no connection is defined."""

    def get(self, conn_id: str) -> None:
        return None


def call_task(task, **context):
    """Call the task's callable the way PythonOperator does: op_kwargs plus the context
    entries its signature names (conn, run_id)."""
    wanted = inspect.signature(task.python_callable).parameters
    available = {
        "conn": NoConnections(),
        "run_id": "manual__2013-03-16",
        "params": {"day": None, "refetch": False},
        **context,
    }
    kwargs = {**task.op_kwargs, **{k: v for k, v in available.items() if k in wanted}}
    kwargs["day"] = "2013-03-15"  # rendered by Airflow in a real run
    return task.python_callable(**kwargs)


def step_raising(error: BaseException):
    def run(**kwargs):
        raise error

    return run


@pytest.mark.parametrize("step", STEPS)
def test_a_data_error_fails_the_task_at_once_without_retries(dag, step, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from flight_delays.base.errors import PipelineDataError

    module = importlib.import_module(f"flight_delays.{step}")
    monkeypatch.setattr(module, "run", step_raising(PipelineDataError("2013-03-15: bad rows")))
    with pytest.raises(AirflowFailException, match="PipelineDataError: 2013-03-15: bad rows"):
        call_task(dag.get_task(step))


@pytest.mark.parametrize("step", STEPS)
def test_transient_errors_keep_their_type_and_are_retried(dag, step, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException
    from sqlalchemy.exc import OperationalError

    module = importlib.import_module(f"flight_delays.{step}")
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    for error in (refused, ConnectionError("warehouse went away")):
        monkeypatch.setattr(module, "run", step_raising(error))
        with pytest.raises(type(error)) as info:
            call_task(dag.get_task(step))
        assert not isinstance(info.value, AirflowFailException)
        assert info.value is error


@pytest.mark.parametrize("step", STEPS)
def test_each_task_calls_its_step_with_the_day_root_and_what_airflow_knows(dag, step, monkeypatch):
    module = importlib.import_module(f"flight_delays.{step}")
    seen = {}
    monkeypatch.setattr(module, "run", lambda **kwargs: seen.update(kwargs) or {"ok": step})
    assert call_task(dag.get_task(step), run_id="scheduled__2013-03-16") == {"ok": step}
    assert seen["day"] == "2013-03-15"
    assert Path(seen["root"], "include", "params.yaml").is_file()
    # Steps that use the warehouse get the connection's URL (None: the package default).
    warehouse = {"ingest": "source_url", "train": "registry_url", "score": "registry_url"}
    warehouse["chart"] = "registry_url"
    extra = {warehouse[step]: None} if step in warehouse else {}
    if step in ("train", "score"):
        extra["run_id"] = "scheduled__2013-03-16"  # a folder and a registry row per run
    if step == "ingest":
        extra["refetch"] = False
        # The clock, for the late-data wait (the step itself never reads it).
        extra["now"] = seen["now"]
        assert seen["now"].tzinfo is not None
    assert seen == {"day": "2013-03-15", "root": seen["root"], **extra}


def test_the_refetch_param_reaches_ingest(dag, monkeypatch):
    from flight_delays import ingest

    seen = {}
    monkeypatch.setattr(ingest, "run", lambda **kwargs: seen.update(kwargs) or {})
    call_task(dag.get_task("ingest"), params={"day": None, "refetch": True})
    assert seen["refetch"] is True
    assert dag.params.get_param("refetch").value is False  # off unless asked for


class Outlets(dict):
    """The task context's ``outlet_events``: one accessor (with ``extra``) per asset."""

    def __missing__(self, asset):
        self[asset] = accessor = type("Accessor", (), {"extra": {}})()
        return accessor


class Ti:
    def __init__(self, score: dict) -> None:
        self.score = score

    def xcom_pull(self, task_ids: str) -> dict:
        assert task_ids == "score"
        return self.score


SCORED = {"model_mae": 30.5, "baseline_mae": 33.0, "model_sha256": "ab" * 32, "run_id": "r"}


@pytest.mark.parametrize(
    ("decision", "champion", "sha", "mae"),
    [("promoted", "model", "ab" * 32, 30.5), ("stepped down", "baseline", None, 33.0)],
)
def test_publish_emits_a_champion_event_when_the_champion_changed(
    dag, decision, champion, sha, mae
):
    outlets = Outlets()
    task = dag.get_task("publish")
    extra = task.python_callable(
        day="2013-03-15", ti=Ti({**SCORED, "decision": decision}), outlet_events=outlets
    )
    (asset,) = task.outlets
    assert outlets[asset].extra == extra
    assert extra == {
        "day": "2013-03-15",
        "decision": decision,
        "champion": champion,
        "model_sha256": sha,
        "mae": mae,
        "run_id": "r",
    }


def test_publish_is_skipped_when_the_champion_stayed(dag):
    from airflow.sdk.exceptions import AirflowSkipException

    outlets = Outlets()
    with pytest.raises(AirflowSkipException, match="did not change"):
        dag.get_task("publish").python_callable(
            day="2013-03-15", ti=Ti({**SCORED, "decision": "kept"}), outlet_events=outlets
        )
    assert outlets == {}  # no event


class Run:
    def __init__(self, logical_date=None, run_after=None, run_type="scheduled") -> None:
        self.logical_date, self.run_after, self.run_type = logical_date, run_after, run_type


class Try:
    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number


class Event:
    def __init__(self, day: str, minute: int) -> None:
        self.extra = {"day": day, "decision": "promoted"}
        self.timestamp = pendulum.datetime(2026, 1, 1, 7, minute)


@pytest.mark.parametrize(
    ("dag_run", "params", "events", "day"),
    [
        # The 05:00 run on the clock serves its own New York day.
        (Run(pendulum.datetime(2013, 3, 16, 5, tz="America/New_York")), {}, None, "2013-03-16"),
        # Two champion events started the run: the newer one (of the 14th, after a
        # rollback) names the champion that serves, so the 15th.
        (Run(None, pendulum.datetime(2026, 1, 1)), {}, ["2013-03-20", "2013-03-14"], "2013-03-15"),
        # By hand with a day: that day.
        (Run(None, pendulum.datetime(2026, 1, 1)), {"day": "2013-05-01"}, None, "2013-05-01"),
    ],
)
def test_the_prediction_task_serves_the_right_day(
    predict_dag, monkeypatch, dag_run, params, events, day
):
    from flight_delays import predict

    seen = {}
    monkeypatch.setattr(predict, "run", lambda **kwargs: seen.update(kwargs) or {"rows": 1})
    (task,) = predict_dag.tasks
    (champion,) = predict_dag.timetable.asset_condition.objects
    triggering = {champion: [Event(d, k) for k, d in enumerate(events)]} if events else {}
    task.python_callable(
        root=task.op_kwargs["root"],
        conn=NoConnections(),
        run_id="r",
        dag_run=dag_run,
        ti=Try(),
        params={"day": None, **params},
        triggering_asset_events=triggering,
    )
    assert seen["day"] == date.fromisoformat(day)
    assert (seen["source_url"], seen["registry_url"], seen["run_id"]) == (None, None, "r")


def test_a_data_error_fails_the_prediction_at_once(predict_dag, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from flight_delays import predict

    monkeypatch.setattr(predict, "run", step_raising(predict.NoScheduleError("no flights")))
    (task,) = predict_dag.tasks
    with pytest.raises(AirflowFailException, match="NoScheduleError: no flights"):
        task.python_callable(
            root=task.op_kwargs["root"],
            conn=NoConnections(),
            run_id="r",
            dag_run=Run(pendulum.datetime(2013, 3, 16, 5, tz="America/New_York")),
            ti=Try(),
            params={"day": None},
            triggering_asset_events={},
        )


@pytest.mark.parametrize(
    ("run_type", "try_number", "checked"),
    [("scheduled", 1, True), ("manual", 1, True), ("scheduled", 2, False), ("backfill", 1, False)],
)
def test_the_night_deadline_is_checked_once_a_run_and_never_in_a_backfill(
    predict_dag, monkeypatch, run_type, try_number, checked
):
    # A retry or a cleared task would alert again, and a backfill for every past morning.
    from flight_delays import predict

    (task,) = predict_dag.tasks
    module = sys.modules[task.python_callable.__module__]
    asked = []
    monkeypatch.setattr(module, "check_nightly_deadline", lambda *args: asked.append(args))
    monkeypatch.setattr(predict, "run", lambda **kwargs: {"rows": 1})
    morning = pendulum.datetime(2013, 3, 16, 5, tz="America/New_York")
    task.python_callable(
        root=task.op_kwargs["root"],
        conn=NoConnections(),
        run_id="r",
        dag_run=Run(morning, run_type=run_type),
        ti=Try(try_number),
        params={"day": None},
        triggering_asset_events={},
    )
    if checked:
        ((_context, dag_id, nightly, day),) = asked
        assert (dag_id, nightly.hour, day) == ("flight_delays", 2, date(2013, 3, 15))
    else:
        assert asked == []


@pytest.mark.parametrize("day", ["2013-03-10", "2013-11-03", "2025-03-09", "2025-06-01"])
def test_the_deadline_looks_for_the_nightly_run_where_its_timetable_puts_it(
    dag, predict_dag, monkeypatch, day
):
    # The DST days: no 02:00 in spring (the nightly run is dated 03:00 EDT), 01:00 twice
    # in autumn. The check asks for one exact logical date: it must be the nightly run's.
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    from flight_delays import predict

    (task,) = predict_dag.tasks
    module = sys.modules[task.python_callable.__module__]
    asked = []
    monkeypatch.setattr(module, "check_nightly_deadline", lambda *args: asked.append(args))
    monkeypatch.setattr(predict, "run", lambda **kwargs: {"rows": 1})
    morning = pendulum.parse(f"{day}T05:00:00", tz="America/New_York")
    task.python_callable(
        root=task.op_kwargs["root"],
        conn=NoConnections(),
        run_id="r",
        dag_run=Run(morning),
        ti=Try(),
        params={"day": None},
        triggering_asset_events={},
    )
    ((_context, _dag_id, nightly, processed),) = asked
    # The scheduler's timetable for the nightly DAG's own cron and time zone.
    timetable = CronTriggerTimetable(dag.timetable.expression, timezone=dag.timetable.timezone)
    restriction = TimeRestriction(earliest=morning.start_of("day"), latest=None, catchup=True)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert nightly == info.logical_date
    assert processed == morning.date() - timedelta(days=1)


# --- alerts (docs/monitoring.md) -----------------------------------------------------------
@pytest.mark.parametrize("dag_id", ["flight_delays", "flight_delays_predict"])
def test_a_failed_run_alerts_once_and_no_task_alerts_on_its_own(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert callable(dag.on_failure_callback)
    assert dag.on_failure_callback.__name__ == "alert_failed_run"
    # Only the run's callback alerts: a task that fails, then succeeds on a retry, fails
    # no run and so sends nothing.
    for task in dag.tasks:
        for hook in ("on_failure_callback", "on_retry_callback", "on_success_callback"):
            assert not getattr(task, hook), (task.task_id, hook)


class FakeTI:
    def __init__(self, task_id: str, error: str | None):
        self.task_id, self.error, self.pushed = task_id, error, {}

    def xcom_pull(self, task_ids: str, key: str):
        assert task_ids == self.task_id
        return self.error if key == "flight_delays_error" else None

    def xcom_push(self, key: str, value):
        self.pushed[key] = value


class FakeRun:
    logical_date = pendulum.datetime(2013, 3, 16, 2, tz="America/New_York")
    run_after = logical_date
    run_id = "scheduled__2013-03-16T07:00:00+00:00"
    conf: dict = {}  # noqa: RUF012


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("AirflowFailException: NoFlightsError: no flights for 2013-03-15", "failure"),
        ("AirflowFailException: LateDataError: late data: no flights for 2013-03-15", "late_data"),
    ],
)
def test_the_failure_callback_alerts_with_the_run_day_task_error_and_link(
    dag, monkeypatch, error, kind
):
    import flight_delays_alerts

    sent = []
    monkeypatch.setattr(flight_delays_alerts, "dispatch", lambda alert: sent.append(alert))
    context = {"dag": dag, "run_id": FakeRun.run_id, "dag_run": FakeRun(), "reason": "task_failure"}
    dag.on_failure_callback({**context, "ti": FakeTI("ingest", error)})
    (alert,) = sent
    assert alert.kind == kind and alert.day == date(2013, 3, 15)
    assert alert.fields["failed task"] == "ingest" and alert.fields["error"] == error
    assert alert.fields["run"] == FakeRun.run_id
    assert alert.url.endswith(
        "/dags/flight_delays/runs/scheduled__2013-03-16T07%3A00%3A00%2B00%3A00"
    )


def test_a_failing_task_keeps_the_last_line_of_its_error_for_the_alert(dag, monkeypatch):
    import airflow.sdk

    from flight_delays import split

    ti = FakeTI("split", None)
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: {"ti": ti})
    monkeypatch.setattr(split, "run", step_raising(ConnectionError("line 1\nwarehouse went away")))
    with pytest.raises(ConnectionError):
        call_task(dag.get_task("split"))
    assert ti.pushed == {"flight_delays_error": "warehouse went away"}


def test_ingest_waits_for_a_late_day_by_rescheduling_not_by_a_retry(dag, monkeypatch):
    from airflow.sdk.exceptions import AirflowRescheduleException

    from flight_delays import ingest

    at = pendulum.datetime(2013, 3, 16, 3, 0, tz="UTC")

    def not_yet(**kwargs):
        raise ingest.DayNotLoadedYet(date(2013, 3, 15), at, at, "no flights for 2013-03-15")

    monkeypatch.setattr(ingest, "run", not_yet)
    with pytest.raises(AirflowRescheduleException) as info:
        call_task(dag.get_task("ingest"))
    assert info.value.reschedule_date == at
