"""plugins/command_speedups.py: light to import (every Airflow process loads the plugins
folder), and its execution API hook installs once however often the DAG file calls it.
What the slim app serves and each fallback: tests/e2e/test_dev_loop.py."""

from __future__ import annotations

import importlib.util
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
