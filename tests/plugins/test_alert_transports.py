"""plugins/flight_delays_alerts.py against real servers: a mail through the smtp
provider's notifier, a JSON POST through the http provider's, an SMTP server that
refuses connections, and no connection at all. Connections come from AIRFLOW_CONN_*."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins"))
sys.path.insert(0, str(REPO / "tests"))

from alert_servers import (  # noqa: E402
    free_port,
    smtp_connection,
    smtp_server,
    webhook_connection,
    webhook_server,
)

SMTP_ENV = "AIRFLOW_CONN_FLIGHT_DELAYS_SMTP"
WEBHOOK_ENV = "AIRFLOW_CONN_FLIGHT_DELAYS_WEBHOOK"


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "include").mkdir(parents=True)
    (root / "include" / "params.yaml").write_text('alerts:\n  mail_to: "oncall@example.com"\n')
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(root))
    monkeypatch.setenv("FLIGHT_DELAYS_SOURCE_URL", f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    # This host's ledger of alerts (the anti-flood rule's fallback): one per test.
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path / "airflow-logs"))
    for name in (SMTP_ENV, WEBHOOK_ENV, "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)
    return root


def alert():
    from flight_delays.monitor.alerts import failure_alert

    return failure_alert(
        dag_id="flight_delays",
        run_id="manual__2013-03-16T07:00:00+00:00",
        day=date(2013, 3, 15),
        task_id="ingest",
        error="AirflowFailException: NoFlightsError: no flights for 2013-03-15",
        url="http://localhost:8080/dags/flight_delays/runs/manual__2013-03-16",
        at=datetime.now(UTC),
    )


def latest():
    from flight_delays.monitor import alerts
    from flight_delays.store import registry
    from flight_delays.store.config import load_settings

    engine = registry.connect(load_settings().registry_url)
    try:
        return alerts.latest(engine)
    finally:
        engine.dispose()


def test_a_mail_and_a_webhook_post_hold_the_alert(project, monkeypatch):
    import flight_delays_alerts

    with smtp_server() as box, webhook_server() as hook:
        monkeypatch.setenv(SMTP_ENV, smtp_connection(box.port))
        monkeypatch.setenv(WEBHOOK_ENV, webhook_connection(hook.url))
        assert flight_delays_alerts.alert_connections() == {"smtp": True, "webhook": True}
        result = flight_delays_alerts.dispatch(alert())
    assert result["channels"] == "smtp: sent; webhook: sent"
    (mail,) = box.messages
    assert mail["To"] == "oncall@example.com"
    (text,) = box.texts()
    expected = ["flight_delays", "manual__2013-03-16T07:00:00+00:00", "2013-03-15", "ingest"]
    expected += ["NoFlightsError: no flights for 2013-03-15", "/dags/flight_delays/runs/"]
    for value in expected:
        assert value in text
    (post,) = hook.posts
    assert post["path"] == "/alerts"
    assert post["json"]["fields"]["failed task"] == "ingest"
    assert post["json"]["kind"] == "failure" and "no flights" in post["json"]["text"]
    assert latest()["channels"] == "smtp: sent; webhook: sent"


def test_an_smtp_server_that_refuses_is_logged_with_the_reason(project, monkeypatch, caplog):
    import flight_delays_alerts

    with webhook_server() as hook:
        monkeypatch.setenv(SMTP_ENV, smtp_connection(free_port()))  # nothing listens there
        monkeypatch.setenv(WEBHOOK_ENV, webhook_connection(hook.url))
        result = flight_delays_alerts.dispatch(alert())
    assert result["channels"].startswith("smtp: not sent: ConnectionRefusedError")
    assert result["channels"].endswith("webhook: sent") and len(hook.posts) == 1
    assert "smtp: not sent: ConnectionRefusedError" in caplog.text
    assert latest()["channels"] == result["channels"]


def test_a_mail_server_that_never_answers_does_not_hold_the_webhook_or_the_record(
    project, monkeypatch
):
    # It accepts the connection and never greets (port 465 without SSL, a stuck relay):
    # the provider would wait its timeout once per retry (30 s, 6 tries by default), past
    # the 50 s the dag-processor gives a failure callback.
    import socket
    import time

    import flight_delays_alerts
    from flight_delays.monitor import alerts

    monkeypatch.setattr(alerts, "TRANSPORT_BUDGET_S", 1.0)
    with socket.socket() as silent, webhook_server() as hook:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never reads or answers
        monkeypatch.setenv(SMTP_ENV, smtp_connection(silent.getsockname()[1]))
        monkeypatch.setenv(WEBHOOK_ENV, webhook_connection(hook.url))
        started = time.monotonic()
        result = flight_delays_alerts.dispatch(alert())
        waited = time.monotonic() - started
    assert result["channels"] == "smtp: not sent: no answer within 0.5 s; webhook: sent", result
    assert len(hook.posts) == 1 and waited < 10, waited
    assert latest()["channels"] == result["channels"]


def test_settings_that_cannot_be_read_still_send_the_alert_saying_why(project, monkeypatch):
    # A broken params.yaml fails every task of both DAGs: their alerts go out with the
    # default alert settings, through the connections, and name the problem.
    import flight_delays_alerts

    (project / "include" / "params.yaml").write_text("alerts:\n  rate_limit_count: 0\n")
    with smtp_server() as box, webhook_server() as hook:
        monkeypatch.setenv(SMTP_ENV, smtp_connection(box.port))
        monkeypatch.setenv(WEBHOOK_ENV, webhook_connection(hook.url))
        result = flight_delays_alerts.dispatch(alert())
    assert result["channels"] == "smtp: sent; webhook: sent", result
    (mail,) = box.messages
    assert mail["To"] == "ml-platform@localhost"  # the default recipient
    (post,) = hook.posts
    (note,) = post["json"]["notes"]
    assert "settings could not be read" in note and "rate_limit_count" in note
    assert "default alert settings" in note


def test_with_the_registry_down_a_backfill_of_failures_still_sends_only_three(
    project, tmp_path, monkeypatch, caplog
):
    # The warehouse down fails run after run: the anti-flood rule counts this host's
    # ledger, in Airflow's log folder, instead of the alerts table it cannot read.
    import flight_delays_alerts

    nobody = f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/warehouse"  # refused
    monkeypatch.setenv("FLIGHT_DELAYS_SOURCE_URL", nobody)
    with webhook_server() as hook:
        monkeypatch.setenv(WEBHOOK_ENV, webhook_connection(hook.url))
        results = [flight_delays_alerts.dispatch(alert()) for _ in range(5)]
    assert [r["delivery"] for r in results] == ["sent"] * 3 + ["suppressed"] * 2
    assert len(hook.posts) == 3
    ledger = tmp_path / "airflow-logs" / flight_delays_alerts.LEDGER_FILE
    assert len(ledger.read_text().splitlines()) == 5
    assert "the registry is unreachable" in caplog.text


def test_without_connections_the_alert_is_only_logged(project, caplog):
    import flight_delays_alerts

    assert flight_delays_alerts.alert_connections() == {"smtp": False, "webhook": False}
    result = flight_delays_alerts.dispatch(alert())
    assert result["channels"] == "log only: no alert connection"
    assert "NoFlightsError: no flights for 2013-03-15" in caplog.text
    assert latest()["delivery"] == "log only"


@pytest.mark.parametrize(
    ("extra", "seconds"),
    [
        ({"timeout": 1}, 1.0),
        ({"timeout": "1"}, 1.0),  # a URI's query gives text
        ({"timeout": "0.5"}, 0.5),
        ({}, 10.0),  # unset, unreadable or not positive: the default
        ({"timeout": "soon"}, 10.0),
        ({"timeout": 0}, 10.0),
    ],
)
def test_a_webhook_that_never_answers_is_given_up_after_its_timeout(
    project, monkeypatch, extra, seconds
):
    # A failure alert runs in the dag-processor, which kills a callback after 50 s: a
    # request that waits forever would lose the alert, mail and record included.
    import json
    import socket
    import time

    import requests
    from requests.adapters import HTTPAdapter

    import flight_delays_alerts

    asked, send = [], HTTPAdapter.send

    def timed_send(self, request, **kwargs):
        timeout = kwargs.get("timeout")
        asked.append(timeout)
        if not isinstance(timeout, (int, float)) or timeout > 2:
            # The default's (or no) timeout: its 10 s are not waited out here.
            raise requests.ReadTimeout("not waited for by this test")
        return send(self, request, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", timed_send)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections, never reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/alerts"
        monkeypatch.setenv(
            WEBHOOK_ENV, json.dumps({"conn_type": "http", "host": url, "extra": extra})
        )
        started = time.monotonic()
        result = flight_delays_alerts.dispatch(alert())
        waited = time.monotonic() - started
    assert asked == [seconds]  # one request, with the connection's timeout else 10 s
    assert result["channels"].startswith("webhook: not sent: ReadTimeout"), result
    assert waited < 8, waited  # its timeout (at most 1 s here), not the default nor forever
    assert latest()["channels"] == result["channels"]


def test_a_connection_that_cannot_be_looked_up_is_not_sent_with_the_reason(project, monkeypatch):
    # Not "log only: no alert connection": nobody would know an alert was lost. What
    # Airflow 3.3 raises rather than report "not defined": the execution API's denial.
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied

    import flight_delays_alerts

    def api_down(conn_id):
        raise AirflowSecretsBackendAccessDenied(f"access denied to connection {conn_id}")

    monkeypatch.setattr(BaseHook, "get_connection", api_down)
    result = flight_delays_alerts.dispatch(alert())
    assert result["delivery"] != "log only", result
    for name in ("smtp", "webhook"):
        assert (
            f"{name}: not sent: ConnectionLookupError: cannot look up connection"
            in (result["channels"])
        )
    # Whether alerts are on (the Model reports page) says off, and logs why.
    assert flight_delays_alerts.alert_connections() == {"smtp": False, "webhook": False}


class FakeTI:
    def __init__(self, runs: dict[tuple[str, ...] | None, int], states: dict | None = None):
        self.runs, self.asked, self.states = runs, [], states or {}

    def get_dr_count(self, dag_id, logical_dates=None, states=None):
        self.asked.append((dag_id, logical_dates, states))
        return self.runs.get(tuple(states) if states else None, 0)

    def get_dagrun_state(self, dag_id, run_id):
        if (dag_id, run_id) not in self.states:
            raise RuntimeError(f"no run {run_id}")  # as Airflow answers an unknown run
        return self.states[(dag_id, run_id)]


class FakeDag:
    dag_id = "flight_delays_predict"


NIGHT = datetime(2013, 4, 11, 6, 0, tzinfo=UTC)  # 02:00 New York time


@pytest.mark.parametrize(
    ("runs", "alerted", "state"),
    [
        ({("success",): 1, None: 1}, False, None),
        ({None: 1}, True, "not finished or failed"),
        ({}, True, "no run at all"),
    ],
)
def test_the_deadline_check_alerts_unless_the_night_succeeded(
    project, monkeypatch, runs, alerted, state
):
    import flight_delays_alerts

    sent = []
    monkeypatch.setattr(flight_delays_alerts, "send_alert", lambda *a, **k: sent.append((a, k)))
    ti = FakeTI(runs)
    context = {"ti": ti, "dag": FakeDag(), "run_id": "scheduled__2013-04-11T09:00:00+00:00"}
    done = flight_delays_alerts.check_nightly_deadline(
        context, "flight_delays", NIGHT, date(2013, 4, 10)
    )
    assert done is not alerted
    assert ti.asked[0] == ("flight_delays", [NIGHT], ["success"])
    if alerted:
        ((kind, title, fields), kwargs) = sent[0]
        assert kind == "deadline" and "2013-04-10" in title
        assert fields["state"] == state and kwargs["day"] == date(2013, 4, 10)
    else:
        assert not sent


RERUN = "manual__2013-04-11T08:30:00+00:00"


@pytest.mark.parametrize(
    ("recorded_day", "rerun_state", "done"),
    [
        (date(2013, 4, 10), "success", True),
        (date(2013, 4, 9), "success", False),  # a run of another day
        (date(2013, 4, 10), "failed", False),  # recorded the day, then failed (chart...)
        (date(2013, 4, 10), "running", False),  # not finished
        (date(2013, 4, 10), None, False),  # a task run alone (tasks test): no such run
    ],
)
def test_a_re_run_that_recorded_the_day_and_succeeded_satisfies_the_deadline(
    project, monkeypatch, recorded_day, rerun_state, done
):
    # The runbook: the 02:00 run failed, the operator ran the day again (day = D), and
    # it succeeded before 05:00. The check accepts that run, and no other.
    from datetime import timedelta

    import flight_delays_alerts
    from flight_delays.store import registry
    from flight_delays.store.config import load_settings

    engine = registry.connect(load_settings().registry_url)
    try:
        registry.record_run(engine, {
            "processed_day": recorded_day, "run_id": RERUN,
            "window_start": recorded_day - timedelta(days=89), "window_end": recorded_day,
            "holdout_start": recorded_day - timedelta(days=6), "holdout_end": recorded_day,
            "holdout_rows": 100, "model_path": "/m.skops", "model_sha256": "0" * 64,
            "challenger_mae": 10.0, "champion_mae": 12.0, "baseline_mae": 12.0,
            "champion_kind": "baseline", "champion_day": None, "metrics_json": "{}",
            "decision": "kept", "reason": "test",
        }, False, 0)  # fmt: skip
    finally:
        engine.dispose()
    sent = []
    monkeypatch.setattr(flight_delays_alerts, "send_alert", lambda *a, **k: sent.append((a, k)))
    states = {} if rerun_state is None else {("flight_delays", RERUN): rerun_state}
    ti = FakeTI({None: 1}, states)  # the 02:00 run failed
    context = {"ti": ti, "dag": FakeDag(), "run_id": "r"}
    assert flight_delays_alerts.check_nightly_deadline(
        context, "flight_delays", NIGHT, date(2013, 4, 10)
    ) is done  # fmt: skip
    assert len(sent) == (0 if done else 1)


def test_the_deadline_check_never_raises(monkeypatch):
    import flight_delays_alerts

    class Broken:
        def get_dr_count(self, **kwargs):
            raise ConnectionError("api down")

    context = {"ti": Broken(), "dag": FakeDag(), "run_id": "r"}
    assert not flight_delays_alerts.check_nightly_deadline(
        context, "flight_delays", NIGHT, date(2013, 4, 10)
    )
