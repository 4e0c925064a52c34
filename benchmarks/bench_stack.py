"""The harness's sections on the live no-Docker stack (`deploy/stack/stack.py up` with its
own FLIGHT_DELAYS_STACK_* settings, as tests/stack/conftest.py starts it): the stack's
resident memory idle, a REST-triggered run against the same steps in one process (the
orchestration overhead per task), and a backfill with 1, 2 and 4 active runs.

The stack handle (REST with a JWT, the stack script, waiting for a run) is the one the
live tests use too (deploy/stack/flight_stack/handle.py and rest.py)."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import bench_measure as bm
from bench_ingest import free_port
from bench_project import DAG_ID, REPO, Project
from bench_results import Results, Row, Target

sys.path.insert(0, str(REPO / "deploy" / "stack"))

from flight_stack import postgres, procs, settings
from flight_stack.handle import Stack, leftovers
from flight_stack.rest import run_path

TZ = ZoneInfo("America/New_York")
IDLE_LIMIT_MIB = 2.0e9 / bm.MIB  # 2.0 GB


TICK = os.sysconf("SC_CLK_TCK")  # clock ticks a second, the unit of /proc/<pid>/stat


def _located(stack: Stack) -> tuple[settings.Config, int | None]:
    """The stack's settings and its postmaster's pid: what finds its processes."""
    cfg = settings.Config.from_env(stack.env)
    return cfg, postgres.Postgres(cfg).postmaster_pid()


def cpu_seconds(stack: Stack) -> Counter[str]:
    """CPU time used so far by each component of the stack, in seconds, by part:
    ``<component>`` its main process's own time; ``<component> others`` the own time of
    its other live processes (the wrapper, LocalExecutor workers, api-server workers, a
    task process still running); ``<component> reaped`` the time of its processes'
    children that ended (the task processes, the DAG file parsers, PostgreSQL's
    backends). A process's time moves from "others" to its parent's "reaped" when it
    ends, so between two readings with no task running the parts are exact, and their sum
    is whenever each process that ends is waited for by a process of the stack (the
    LocalExecutor's workers wait for their task processes, PostgreSQL for its backends;
    a process forked in between starts at zero)."""
    out: Counter[str] = Counter()
    for name, (main, members) in procs.processes_by_component(*_located(stack)).items():
        for pid in members:
            own, reaped = procs.cpu_ticks(pid)
            out[name if pid == main else f"{name} others"] += own / TICK
            out[f"{name} reaped"] += reaped / TICK
    return out


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy since boot, over all cores (/proc/stat:
    everything but idle and I/O wait), in seconds: what every process used, ours or not."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / TICK  # guest time is inside user time


def resident_mib(stack: Stack) -> tuple[float, float]:
    """The whole stack's resident memory, (RSS summed, PSS summed) in MiB: every
    component with its processes, supervisord, PostgreSQL (what `make stack-status`
    lists). RSS counts a page shared by N processes N times (the LocalExecutor's workers
    share their forkserver's libraries, PostgreSQL's backends its shared buffers); PSS
    counts it once in all, which is what the stack takes from the machine."""
    parts = procs.memory_by_component(*_located(stack)).values()
    rss = sum(part["group_kib"] for part in parts) / 1024
    return rss, sum(part["group_pss_kib"] for part in parts) / 1024


@contextlib.contextmanager
def live_stack(
    project: Project, window: int, seeded: tuple[date, date], settings_lines: str = ""
) -> Iterator[Stack]:
    """A private stack (state in /tmp, free ports, this project's window), its warehouse
    seeded with ``seeded`` (2013 days), the DAG unpaused; always `down` at the end.
    ``settings_lines`` (KEY=value lines) go into the stack's local settings file, read
    after the shared ones: a variant of the stack's settings to compare."""
    from flight_delays.intake.demo import seed

    root = project.work / "stack-project"
    root.mkdir(parents=True, exist_ok=True)
    project.params(window, root=root)
    state = Path(tempfile.mkdtemp(prefix="fd-bench-stack-"))  # the postgres user reaches /tmp
    local = state / "bench-settings.env"
    # As the live tests, plus the variant's settings.
    local.write_text("AIRFLOW__CORE__MAX_TASK_RETRY_DELAY=20\n" + settings_lines)
    api_port = free_port()
    env = {
        **os.environ,
        "FLIGHT_DELAYS_STACK_DIR": str(state),
        "FLIGHT_DELAYS_STACK_ROOT": str(root),
        "FLIGHT_DELAYS_STACK_API_PORT": str(api_port),
        "FLIGHT_DELAYS_STACK_PG_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_HEALTH_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_SEED": "0",
        "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": "20",
        "FLIGHT_DELAYS_STACK_ENV_FILE": str(local),
    }
    stack = Stack(root=root, state=state, env=env, api_url=f"http://127.0.0.1:{api_port}")
    try:
        stack.script("up", timeout=600)
        seed(stack.warehouse_url, [0], original_range=seeded)
        deadline = time.monotonic() + 180
        while stack.api("GET", f"/dags/{DAG_ID}").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the stack's dag-processor did not parse the DAG in 180 s")
            time.sleep(2)
        _unpause(stack)
        yield stack
    finally:
        stack.script("down", check=False, timeout=300)
        if not leftovers(state):
            # As root the cluster is not in /tmp (untrusted) but in a folder of its own
            # under /var/lib/flight-delays (flight_stack/postgres.py): remove it too.
            pg = postgres.Postgres(settings.Config.from_env(env))
            shutil.rmtree(state, ignore_errors=True)
            if pg.relocated:
                shutil.rmtree(pg.pgdata.parent, ignore_errors=True)


def _unpause(stack: Stack, watch: float = 45.0) -> None:
    """Unpause the DAG, and fail at once the scheduled runs that unpausing creates (they
    would process a recent day, which the 2013 warehouse does not hold): watched for
    ``watch`` seconds, since the scheduler may create more than one."""
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    deadline = time.monotonic() + watch
    while time.monotonic() < deadline:
        runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "scheduled"})
        for run in runs["dag_runs"]:
            if run["state"] in ("queued", "running"):
                stack.api("PATCH", run_path(run["dag_run_id"]), json={"state": "failed"})
        time.sleep(3)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def idle(stack: Stack, results: Results, settle: float = 20.0) -> None:
    time.sleep(settle)  # parsing and the failed scheduled run are over
    samples = []
    for _ in range(5):
        samples.append(resident_mib(stack))
        time.sleep(2)
    rss, rss_low, rss_high = bm.spread([rss for rss, _ in samples])
    pss, pss_low, pss_high = bm.spread([pss for _, pss in samples])
    results.add(
        Row(
            "stack",
            "no-Docker stack idle: resident in total (PSS)",
            None,
            peak_mib=pss,
            note=f"5 samples {pss_low:.0f}-{pss_high:.0f} MiB; RSS summed {rss:.0f} MiB "
            f"({rss_low:.0f}-{rss_high:.0f}), shared pages counted per process",
        )
    )
    results.target(
        Target(
            "the no-Docker stack idle ≤ 2.0 GB resident in total",
            f"{pss:.0f} MiB ({pss * bm.MIB / 1e9:.2f} GB) PSS; RSS summed {rss:.0f} MiB",
            pss <= IDLE_LIMIT_MIB,
        )
    )


