"""The developer loop's fixed cost: one step run through each command, and each lever
that cuts the cost the project owns. Results go in docs/benchmarks.md ("The developer
loop").

    .venv/bin/python benchmarks/dev_loop.py setup --root /tmp/devloop
    .venv/bin/python benchmarks/dev_loop.py all --root /tmp/devloop [--repeat 3]
    .venv/bin/python benchmarks/dev_loop.py case runner --root /tmp/devloop

``setup`` makes a throw-away project: the shipped include/params.yaml (90-day window), a
SQLite warehouse with the real 2013 days (no replay, so nothing depends on today's
date), a migrated SQLite Airflow home, and the inputs of the measured step (``split``
for 2013-06-30) made once by ingest and featurize. ``case NAME`` replaces itself
(``exec``) with that case's command, so an outside timer measures the command alone and
two cases can be timed side by side (e.g. ``/usr/bin/time -v``, or hyperfine).
``all`` runs every case (or ``--cases a,b``) ``--repeat`` times in turn and prints a
table of wall and CPU seconds (user + sys of the process and its children, from
``getrusage``) and exit seconds (from the last line of output to the process's end).

Cases (each runs the step ``split`` once for the processed day):

- ``tasks-test``: ``airflow tasks test flight_delays split 2013-07-01``, as documented;
- ``tasks-test-freeze``: the same with ``gc.freeze()`` registered at exit after Airflow is
  imported, which is what a hook in the DAG file would do;
- ``runner`` / ``runner-no-freeze``: ``dev/run_tasks.py split`` (``make task``), with and
  without its exit-time ``gc.freeze()``;
- ``runner-all-api-versions``: the runner building the in-process execution API with all
  its versions, as Airflow does (``use_newest_execution_api_version_only`` off);
- ``runner-no-plugins``: the runner with an empty plugins folder (the plugin's cost);
- ``cli`` / ``cli-no-freeze``: ``python -m flight_delays run split`` (``make step``), with
  and without its exit-time ``gc.freeze()``;
- ``step``: ``flight_delays.split.run`` in a bare interpreter: imports plus the step's own
  time, which it prints (``step_seconds=``), the reference for the overheads.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAY = "2013-06-30"
RUN_DATE = "2013-07-01"  # the nightly run dated 07-01 processes 06-30
STEP = "split"
SEEDED = (date(2013, 3, 25), date(2013, 7, 2))  # holds the 90-day window of DAY

_NO_FREEZE_CLI = (
    "import sys; from flight_delays import cli; cli._freeze_at_exit = lambda: None; "
    "sys.exit(cli.main(sys.argv[1:]))"
)
_NO_FREEZE_RUNNER = (
    "import importlib.util, sys; "
    "spec = importlib.util.spec_from_file_location('run_tasks', sys.argv[1]); "
    "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
    "mod._freeze_at_exit = lambda: None; sys.exit(mod.main(sys.argv[2:]))"
)
_ALL_API_VERSIONS_RUNNER = _NO_FREEZE_RUNNER.replace(
    "mod._freeze_at_exit = lambda: None",
    "mod.use_newest_execution_api_version_only = lambda: False",
)
_FREEZE_TASKS_TEST = (
    "import atexit, gc, sys; from airflow.__main__ import main; atexit.register(gc.freeze); "
    "sys.argv = ['airflow', *sys.argv[1:]]; main()"
)
_STEP = (
    "import time; t = time.perf_counter(); from flight_delays import split; "
    "i = time.perf_counter(); split.run(day={day!r}); e = time.perf_counter(); "
    "print(f'import_seconds={{i - t:.3f}} step_seconds={{e - i:.3f}}')"
)


def cases(root: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each case's command and extra environment."""
    runner = str(REPO / "dev" / "run_tasks.py")
    no_plugins = {"AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "no-plugins")}
    return {
        "tasks-test": ([AIRFLOW, "tasks", "test", "flight_delays", STEP, RUN_DATE], {}),
        "tasks-test-freeze": (
            [PYTHON, "-c", _FREEZE_TASKS_TEST, "tasks", "test", "flight_delays", STEP, RUN_DATE],
            {},
        ),
        "runner": ([PYTHON, runner, STEP, "--day", DAY], {}),
        "runner-no-freeze": ([PYTHON, "-c", _NO_FREEZE_RUNNER, runner, STEP, "--day", DAY], {}),
        "runner-all-api-versions": (
            [PYTHON, "-c", _ALL_API_VERSIONS_RUNNER, runner, STEP, "--day", DAY],
            {},
        ),
        "runner-no-plugins": ([PYTHON, runner, STEP, "--day", DAY], no_plugins),
        "cli": ([PYTHON, "-m", "flight_delays", "run", STEP, "--day", DAY], {}),
        "cli-no-freeze": ([PYTHON, "-c", _NO_FREEZE_CLI, "run", STEP, "--day", DAY], {}),
        "step": ([PYTHON, "-c", _STEP.format(day=DAY)], {}),
    }


def environment(root: Path) -> dict[str, str]:
    """The project's settings, as the Makefile exports them, for the throw-away root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLIGHT_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / ".airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "America/New_York",
            "FLIGHT_DELAYS_HOME": str(root),
            # One thread: the machine is shared; the steps' own time stays comparable.
            "FLIGHT_DELAYS_THREADS": "1",
        }
    )
    return env


def setup(root: Path) -> None:
    from flight_delays.intake.demo import seed

    (root / "include").mkdir(parents=True, exist_ok=True)
    (root / "no-plugins").mkdir(exist_ok=True)
    (root / "include" / "params.yaml").write_text((REPO / "include" / "params.yaml").read_text())
    seed(f"sqlite:///{root / 'data' / 'source' / 'flights.sqlite'}", [0], original_range=SEEDED)
    env = environment(root)
    for cmd in (
        [AIRFLOW, "db", "migrate"],
        [AIRFLOW, "dags", "reserialize"],
        [PYTHON, "-m", "flight_delays", "run", "ingest..featurize", "--day", DAY],
    ):
        subprocess.run(cmd, env=env, check=True, capture_output=True)


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, float | None]:
    """Wall seconds, CPU seconds (user + sys), exit seconds and, for the ``step`` case,
    the step's own seconds (its ``run()`` call, printed as ``step_seconds=``).

    Exit seconds: from the command's last line of output to the end of the process,
    which is where the interpreter's final garbage collection shows.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        last, own = start, None
        for line in process.stdout:
            last = time.perf_counter()
            if "step_seconds=" in line:
                own = float(line.rsplit("step_seconds=", 1)[1])
    end = time.perf_counter()
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return end - start, cpu, end - last, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["setup", "case", "all"])
    parser.add_argument("name", nargs="?", help="the case, for `case`")
    parser.add_argument("--root", type=Path, required=True, help="the throw-away project")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", help="for `all`: a comma-separated subset of the cases")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.action == "setup":
        setup(root)
        return
    table = cases(root)
    env = environment(root)
    if args.action == "case":
        if args.name not in table:
            parser.error(f"case must be one of {', '.join(table)}")
        cmd, extra = table[args.name]
        os.execve(cmd[0], cmd, {**env, **extra})
    chosen = args.cases.split(",") if args.cases else list(table)
    if "step" not in chosen:
        chosen.append("step")  # the reference for the overheads
    results: dict[str, list[tuple[float, float, float, float | None]]] = {n: [] for n in chosen}
    for _ in range(args.repeat):  # cases in turn, so a drift of the machine hits all alike
        for name in chosen:
            cmd, extra = table[name]
            results[name].append(measure(cmd, {**env, **extra}))
    own = statistics.median(run[3] for run in results["step"])
    print(f"The step's own time (split.run, median): {own:.2f} s")
    print(
        "| case | median wall (s) | min wall (s) | median CPU (s) | median exit (s) "
        "| over the step's own time (s) |"
    )
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        walls, cpus, exits = ([run[i] for run in runs] for i in range(3))
        wall = statistics.median(walls)
        print(
            f"| {name} | {wall:.2f} | {min(walls):.2f} | {statistics.median(cpus):.2f} "
            f"| {statistics.median(exits):.2f} | {wall - own:.2f} |"
        )


if __name__ == "__main__":
    main()
