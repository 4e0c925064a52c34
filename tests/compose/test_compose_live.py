"""docker-compose.yaml run live: the stand-ins of the official images and the project image
built here, `make compose-up STANDINS=1` in a copy of the checkout with a generated .env
(as docs/docker-compose.md says: it generates the secret files, builds and waits until
every service is healthy), then a run, the Model reports page, the champion asset and its
predictions, a backfill, a scheduler and a postgres container crashed with a SIGKILL of
their main process, and `make compose-down V=1`. One stack for the module; the tests run
in file order and build on each other. The stack is reached only through ports published
on 127.0.0.1: the api-server's, and PostgreSQL's through the documented override
deploy/compose.ports.yaml (COMPOSE_FILE in .env). `docker` itself is called only for
what the engine alone can do: builds, `inspect` for a container's main pid (the SIGKILL),
and the leftovers of the project."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest
from compose_support import (
    AIRFLOW_UID,
    COMPOSE_FILES,
    DAG_ID,
    PREDICT_DAG,
    PROJECT_IMAGE,
    TIMINGS,
    Compose,
    backfill_logical_days,
    bring_up,
    doc_blocks,
    run,
    run_doc_block,
    run_path,
)

pytestmark = pytest.mark.compose
# `make compose-up STANDINS=1` brings the stack up (conftest: the whole checkout copied),
# and builds the image under the Makefile's default name, which the .env then names too.
VIA_MAKE = True
EXTRA_ENV = {"AIRFLOW_IMAGE_NAME": "flight-delay-pipeline:3.3.2"}

SERVICES = {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer"}  # fmt: skip
# With the test's params the model of 20 April 2013 beats the baseline (as in tests/stack):
# its promotion is the champion event; 21 April is the day it serves.
TRAINED, SERVED = date(2013, 4, 20), date(2013, 4, 21)
BACKFILL = (date(2013, 4, 24), date(2013, 4, 26))  # logical days: processes 23-25 April
SCHEDULER_CRASH_DAY, POSTGRES_CRASH_DAY = date(2013, 4, 27), date(2013, 4, 28)
TRIGGERED: list[str] = []  # run ids this module made, for the registry check


def trigger(compose: Compose, day: date) -> str:
    """A run of flight_delays for flight day ``day`` (its 02:00 run on the next day)."""
    run_id = f"compose_{day}"
    compose.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": run_id, "logical_date": f"{day + timedelta(days=1)}T02:00:00-04:00"},
    )
    TRIGGERED.append(run_id)
    return run_id


def wait_for_running_task(compose: Compose, run_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        running = [t["task_id"] for t in compose.tasks(run_id) if t["state"] == "running"]
        if running:
            return running[0]
        assert time.monotonic() < deadline, f"no task of {run_id} ran within {timeout:.0f} s"
        time.sleep(0.5)


def sigkill_main_process(compose: Compose, service: str) -> tuple[int, int]:
    """A crash, as Docker sees one: SIGKILL of the container's main process from the host
    (`docker kill` would be a manual stop, which the restart policy leaves stopped).
    Returns the restart count before and the killed pid."""
    state = compose.inspect(service)
    pid, restarts = state["State"]["Pid"], state["RestartCount"]
    assert pid > 0 and state["State"]["Running"], f"{service} is not running: {state['State']}"
    os.kill(pid, signal.SIGKILL)
    return restarts, pid


def wait_until_back(compose: Compose, service: str, restarts: int, timeout: float = 240) -> float:
    """Seconds until the restart policy brought ``service`` back and it is healthy."""
    started = time.monotonic()
    while True:
        state = compose.inspect(service)
        health = state["State"].get("Health", {}).get("Status")
        if state["RestartCount"] > restarts and state["State"]["Running"] and health == "healthy":
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"{service} not back and healthy {timeout:.0f} s after the SIGKILL: restarts "
                f"{state['RestartCount']} (before {restarts}), state {state['State']['Status']}, "
                f"health {health}\n{compose.logs(service, tail=40)}"
            )
        time.sleep(2)


@pytest.fixture(scope="module")
def stack(compose: Compose) -> Iterator[Compose]:
    """The stack up and healthy (`make compose-up STANDINS=1`), the DAG parsed."""
    yield bring_up(compose, make=True)


# --- the images ---------------------------------------------------------------------------
def test_the_project_image_passes_pip_check_and_keeps_no_ca_bundle(docker, images):
    script = (
        "pip check && id -u && airflow version && python -c 'import flight_delays' "
        "&& ! ls /tmp/ca-bundle.pem /run/secrets/ca_bundle 2>/dev/null"
    )
    result = run([docker, "run", "--rm", PROJECT_IMAGE, "bash", "-c", script], check=False)
    assert result.returncode == 0, f"inside {PROJECT_IMAGE}: {result.stdout}{result.stderr}"
    lines = result.stdout.split()
    assert "No broken requirements found." in result.stdout, result.stdout
    assert "50000" in lines and "3.3.2" in lines, result.stdout  # non-root, the locked Airflow


def test_a_missing_secret_file_is_refused_with_its_path(compose: Compose):
    """Before anything is up: the secret files as the docs make them, one deleted
    (airflow_jwt_secret): `docker compose up` stops, naming the missing file, and starts
    nothing; `down -v` then leaves nothing. `make compose-up` below generates it again."""
    run(["python3", "deploy/compose-secrets.py"], cwd=compose.root)
    missing = compose.root / "secrets" / "airflow_jwt_secret"
    missing.unlink()
    # The image the fixture built: `make compose-up` has not built its own yet, and a
    # missing image would stop `up` (a pull) before the secret is looked at.
    compose.write_env({**compose.env, "AIRFLOW_IMAGE_NAME": PROJECT_IMAGE})
    try:
        result = compose("up", "--detach", "--no-build", timeout=180, check=False)
    finally:
        compose.write_env()
    assert result.returncode != 0
    assert str(missing) in result.stderr, result.stderr
    running = [row for row in compose.services().values() if row.get("State") == "running"]
    assert running == [], f"a refused `up` started {running}"
    compose("down", "--volumes", "--remove-orphans", timeout=120)
    assert compose.leftovers() == {}, "nothing of the refused `up` may stay"


# --- up ---------------------------------------------------------------------------------
def test_every_service_is_healthy_and_init_exited_cleanly(stack: Compose):
    services = stack.services()
    for name in SERVICES:
        assert name in services, f"{name} missing: {sorted(services)}"
        assert services[name]["State"] == "running", services[name]
        assert services[name]["Health"] == "healthy", services[name]
    init = services["airflow-init"]
    assert init["State"] == "exited" and init["ExitCode"] == 0, init
    # The forkserver's preload list imports in the image, every module of it: one that
    # did not would be skipped without a word (frozen_heap last among them).
    init_log = stack.logs("airflow-init", tail=400)
    assert "airflow-init: preload: all import" in init_log, init_log
    # Published on loopback only: the api-server, and PostgreSQL by the ports override
    # (COMPOSE_FILE in .env, as the docs say); no profile is on.
    assert stack.env["COMPOSE_FILE"] == COMPOSE_FILES
    ports = {(row["Service"], p["URL"], p["PublishedPort"]) for row in services.values()
             for p in row.get("Publishers") or [] if p.get("PublishedPort")}  # fmt: skip
    assert ports == {
        ("airflow-apiserver", "127.0.0.1", int(stack.env["AIRFLOW_API_PORT"])),
        ("postgres", "127.0.0.1", int(stack.env["POSTGRES_PORT"])),
    }, ports
    assert httpx.get(f"{stack.api_url}/api/v2/monitor/health", timeout=30).status_code == 200


def test_a_2013_day_triggered_through_rest_succeeds(stack: Compose):
    """Unpausing makes the scheduler run the latest 02:00 (a replayed recent day): it runs
    first, then the champion goes back to the baseline, so that the 2013 model below can
    be promoted (promotion never goes backwards in time)."""
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    deadline = time.monotonic() + 420
    while True:
        runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            break
        assert time.monotonic() < deadline, f"the scheduled run did not end: {runs}"
        time.sleep(3)
    assert [r["state"] for r in runs] == ["success"], runs
    # From the host, through the published port: the registry module of the venv.
    from flight_delays.store import registry

    engine = registry.connect(stack.warehouse_url())
    try:
        champion = registry.current_champion(engine)
        if (champion.kind, champion.processed_day) != ("baseline", None):
            registry.rollback(engine, "tests/compose: start from the baseline", baseline=True)
    finally:
        engine.dispose()
    stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": False})

    started = time.monotonic()
    run_id = trigger(stack, TRAINED)
    stack.wait_for_run(run_id)
    TIMINGS["trigger (REST) to success, one run"] = f"{time.monotonic() - started:.1f} s"
    states = {t["task_id"]: t["state"] for t in stack.tasks(run_id)}
    assert states["score"] == "success" and states["publish"] == "success", states


def test_the_artifacts_land_in_the_mounted_folders_owned_by_airflow_uid(stack: Compose):
    day = TRAINED.isoformat()
    paths = [
        stack.root / "data" / "output" / f"ds={day}" / "metrics.json",
        stack.root / "reports" / f"ds={day}" / "index.html",
        stack.root / "models" / f"ds={day}",
        stack.root / "logs" / f"dag_id={DAG_ID}",
    ]
    for path in paths:
        assert path.exists(), f"{path} was not written to the bind mount"
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (AIRFLOW_UID, 0), (path, info.st_uid, info.st_gid)


def test_the_model_reports_page_needs_a_token_and_lists_the_run(stack: Compose):
    base = f"{stack.api_url}/model-reports"
    assert httpx.get(f"{base}/api/runs", timeout=30).status_code == 401
    assert httpx.get(f"{base}/", timeout=30).status_code == 401
    headers = {"Authorization": f"Bearer {stack.token()}"}
    response = httpx.get(f"{base}/api/runs", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    runs = {r["run_id"]: r for r in response.json()["runs"]}
    assert f"compose_{TRAINED}" in runs, sorted(runs)
    assert runs[f"compose_{TRAINED}"]["processed_day"] == TRAINED.isoformat()
    page = httpx.get(f"{base}/", headers=headers, timeout=30)
    assert page.status_code == 200 and TRAINED.isoformat() in page.text


def test_the_page_reads_the_registry_as_a_role_that_can_only_select(stack: Compose):
    """airflow-init stored flight_delays_warehouse_reader; its role reads the tables the
    owner made after it (default privileges) and can change none of them."""
    from db_support import assert_select_only

    conn = stack.ok("GET", "/connections/flight_delays_warehouse_reader")
    assert (conn["login"], conn["schema"]) == ("warehouse_reader", "warehouse"), conn
    password = stack.secret("warehouse_reader_password")
    port = stack.env["POSTGRES_PORT"]
    assert_select_only(
        f"postgresql+psycopg://warehouse_reader:{password}@127.0.0.1:{port}/warehouse"
    )
    assert stack.sql("select count(*) from model_runs")[0][0] >= 1  # nothing was deleted


def test_the_champion_asset_starts_the_predictions_of_the_next_day(stack: Compose):
    run_id = f"compose_{TRAINED}"
    events = stack.ok(
        "GET", "/assets/events", params={"source_dag_id": DAG_ID, "source_run_id": run_id}
    )["asset_events"]
    published = [e for e in events if e["source_task_id"] == "publish"]
    assert len(published) == 1, f"the run of {TRAINED} emitted no champion event: {events}"
    event = published[0]
    assert event["extra"]["day"] == TRAINED.isoformat()

    started, deadline = time.monotonic(), time.monotonic() + 300
    predicted = None
    while predicted is None:
        runs = stack.ok(
            "GET", f"/dags/{PREDICT_DAG}/dagRuns", params={"run_type": "asset_triggered"}
        )["dag_runs"]
        for candidate in runs:
            path = run_path(candidate["dag_run_id"], PREDICT_DAG)
            consumed = stack.ok("GET", f"{path}/upstreamAssetEvents")["asset_events"]
            if event["id"] in {e["id"] for e in consumed}:
                predicted = candidate
        assert predicted or time.monotonic() < deadline, f"no {PREDICT_DAG} run took the event"
        time.sleep(2)
    stack.wait_for_run(predicted["dag_run_id"], timeout=300, dag_id=PREDICT_DAG)
    TIMINGS["champion event to served predictions"] = f"{time.monotonic() - started:.1f} s"

    day = SERVED.isoformat()
    ((flights,),) = stack.sql(f"select count(*) from flights where local_date = '{day}'")
    (rows,) = stack.sql(
        "select count(*), count(distinct (carrier, flight, origin, sched_dep_time)), "
        f"count(distinct run_id) from predictions where flight_day = '{day}'"
    )
    assert flights > 500, f"the warehouse holds {flights} flights for {day}"
    assert rows == (flights, flights, 1), f"predictions of {day}: {rows}, flights: {flights}"


def test_a_3_day_backfill_through_rest_succeeds(stack: Compose):
    first, last = BACKFILL
    started = time.monotonic()
    backfill = stack.ok(
        "POST",
        "/backfills",
        json={
            "dag_id": DAG_ID,
            "from_date": f"{first}T00:00:00-04:00",
            "to_date": f"{last}T12:00:00-04:00",
            "max_active_runs": 2,
        },
    )
    wanted = [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]
    runs = stack.backfill_runs(wanted)
    assert len(runs) == 3, f"backfill {backfill['id']} made {len(runs)} runs: {runs}"
    for run_ in runs:
        stack.wait_for_run(run_["dag_run_id"], timeout=600)
        TRIGGERED.append(run_["dag_run_id"])
    TIMINGS["backfill of 3 days (REST), wall time"] = f"{time.monotonic() - started:.1f} s"
    logical = sorted(r["logical_date"][:10] for r in runs)
    assert logical == [str(first + timedelta(days=i)) for i in range(3)], logical


# --- docs/docker-compose.md's blocks, as written ------------------------------------------
def test_the_docs_blocks_name_this_test():
    token, checks, backfill = doc_blocks("test_compose_live.py")
    assert "/auth/token" in token and "config get-value" in checks
    assert "backfill create" in backfill


def test_the_documented_token_request_returns_a_token(stack: Compose):
    token, _checks, _backfill = doc_blocks("test_compose_live.py")
    done = run_doc_block(stack, token)
    assert json.loads(done.stdout)["access_token"], done.stdout


def test_the_documented_checks_of_a_running_stack_hold(stack: Compose):
    """Who the containers are, that they can write every artifact folder, that the four
    Airflow components read one value of each shared secret, and one api-server worker."""
    _token, checks, _backfill = doc_blocks("test_compose_live.py")
    done = run_doc_block(stack, checks)
    out = done.stdout + done.stderr
    assert f"uid={AIRFLOW_UID}" in out and "gid=0(root)" in out, out
    assert "cannot write" not in out, out
    counted = re.findall(r"^\s*(\d+) ([0-9a-f]{64})  -$", done.stdout, flags=re.M)
    # One line per secret, counted 4 (all four components agree), and the value is the
    # secret file's (the hash of the line the CLI printed).
    files = ("airflow_fernet_key", "airflow_jwt_secret", "airflow_api_secret_key")
    wanted = [hashlib.sha256(f"{stack.secret(name)}\n".encode()).hexdigest() for name in files]
    assert counted == [("4", digest) for digest in wanted], out
    assert done.stdout.rstrip().splitlines()[-1].strip() == "1", out


def test_the_documented_backfill_from_the_command_line_succeeds(stack: Compose):
    *_, backfill = doc_blocks("test_compose_live.py")
    wanted = [str(day) for day in backfill_logical_days(backfill)]
    stack.wait_for_backfills()  # the REST backfill above, until the scheduler closes it
    run_doc_block(stack, backfill)
    runs = stack.backfill_runs(wanted)
    assert sorted(r["logical_date"][:10] for r in runs) == wanted, runs
    for run_ in runs:
        stack.wait_for_run(run_["dag_run_id"], timeout=600)
        TRIGGERED.append(run_["dag_run_id"])


@pytest.mark.parametrize(
    ("service", "day"),
    [("airflow-scheduler", SCHEDULER_CRASH_DAY), ("postgres", POSTGRES_CRASH_DAY)],
)
def test_a_sigkilled_container_comes_back_and_the_run_succeeds(stack: Compose, service, day):
    run_id = trigger(stack, day)
    task = wait_for_running_task(stack, run_id)
    started = time.monotonic()
    restarts, pid = sigkill_main_process(stack, service)
    back = wait_until_back(stack, service, restarts)
    TIMINGS[f"{service} SIGKILL (pid {pid}, during {task}): back and healthy"] = f"{back:.1f} s"
    # The task killed with it (or cut from its database) is retried; nothing manual.
    stack.wait_for_run(run_id, timeout=720, retries_ok=True)
    TIMINGS[f"{service} SIGKILL to run success"] = f"{time.monotonic() - started:.1f} s"
    # A health check that ran while the database was gone failed; the next one (every
    # 30 s) passes again. What must hold: every service is healthy again by itself.
    settled = wait_all_healthy(stack, timeout=240)
    TIMINGS[f"{service} SIGKILL: every service healthy again"] = (
        f"{time.monotonic() - started:.1f} s (waited {settled:.1f} s after the run)"
    )


def wait_all_healthy(compose: Compose, timeout: float) -> float:
    """Seconds until every service of SERVICES reports healthy; fails after ``timeout`` s
    naming the ones that do not, with their last health-check outputs."""
    started = time.monotonic()
    while True:
        states = {name: compose.inspect(name)["State"] for name in SERVICES}
        sick = {n: s.get("Health", {}) for n, s in states.items()
                if s.get("Health", {}).get("Status") != "healthy"}  # fmt: skip
        if not sick:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            detail = {
                n: (h.get("Status"), h.get("FailingStreak"),
                    [(c.get("ExitCode"), c.get("Output", "")[-300:]) for c in h.get("Log", [])])
                for n, h in sick.items()
            }  # fmt: skip
            raise AssertionError(f"not healthy {timeout:.0f} s after the run: {detail}")
        time.sleep(2)


def test_the_registry_holds_one_row_per_run(stack: Compose):
    counts = dict(
        stack.sql("select run_id, count(*) from model_runs group by run_id order by run_id")
    )
    duplicated = {k: v for k, v in counts.items() if v != 1}
    assert not duplicated, f"registry rows duplicated: {duplicated}"
    missing = [r for r in TRIGGERED if r not in counts]
    assert not missing, f"runs without their registry row: {missing} (rows: {sorted(counts)})"


def test_make_compose_down_v_leaves_no_container_network_or_volume(compose: Compose):
    """As the docs say: `make compose-down V=1` (docker compose down --volumes)."""
    started = time.monotonic()
    compose.make("compose-down", "V=1", timeout=300)
    TIMINGS["make compose-down V=1"] = f"{time.monotonic() - started:.1f} s"
    assert compose.leftovers() == {}, compose.leftovers()
