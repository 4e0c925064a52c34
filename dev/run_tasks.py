"""Run one task or a range of tasks of the DAG through Airflow, in one process, for a day.

    .venv/bin/python dev/run_tasks.py <task|first..last|all> --day YYYY-MM-DD
    make task T=train DAY=2013-06-30        make tasks FROM=ingest TO=score DAY=2013-06-30

The developer loop through Airflow. It does what ``airflow tasks test`` does for each
task (the real operator, templates, connections, the in-process execution API, the
project's Airflow home), with two differences:

- the tasks run in one process, so Airflow's fixed cost (importing it, parsing the DAG,
  starting the in-process execution API) is paid once for the range, not once per task;
- the exit status is the outcome: 0 when every task succeeded, 1 when one failed (the
  tasks after it do not run), 2 for bad arguments. ``airflow tasks test`` exits 0 when
  the task fails.

It uses Airflow's supported in-process API, ``DAG.test()`` (what ``airflow dags test``
calls), on the sub-DAG of the chosen tasks (``DAG.partial_subset``), then reads each task
instance's final state from the run. The run is dated the day after ``--day`` at 02:00
New York time, like the nightly run that processes that day, and its ``day`` parameter
is ``--day``. Retries are off: under ``DAG.test()`` a failed task would wait out its retry
delay (minutes) before failing for good. The run stays in the metastore, as one made by
``airflow dags test`` does. Use it against the project-local Airflow (``.airflow/``), not
a live stack: ``DAG.test()`` clears the chosen tasks of other runs with the same date.

The in-process execution API is built for the newest API version only (the one the Task
SDK's client speaks), not all ten: Cadwyn builds every version's routers on the first
request, about 5 s of the fixed cost (``use_newest_execution_api_version_only``). When
Airflow's internals are not as expected it logs why and builds the full API.

This file lives outside src/ because it imports Airflow, which the package never does.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAG_ID = "flight_delays"
#: The nightly run starts at 02:00 New York time on D+1 and processes the day D.
RUN_HOUR = 2
TIMEZONE = ZoneInfo("America/New_York")

# Not __name__: run as a script, that is "__main__".
log = logging.getLogger("dev.run_tasks")


def run_date(day: date) -> datetime:
    """The logical date of the nightly run that processes ``day``."""
    after = day + timedelta(days=1)
    return datetime(after.year, after.month, after.day, RUN_HOUR, tzinfo=TIMEZONE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dev/run_tasks.py",
        description="Run one task or a range of tasks through Airflow in one process; "
        "exit non-zero when a task fails.",
    )
    parser.add_argument("tasks", help="a task (train), a range (ingest..score) or all")
    parser.add_argument("--day", required=True, help="the processed flight day, YYYY-MM-DD")
    parser.add_argument("--dag-id", default=DAG_ID, help=f"default: {DAG_ID}")
    return parser


def _record_failures(task: Any, errors: dict[str, str]) -> None:
    """Add an on-failure callback to ``task`` that keeps the exception's message, so the
    summary can name it; the task's own callbacks still run."""

    def record(context: dict[str, Any]) -> None:
        error = context.get("exception")
        errors[task.task_id] = f"{type(error).__name__}: {error}" if error else "failed"

    existing = task.on_failure_callback
    callbacks: list[Callable[..., Any]] = (
        list(existing) if isinstance(existing, list | tuple) else [existing] if existing else []
    )
    task.on_failure_callback = [*callbacks, record]


def use_newest_execution_api_version_only() -> bool:
    """Make this process's in-process execution API serve only the newest API version
    (plugins/command_speedups.py, shared with ``airflow dags test`` / ``tasks test``
    through the DAG file); returns whether it does. Call it after Airflow is imported:
    importing Airflow puts the plugins folder on ``sys.path``."""
    try:
        from command_speedups import use_newest_execution_api_version_only as newest_only
    except ImportError as exc:
        log.warning("In-process execution API: building all API versions, because %s", exc)
        return False
    return newest_only()


def run(spec: str, day: date, dag_id: str = DAG_ID) -> int:
    """Run the tasks ``spec`` selects for ``day``; print one line per task; return the
    exit status."""
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.state import TaskInstanceState

    from flight_delays.cli import StepSelectionError, select_steps

    dag = get_bagged_dag(None, dag_id)
    order = [task.task_id for task in dag.topological_sort()]
    try:
        chosen = select_steps(spec, order)
    except StepSelectionError as exc:
        print(f"dev/run_tasks.py: error: {exc}", file=sys.stderr)
        return 2
    subset = dag.partial_subset(task_ids=chosen, include_upstream=False, include_downstream=False)
    errors: dict[str, str] = {}
    for task in subset.tasks:
        task.retries = 0
        _record_failures(task, errors)
    conf = {"day": day.isoformat()} if "day" in dag.params else None
    use_newest_execution_api_version_only()

    started = time.perf_counter()
    dag_run = subset.test(logical_date=run_date(day), run_conf=conf)
    states = {ti.task_id: ti for ti in dag_run.get_task_instances()}

    lines, failed = [], False
    for task_id in chosen:
        ti = states.get(task_id)
        state = ti.state if ti is not None else None
        seconds = ti.duration if ti is not None and ti.duration is not None else 0.0
        ok = state == TaskInstanceState.SUCCESS
        failed = failed or not ok
        detail = f" ({errors[task_id]})" if task_id in errors else ""
        lines.append(f"  {task_id:<10} {state or 'not run'}  {seconds:.1f} s{detail}")
    verdict = "FAILED" if failed else "ok"
    print(
        f"{dag_id} for {day.isoformat()} (run {dag_run.run_id}): {verdict} "
        f"in {time.perf_counter() - started:.1f} s",
        *lines,
        sep="\n",
    )
    return 1 if failed else 0


def _freeze_at_exit() -> None:
    """Move every live object to the permanent generation, which the interpreter's last
    collection skips: Airflow leaves ~700k objects alive, and walking them takes ~2 s.
    Measured in docs/benchmarks.md ("The developer loop")."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        day = date.fromisoformat(args.day)
    except ValueError:
        _parser().error(f"--day must be YYYY-MM-DD, got {args.day!r}")
    # Registered before Airflow is imported, so it runs after Airflow's own exit handlers.
    atexit.register(_freeze_at_exit)
    return run(args.tasks, day, args.dag_id)


if __name__ == "__main__":
    sys.exit(main())
