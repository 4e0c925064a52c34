"""A throw-away project for end-to-end runs: a SQLite warehouse seeded with a few weeks
of real 2013 flights (no replay, so no test depends on today's date), a short window,
and a private Airflow home with a migrated SQLite metastore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))

# Short enough to run in seconds, long enough to train on: 14 days, the last 3 held out.
PARAMS = """\
ingest: {window_days: 14}
split: {holdout_days: 3}
train: {max_iter: 60, learning_rate: 0.1, min_samples_leaf: 20}
"""
SEEDED = (date(2013, 2, 20), date(2013, 4, 10))  # original 2013 days in the warehouse


@dataclass(frozen=True)
class Project:
    root: Path
    env: dict[str, str]

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the airflow CLI against this project's metastore and DAG."""
        result = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"airflow {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
            )
        return result


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, seeded_warehouse) -> Project:
    root = tmp_path_factory.mktemp("project")
    (root / "include").mkdir()
    (root / "include" / "params.yaml").write_text(PARAMS)
    url = f"sqlite:///{root / 'warehouse.sqlite'}"
    shutil.copyfile(seeded_warehouse(*SEEDED), root / "warehouse.sqlite")  # it holds a registry

    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/New_York",
        "FLIGHT_DELAYS_HOME": str(root),
        "FLIGHT_DELAYS_SOURCE_URL": url,
        "FLIGHT_DELAYS_THREADS": "1",
    }
    project = Project(root=root, env=env)
    project.airflow("db", "migrate")
    project.airflow("dags", "reserialize")
    return project
