"""flight_delays.monitor.alerts: the fields of an alert, its mail and webhook forms, the anti-flood
rule and the alerts table."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from alert_support import LIMIT, T0, URL, failed
from sqlalchemy import inspect

from flight_delays.monitor import alerts
from flight_delays.store import registry


def test_a_failure_alert_holds_dag_run_day_task_last_error_line_and_link():
    alert = failed()
    assert alert.fields == {
        "DAG": "flight_delays",
        "run": "manual__2013-03-16T07:00:00+00:00",
        "day": "2013-03-15",
        "failed task": "ingest",
        "error": "ValueError: bad <rows>",
        "link": URL,
    }
    assert alert.title == "[flight_delays] flight_delays: run failed for 2013-03-15"
    body = alerts.text_body(alert)
    for value in alert.fields.values():
        assert value in body
    html = alerts.html_body(alert)
    assert "bad &lt;rows&gt;" in html and "<rows>" not in html  # escaped
    assert f'<a href="{URL}">' in html


def test_the_webhook_payload_is_json_with_a_text_and_the_fields():
    payload = json.loads(json.dumps(alerts.webhook_payload(failed())))
    assert payload["kind"] == "failure" and payload["day"] == "2013-03-15"
    assert payload["fields"]["failed task"] == "ingest" and payload["url"] == URL
    assert "ValueError: bad <rows>" in payload["text"]


def test_last_line_of_an_error():
    assert alerts.last_line("a\n  b  \n\n") == "b"
    assert alerts.last_line(None) == "" and alerts.last_line("  \n") == ""
    assert alerts.last_line("x" * 600, limit=10) == "x" * 9 + "…"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="alert kind must be one of"):
        alerts.Alert(kind="oops", title="t", dag_id="d", at=T0)


def test_a_failure_without_a_task_or_error_says_so():
    alert = alerts.failure_alert("d", "r", None, None, None, None, T0)
    assert alert.fields["failed task"].startswith("none")
    assert alert.fields["error"].startswith("unknown")
    assert alert.fields["day"] == "unknown" and "link" not in alert.fields


# --- anti-flood -------------------------------------------------------------------------------
def test_at_most_count_alerts_per_window_are_sent():
    history = [(T0, alerts.SENT), (T0 + timedelta(minutes=5), alerts.NOT_SENT)]
    third = alerts.rate_decision(history, T0 + timedelta(minutes=10), LIMIT)
    assert third.send and third.last_in_window and third.held_back == 0
    assert "further failed runs" in " ".join(third.notes(LIMIT, "failed runs"))
    history.append((T0 + timedelta(minutes=10), alerts.SENT))
    assert not alerts.rate_decision(history, T0 + timedelta(minutes=11), LIMIT).send


def test_after_the_window_the_next_alert_says_how_many_were_held_back():
    history = [(T0 + timedelta(minutes=m), alerts.SENT) for m in (0, 1, 2)]
    history += [(T0 + timedelta(minutes=m), alerts.SUPPRESSED) for m in (3, 4, 5, 6)]
    later = alerts.rate_decision(history, T0 + timedelta(minutes=61), LIMIT)
    assert later.send and later.held_back == 4
    assert later.held_back_since == T0 + timedelta(minutes=3)
    (note,) = later.notes(LIMIT, "failed runs")
    assert note.startswith("4 more failed runs of this DAG since 2026-12-05T07:03")


def test_alerts_only_logged_do_not_count_against_the_window():
    history = [(T0 + timedelta(minutes=m), alerts.LOG_ONLY) for m in range(10)]
    decision = alerts.rate_decision(history, T0 + timedelta(minutes=11), LIMIT)
    assert decision.send and not decision.last_in_window and decision.held_back == 0


# --- dispatch and the table --------------------------------------------------------------------
@pytest.fixture
def engine(tmp_path):
    engine = registry.connect(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    yield engine
    engine.dispose()


def test_revision_0007_creates_the_alerts_table_as_declared(engine):
    columns = {c["name"] for c in inspect(engine).get_columns("alerts")}
    assert columns == set(alerts.ALERTS.c.keys())
    assert {"id", "at", "kind", "dag_id", "run_id", "day", "summary", "channels"} <= columns


def test_a_transport_that_is_down_is_logged_with_its_reason_and_fails_nothing(engine, caplog):
    sent = []

    def refused(alert):
        raise ConnectionRefusedError(111, "Connection refused")

    result = alerts.dispatch(failed(), {"smtp": refused, "webhook": sent.append}, engine, LIMIT)
    assert result["channels"] == (
        "smtp: not sent: ConnectionRefusedError: [Errno 111] Connection refused; webhook: sent"
    )
    assert result["delivery"] == alerts.SENT and len(sent) == 1
    assert "ALERT (sent; smtp: not sent" in caplog.text and "ValueError: bad <rows>" in caplog.text
    row = alerts.latest(engine)
    assert row["kind"] == "failure" and row["day"] == date(2013, 3, 15)
    assert row["channels"] == result["channels"] and "failed task: ingest" in row["summary"]


def test_without_connections_the_alert_is_logged_and_recorded_only(engine, caplog):
    result = alerts.dispatch(failed(), {}, engine, LIMIT)
    assert result == {
        "channels": "log only: no alert connection",
        "delivery": alerts.LOG_ONLY,
        "summary": failed().summary,
    }
    assert alerts.latest(engine)["channels"] == "log only: no alert connection"
    assert "ALERT (log only" in caplog.text


def test_a_backfill_of_failing_runs_sends_three_then_records_the_rest(engine):
    sent = []
    outcomes = [
        alerts.dispatch(failed(T0 + timedelta(seconds=i)), {"smtp": sent.append}, engine, LIMIT)
        for i in range(10)
    ]
    assert [o["delivery"] for o in outcomes] == [alerts.SENT] * 3 + [alerts.SUPPRESSED] * 7
    assert len(sent) == 3 and "until the window has room" in " ".join(sent[2].notes)
    # The next failure after the window says how many were held back.
    alerts.dispatch(failed(T0 + timedelta(minutes=61)), {"smtp": sent.append}, engine, LIMIT)
    assert len(sent) == 4 and sent[3].notes[0].startswith("7 more alerts of this DAG")
    assert alerts.latest(engine)["delivery"] == alerts.SENT


def test_a_transport_that_never_answers_is_given_up_after_the_budget(engine, caplog):
    # A mail server that accepts and never answers must not hold the webhook, the record
    # (the dag-processor kills a failure callback after 50 s) or the day's predictions.
    import threading
    import time

    release, sent = threading.Event(), []
    started = time.monotonic()
    try:
        result = alerts.dispatch(
            failed(), {"smtp": lambda a: release.wait(30), "webhook": sent.append}, engine,
            LIMIT, budget_s=0.5,
        )  # fmt: skip
        waited = time.monotonic() - started
    finally:
        release.set()
    # Each of the two transports had half the budget; the mail's was used up.
    assert result["channels"] == "smtp: not sent: no answer within 0.25 s; webhook: sent"
    assert result["delivery"] == alerts.SENT and len(sent) == 1
    assert 0.25 <= waited < 5, waited
    assert alerts.latest(engine)["channels"] == result["channels"]


def test_a_transport_that_dies_of_a_base_exception_is_reported_and_nothing_raises(engine):
    def interrupted(alert):
        raise KeyboardInterrupt("stopped")

    result = alerts.dispatch(failed(), {"smtp": interrupted}, engine, LIMIT)
    assert result["channels"] == "smtp: not sent: KeyboardInterrupt: stopped"


def test_an_unreachable_registry_does_not_stop_the_alert(tmp_path):
    sent = []
    result = alerts.dispatch(failed(), {"webhook": sent.append}, None, LIMIT)
    assert result["delivery"] == alerts.SENT and len(sent) == 1


# --- the drift alert ---------------------------------------------------------------------
def test_a_flagged_feature_makes_a_drift_alert_naming_it_and_the_largest_psi():
    brief = {
        "flagged": ["distance", "carrier"],
        "max": {"feature": "distance", "psi": 0.812},
        "alert": 0.25,
        "skipped": None,
    }
    title, fields = alerts.drift_message("2013-04-29", brief)
    assert title == (
        "input drift on 2013-04-29: 2 feature(s) at or above PSI 0.25 against the training window"
    )
    assert fields["flagged features"] == "distance, carrier"
    assert fields["largest"] == "distance: PSI 0.81"
    alert = alerts.Alert(kind="drift", title=title, dag_id="flight_delays", at=T0, fields=fields)
    assert "distance, carrier" in alert.summary


@pytest.mark.parametrize(
    "brief",
    [
        None,  # a run recorded before drift was measured
        {"flagged": [], "max": {"feature": "dest", "psi": 0.04}, "alert": 0.25, "skipped": None},
        # Too few flights: not measured, and never an alarm.
        {"flagged": [], "max": None, "alert": 0.25, "skipped": "too few flights: 40 rows"},
    ],
)
def test_no_drift_alert_without_a_flagged_feature(brief):
    assert alerts.drift_message("2013-04-29", brief) is None
