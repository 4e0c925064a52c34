"""Alerts on the live no-Docker stack (docs/monitoring.md), against real servers this
module starts: an SMTP server (aiosmtpd) and an HTTP server for the webhook, wired as
the Airflow connections flight_delays_smtp and flight_delays_webhook through the REST
API. In file order: a late day waits (reschedule, no retry used) and then alerts; a day
that arrives while ingest waits is processed; a failed run sends exactly one mail and
one POST; an SMTP server that refuses connections fails nothing; a nightly run held
back past the prediction run gives a deadline alert; a task that succeeds on a retry
sends nothing.

The late-data tests need a processed day whose wait is not over, so they take the day
from the clock (yesterday in New York, the day the scheduled run of ``live_dag``
processed) and set ``ingest.wait_until`` to a moment a little ahead; the day's warehouse
rows and raw partition are set aside for the test and put back after it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import select, text
from stack_helpers import DAG_ID, PARAMS, Stack, run_path

from flight_delays.store.db import open_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alert_servers import (
    Hook,
    Mailbox,
    free_port,
    smtp_connection,
    smtp_server,
    webhook_connection,
    webhook_server,
)

pytestmark = pytest.mark.stack

PREDICT_DAG = "flight_delays_predict"
NY = ZoneInfo("America/New_York")
BROKEN_DAY = "2013-01-10"  # its window is not in the test warehouse: ingest fails at once


@pytest.fixture(scope="module")
def servers(live_dag: Stack) -> Iterator[tuple[Stack, Mailbox, Hook]]:
    """The two servers, and the two connections pointing at them (deleted after)."""
    stack = live_dag
    wait_until_idle(stack)
    with smtp_server() as box, webhook_server() as hook:
        set_connection(stack, "flight_delays_smtp", smtp_connection(box.port))
        set_connection(stack, "flight_delays_webhook", webhook_connection(hook.url))
        try:
            yield stack, box, hook
        finally:
            for conn_id in ("flight_delays_smtp", "flight_delays_webhook"):
                stack.api("DELETE", f"/connections/{conn_id}")
            (stack.root / "include" / "params.yaml").write_text(PARAMS)


def set_connection(stack: Stack, conn_id: str, spec: str) -> None:
    import json

    body = {"connection_id": conn_id, **json.loads(spec)}
    if "extra" in body:
        body["extra"] = json.dumps(body["extra"])
    stack.api("DELETE", f"/connections/{conn_id}")
    stack.ok("POST", "/connections", json=body)


def wait_until_idle(stack: Stack, timeout: float = 420) -> None:
    """Until the scheduled run made by the unpause has finished (it processes yesterday)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.ok("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        active = [r for r in runs if r["state"] in ("queued", "running")]
        if scheduled and not active:
            return
        assert time.monotonic() < deadline, f"runs still active: {active}"
        time.sleep(3)


def wait_for(what: str, check, timeout: float = 180, every: float = 2):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(every)


def run_state(stack: Stack, run_id: str, dag_id: str = DAG_ID) -> tuple[str, dict]:
    run = stack.ok("GET", run_path(run_id, dag_id))
    tis = stack.ok("GET", f"{run_path(run_id, dag_id)}/taskInstances")["task_instances"]
    return run["state"], {t["task_id"]: t for t in tis}


def trigger(stack: Stack, run_id: str, dag_id: str = DAG_ID, **body) -> str:
    stack.ok("POST", f"/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, **body})
    return run_id


def alert_rows(stack: Stack, run_id: str | None = None, kind: str | None = None) -> list[dict]:
    from flight_delays.monitor.alerts import ALERTS

    query = select(ALERTS).order_by(ALERTS.c.id)
    if run_id:
        query = query.where(ALERTS.c.run_id == run_id)
    if kind:
        query = query.where(ALERTS.c.kind == kind)
    engine = open_engine(stack.warehouse_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
    finally:
        engine.dispose()


def posts_for(hook: Hook, run_id: str) -> list[dict]:
    return [p["json"] for p in hook.posts if p["json"].get("run_id") == run_id]


def mails_for(box: Mailbox, run_id: str) -> list[str]:
    return [t for t in box.texts() if run_id in t]


# --- late data -------------------------------------------------------------------------------
def set_wait(stack: Stack, deadline: datetime, poke_seconds: int = 30) -> date:
    """ingest.wait_until at ``deadline`` (New York); returns the day whose wait it ends."""
    local = deadline.astimezone(NY)
    params = PARAMS.replace(
        "ingest: {window_days: 14}",
        "ingest: {window_days: 14, "
        f'wait_until: "{local.strftime("%H:%M:%S")}", wait_poke_seconds: {poke_seconds}}}',
    )
    assert params != PARAMS, "stack_helpers.PARAMS changed: update this test"
    (stack.root / "include" / "params.yaml").write_text(params)
    return local.date() - timedelta(days=1)


@contextmanager
def withheld(stack: Stack, day: date) -> Iterator[dict[str, pd.DataFrame]]:
    """The day's warehouse rows and raw partition set aside; put back afterwards (rows
    re-inserted unless the test did; the partition unless a run froze a new one)."""
    engine = open_engine(stack.warehouse_url)
    partition = stack.root / "data" / "raw" / f"ds={day.isoformat()}"
    aside = Path(tempfile.mkdtemp(prefix="withheld-")) / partition.name
    rows = {}
    where = "WHERE CAST(local_date AS DATE) = :day"
    try:
        with engine.begin() as conn:
            for table in ("flights", "weather"):
                query = text(f"SELECT * FROM {table} {where}")
                rows[table] = pd.read_sql(query, conn, params={"day": day})
                conn.execute(text(f"DELETE FROM {table} {where}"), {"day": day})
        assert len(rows["flights"]) > 0, f"the test warehouse holds no flights for {day}"
        if partition.exists():
            shutil.move(partition, aside)
        yield rows
    finally:
        with engine.begin() as conn:
            for table, frame in rows.items():
                present = conn.execute(
                    text(f"SELECT COUNT(*) FROM {table} {where}"), {"day": day}
                ).scalar_one()
                if not present and len(frame):
                    frame.to_sql(table, conn, if_exists="append", index=False)
        engine.dispose()
        if aside.exists() and not partition.exists():
            shutil.move(aside, partition)
        shutil.rmtree(aside.parent, ignore_errors=True)


def put_back(stack: Stack, rows: dict[str, pd.DataFrame]) -> None:
    engine = open_engine(stack.warehouse_url)
    try:
        with engine.begin() as conn:
            for table, frame in rows.items():
                frame.to_sql(table, conn, if_exists="append", index=False)
    finally:
        engine.dispose()


def test_a_late_day_waits_without_a_retry_then_fails_as_late_data_and_alerts(servers):
    stack, box, hook = servers
    deadline = datetime.now(NY) + timedelta(seconds=75)
    day = set_wait(stack, deadline)
    with withheld(stack, day):
        run_id = trigger(stack, f"late_{day}", logical_date=None, conf={"day": day.isoformat()})
        waits = wait_for(
            "ingest to wait (up_for_reschedule)",
            lambda: (
                run_state(stack, run_id)[1].get("ingest", {}).get("state") == "up_for_reschedule"
            ),
            timeout=120,
        )
        assert waits
        state, tis = wait_for(
            "the run to fail at the deadline",
            lambda: (s := run_state(stack, run_id))[0] in ("failed", "success") and s,
            timeout=240,
        )
        assert datetime.now(NY) >= deadline
    assert state == "failed"
    assert tis["ingest"]["state"] == "failed"
    assert tis["ingest"]["try_number"] == 1, "waiting for late data must not use up retries"
    (post,) = wait_for("the late-data webhook POST", lambda: posts_for(hook, run_id))
    assert post["kind"] == "late_data"
    assert "late data" in post["fields"]["error"] and day.isoformat() in post["title"]
    (mail,) = wait_for("the late-data mail", lambda: mails_for(box, run_id))
    assert "late data" in mail
    (row,) = alert_rows(stack, run_id)
    assert row["kind"] == "late_data" and row["channels"] == "smtp: sent; webhook: sent"


def test_a_day_that_arrives_while_ingest_waits_is_processed(servers):
    stack, _box, hook = servers
    day = set_wait(stack, datetime.now(NY) + timedelta(minutes=10))
    with withheld(stack, day) as rows:
        run_id = trigger(stack, f"arrives_{day}", logical_date=None, conf={"day": day.isoformat()})
        wait_for(
            "ingest to wait (up_for_reschedule)",
            lambda: (
                run_state(stack, run_id)[1].get("ingest", {}).get("state") == "up_for_reschedule"
            ),
            timeout=120,
        )
        put_back(stack, rows)  # the day arrives
        stack.wait_for_run(run_id, timeout=420)
    _state, tis = run_state(stack, run_id)
    assert tis["ingest"]["try_number"] == 1
    assert (stack.root / "data" / "raw" / f"ds={day.isoformat()}" / "flights.parquet").is_file()
    assert not posts_for(hook, run_id) and not alert_rows(stack, run_id)


# --- failure alerts --------------------------------------------------------------------------
def test_a_failed_run_sends_exactly_one_mail_and_one_post_with_its_fields(servers):
    stack, box, hook = servers
    (stack.root / "include" / "params.yaml").write_text(PARAMS)
    run_id = trigger(stack, "broken_2013-01-10", logical_date="2013-01-11T02:00:00-05:00")
    wait_for("the run to fail", lambda: run_state(stack, run_id)[0] == "failed", timeout=240)
    (mail,) = wait_for("the failure mail", lambda: mails_for(box, run_id), timeout=120)
    for field in (DAG_ID, run_id, BROKEN_DAY, "ingest", "NoFlightsError: no flights for"):
        assert field in mail, field
    assert f"/dags/{DAG_ID}/runs/broken_2013-01-10" in mail  # the link to the run
    (post,) = wait_for("the webhook POST", lambda: posts_for(hook, run_id))
    assert post["fields"]["failed task"] == "ingest" and post["day"] == BROKEN_DAY
    time.sleep(15)  # exactly one: nothing else arrives for this run
    assert len(mails_for(box, run_id)) == 1 and len(posts_for(hook, run_id)) == 1
    (row,) = alert_rows(stack, run_id)
    assert row["kind"] == "failure" and row["channels"] == "smtp: sent; webhook: sent"


def test_an_smtp_server_that_refuses_fails_nothing_and_the_reason_is_recorded(servers):
    stack, box, hook = servers
    set_connection(stack, "flight_delays_smtp", smtp_connection(free_port()))  # nobody there
    try:
        run_id = trigger(stack, "broken_smtp_down", logical_date="2013-01-12T02:00:00-05:00")
        wait_for("the run to fail", lambda: run_state(stack, run_id)[0] == "failed", timeout=240)
        (post,) = wait_for("the webhook POST", lambda: posts_for(hook, run_id), timeout=120)
        assert post["fields"]["failed task"] == "ingest"
        (row,) = wait_for("the alert's record", lambda: alert_rows(stack, run_id))
        assert row["channels"].startswith("smtp: not sent: ConnectionRefusedError")
        assert row["channels"].endswith("webhook: sent")
        assert not mails_for(box, run_id)
        _state, tis = run_state(stack, run_id)
        assert tis["ingest"]["try_number"] == 1  # the run failed for its data, only once

        # A task's own alert (the deadline check) with SMTP down: the task succeeds.
        held_back_night_gives_a_deadline_alert(stack, hook, smtp_down=True)
    finally:
        set_connection(stack, "flight_delays_smtp", smtp_connection(box.port))


def held_back_night_gives_a_deadline_alert(stack: Stack, hook: Hook, smtp_down: bool) -> None:
    """A nightly run for 2013-04-07 held back (its DAG paused: it stays queued), then the
    05:00 prediction run of 2013-04-08: it serves, and alerts that the night is late."""
    from flight_delays.store import registry

    # A run that recorded the day (a re-run) would satisfy the check: no live test
    # processes 2013-04-07 (keep it so). The prediction run freezes the raw days of its
    # window, up to 04-07: test_faults needs 2013-04-15..17 unfetched.
    engine = open_engine(stack.warehouse_url)
    try:
        assert registry.run_ids_of_day(engine, date(2013, 4, 7)) == []
    finally:
        engine.dispose()
    stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    held = trigger(stack, "held_2013-04-07", logical_date="2013-04-08T02:00:00-04:00")
    try:
        stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": False})
        predict = trigger(
            stack, "deadline_2013-04-08", PREDICT_DAG, logical_date="2013-04-08T05:00:00-04:00"
        )
        stack.wait_for_run(predict, timeout=300, dag_id=PREDICT_DAG)
        assert run_state(stack, held)[0] == "queued"
        posts = wait_for(
            "the deadline POST",
            lambda: [p for p in posts_for(hook, predict) if p["kind"] == "deadline"],
        )
        (post,) = posts
        assert post["day"] == "2013-04-07" and post["dag_id"] == PREDICT_DAG
        assert (
            post["fields"]["DAG"] == DAG_ID and post["fields"]["state"] == "not finished or failed"
        )
        (row,) = alert_rows(stack, predict, kind="deadline")
        assert row["channels"].startswith("smtp: not sent" if smtp_down else "smtp: sent")
    finally:
        stack.ok("PATCH", f"/dags/{PREDICT_DAG}", json={"is_paused": True})
        stack.api("DELETE", run_path(held))
        stack.ok("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})


def test_a_task_that_fails_then_succeeds_on_a_retry_sends_nothing(servers):
    """An older day of the window partly loaded: ingest fails (IncompleteDayError, a
    transient error) and is retried; the rest of the day arrives; the run succeeds. Last
    in the file: the DAG's last run succeeds, so the failed runs above do not count
    towards the DAG's max_consecutive_failed_dag_runs for the next modules."""
    stack, box, hook = servers
    (stack.root / "include" / "params.yaml").write_text(PARAMS)
    # A day and a logical date no other live test uses (the UI's backfill takes the runs of
    # 9-11 April, the predictions test 21 April), and a window that leaves the days
    # test_faults needs unfetched (2013-04-15..17) alone.
    older = date(2013, 4, 1)  # in the window of 2013-04-03
    with withheld(stack, older) as rows:
        flights = rows["flights"]
        partial = {"flights": flights[flights["origin"] == "EWR"], "weather": rows["weather"]}
        put_back(stack, partial)
        run_id = trigger(stack, "retried_2013-04-03", logical_date="2013-04-04T02:00:00-04:00")
        wait_for(
            "ingest to fail into a retry",
            lambda: run_state(stack, run_id)[1].get("ingest", {}).get("state") == "up_for_retry",
            timeout=180,
        )
        put_back(stack, {"flights": flights[flights["origin"] != "EWR"]})  # the rest arrives
        state, tis = wait_for(
            "the run to end",
            lambda: (s := run_state(stack, run_id))[0] in ("failed", "success") and s,
            timeout=420,
        )
    assert state == "success" and tis["ingest"]["try_number"] == 2
    time.sleep(10)
    assert not posts_for(hook, run_id) and not mails_for(box, run_id)
    assert not alert_rows(stack, run_id)
