"""Suite-wide isolation: Airflow gets a throw-away home so no test reads or writes the
project's .airflow/ metastore, and the project's settings come from the environment the
tests build, never from a developer's shell."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before any test module imports airflow (conftest is imported first); removed when
# the session's process exits (one was left in /tmp by every pytest run).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="flight-delays-airflow-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DEFAULT_TIMEZONE"] = "America/New_York"
# A shell that sourced a stack's settings must not change what the tests see.
for name in (
    "FLIGHT_DELAYS_HOME",
    "FLIGHT_DELAYS_SOURCE_URL",
    "FLIGHT_DELAYS_REQUIRE_WAREHOUSE_CONN",
):
    os.environ.pop(name, None)
# The tests fit tiny models: one OpenMP thread. With two, on a busy 2-core machine the
# threads spin-wait for each other and a 1-second backtest test took 40 seconds.
os.environ["FLIGHT_DELAYS_THREADS"] = "1"


# --- the seeded warehouse -----------------------------------------------------------------
# One mechanism for every test that needs the real 2013 days in a warehouse: each range
# is seeded once per session (about 0.4 s a seed), and a test that writes to a warehouse
# copies it first (a file copy). A shared file that a test changed
# anyway fails the session at its end, naming the file.

SeededWarehouse = Callable[[date, date], Path]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def seeded_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededWarehouse]:
    """``seeded_warehouse(first, last)``: a SQLite file holding the original 2013 days
    first..last (replay cycle 0, no shift), seeded once per range in the session. It is
    shared: read it, or copy it to write to it."""
    from flight_delays.intake.demo import seed

    made: dict[tuple[date, date], tuple[Path, str]] = {}

    def get(first: date, last: date) -> Path:
        if (first, last) not in made:
            path = tmp_path_factory.mktemp("seeded") / f"flights-{first}-{last}.sqlite"
            seed(f"sqlite:///{path}", [0], original_range=(first, last))
            made[first, last] = (path, _digest(path))
        return made[first, last][0]

    yield get
    changed = [str(path) for path, digest in made.values() if _digest(path) != digest]
    assert not changed, f"a test wrote to a shared seeded warehouse: {', '.join(changed)}"
