"""Suite-wide isolation: Airflow gets a throw-away home so no test reads or writes the
project's .airflow/ metastore, and the project's settings come from the environment the
tests build, never from a developer's shell."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Set before any test module imports airflow (conftest is imported first).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="flight-delays-airflow-")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DEFAULT_TIMEZONE"] = "America/New_York"
for name in ("FLIGHT_DELAYS_HOME", "FLIGHT_DELAYS_SOURCE_URL"):
    os.environ.pop(name, None)
# The tests fit tiny models: one OpenMP thread. With two, on a busy 2-core machine the
# threads spin-wait for each other and a 1-second backtest test took 40 seconds.
os.environ["FLIGHT_DELAYS_THREADS"] = "1"