def live_run(stack: Stack, project: Project, day: date, repeat: int, results: Results) -> None:
    """REST-triggered runs and the same steps in one process against the stack's
    warehouse, in turn: overhead per task = task duration - the step's own time, plus the
    gaps between tasks, per task."""
    params = project.params(int(_window(stack)))
    env = _driver_env(stack, project)
    project.run_driver("ingest", day, params, env=env, root=stack.root)  # raw partitions
    overheads, walls, gaps, over = [], [], [], []
    for _ in range(repeat):
        project.clean(stack.root)
        run_id = f"bench__{day}__{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        stack.ok(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": {"day": day.isoformat()}},
        )
        stack.wait_for_run(run_id, timeout=1200)
        walls.append(time.monotonic() - started)
        tasks = stack.tasks(run_id)
        project.clean(stack.root)
        _, own = project.run_driver("all", day, params, env=env, root=stack.root)
        # The six steps' chain: publish runs beside chart (after score) and has no step
        # of its own to subtract.
        tasks = sorted(
            (t for t in tasks if t["task_id"] in own), key=lambda t: _when(t["start_date"])
        )
        task_over = [t["duration"] - own[t["task_id"]]["seconds"] for t in tasks]
        task_gaps = [
            (_when(b["start_date"]) - _when(a["end_date"])).total_seconds()
            for a, b in itertools.pairwise(tasks)
        ]
        over.append(sum(task_over) / len(tasks))
        gaps.append(sum(task_gaps) / max(len(task_gaps), 1))
        overheads.append((sum(task_over) + sum(task_gaps)) / len(tasks))
    med, low, high = bm.spread(walls)
    results.add(
        Row(
            "steps",
            f"live stack: REST trigger to success ({day})",
            med,
            low,
            high,
            note="polled every 2 s",
        )
    )
    for case, values in (
        ("task duration - step's own time, per task", over),
        ("gap between tasks", gaps),
        ("orchestration overhead per task (both)", overheads),
    ):
        results.add(Row("steps", f"live stack: {case}", *bm.spread(values), note=f"{repeat} runs"))
    results.series.setdefault("steps", {})["live stack (REST)"] = med
    results.target(
        Target(
            "orchestration overhead on the live stack ≤ 0.5 s a task",
            f"{overheads and bm.median(overheads):.2f} s a task",
            bm.median(overheads) <= 0.5,
        )
    )


