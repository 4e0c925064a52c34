"""The compose file's `celery` and `s3` profiles live, on the stand-ins: redis as the
broker, two Celery workers, flower, and moto's S3 server holding every artifact
(FLIGHT_DELAYS_EXECUTOR=celery: deploy/executor-celery.env). One run and a 2-day backfill
through the REST API: every task ran on one of the two workers, both took some, and the
artifacts are in the bucket, not in the mounted data folder (listed from the host through
the S3 port of the ports override), and flower asks for its login. Its own stack (the
module's `compose` fixture), after test_compose_live's is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest
from compose_support import DAG_ID, TIMINGS, Compose, bring_up, doc_blocks, run_doc_block

pytestmark = pytest.mark.compose


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


EXTRA_ENV = {
    "FLIGHT_DELAYS_EXECUTOR": "celery",
    "COMPOSE_PROFILES": "celery,s3",
    "AWS_ENDPOINT_URL": "http://s3:5000",
    "FLOWER_PORT": str(_free_port()),
}
WORKERS = {"airflow-worker-1", "airflow-worker-2"}
DAY = date(2013, 4, 20)
BACKFILL = (date(2013, 4, 23), date(2013, 4, 24))  # logical days: processes 22-23 April
SUCCEEDED: list[str] = []  # the runs of this stack that succeeded, for the tests after


@pytest.fixture(scope="module")
def stack(compose: Compose) -> Iterator[Compose]:
    yield bring_up(compose, "celery: ")


def bucket_keys(stack: Compose) -> list[str]:
    """Every object of the artifact bucket, listed from the host through the S3 port the
    ports override publishes, with the keys the workers get (secret aws_credentials).
    The bucket must exist (s3-init makes it)."""
    fs = stack.s3()
    assert fs.exists("flight-delays"), "the bucket flight-delays does not exist in the S3 server"
    return fs.find("flight-delays")


def test_the_celery_and_s3_services_are_healthy(stack: Compose):
    services = stack.services()
    for name in ("redis", "s3", "flower", *WORKERS, "airflow-scheduler"):
        assert name in services, f"{name} missing: {sorted(services)}"
        assert services[name]["Health"] == "healthy", services[name]
    assert services["s3-init"]["State"] == "exited" and services["s3-init"]["ExitCode"] == 0
    bucket_keys(stack)  # the bucket exists
    # Published on loopback: the api-server and flower (base file), PostgreSQL and S3
    # (the ports override), nothing else (redis never).
    ports = {(row["Service"], p["URL"], p["PublishedPort"]) for row in services.values()
             for p in row.get("Publishers") or [] if p.get("PublishedPort")}  # fmt: skip
    assert ports == {
        (service, "127.0.0.1", int(stack.env[variable]))
        for service, variable in (("airflow-apiserver", "AIRFLOW_API_PORT"),
                                  ("flower", "FLOWER_PORT"), ("postgres", "POSTGRES_PORT"),
                                  ("s3", "S3_PORT"))
    }, ports  # fmt: skip


def test_flower_asks_for_its_login(stack: Compose):
    """Basic auth from the secret flower_basic_auth: 401 without it or with a wrong
    password, 200 with it; and flower reaches the broker (redis's password): asked to
    refresh, it lists both workers."""
    url = f"http://127.0.0.1:{stack.env['FLOWER_PORT']}/api/workers"
    user, password = stack.secret("flower_basic_auth").split(":", 1)
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, auth=(user, "wrong"), timeout=30).status_code == 401
    wanted, deadline = {"celery@airflow-worker-1", "celery@airflow-worker-2"}, time.monotonic() + 90
    while True:
        response = httpx.get(url, params={"refresh": "1"}, auth=(user, password), timeout=60)
        assert response.status_code == 200, response.text
        if wanted <= set(response.json()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert wanted <= set(response.json()), response.text


def test_a_run_and_a_backfill_use_both_workers_and_keep_the_artifacts_in_the_bucket(
    stack: Compose,
):
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    started = time.monotonic()
    run_id = f"celery_{DAY}"
    stack.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": f"{DAY + timedelta(days=1)}T02:00:00-04:00"},
    )
    first, last = BACKFILL
    backfill = stack.ok(
        "POST",
        "/backfills",
        json={"dag_id": DAG_ID, "from_date": f"{first}T00:00:00-04:00",
              "to_date": f"{last}T12:00:00-04:00", "max_active_runs": 2},
    )  # fmt: skip
    backfilled = stack.backfill_runs([first.isoformat(), last.isoformat()])
    assert len(backfilled) == 2, f"backfill {backfill['id']} made {backfilled}"
    run_ids = [run_id, *(r["dag_run_id"] for r in backfilled)]
    for each in run_ids:
        stack.wait_for_run(each, timeout=900)
        SUCCEEDED.append(each)
    TIMINGS["celery: a run and a 2-day backfill, wall time"] = f"{time.monotonic() - started:.1f} s"

    hosts = {}
    for each in run_ids:
        for task in stack.tasks(each):
            if task["state"] == "success":
                hosts[(each, task["task_id"])] = task["hostname"]
    assert set(hosts.values()) <= WORKERS, f"tasks ran elsewhere than the workers: {hosts}"
    assert set(hosts.values()) == WORKERS, f"not both workers took tasks: {hosts}"

    keys = bucket_keys(stack)
    for day in (DAY, first - timedelta(days=1), last - timedelta(days=1)):
        wanted = f"ds={day}/metrics.json"
        assert any(k.endswith(wanted) for k in keys), f"no {wanted} in the bucket: {keys[:40]}"
    local = stack.root / "data" / "output" / f"ds={DAY}"
    assert not local.exists(), f"{local} was written on the host: artifacts belong in S3"


def test_the_documented_commands_from_the_host_reach_postgres_the_registry_and_s3(
    stack: Compose,
):
    """docs/docker-compose.md's block for the ports override, as written (the ports are the
    stack's): psql logs in, the registry's `show` prints the runs above, and the bucket
    lists its artifact folders. Needs the run of the test above: without it (run alone, or
    after that test failed, which then says why) it is skipped."""
    if f"celery_{DAY}" not in SUCCEEDED:
        pytest.skip(f"needs the run celery_{DAY} of the test above, which did not succeed here")
    (block,) = doc_blocks("test_compose_celery.py")
    done = run_doc_block(stack, block)
    out = done.stdout + done.stderr
    assert "champion:" in done.stdout and str(DAY) in done.stdout, out  # the run above
    assert "flight-delays/artifacts" in done.stdout, out  # the bucket lists its root folder


def test_down_v_leaves_nothing(compose: Compose):
    compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
    assert compose.leftovers() == {}, compose.leftovers()
