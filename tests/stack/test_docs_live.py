"""The blocks of the docs that need the stack of `make up`, run as written against the
session's live stack:
- docs/guide-backups.md: the backup (pg_dump of the warehouse and the metastore, the
  secrets copied), the restore (the scheduler stopped, pg_restore over the warehouse, the
  scheduler started again) and the metadata clean-up's dry run;
- docs/operations.md: a backfill and `airflow tasks test` from the command line,
  unpausing and triggering through the REST API, and the predictions' backfill and
  re-serve trigger. They process July 2013, whose models would outrank the April ones
  other tests promote, so they run after every other test of the session
  (``changes_stack``, conftest.py).

A user pastes them in the checkout, where `.venv`, `deploy/` and `.stack/` are; here the
stack's project root stands in for the checkout, with those three linked into it, and
the stack's own FLIGHT_DELAYS_STACK_* settings point deploy/stack/stack.py at it.
"""

from __future__ import annotations

import itertools
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
PREDICT_DAG = "flight_delays_predict"
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


def test_operations_names_this_test_for_four_blocks():
    cli, rest, serve, backfill = _blocks(OPERATIONS)
    assert "backfill create" in cli and "tasks test" in cli
    assert "/auth/token" in rest and "dagRuns" in rest
    assert f"dags trigger {PREDICT_DAG}" in serve and '"day"' in serve
    assert f"unpause {PREDICT_DAG}" in backfill and "--max-active-runs 1" in backfill


@pytest.mark.changes_stack
def test_the_documented_backfill_and_tasks_test_from_the_command_line(live_dag: Stack):
    stack = live_dag
    cli, *_ = _blocks(OPERATIONS)
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
    _cli, rest, *_ = _blocks(OPERATIONS)
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


def _served_by(stack: Stack, days: list[date]) -> dict[date, set[str]]:
    """The runs whose rows the warehouse table ``predictions`` holds, per flight day."""
    engine = sa.create_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT DISTINCT flight_day, run_id FROM predictions "
                        "WHERE flight_day BETWEEN :a AND :b"),
                {"a": min(days), "b": max(days)},
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    served: dict[date, set[str]] = {day: set() for day in days}
    for day, run_id in rows:
        served.setdefault(day, set()).add(run_id)
    return served


@pytest.mark.changes_stack
def test_the_documented_prediction_backfill_then_one_day_served_again(live_dag: Stack):
    """operations.md's prediction backfill (the DAG unpaused by the block itself: a paused
    DAG's backfill runs only wait), one run at a time, each serving its own day; then the
    trigger that serves one of them again, whose rows replace the day's."""
    stack = live_dag
    _cli, _rest, serve, backfill = _blocks(OPERATIONS)
    _july_days(stack)
    stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": True})  # as created
    stack.wait_for_backfills(PREDICT_DAG)
    _run(stack, backfill)
    logical = [str(day) for day in backfill_logical_days(backfill)]
    runs = stack.backfill_runs(logical, dag_id=PREDICT_DAG)
    assert sorted(r["logical_date"][:10] for r in runs) == logical, runs
    spans = []
    for run in runs:
        done = stack.wait_for_run(run["dag_run_id"], timeout=300, dag_id=PREDICT_DAG)
        spans.append((done["start_date"], done["end_date"]))
    spans.sort()
    overlapping = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlapping, f"--max-active-runs 1, yet runs overlapped: {overlapping}"
    days = [date.fromisoformat(d) for d in logical]
    served = _served_by(stack, days)
    by_day = {date.fromisoformat(r["logical_date"][:10]): r["dag_run_id"] for r in runs}
    assert served == {day: {by_day[day]} for day in days}, served

    again = date.fromisoformat(json.loads(serve[serve.index("{") : serve.rindex("}") + 1])["day"])
    assert again in days, f"the documented trigger serves {again}, not a day of the backfill"
    # The unpause may have made the DAG's scheduled run (catchup off: the latest 05:00),
    # which holds its one active-run slot: the trigger's run would queue behind it.
    _wait_until_no_other_run(stack)
    before = {r["dag_run_id"] for r in _manual_runs(stack)}
    _run(stack, serve)
    new = [r for r in _manual_runs(stack) if r["dag_run_id"] not in before]
    assert len(new) == 1 and new[0]["conf"] == {"day": str(again)}, new
    stack.wait_for_run(new[0]["dag_run_id"], timeout=420, dag_id=PREDICT_DAG)
    served = _served_by(stack, days)
    assert served[again] == {new[0]["dag_run_id"]}, served  # replaced, one set
    assert all(served[d] == {by_day[d]} for d in days if d != again), served


def _wait_until_no_other_run(stack: Stack, timeout: float = 420) -> None:
    """Until no run of the prediction DAG but a backfill's is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        query = {"state": ["queued", "running"], "limit": 100}
        active = stack.ok("GET", f"/dags/{PREDICT_DAG}/dagRuns", params=query)["dag_runs"]
        others = [r["dag_run_id"] for r in active if r["run_type"] != "backfill"]
        if not others:
            return
        assert time.monotonic() < deadline, f"{PREDICT_DAG} runs still going: {others}"
        time.sleep(2)


def _manual_runs(stack: Stack) -> list[dict]:
    query = {"run_type": "manual", "limit": 100}
    return stack.ok("GET", f"/dags/{PREDICT_DAG}/dagRuns", params=query)["dag_runs"]
