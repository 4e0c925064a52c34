"""The stack under CeleryExecutor for real (`make up EXECUTOR=celery`): redis as the
broker, the metastore as the result backend, moto's S3 server holding every artifact, and
two Celery workers that share nothing on this machine but those, PostgreSQL and the
parameters. One run triggered through the REST API and a 3-day backfill, then: every
artifact the catalog names for those days is in the bucket and none is on a local disk,
and the tasks ran on both workers. Then two runs of one day, their `score` tasks on the
two workers at once: the day lock (a PostgreSQL advisory lock) makes them score one after
the other.

Its own stack (``celery_stack`` in conftest.py), started only for this file, beside the
default one; `down` at the end must leave nothing running (redis and the S3 server too)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from flight_stack import procs, settings
from sqlalchemy import Engine
from stack_helpers import (
    DAG_ID,
    PYTHON,
    TIMINGS,
    TZ,
    Stack,
    backfill_logical_days,
    run_path,
)

from flight_delays.store import artifacts, registry
from flight_delays.store.db import open_engine

pytestmark = pytest.mark.stack

STEPS = ("ingest", "featurize", "split", "train", "score", "chart")
# Catalog entries a run writes only for some data (rows that broke the contract) or only
# on request (a re-fetch): not expected for every day.
DATA_DEPENDENT = {"quarantine_flights", "quarantine_weather", "quarantine_summary"}


def expected_keys(day: date, run_id: str) -> set[str]:
    """Every file the catalog says the training DAG's run for ``day`` writes, relative to
    the artifact root: each entry with a {day} placeholder that one of the six steps
    produces (not folders, not the content-addressed store, not the data-dependent ones)."""
    keys = set()
    for entry in artifacts.CATALOG:
        placeholders = set(entry.placeholders)
        if (
            entry.format == "folder"
            or entry.local
            or entry.producer not in STEPS
            or entry.name in DATA_DEPENDENT
            or "day" not in placeholders
            or placeholders - {"day", "run_id"}
        ):
            continue
        run = run_id if "run_id" in placeholders else None
        keys.add(entry.relative(day, run))
    return keys


class Bucket:
    """The celery stack's artifact root, read with the credentials its components get."""

    def __init__(self, stack: Stack) -> None:
        import s3fs

        env = settings.read_env_files(settings.Config.from_env(stack.env))
        self.url = env["FLIGHT_DELAYS_STORAGE_URL"].rstrip("/")
        assert self.url.startswith("s3://"), self.url
        self.prefix = self.url.removeprefix("s3://")
        self.fs = s3fs.S3FileSystem(
            key=env["AWS_ACCESS_KEY_ID"],
            secret=env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")

    def keys(self) -> set[str]:
        """Every object under the artifact root, relative to it."""
        base = self.prefix + "/"
        return {name.removeprefix(base) for name in self.fs.find(self.prefix)}

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(f"{self.prefix}/{key}")


def processed(run: dict) -> date:
    """The New York day a run processed (its logical date at 02:00 is the day after)."""
    return pendulum.parse(run["logical_date"]).in_timezone(TZ).date() - timedelta(days=1)


def local_files(folder: Path) -> list[str]:
    """Files under ``folder`` (links not followed), relative to it."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def test_celery_stack_runs_the_broker_the_store_and_two_workers(celery_stack: Stack):
    cfg = settings.Config.from_env(celery_stack.env)
    assert cfg.celery
    info = procs.read_info(cfg)
    assert info["executor"] == "celery" and info["storage_url"].startswith("s3://")
    status = celery_stack.script("status").stdout
    assert "health: healthy" in status
    # supervisord's view: one line per program, with its restarts.
    programs = [x for x in status.splitlines() if "restarts:" in x]
    for program in ("redis", "s3", "worker-1", "worker-2", "scheduler"):
        line = next((x for x in programs if x.startswith(f"    {program} ")), "")
        assert " RUNNING " in line, f"{program} is not running:\n{status}"
    memory = [" ".join(x.split()[:4]) for x in status.splitlines() if "processes)" in x]
    TIMINGS["celery: RSS at idle, MiB (main / with children)"] = "; ".join(memory)
    # The broker wants its password; the S3 server answers on loopback only.
    assert (cfg.redis_conf.stat().st_mode & 0o777) == 0o600
    assert f"port {cfg.redis_port}" in cfg.redis_conf.read_text()


def test_a_run_and_a_backfill_keep_every_artifact_in_the_bucket_and_use_both_workers(
    celery_dag: Stack,
):
    stack = celery_dag
    bucket = Bucket(stack)
    started = time.monotonic()
    run = stack.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": "celery_2013-03-16", "logical_date": "2013-03-16T02:00:00-04:00"},
    )
    runs = [stack.wait_for_run(run["dag_run_id"], timeout=600)]
    TIMINGS["celery: trigger (REST) to success, one run"] = f"{time.monotonic() - started:.1f} s"

    started = time.monotonic()
    command = ("backfill", "create", "--dag-id", DAG_ID,
               "--from-date", "2013-03-21", "--to-date", "2013-03-24")  # fmt: skip
    stack.airflow(*command)
    made = stack.backfill_runs(
        [day.isoformat() for day in backfill_logical_days(" ".join(command))]
    )
    assert len(made) == 3, made
    runs += [stack.wait_for_run(r["dag_run_id"], timeout=900) for r in made]
    TIMINGS["celery: backfill of 3 days, wall time"] = f"{time.monotonic() - started:.1f} s"
    days = sorted(processed(r) for r in runs)
    assert days == [date(2013, 3, 15), date(2013, 3, 20), date(2013, 3, 21), date(2013, 3, 22)]

    # Every artifact of those days, as the catalog names it, is an object in the bucket.
    stored = bucket.keys()
    for run in runs:
        day = processed(run)
        missing = sorted(expected_keys(day, run["dag_run_id"]) - stored)
        assert not missing, f"{day}: not in {bucket.url}: {missing}"
        metrics = json.loads(bucket.read(artifacts.METRICS.relative(day)))
        for who in ("model", "baseline"):
            assert math.isfinite(metrics[who]["mae"]) and metrics[who]["mae"] > 0, metrics
        for figure in artifacts.FIGURE_ENTRIES.values():
            assert bucket.read(figure.relative(day))[:8] == b"\x89PNG\r\n\x1a\n", figure.name

    # ... and nothing of them is on a local disk: the project root holds its parameters
    # only, each worker's home its link to them.
    cfg = settings.Config.from_env(stack.env)
    assert local_files(stack.root) == ["include/params.yaml"]
    for worker in settings.WORKERS:
        home = cfg.worker_dir(worker) / "home"
        assert local_files(home) == [], f"{worker} wrote to its local disk"
        assert sorted(p.name for p in home.iterdir()) == ["include"]

    # The task instances ran on both workers, each named by its Celery hostname.
    hosts: Counter[str] = Counter()
    for run in runs:
        tasks = stack.ok("GET", f"{run_path(run['dag_run_id'])}/taskInstances")
        for task in tasks["task_instances"]:
            # publish skips itself when the run promoted no new champion.
            assert task["state"] in ("success", "skipped"), task
            hosts[task["hostname"]] += 1
    TIMINGS["celery: task instances per worker (4 runs)"] = ", ".join(
        f"{host}: {count}" for host, count in sorted(hosts.items())
    )
    assert set(hosts) == set(settings.WORKERS), hosts
    # That `score`'s day lock is the registry's advisory lock, which orders the workers, and
    # not a file lock in one worker's temporary folder, is shown by two runs of one day:
    # test_two_runs_of_one_day_on_both_workers_score_one_after_the_other.


# --- two runs of one day on the two workers at once ------------------------------------
LOCK_DAY = date(2013, 3, 27)  # no other test of this module processes it
# Each worker's pool shrunk to one slot (Celery's pool_shrink, which lowers its prefetch
# too), or grown back: the script runs with the stack's settings (its broker).
CELERY_POOLS = """
import json, sys, time
from airflow.providers.celery.executors.celery_executor_utils import app
change, expected = sys.argv[1], int(sys.argv[2])
replies = getattr(app.control, "pool_" + change)(1, reply=True, timeout=10)
deadline = time.monotonic() + 30
while True:
    stats = app.control.inspect(timeout=5).stats() or {}
    prefetch = {name: info.get("prefetch_count") for name, info in stats.items()}
    if set(prefetch.values()) == {expected} or time.monotonic() > deadline:
        break
    time.sleep(1)
print(json.dumps({"replies": replies, "prefetch": prefetch}))
"""


def celery_pools(stack: Stack, change: str, expected: int) -> dict:
    """Shrink or grow every worker's pool by one slot; returns each worker's prefetch."""
    done = stack.script("run", PYTHON, "-c", CELERY_POOLS, change, str(expected), timeout=180)
    last = [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last)


def wait_until_idle(stack: Stack) -> None:
    """Wait until no DAG run is queued or running (e.g. the scheduled run the unpaused
    DAG made): a worker pool shrinks only by an idle slot."""
    deadline = time.monotonic() + 600
    while True:
        active = stack.ok(
            "GET", "/dags/~/dagRuns", params=[("state", "queued"), ("state", "running")]
        )["dag_runs"]
        if not active:
            return
        assert time.monotonic() < deadline, f"runs still active: {active}"
        time.sleep(2)


def wait_for_blocked_scores(stack: Stack, engine: Engine, run_ids: list[str]) -> dict[str, str]:
    """Wait until the `score` task of every run is running and every one of them waits
    for the day lock in PostgreSQL; returns each run's worker. Fails at once when a task
    fails, naming it, and after 15 minutes."""
    deadline = time.monotonic() + 900
    while True:
        hosts, states = {}, {}
        for run_id in run_ids:
            tasks = stack.ok("GET", f"{run_path(run_id)}/taskInstances")["task_instances"]
            broken = [t for t in tasks if t["state"] in ("failed", "up_for_retry")]
            assert not broken, "\n".join(stack.task_error(run_id, t) for t in broken)
            task = next((t for t in tasks if t["task_id"] == "score"), {})
            states[run_id] = task.get("state")
            if task.get("state") == "running":
                hosts[run_id] = task["hostname"]
        waiting = registry.day_lock_waiters(engine, LOCK_DAY)
        if len(hosts) == len(run_ids) and waiting == len(run_ids):
            return hosts
        assert time.monotonic() < deadline, (
            f"the scores never all waited for the day lock: {states}, {waiting} waiting"
        )
        time.sleep(2)


def lock_lines(stack: Stack, run_id: str) -> dict[str, datetime]:
    """When the run's `score` logged that it waited for, took and was releasing the day lock
    (flight_delays.store.db.advisory_lock), from its task log's JSON lines."""
    log = (
        stack.state / "logs" / "airflow" / f"dag_id={DAG_ID}" / f"run_id={run_id}"
        / "task_id=score" / "attempt=1.log"
    )  # fmt: skip
    found: dict[str, datetime] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        message = str(event.get("event", ""))
        for what in ("waiting", "taken", "releasing"):
            if message.startswith(f"the day lock of {LOCK_DAY.isoformat()}: {what}"):
                found[what] = datetime.fromisoformat(event["timestamp"])
    assert set(found) == {"waiting", "taken", "releasing"}, f"{log}: lock lines {found}"
    return found


def test_two_runs_of_one_day_on_both_workers_score_one_after_the_other(celery_dag: Stack):
    stack = celery_dag
    # Two runs of the same processed day (logical dates 02:00 and 03:00 on the day after).
    runs = {
        "celery_lock_a": "2013-03-28T02:00:00-04:00",
        "celery_lock_b": "2013-03-28T03:00:00-04:00",
    }
    engine = open_engine(stack.warehouse_url)
    try:
        # One slot per worker: once one score runs (waiting) on a worker, the other score
        # can only go to the other worker. The test holds the day lock until both run,
        # so both are inside `score` at once, on two workers, before either may go on.
        wait_until_idle(stack)
        shrunk = celery_pools(stack, "shrink", 1)
        try:
            assert sorted(shrunk["prefetch"].values()) == [1, 1], shrunk
            with registry.day_lock(engine, LOCK_DAY):
                for run_id, logical_date in runs.items():
                    stack.ok(
                        "POST",
                        f"/dags/{DAG_ID}/dagRuns",
                        json={"dag_run_id": run_id, "logical_date": logical_date},
                    )
                hosts = wait_for_blocked_scores(stack, engine, list(runs))
        finally:
            grown = celery_pools(stack, "grow", 2)
        assert sorted(grown["prefetch"].values()) == [2, 2], grown
        assert sorted(hosts.values()) == sorted(settings.WORKERS), hosts
        for run_id in runs:
            stack.wait_for_run(run_id, timeout=600)

        # One score's critical section ends before the other's starts.
        found = {run_id: lock_lines(stack, run_id) for run_id in runs}
        first_id, second_id = sorted(runs, key=lambda run_id: found[run_id]["taken"])
        first, second = found[first_id], found[second_id]
        assert first["releasing"] <= second["taken"], (
            f"{first_id} held the day lock {first['taken']}..{first['releasing']}, "
            f"{second_id} {second['taken']}..{second['releasing']}: they overlap"
        )
        TIMINGS["celery: two scores of one day, lock held (s)"] = ", ".join(
            f"{hosts[run_id]} {(lines['releasing'] - lines['taken']).total_seconds():.1f}"
            for run_id, lines in ((first_id, first), (second_id, second))
        )

        # The registry: one row for each run of the day, each with its own decision.
        rows = registry.history(engine)
        rows = rows[rows["processed_day"] == LOCK_DAY]
        assert sorted(rows["run_id"]) == sorted(runs), rows
        assert rows["decision"].isin(["promoted", "kept", "stepped down"]).all(), rows
        assert rows["reason"].str.len().gt(0).all(), rows
    finally:
        engine.dispose()
