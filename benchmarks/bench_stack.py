"""The harness's sections on the live no-Docker stack (`deploy/stack/stack.py up` with
settings of its own, as the live tests start it, through the same handle:
deploy/stack/flight_stack/handle.py and rest.py):

- the stack's resident memory idle;
- REST-triggered runs against the same steps in one process: the overhead per task;
- ``year`` (issue 22): nights of 2013 as one backfill (POST /backfills, N active runs)
  against the same processed days in one process each (`make step`'s work, with the
  stack's thread count). Both sides start with no derived artifact and no raw partition
  of the processed days; the registry is the one the live side left, so promotions can
  differ, the work cannot. Beside the live side: the CPU time of the stack by component,
  of this harness, and the machine's busy time (every process).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import bench_core as bc
import yaml
from bench_core import Results
from bench_project import DAG_ID, REPO, Project

sys.path.insert(0, str(REPO / "deploy" / "stack"))

from flight_stack import postgres, procs, settings
from flight_stack.handle import Stack, private_stack
from flight_stack.rest import run_path

TZ = ZoneInfo("America/New_York")
TICK = os.sysconf("SC_CLK_TCK")  # clock ticks a second, the unit of /proc/<pid>/stat
#: Every nightly run of 2013 whose 90-day window lies inside the data.
YEAR = (date(2013, 3, 31), date(2013, 12, 30))


@contextlib.contextmanager
def live_stack(
    project: Project, window: int, seeded: tuple[date, date], lines: str, notes: list[str]
) -> Iterator[Stack]:
    """A private stack for this window (flight_stack.handle.private_stack), its warehouse
    seeded with the 2013 days ``seeded``, the DAG unpaused. ``lines`` (KEY=value) go into
    its local settings file: a variant of the stack's settings to compare. A `down` that
    fails or leaves a process running is added to ``notes``, with where its state is."""
    root = project.work / "stack-project"
    project.params(window, root=root)
    local = "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY=20\n" + lines  # as the live tests
    stack = None
    try:
        with private_stack(root, local, prefix="fd-bench-stack-") as stack:
            yield _ready(stack, seeded)
    finally:
        down = stack and stack.stopped
        if down and (down.result.returncode or down.left):
            notes.append(f"the stack's `down` exited {down.result.returncode}, left running "
                         f"{down.left}: its state stays in {stack.state}")  # fmt: skip


def _ready(stack: Stack, seeded: tuple[date, date]) -> Stack:
    """The warehouse seeded, the DAG parsed and unpaused."""
    from flight_delays.intake.demo import seed

    seed(stack.warehouse_url, [0], original_range=seeded)
    stack.wait_for_dag(timeout=180)
    # Unpausing makes scheduled runs of a recent day, which the 2013 warehouse does not
    # hold: each is failed at once, watched for 45 s (there can be more than one).
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    for _ in range(15):
        runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})
        for run in runs["dag_runs"]:
            if run["state"] in ("queued", "running"):
                stack.api("PATCH", run_path(run["dag_run_id"]), json={"state": "failed"})
        time.sleep(3)
    return stack


def _located(stack: Stack) -> tuple[settings.Config, int | None]:
    """The stack's settings and its postmaster's pid: what finds its processes."""
    cfg = settings.Config.from_env(stack.env)
    return cfg, postgres.Postgres(cfg).postmaster_pid()


def resident_mib(stack: Stack) -> tuple[float, float]:
    """The whole stack's (RSS, PSS) summed, in MiB: every component, supervisord and
    PostgreSQL. RSS counts a page shared by N processes N times (the workers share their
    forkserver's libraries); PSS once in all: what the stack takes from the machine."""
    parts = procs.memory_by_component(*_located(stack)).values()
    return tuple(sum(p[key] for p in parts) / 1024 for key in ("group_kib", "group_pss_kib"))


def cpu_seconds(stack: Stack) -> tuple[Counter[str], float, float]:
    """CPU seconds so far: the stack's by part (each component's main process, its other
    live processes, and the children they reaped: task processes, parsers, PostgreSQL's
    backends); this harness's; and the whole machine's busy time (every process)."""
    parts: Counter[str] = Counter()
    for name, (main, members) in procs.processes_by_component(*_located(stack)).items():
        for pid in members:
            own, reaped = procs.cpu_ticks(pid)
            parts[name if pid == main else f"{name} others"] += own / TICK
            parts[f"{name} reaped"] += reaped / TICK
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # /proc/stat's first line, in ticks: user nice system idle iowait irq softirq steal.
    ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle, iowait = ticks[3], ticks[4]
    busy = (sum(ticks) - idle - iowait) / TICK
    return parts, usage.ru_utime + usage.ru_stime, busy


def idle(stack: Stack, results: Results) -> None:
    time.sleep(20)  # parsing and the failed scheduled runs are over
    samples = []
    for _ in range(5):
        samples.append(resident_mib(stack))
        time.sleep(2)
    rss, pss = (bc.median([sample[k] for sample in samples]) for k in (0, 1))
    note = f"5 samples; RSS summed {rss:.0f} MiB (shared pages counted per process)"
    results.add("stack", "no-Docker stack idle: resident in total (PSS)", peak_mib=pss, note=note)
    measured = f"{pss:.0f} MiB ({pss / bc.GB_MIB:.2f} GB) PSS; RSS summed {rss:.0f} MiB"
    results.target("the no-Docker stack idle ≤ 2.0 GB in total", measured, pss <= 2 * bc.GB_MIB)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _driver_env(stack: Stack, project: Project) -> dict[str, str]:
    """One-process runs on the stack's root and warehouse, with the thread count its tasks
    get (deploy/airflow.env), so own times and task durations compare."""
    components = settings.read_env_files(settings.Config.from_env(stack.env))
    env = project.env(stack.warehouse_url, root=stack.root)
    if "FLIGHT_DELAYS_THREADS" in components:
        env["FLIGHT_DELAYS_THREADS"] = components["FLIGHT_DELAYS_THREADS"]
    return env


def _window(stack: Stack) -> int:
    params = yaml.safe_load((stack.root / "include" / "params.yaml").read_text())
    return params["ingest"]["window_days"]


def live_run(stack: Stack, project: Project, day: date, repeat: int, results: Results) -> None:
    """REST-triggered runs, each followed by the same steps in one process: overhead per
    task = its duration - the step's own time, plus the gaps between the tasks."""
    params, env = project.params(_window(stack)), _driver_env(stack, project)
    project.driver("ingest", day, params, env, stack.root)  # the raw partitions
    walls, over, gaps, both = [], [], [], []
    for _ in range(repeat):
        project.clean(stack.root)
        run_id, started = f"bench__{day}__{uuid.uuid4().hex[:8]}", time.monotonic()
        body = {"dag_run_id": run_id, "logical_date": None, "conf": {"day": str(day)}}
        stack.ok("POST", f"/dags/{DAG_ID}/dagRuns", json=body)
        stack.wait_for_run(run_id, timeout=1200)
        walls.append(time.monotonic() - started)
        project.clean(stack.root)
        own = project.driver("all", day, params, env, stack.root)[1]
        # The six steps' chain (publish runs beside chart and has no step to subtract).
        tasks = sorted(
            (t for t in stack.tasks(run_id) if t["task_id"] in own),
            key=lambda t: _when(t["start_date"]),
        )
        extra = sum(t["duration"] - own[t["task_id"]]["seconds"] for t in tasks)
        between = [
            (_when(b["start_date"]) - _when(a["end_date"])).total_seconds()
            for a, b in itertools.pairwise(tasks)
        ]
        over.append(extra / len(tasks))
        gaps.append(sum(between) / max(len(between), 1))
        both.append((extra + sum(between)) / len(tasks))
    results.add(
        "steps", f"live stack: REST trigger to success ({day})", walls, note="polled every 2 s"
    )
    for case, values in (
        ("task duration - step's own time, per task", over),
        ("gap between tasks", gaps),
        ("orchestration overhead per task (both)", both),
    ):
        results.add("steps", f"live stack: {case}", values, note=f"{repeat} runs")
    results.target(
        "orchestration overhead on the live stack ≤ 0.5 s a task",
        f"{bc.median(both):.2f} s a task",
        bc.median(both) <= 0.5,
    )


def _at(day: date, hour: int) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ).isoformat()


