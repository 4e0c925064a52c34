"""The developer loop through Airflow: dev/run_tasks.py (`make task`) runs tasks in one
process and its exit status is the tasks' outcome, unlike `airflow tasks test`."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from flight_delays import cli
from flight_delays.config import ProjectPaths

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "dev" / "run_tasks.py"


def run_tasks(project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args],
        env=project.env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The runner's last lines: task name -> the rest of its line."""
    lines = result.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("flight_delays for "))
    return {line.split()[0]: line for line in lines[start + 1 :] if line.startswith("  ")}


def test_a_range_of_tasks_runs_in_one_process_and_exits_zero(project):
    paths = ProjectPaths(project.root)
    result = run_tasks(project, "ingest..featurize", "--day", "2013-03-25")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tasks = summary(result)
    assert list(tasks) == ["ingest", "featurize"]
    assert all(" success " in line for line in tasks.values())
    assert (paths.interim(date(2013, 3, 25)) / "manifest.json").is_file()
    assert (paths.processed(date(2013, 3, 25)) / "features.parquet").is_file()
    # The range stops where it was told to: no split for that day.
    assert not (paths.processed(date(2013, 3, 25)) / "train.parquet").exists()


def test_a_failing_task_exits_non_zero_names_the_error_and_stops_the_range(project):
    result = run_tasks(project, "train..chart", "--day", "2013-03-20")
    assert result.returncode == 1
    tasks = summary(result)
    assert " failed " in tasks["train"]
    assert "MissingArtifactError" in tasks["train"]
    assert "ds=2013-03-20/train.parquet" in tasks["train"]
    assert "python -m flight_delays run split --day 2013-03-20" in tasks["train"]
    assert "upstream_failed" in tasks["score"] and "upstream_failed" in tasks["chart"]
    assert "FAILED" in result.stdout
    # Retries are off: the failure is reported once, not after the retry delay.
    assert "up_for_retry" not in result.stdout


def test_an_unknown_task_exits_2_with_the_task_names(project):
    result = run_tasks(project, "trian", "--day", "2013-03-20")
    assert result.returncode == 2
    assert "unknown step 'trian'" in result.stderr
    assert "ingest, featurize, split, train, score, chart" in result.stderr


def test_a_malformed_day_exits_2_before_airflow_starts(project):
    result = run_tasks(project, "train", "--day", "20/03/2013")
    assert result.returncode == 2
    assert "--day must be YYYY-MM-DD" in result.stderr


def test_the_cli_knows_the_dags_steps_in_the_dags_order():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["flight_delays"]
    assert [task.task_id for task in dag.topological_sort()] == list(cli.STEPS)
