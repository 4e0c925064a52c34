"""The stack under CeleryExecutor for real (`make up EXECUTOR=celery`): redis as the
broker, the metastore as the result backend, moto's S3 server holding every artifact, and
two Celery workers that share nothing on this machine but those, PostgreSQL and the
parameters. One run triggered through the REST API and a 3-day backfill, then: every
artifact the catalog names for those days is in the bucket and none is on a local disk,
the tasks ran on both workers, and each worker kept its own temporary folder.

Its own stack (``celery_stack`` in conftest.py), started only for this file, beside the
default one; `down` at the end must leave nothing running (redis and the S3 server too)."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest
from flight_stack import procs, settings
from stack_helpers import DAG_ID, TIMINGS, TZ, Stack, run_path

from flight_delays import artifacts

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
    stack.airflow(
        "backfill", "create", "--dag-id", DAG_ID, "--from-date", "2013-03-21",
        "--to-date", "2013-03-24",
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:  # the scheduler creates the backfill's runs
        made = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})
        if len(made["dag_runs"]) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(made["dag_runs"]) == 3, made
    runs += [stack.wait_for_run(r["dag_run_id"], timeout=900) for r in made["dag_runs"]]
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
    scored_on = set()
    for run in runs:
        tasks = stack.ok("GET", f"{run_path(run['dag_run_id'])}/taskInstances")
        for task in tasks["task_instances"]:
            # publish skips itself when the run promoted no new champion.
            assert task["state"] in ("success", "skipped"), task
            hosts[task["hostname"]] += 1
            if task["task_id"] == "score":
                scored_on.add(task["hostname"])
    TIMINGS["celery: task instances per worker (4 runs)"] = ", ".join(
        f"{host}: {count}" for host, count in sorted(hosts.items())
    )
    assert set(hosts) == set(settings.WORKERS), hosts

    # Each worker used its own temporary folder: the day lock `score` takes for an object
    # store is a file there (flight_delays.storage.lock), in the folder of whichever ran it.
    for worker in scored_on:
        locks = list((cfg.worker_dir(worker) / "tmp").glob("flight-delays-lock-*"))
        assert locks, f"{worker} ran score but has no lock file in its own TMPDIR"
