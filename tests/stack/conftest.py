"""One private no-Docker stack shared by every live test of the session (test_live_stack,
test_ui, test_faults): `deploy/stack/stack.py up` with a throw-away state folder, free
ports and a tmp project root (short window), PostgreSQL metastore and warehouse; always
`down` at the end of the session, and nothing of it may be left running. A second one,
under CeleryExecutor (``celery_stack``: redis, moto's S3 server, two workers), is started
only for the tests that ask for it (test_celery_live.py), on ports of its own.

The browser tests use pytest-playwright's fixtures (``page``, ``browser``) on the system
Chromium: the launch arguments below point Playwright at it, so no browser is downloaded.

The warehouse holds real 2013 days only (no replay), so the tests that trigger runs for
fixed days never depend on today's date. The tests of the clock-driven paths (the
scheduled run, a trigger without a logical date) add a small replay of the last weeks
before the DAG is unpaused, read from the clock once; their expectations come from the
runs' own timestamps.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest

# The stack's package (deploy/stack/flight_stack) is not installed: the stack tests import
# it from its folder, as its entry script deploy/stack/stack.py does.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "stack"))

from flight_stack import settings
from flight_stack.handle import private_stack
from stack_helpers import (
    CHROMIUM_FLAGS,
    DAG_ID,
    PARAMS,
    SEEDED,
    TIMINGS,
    TZ,
    VIEWPORT,
    WINDOW_DAYS,
    Stack,
    StatsdListener,
    chromium_binary,
    free_port,
    replay_window,
)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Tests marked ``changes_stack`` leave the session's stack changed for good (models of
    days later than the ones other tests promote): they run after every other test of the
    session, in their own order. Done once collection is over, after every reordering of
    ``pytest_collection_modifyitems`` (pytest's --ff and --nf move failed or new tests
    first, in hook wrappers that a conftest's own hook cannot follow)."""
    session.items.sort(key=lambda item: item.get_closest_marker("changes_stack") is not None)


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("no-Docker stack measurements")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value}")


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str = "stack", **extra: str
) -> Iterator[Stack]:
    """A private stack (``extra``: more FLIGHT_DELAYS_STACK_* settings) with the 2013 days
    seeded and the DAG parsed; `down` after the block, which must leave nothing running
    and keep the PostgreSQL data. ``name`` prefixes its measurements."""
    try:
        settings._pg_bin()
    except settings.StackError as exc:
        pytest.fail(f"the stack tests need PostgreSQL 15: {exc}")
    label = "" if name == "stack" else f"{name}: "
    root = tmp_path_factory.mktemp(f"{name}-project")
    (root / "include").mkdir()
    (root / "include" / "params.yaml").write_text(PARAMS)
    # This machine's own settings, read after the tracked ones: retries wait at most 20 s
    # instead of the DAG's 2-8 minutes ([core] max_task_retry_delay caps every backoff;
    # the scheduler reads it), so the fault tests see real retries in a bearable time.
    stack = None
    try:
        local = "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY=20\n"
        with private_stack(root, local, up_timeout=400, **extra) as stack:
            TIMINGS[f"{label}make up to healthy API (no seed)"] = f"{stack.up_seconds:.1f} s"
            from flight_delays.intake.demo import seed

            seed(stack.warehouse_url, [0], original_range=SEEDED)
            stack.wait_for_dag(timeout=120)
            yield stack
    finally:
        # Checked whatever the block did (a failure in it stays the first error shown).
        down = stack.stopped if stack is not None else None
        if down is not None:
            escalated = [line for line in down.result.stdout.splitlines() if "SIGKILL" in line]
            TIMINGS[f"{label}make down"] = f"{down.seconds:.1f} s " + (
                f"({'; '.join(escalated)})" if escalated else "(no SIGKILL needed)"
            )
            assert down.result.returncode == 0, down.result.stdout + down.result.stderr
            assert not down.left, f"processes of the test stack survived `down`: {down.left}"
            assert down.data_kept, "`down` must keep the PostgreSQL data"


@pytest.fixture(scope="session")
def statsd() -> Iterator[StatsdListener]:
    """The UDP socket the shared stack sends Airflow's StatsD metrics to."""
    listener = StatsdListener()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, statsd: StatsdListener) -> Iterator[Stack]:
    # Airflow's StatsD metrics go to the test's socket, bound before the stack starts.
    with running_stack(
        tmp_path_factory,
        FLIGHT_DELAYS_STACK_STATSD_HOST="127.0.0.1",
        FLIGHT_DELAYS_STACK_STATSD_PORT=str(statsd.port),
    ) as started:
        yield started


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack under CeleryExecutor (`make up EXECUTOR=celery`): its own state folder
    and free ports, redis and the S3 server included, so it runs beside ``stack``. One
    module uses it (test_celery_live.py): it goes down when that module ends, rather than
    idling beside the default stack, on the same two cores, until the session ends."""
    with running_stack(
        tmp_path_factory,
        "celery",
        FLIGHT_DELAYS_STACK_EXECUTOR="celery",
        FLIGHT_DELAYS_STACK_REDIS_PORT=str(free_port()),
        FLIGHT_DELAYS_STACK_S3_PORT=str(free_port()),
        # Not the machine's 8125: a port nothing listens on (the packets are dropped).
        FLIGHT_DELAYS_STACK_STATSD_PORT=str(free_port()),
    ) as started:
        yield started


def seed_recent_days(stack: Stack) -> tuple[date, date]:
    """Replay the last weeks (New York calendar) into the warehouse: enough for the
    scheduled run the scheduler makes on unpause (the latest 02:00) and for a trigger
    without a logical date, even if the session crosses midnight. The last day replayed
    is tomorrow: no run of the session's own clock processes it (the scheduled runs of
    a session that crosses 02:00 process today), so a test can process it as its own."""
    from flight_delays.intake.demo import seed

    today = pendulum.now(TZ).date()
    first, last = today - timedelta(days=WINDOW_DAYS + 3), today + timedelta(days=1)
    for cycle, original in replay_window(first, last):
        seed(stack.warehouse_url, [cycle], original_range=original)
    return first, last


def unpause(stack: Stack) -> Stack:
    """The DAG unpaused (it is created paused: dags_are_paused_at_creation)."""
    dag = stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    assert dag["is_paused"] is False
    return stack


@pytest.fixture(scope="session")
def recent_days(stack: Stack) -> tuple[date, date]:
    return seed_recent_days(stack)


@pytest.fixture(scope="session")
def live_dag(stack: Stack, recent_days: tuple[date, date]) -> Stack:
    return unpause(stack)


@pytest.fixture(scope="module")
def celery_dag(celery_stack: Stack) -> Stack:
    """The celery stack's DAG unpaused, with the recent days its scheduled run needs."""
    seed_recent_days(celery_stack)
    return unpause(celery_stack)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """pytest-playwright's launch arguments, on the system Chromium. The UI tests fail
    (not skip) without it: CI installs it (apt-get install -y chromium)."""
    binary = chromium_binary()
    if binary is None:
        pytest.fail("the UI tests need Chromium: apt-get install -y chromium")
    return {**browser_type_launch_args, "executable_path": binary, "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": VIEWPORT}
