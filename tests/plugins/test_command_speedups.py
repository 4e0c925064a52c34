"""plugins/command_speedups.py: light to import (every Airflow process loads the plugins
folder), its execution API hook installs once however often the DAG file calls it, and
only on the Airflow and Cadwyn versions it was tested with (issue 20): on any other it
touches nothing and says so once. What the slim app serves and each fallback:
tests/e2e/test_dev_loop.py."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "plugins" / "command_speedups.py"


def test_importing_it_loads_nothing_but_the_standard_library():
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('command_speedups', {str(MODULE)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('airflow', 'cadwyn', 'fastapi') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.fixture
def speedups(monkeypatch):
    """The module, with Airflow's app factory put back after the test."""
    from airflow.api_fastapi.execution_api import app as app_module

    monkeypatch.setattr(
        app_module, "create_task_execution_api_app", app_module.create_task_execution_api_app
    )
    spec = importlib.util.spec_from_file_location("command_speedups", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_installs_once_however_often_it_is_called(speedups):
    from airflow.api_fastapi.execution_api import app as app_module

    factory = app_module.create_task_execution_api_app
    assert speedups.use_newest_execution_api_version_only() is True
    installed = app_module.create_task_execution_api_app
    assert installed is not factory
    assert speedups.use_newest_execution_api_version_only() is True
    assert app_module.create_task_execution_api_app is installed  # not wrapped twice


def test_a_test_command_gets_both_speedups(speedups, monkeypatch):
    from airflow.api_fastapi.execution_api import app as app_module

    registered = []
    monkeypatch.setattr(speedups.atexit, "register", registered.append)
    factory = app_module.create_task_execution_api_app
    speedups.speed_up_test_command()
    assert registered == [speedups.gc.freeze]
    assert app_module.create_task_execution_api_app is not factory


def test_the_installed_versions_are_the_tested_ones(speedups):
    """The lock's versions are the ones the hook was tested with: an upgrade of Airflow or
    Cadwyn fails here first, so the hook is tested again before it is turned back on."""
    assert speedups.untested_versions() == []
    assert speedups.installed_version("apache-airflow-core") == "3.3.2"
    assert speedups.installed_version("no-such-distribution-flight-delays") is None


@pytest.mark.parametrize(
    ("distribution", "version", "reason"),
    [
        ("apache-airflow-core", "3.4.0", "apache-airflow-core 3.4.0 (tested: 3.3.2)"),
        ("cadwyn", "6.2.1", "cadwyn 6.2.1 (tested: 7.0.0)"),
        ("cadwyn", None, "cadwyn not installed (tested: 7.0.0)"),
    ],
    ids=["newer-airflow", "older-cadwyn", "no-cadwyn"],
)
def test_another_version_applies_nothing_and_says_so_once(
    speedups, monkeypatch, caplog, distribution, version, reason
):
    from airflow.api_fastapi.execution_api import app as app_module

    real = speedups.installed_version
    monkeypatch.setattr(
        speedups,
        "installed_version",
        lambda name: version if name == distribution else real(name),
    )
    factory = app_module.create_task_execution_api_app
    with caplog.at_level(logging.INFO, logger="flight_delays.test_commands"):
        for _ in range(3):  # the DAG file calls it at every parse
            assert speedups.use_newest_execution_api_version_only() is False
    assert app_module.create_task_execution_api_app is factory  # nothing patched
    messages = [r.getMessage() for r in caplog.records if r.name == "flight_delays.test_commands"]
    assert len(messages) == 1, messages
    assert "speed-up is off" in messages[0] and reason in messages[0]


def test_the_off_switch_leaves_the_heap_freeze(speedups, monkeypatch):
    """gc.freeze at exit uses only the public gc API: it stays on with other versions."""
    from airflow.api_fastapi.execution_api import app as app_module

    monkeypatch.setattr(speedups, "installed_version", lambda name: "0.0.1")
    registered = []
    monkeypatch.setattr(speedups.atexit, "register", registered.append)
    factory = app_module.create_task_execution_api_app
    speedups.speed_up_test_command()
    assert registered == [speedups.gc.freeze]
    assert app_module.create_task_execution_api_app is factory
