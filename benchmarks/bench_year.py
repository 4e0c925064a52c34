"""The harness's `year` section (issue 22): nights of 2013 as one backfill on the live
no-Docker stack, against the same processed days in one process each, in turn.

The live side is a backfill through POST /backfills with N active runs; the other side is
`python -m flight_delays run all --day D` for each day (benchmarks/bench_driver.py: the
same run() calls), one process a day, with the thread count the stack's tasks get. Both
sides start from the same state: the derived artifacts deleted and the raw partitions of
the processed days removed, the window before the first day ingested. The registry is the
one the live side left (its champion), so promotions can differ; the work a run does
does not. Where the CPU goes is read beside each side: the stack's CPU time by component
and part, this harness's, and the machine's busy time, a run; the one-process side's CPU
time (user and system, from wait4), a day."""

from __future__ import annotations

import resource
import statistics
import time
from collections import defaultdict
from datetime import date, timedelta

from bench_project import Project
from bench_results import Results, Row, Target
from bench_stack import Stack, _driver_env, _window, cpu_seconds, machine_busy_seconds, run_backfill

#: Every nightly run of 2013 whose window of 90 days lies inside the data.
FIRST, LAST = date(2013, 3, 31), date(2013, 12, 30)
WALL_TARGET = 4.9  # s a run: 365 nights in 30 min
RATIO_TARGET = 1.15  # live / one process, 1 active run


def _fresh(project: Project, stack: Stack, first: date, last: date) -> None:
    """The state both sides start from: no derived artifact, no raw partition of the
    processed days (each side's ingest fetches them as the nightly run does)."""
    from flight_delays.store import artifacts, storage

    project.clean(stack.root)
    day = first
    while day <= last:
        storage.remove(artifacts.RAW_PARTITION.path(stack.root, day))
        day += timedelta(days=1)


def _task_medians(stack: Stack, runs: list[dict]) -> dict[str, float]:
    durations: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for task in stack.tasks(run["dag_run_id"]):
            if task["duration"] is not None:
                durations[task["task_id"]].append(task["duration"])
    return {task: statistics.median(values) for task, values in sorted(durations.items())}


class _CpuReading:
    """CPU time from now on: the stack's by component (bench_stack.cpu_seconds), this
    harness process's own (its REST polling and memory sampling), and the machine's busy
    time (everything, other work on the machine included)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.parts, self.busy, self.harness = cpu_seconds(stack), machine_busy_seconds(), _self()

    def report(self, count: int, unit: str) -> str:
        parts = cpu_seconds(self.stack)
        parts.subtract(self.parts)
        stack = sum(parts.values())
        harness = _self() - self.harness
        busy = machine_busy_seconds() - self.busy
        shown = ", ".join(
            f"{name} {seconds / count:.2f}"
            for name, seconds in parts.most_common()
            if abs(seconds / count) >= 0.005  # a part can fall: a process ended
        )
        return (
            f"CPU s a {unit}: the stack {stack / count:.2f} ({shown}); this harness "
            f"{harness / count:.2f}; the machine busy {busy / count:.2f} (all processes)"
        )


def _self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def year(
    stack: Stack,
    project: Project,
    first: date,
    last: date,
    active: int,
    results: Results,
) -> None:
    """One pair: the backfill of ``first``..``last`` with ``active`` runs, then the same
    days in one process each. Rows: both walls, per-task medians; targets: the wall a run
    (the whole year, 2 active runs) or the ratio (1 active run)."""
    days = (last - first).days + 1
    label = f"{days} nights {first}..{last}"
    params = project.params(_window(stack))
    env = _driver_env(stack, project)
    # The first processed day's window but that day, as earlier nights would have left
    # it: the ingest of the day before, over one day less (its full window would reach
    # a day before the data when the first day is the year's first, 2013-03-31).
    before = project.params(_window(stack) - 1)
    project.run_driver("ingest", first - timedelta(days=1), before, env=env, root=stack.root)

    _fresh(project, stack, first, last)
    cpu = _CpuReading(stack)
    wall, runs, peak = run_backfill(stack, first, last, active)
    results.notes.append(f"year ({label}, {active} active): {cpu.report(days, 'run')}")
    failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    for run_id in failed[:3]:  # each with its error (the first three)
        broken = [t for t in stack.tasks(run_id) if t["state"] != "success"]
        error = "; ".join(stack.task_error(run_id, t) for t in broken)
        results.notes.append(f"year: run {run_id} did not succeed: {error}"[:600])
    medians = _task_medians(stack, runs)
    results.add(
        Row(
            "year",
            f"live: backfill of {label}, {active} active run(s)",
            wall,
            peak_mib=peak,
            note=f"{wall / days:.2f} s a run; {len(runs) - len(failed)} of {days} succeeded; "
            f"stack PSS peak{'; failed: ' + ', '.join(failed[:3]) if failed else ''}",
        )
    )
    results.notes.append(
        f"year ({label}, {active} active): task medians (s): "
        + ", ".join(f"{task} {seconds:.2f}" for task, seconds in medians.items())
    )

    _fresh(project, stack, first, last)
    started, own, cpu_alone = time.monotonic(), defaultdict(list), 0.0
    for k in range(days):
        day = first + timedelta(days=k)
        measured, steps = project.run_driver("all", day, params, env=env, root=stack.root)
        cpu_alone += measured.cpu
        for step, record in steps.items():
            own[step].append(record["seconds"])
    alone = time.monotonic() - started
    results.notes.append(
        f"year ({label}): one process a day: {cpu_alone / days:.2f} s of CPU a day "
        "(the process, imports included)"
    )
    results.add(
        Row(
            "year",
            f"one process a day: {label}",
            alone,
            note=f"{alone / days:.2f} s a day; step medians (s): "
            + ", ".join(f"{s} {statistics.median(v):.2f}" for s, v in own.items()),
        )
    )
    ratio = wall / alone
    results.notes.append(f"year ({label}): live with {active} active / one process: {ratio:.2f}x")
    # A backfill with a failed run is never counted as fast (issue 22).
    why = f"{len(failed)} run(s) failed, e.g. {failed[0]}" if failed else ""
    if active == 1:
        results.target(
            Target(
                f"live / one process, 1 active run ≤ {RATIO_TARGET}x ({days} nights)",
                f"{ratio:.2f}x ({wall:.0f} s / {alone:.0f} s)",
                ratio <= RATIO_TARGET and not failed,
                why,
            )
        )
    else:
        results.target(
            Target(
                f"backfill ≤ {WALL_TARGET} s a run, {active} active runs ({days} nights)",
                f"{wall / days:.2f} s a run ({wall / 60:.1f} min)",
                wall / days <= WALL_TARGET and not failed,
                why,
            )
        )
