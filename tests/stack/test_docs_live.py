"""The blocks of docs/guide-backups.md that need the stack of `make up`, run as written
against the session's live stack: the backup (pg_dump of the warehouse and the
metastore, the secrets copied), the restore (the scheduler stopped, pg_restore over the
warehouse, the scheduler started again) and the metadata clean-up's dry run.

A user pastes them in the checkout, where `.venv`, `deploy/` and `.stack/` are; here the
stack's project root stands in for the checkout, with those three linked into it, and
the stack's own FLIGHT_DELAYS_STACK_* settings point deploy/stack/stack.py at it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from stack_helpers import REPO, Stack

sys.path.insert(0, str(REPO / "tests" / "e2e"))

from doc_blocks import fenced_blocks

DOC = REPO / "docs" / "guide-backups.md"
MARKER = "run by tests/stack/test_docs_live.py"


def _blocks() -> list[str]:
    return [b.body for b in fenced_blocks(DOC) if b.marker == MARKER]


def _run(stack: Stack, block: str) -> subprocess.CompletedProcess[str]:
    linked = {".venv": REPO / ".venv", "deploy": REPO / "deploy", ".stack": stack.state}
    for name, target in linked.items():
        link = stack.root / name
        if not link.exists():
            link.symlink_to(target)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=stack.root,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    done = _run(stack, backup)
    assert done.returncode == 0, done.stdout + done.stderr
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

    done = _run(stack, restore)
    assert done.returncode == 0, done.stdout + done.stderr
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
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dag_run" in done.stdout + done.stderr  # it names what it would delete from


@pytest.fixture(autouse=True, scope="module")
def _no_leftover_backups(stack: Stack):
    yield
    for path in sorted((stack.root / "backups").glob("*"), reverse=True):
        path.unlink()