def _driver_env(stack: Stack, project: Project) -> dict[str, str]:
    """The one-process runs on the stack's root and warehouse, with the thread count the
    stack's tasks get (deploy/airflow.env), so own times and task durations compare."""
    components = settings.read_env_files(settings.Config.from_env(stack.env))
    env = {**project.env(stack.warehouse_url), "FLIGHT_DELAYS_HOME": str(stack.root)}
    if "FLIGHT_DELAYS_THREADS" in components:
        env["FLIGHT_DELAYS_THREADS"] = components["FLIGHT_DELAYS_THREADS"]
    return env


def _window(stack: Stack) -> int:
    import yaml

    return yaml.safe_load((stack.root / "include" / "params.yaml").read_text())["ingest"][
        "window_days"
    ]


def _at(day: date, hour: int) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=TZ).isoformat()


def run_backfill(
    stack: Stack, first: date, last: date, limit: int, per_run: float = 240
) -> tuple[float, list[dict], float]:
    """The nightly runs that process ``first``..``last`` (each dated the next day, 02:00
    New York) as one backfill through POST /backfills with ``limit`` active runs; waits
    until the backfill is complete and each run has ended (at most ``per_run`` s a run).
    Returns the wall time, the runs and the stack's PSS peak (MiB, sampled every 2 s)."""
    days = (last - first).days + 1
    body = {
        "dag_id": DAG_ID,
        "from_date": _at(first + timedelta(days=1), 0),
        "to_date": _at(last + timedelta(days=1), 3),
        "max_active_runs": limit,
    }
    started = time.monotonic()
    created = stack.ok("POST", "/backfills", json=body)
    window = {"run_type": "backfill", "logical_date_gte": body["from_date"],
              "logical_date_lte": body["to_date"]}  # fmt: skip
    peak, deadline = resident_mib(stack)[1], time.monotonic() + per_run * days
    while True:
        # Done when the backfill says so and each of its runs has ended (counted by the
        # API: a page holds at most [api] maximum_page_limit runs).
        complete = stack.ok("GET", f"/backfills/{created['id']}")["completed_at"] is not None
        made = _count_runs(stack, window)
        ended = _count_runs(stack, {**window, "state": ["success", "failed"]})
        peak = max(peak, resident_mib(stack)[1])
        if complete and ended == made >= days:
            return time.monotonic() - started, _all_runs(stack, window), peak
        if time.monotonic() > deadline:
            runs = _all_runs(stack, window)
            states = Counter(r["state"] for r in runs)
            raise RuntimeError(f"backfill {created['id']} not done in {per_run * days} s: {states}")
        time.sleep(2)


def _count_runs(stack: Stack, query: dict) -> int:
    return stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={**query, "limit": 1})["total_entries"]


def _all_runs(stack: Stack, query: dict, page: int = 100) -> list[dict]:
    """Every DAG run the query matches, page by page."""
    runs: list[dict] = []
    while True:
        params = {**query, "limit": page, "offset": len(runs), "order_by": "logical_date"}
        batch = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params=params)["dag_runs"]
        runs.extend(batch)
        if len(batch) < page:
            return runs


def backfill(
    stack: Stack, project: Project, day: date, days: int, active: list[int], results: Results
) -> None:
    """A backfill of ``days`` days per max_active_runs setting (a backfill's own limit:
    `airflow backfill create --max-active-runs`, POST /backfills; the DAG's
    max_active_runs binds only its other runs). Each setting backfills new runs: the first
    the days ending on ``day``, the next the ``days`` days before those, and so on (a
    reprocessed run keeps its run id, and its rerun after the derived artifacts were
    deleted is not the same work). Same window, so about the same rows a run."""
    params = project.params(_window(stack))
    env = _driver_env(stack, project)
    earliest = day - timedelta(days=days * len(active) - 1)
    project.run_driver("ingest", earliest, params, env=env, root=stack.root)  # raw partitions
    series = {}
    for k, limit in enumerate(active):
        last = day - timedelta(days=days * k)
        first = last - timedelta(days=days - 1)
        project.clean(stack.root)
        wall, runs, peak = run_backfill(stack, first, last, limit)
        done = sum(1 for r in runs if r["state"] == "success")
        for run in [r for r in runs if r["state"] != "success"][:1]:
            broken = [t for t in stack.tasks(run["dag_run_id"]) if t["state"] != "success"]
            results.notes.append(
                f"backfill {limit}: run {run['dag_run_id']} {run['state']}: "
                + "; ".join(stack.task_error(run["dag_run_id"], t) for t in broken)[:600]
            )
        series[limit] = wall
        results.add(
            Row(
                "backfill",
                f"{days}-day backfill {first}..{last}, max_active_runs {limit}",
                wall,
                peak_mib=peak,
                note=f"{done} of {days} runs succeeded; stack PSS peak; {wall / days:.1f} s a run",
            )
        )
    results.series["backfill"] = series
    if 1 in series:
        for limit in active[1:]:
            results.notes.append(
                f"backfill: {limit} active runs {series[1] / series[limit]:.2f}x as fast as 1"
            )