def _count(stack: Stack, query: dict) -> int:
    return stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={**query, "limit": 1})["total_entries"]


def _runs(stack: Stack, query: dict, page: int = 100) -> list[dict]:
    """Every DAG run the query matches, page by page ([api] maximum_page_limit)."""
    runs: list[dict] = []
    while True:
        params = {**query, "limit": page, "offset": len(runs), "order_by": "logical_date"}
        batch = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params=params)["dag_runs"]
        runs += batch
        if len(batch) < page:
            return runs


def run_backfill(
    stack: Stack, first: date, last: date, limit: int
) -> tuple[float, list[dict], float]:
    """The nightly runs processing ``first``..``last`` (each dated the next day) as one
    backfill with ``limit`` active runs, until it is complete and each run has ended (at
    most 240 s a run). Returns the wall time, the runs and the stack's PSS peak (MiB)."""
    days = (last - first).days + 1
    since, until = _at(first + timedelta(days=1), 0), _at(last + timedelta(days=1), 3)
    body = {"dag_id": DAG_ID, "from_date": since, "to_date": until, "max_active_runs": limit}
    query = {"run_type": "backfill", "logical_date_gte": since, "logical_date_lte": until}
    started, deadline = time.monotonic(), time.monotonic() + 240 * days
    created = stack.ok("POST", "/backfills", json=body)
    peak = resident_mib(stack)[1]
    while True:
        complete = stack.ok("GET", f"/backfills/{created['id']}")["completed_at"] is not None
        made, ended = _count(stack, query), _count(stack, query | {"state": ["success", "failed"]})
        peak = max(peak, resident_mib(stack)[1])
        if complete and ended == made >= days:
            return time.monotonic() - started, _runs(stack, query), peak
        if time.monotonic() > deadline:
            states = Counter(r["state"] for r in _runs(stack, query))
            raise RuntimeError(f"backfill {created['id']} not done in {240 * days} s: {states}")
        time.sleep(2)


