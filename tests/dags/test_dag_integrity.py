"""The DAG file parses, has the expected shape and policies, and stays light to parse."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "flight_delays.py"
STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["flight_delays"]


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"flight_delays"}


def test_six_steps_in_a_chain(dag):
    assert [t.task_id for t in dag.topological_sort()] == STEPS
    for upstream, downstream in itertools.pairwise(STEPS):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task("ingest").upstream_task_ids == set()


def test_policies(dag):
    assert dag.catchup is False
    assert dag.max_active_runs >= 1
    assert {"ml", "flights"} <= set(dag.tags)
    assert dag.doc_md and "Processed day" in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert task.retry_delay >= timedelta(minutes=1), task.task_id
        assert task.execution_timeout is not None, task.task_id


def test_nightly_at_two_in_new_york(dag):
    timetable = dag.timetable
    assert type(timetable).__name__ == "CronTriggerTimetable"  # zero-length intervals
    assert timetable.expression == "0 2 * * *"
    assert timetable.timezone.name == "America/New_York"


def test_every_task_passes_the_processed_day_and_root(dag):
    for task in dag.tasks:
        assert set(task.op_kwargs) == {"day", "root"}
        assert "processed_day(" in task.op_kwargs["day"]
        assert Path(task.op_kwargs["root"], "include", "params.yaml").is_file()


def test_day_template_renders_to_the_day_before_the_run(dag):
    from flight_delays.dates import processed_day

    macro = dag.user_defined_macros["processed_day"]
    assert macro is processed_day
    run = pendulum.datetime(2013, 3, 16, 2, tz="America/New_York")
    assert macro(run, run, None) == date(2013, 3, 15)


def test_parsing_loads_neither_pandas_nor_sklearn():
    probe = (
        "import runpy, sys, time\n"
        "t = time.perf_counter()\n"
        f"runpy.run_path({str(DAG_FILE)!r})\n"
        "heavy = sorted(m for m in ('pandas', 'sklearn', 'matplotlib') if m in sys.modules)\n"
        "print('heavy=' + ','.join(heavy))\n"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "heavy="
