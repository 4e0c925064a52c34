"""The developer loop through Airflow: dev/run_tasks.py (`make task`) runs tasks in one
process and its exit status is the tasks' outcome, unlike `airflow tasks test`; its
in-process execution API serves the newest API version only, or all of them when
Airflow's internals are not as it expects."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from flight_delays import cli
from flight_delays.store import artifacts
from flight_delays.store.config import ProjectPaths

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "dev" / "run_tasks.py"
NEWEST_ONLY = "In-process execution API: API version"
ALL_VERSIONS = "In-process execution API: building all"


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
    # The tasks talked to an execution API of the newest version only.
    assert NEWEST_ONLY in result.stdout + result.stderr
    assert ALL_VERSIONS not in result.stdout + result.stderr
    assert (artifacts.INTERIM.path(paths.root, date(2013, 3, 25)) / "manifest.json").is_file()
    assert (artifacts.PROCESSED.path(paths.root, date(2013, 3, 25)) / "features.parquet").is_file()
    # The range stops where it was told to: no split for that day.
    assert not (artifacts.PROCESSED.path(paths.root, date(2013, 3, 25)) / "train.parquet").exists()


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
    # ... then publish, which only Airflow runs (it emits the champion asset event).
    assert [task.task_id for task in dag.topological_sort()] == [*cli.STEPS, "publish"]


# The runner's execution API hook, in this process: each test restores Airflow's function.


@pytest.fixture
def runner(monkeypatch):
    """dev/run_tasks.py as a module; Airflow's app factory is put back after the test."""
    from airflow.api_fastapi.execution_api import app as app_module

    monkeypatch.setattr(
        app_module, "create_task_execution_api_app", app_module.create_task_execution_api_app
    )
    spec = importlib.util.spec_from_file_location("run_tasks", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_runner_freezes_the_heap_at_exit_before_airflow_starts(runner, monkeypatch):
    # The DAG file registers the freeze only for `airflow tasks test` / `dags test`: the
    # runner registers its own, before anything else runs (atexit runs it last).
    events = []
    monkeypatch.setattr(runner.atexit, "register", lambda f: events.append(("atexit", f)))
    monkeypatch.setattr(runner, "run", lambda *args: events.append(("run", args)) or 0)
    assert runner.main(["train", "--day", "2013-06-30"]) == 0
    assert events == [
        ("atexit", runner._freeze_at_exit),
        ("run", ("train", date(2013, 6, 30), runner.DAG_ID)),
    ]


def served_versions(api_app) -> tuple[str, ...]:
    return tuple(api_app.router.versioned_routers)


def routes_of(api_app, version: str) -> list[tuple[str, ...]]:
    """Each route of one version: path, methods, name, request and response models."""
    from fastapi.routing import APIRoute

    def name(model) -> str:
        return getattr(model, "__name__", repr(model))

    router = api_app.router.versioned_routers[version]
    return sorted(
        (
            route.path,
            ",".join(sorted(route.methods)),
            route.name,
            name(route.body_field.field_info.annotation) if route.body_field else "-",
            name(route.response_model),
        )
        for route in router.routes
        if isinstance(route, APIRoute)
    )


def test_the_in_process_api_serves_the_newest_version_with_the_full_apps_routes(runner, caplog):
    from airflow.api_fastapi.execution_api import app as app_module
    from airflow.api_fastapi.execution_api.versions import bundle
    from airflow.sdk.api.datamodels._generated import API_VERSION

    full = app_module.create_task_execution_api_app()
    full._cadwyn_initialize()
    assert len(served_versions(full)) > 1

    caplog.set_level(logging.INFO, logger="flight_delays.test_commands")
    assert runner.use_newest_execution_api_version_only() is True
    slim = app_module.InProcessExecutionAPI().app

    assert served_versions(slim) == (API_VERSION,) == (bundle.versions[0].value,)
    assert routes_of(slim, API_VERSION) == routes_of(full, API_VERSION)
    # The module globals the hook swaps are back as Airflow made them.
    from airflow.api_fastapi.execution_api import versions

    assert versions.bundle is bundle
    assert NEWEST_ONLY in caplog.text


def test_without_cadwyns_internal_the_runner_builds_all_versions(runner, monkeypatch, caplog):
    import cadwyn.route_generation
    from airflow.api_fastapi.execution_api import app as app_module
    from airflow.api_fastapi.execution_api.versions import bundle

    monkeypatch.delattr(cadwyn.route_generation, "_DELETED_ROUTE_TAG")
    factory = app_module.create_task_execution_api_app

    assert runner.use_newest_execution_api_version_only() is False
    assert app_module.create_task_execution_api_app is factory
    assert ALL_VERSIONS in caplog.text and "_DELETED_ROUTE_TAG" in caplog.text
    api_app = app_module.InProcessExecutionAPI().app
    assert served_versions(api_app) == bundle.version_values


def test_when_the_client_speaks_an_older_version_the_runner_builds_all_versions(
    runner, monkeypatch, caplog
):
    import airflow.sdk.api.datamodels._generated as generated
    from airflow.api_fastapi.execution_api import app as app_module

    monkeypatch.setattr(generated, "API_VERSION", "2025-04-11")
    factory = app_module.create_task_execution_api_app

    assert runner.use_newest_execution_api_version_only() is False
    assert app_module.create_task_execution_api_app is factory
    assert "the client speaks 2025-04-11" in caplog.text


def test_when_the_newest_only_app_fails_to_build_the_runner_builds_all_versions(
    runner, monkeypatch, caplog
):
    from airflow.api_fastapi.execution_api import app as app_module
    from airflow.api_fastapi.execution_api.versions import bundle
    from cadwyn import Cadwyn

    initialize = Cadwyn._cadwyn_initialize

    def fail_for_one_version(self) -> None:
        if len(self.versions.versions) == 1:
            raise RuntimeError("Cadwyn changed")
        initialize(self)

    monkeypatch.setattr(Cadwyn, "_cadwyn_initialize", fail_for_one_version)
    assert runner.use_newest_execution_api_version_only() is True
    api_app = app_module.InProcessExecutionAPI().app

    assert served_versions(api_app) == bundle.version_values
    assert "failed to build" in caplog.text and "Cadwyn changed" in caplog.text