def year(
    stack: Stack, project: Project, first: date, last: date, active: int, results: Results
) -> None:
    """The backfill of ``first``..``last`` with ``active`` runs, then the same days in one
    process each. Target: the wall a run (2 active runs) or the ratio (1 active run); a
    backfill with a failed run is never counted as fast."""
    from flight_delays.store import artifacts, storage

    days, label = (last - first).days + 1, f"{(last - first).days + 1} nights {first}..{last}"
    params, env = project.params(_window(stack)), _driver_env(stack, project)
    # The window before the first day, as earlier nights left it (one day shorter: the
    # full window of the year's first day would start before the data).
    project.driver(
        "ingest", first - timedelta(days=1), project.params(_window(stack) - 1), env, stack.root
    )

    def fresh() -> None:
        project.clean(stack.root)
        for k in range(days):
            storage.remove(artifacts.RAW_PARTITION.path(stack.root, first + timedelta(days=k)))

    fresh()
    parts, harness, busy = cpu_seconds(stack)
    wall, runs, peak = run_backfill(stack, first, last, active)
    after = cpu_seconds(stack)
    after[0].subtract(parts)  # a part can fall: a process ended and its parent reaped none
    parts, harness, busy = after[0], after[1] - harness, after[2] - busy
    failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
    for run_id in failed[:3]:
        error = "; ".join(
            stack.task_error(run_id, t) for t in stack.tasks(run_id) if t["state"] != "success"
        )
        results.notes.append(f"year: run {run_id} did not succeed: {error}"[:600])
    durations = defaultdict(list)
    for run in runs:
        for task in stack.tasks(run["dag_run_id"]):
            if task["duration"] is not None:
                durations[task["task_id"]].append(task["duration"])
    note = f"{wall / days:.2f} s a run; {days - len(failed)} of {days} succeeded; stack PSS peak"
    results.add("year", f"live: backfill of {label}, {active} active", [wall], peak, note=note)
    medians = ", ".join(f"{task} {bc.median(v):.2f}" for task, v in sorted(durations.items()))
    results.notes.append(f"year ({label}, {active} active): task medians (s): {medians}")
    shown = [f"{n} {t / days:.2f}" for n, t in parts.most_common() if abs(t / days) >= 0.005]
    results.notes.append(
        f"year ({label}, {active} active): CPU s a run: the stack {parts.total() / days:.2f} "
        f"({', '.join(shown)}); this harness {harness / days:.2f}; the machine busy "
        f"{busy / days:.2f} (every process)"
    )
    fresh()
    started, own, cpu_alone = time.monotonic(), defaultdict(list), 0.0
    for k in range(days):
        measured, records = project.driver(
            "all", first + timedelta(days=k), params, env, stack.root
        )
        cpu_alone += measured.cpu
        for step, record in records.items():
            own[step].append(record["seconds"])
    alone = time.monotonic() - started
    medians = ", ".join(f"{step} {bc.median(v):.2f}" for step, v in own.items())
    note = f"{alone / days:.2f} s a day, {cpu_alone / days:.2f} s of CPU; step medians (s): "
    results.add("year", f"one process a day: {label}", [alone], note=note + medians)
    ratio, why = wall / alone, f"{len(failed)} run(s) failed, e.g. {failed[0]}" if failed else ""
    results.notes.append(f"year ({label}): live with {active} active / one process: {ratio:.2f}x")
    if active == 1:  # the ratio
        name, met = f"live / one process, 1 active run ≤ 1.15x ({days} nights)", ratio <= 1.15
        measured = f"{ratio:.2f}x ({wall:.0f} s / {alone:.0f} s)"
    else:  # the wall a run
        name, met = (
            f"backfill ≤ 4.9 s a run, {active} active runs ({days} nights)",
            wall <= 4.9 * days,
        )
        measured = f"{wall / days:.2f} s a run ({wall / 60:.1f} min)"
    results.target(name, measured, met and not failed, why)
