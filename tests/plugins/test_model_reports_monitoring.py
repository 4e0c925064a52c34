"""Issue 18 on the Model reports plugin: the Prometheus route (/model-reports/metrics,
parsed with prometheus_client's own parser), the monitoring JSON, and the page's alerts,
drift and served-vs-baseline sections. The registry is built here; drift rows and
alerts are written by the pipeline's own writers (``registry.record_drift``,
``alerts.record``), and the page and the route are tested before and after they exist."""

# The fixtures of test_model_reports.py are imported, and pytest passes them by name.
# ruff: noqa: F811

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, delete, insert
from test_model_reports import SHA, auth, client, load_plugin, plugin, project  # noqa: F401

from flight_delays.model import serving
from flight_delays.monitor import alerts
from flight_delays.store import registry

ENDS = {
    "old": datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
    "new": datetime(2026, 12, 2, 7, 30, 15, tzinfo=UTC),
    "predict": datetime(2026, 12, 2, 10, 5, tzinfo=UTC),
}


def parse(body: str) -> dict[str, dict[tuple, float]]:
    """metric name -> {sorted label items: value}, through prometheus_client's parser."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples = found.setdefault(sample.name, {})
            key = tuple(sorted(sample.labels.items()))
            assert key not in samples, f"{sample.name}{dict(key)} twice"
            samples[key] = sample.value
    return found


def one(metrics: dict, name: str, **labels: str) -> float:
    return metrics[name][tuple(sorted(labels.items()))]


@pytest.fixture
def dag_runs():
    """Runs of both DAGs in the test session's metastore (its dag_run table only)."""
    from airflow import settings
    from airflow.models.dagrun import DagRun

    table = DagRun.__table__
    # dag_run and the tables its foreign keys point to (SQLite checks them on delete).
    needed, todo = set(), [table]
    while todo:
        current = todo.pop()
        if current not in needed:
            needed.add(current)
            todo.extend(fk.column.table for fk in current.foreign_keys)
    table.metadata.create_all(settings.engine, tables=list(needed), checkfirst=True)

    def run(n: int, dag_id: str, state: str, end: datetime | None) -> dict:
        return {
            "id": 9000 + n,
            "dag_id": dag_id,
            "run_id": f"test__{n}",
            "run_type": "manual",
            "state": state,
            "end_date": end,
            "run_after": datetime(2026, 12, 1, tzinfo=UTC),
            "log_template_id": None,
            "clear_number": 0,
            "span_status": "not_started",
        }

    rows = [
        run(1, "flight_delays", "success", ENDS["old"]),
        run(2, "flight_delays", "success", ENDS["new"]),
        run(3, "flight_delays", "failed", datetime(2026, 12, 3, tzinfo=UTC)),
        run(4, "flight_delays", "running", None),
        run(5, "flight_delays_predict", "success", ENDS["predict"]),
        run(6, "another_dag", "success", datetime(2026, 12, 4, tzinfo=UTC)),
    ]
    with settings.engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id >= 9000))
        conn.execute(insert(table), rows)
    yield
    with settings.engine.begin() as conn:
        conn.execute(delete(table).where(table.c.id >= 9000))


@pytest.fixture
def warehouse(project):
    """A writable engine on the project's registry (the plugin's own is read-only)."""
    engine = create_engine(f"sqlite:///{project / 'warehouse.sqlite'}")
    yield engine
    engine.dispose()


def add_served(engine, day: date, served: float, baseline: float, flights: int = 800) -> None:
    score = {
        "flight_day": day,
        "flights": flights,
        "served_mae": served,
        "baseline_mae": baseline,
        "champion_kind": "model",
        "champion_day": date(2013, 3, 15),
        "model_sha256": SHA,
    }
    serving.record_served_score(engine, score, f"scheduled__{day}")


def add_drift_and_alerts(engine) -> None:
    # An older day: its larger PSI is not last night's. Last night's rerun (r3) replaces
    # its first run (r2) on the page. A feature without a threshold is measured only.
    columns = ["feature", "kind", "psi", "threshold", "flagged", "day_rows", "window_rows"]
    runs = {
        (date(2013, 3, 15), "r1"): [("dep_hour", "numeric", 0.9, 0.2, True)],
        (date(2013, 3, 16), "r2"): [("dep_hour", "numeric", 0.7, 0.2, True)],
        (date(2013, 3, 16), "r3"): [
            ("dep_hour", "numeric", 0.05, 0.2, False),
            ("carrier", "categorical", 0.31, 0.25, True),
            ("temp <°F>", "numeric", 0.12, 0.2, False),
            ("wind_speed", "numeric", None, 0.2, False),  # too few flights
            ("dep_count_day", "numeric", 8.5, None, False),  # measured only
        ],
    }
    for (day, run_id), rows in runs.items():
        frame = pd.DataFrame([(*r, 900, 80_000) for r in rows], columns=columns)
        registry.record_drift(engine, day, run_id, frame)
    recorded = [
        ("drift", "2013-03-16 07:00:00", "scheduled__a", "2013-03-15", "carrier drifted",
         "log only: no alert connection", "log only"),
        ("failure", "2013-03-17 09:15:00", "scheduled__<b>", "2013-03-16",
         "train failed: <script>alert(1)</script>", "flight_delays_smtp: sent", "sent"),
    ]  # fmt: skip
    for kind, at, run_id, day, title, channels, delivery in recorded:
        alert = alerts.Alert(
            kind=kind,
            title=title,
            dag_id="flight_delays",
            at=datetime.fromisoformat(at).replace(tzinfo=UTC),
            run_id=run_id,
            day=date.fromisoformat(day),
        )
        alerts.record(engine, alert, channels, delivery)


def quarantine(project, day: str, rows: int) -> None:
    folder = project / "data" / "interim" / "quarantine" / f"ds={day}"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"day": day, "quarantined": rows}))


# --- the metrics route -----------------------------------------------------------------
def test_the_metrics_route_needs_the_same_login_as_the_page(plugin, auth):
    anonymous = TestClient(plugin.build_app())
    response = anonymous.get("/metrics")
    assert response.status_code == 401 and "flight_delays_" not in response.text
    no_role = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {auth(None)}"})
    assert no_role.get("/metrics").status_code == 403
    forged = auth()[:-4] + ("AAAA" if not auth().endswith("AAAA") else "BBBB")
    bad = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {forged}"})
    assert bad.get("/metrics").status_code in (401, 403)
    assert anonymous.get("/api/monitoring").status_code == 401


def test_the_metrics_parse_and_hold_what_the_registry_and_the_metastore_hold(
    client,
    project,
    warehouse,
    dag_runs,
):
    add_served(warehouse, date(2013, 3, 15), 18.0, 21.0)
    add_served(warehouse, date(2013, 3, 16), 17.75, 21.25, flights=812)
    add_drift_and_alerts(warehouse)
    quarantine(project, "2013-03-16", 7)
    quarantine(project, "2013-03-15", 99)  # not the newest processed day
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse(response.text)

    last = "flight_delays_dag_last_success_timestamp_seconds"
    assert one(metrics, last, dag_id="flight_delays") == ENDS["new"].timestamp()
    assert one(metrics, last, dag_id="flight_delays_predict") == ENDS["predict"].timestamp()
    runs = "flight_delays_dag_runs"
    assert one(metrics, runs, dag_id="flight_delays", state="success") == 2
    assert one(metrics, runs, dag_id="flight_delays", state="failed") == 1
    assert one(metrics, runs, dag_id="flight_delays", state="running") == 1
    assert one(metrics, runs, dag_id="flight_delays", state="queued") == 0
    assert one(metrics, runs, dag_id="flight_delays_predict", state="success") == 1
    assert {dict(k)["dag_id"] for k in metrics[runs]} == {"flight_delays", "flight_delays_predict"}

    assert one(metrics, "flight_delays_registry_up") == 1
    assert one(metrics, "flight_delays_champion_holdout_mae_minutes", kind="model") == 18.25
    assert one(metrics, "flight_delays_champion_holdout_baseline_mae_minutes") == 21.5
    assert one(metrics, "flight_delays_served_mae_minutes") == 17.75
    assert one(metrics, "flight_delays_served_baseline_mae_minutes") == 21.25
    assert one(metrics, "flight_delays_served_flights") == 812
    day16 = datetime(2013, 3, 16, tzinfo=UTC).timestamp()
    assert one(metrics, "flight_delays_served_day_timestamp_seconds") == day16
    assert one(metrics, "flight_delays_last_processed_day_timestamp_seconds") == day16
    assert one(metrics, "flight_delays_quarantined_rows") == 7
    psi = metrics["flight_delays_drift_psi_max"]
    assert psi == {(("feature", "carrier"), ("kind", "categorical")): 0.31}
    assert one(metrics, "flight_delays_drift_flagged_features") == 1
    assert one(metrics, "flight_delays_drift_day_timestamp_seconds") == day16
    # One series per kind recorded: the failure's (the newest) and the drift alert's.
    at = datetime(2013, 3, 17, 9, 15, tzinfo=UTC).timestamp()
    assert one(metrics, "flight_delays_last_alert_timestamp_seconds", kind="failure") == at
    drift_at = datetime(2013, 3, 16, 7, 0, tzinfo=UTC).timestamp()
    assert one(metrics, "flight_delays_last_alert_timestamp_seconds", kind="drift") == drift_at
    assert len(metrics["flight_delays_last_alert_timestamp_seconds"]) == 2


def test_before_any_drift_row_or_alert_table_their_metrics_are_left_out(
    client,
    dag_runs,
):
    metrics = parse(client.get("/metrics").text)
    assert one(metrics, "flight_delays_registry_up") == 1
    assert one(metrics, "flight_delays_quarantined_rows") == 0  # no quarantine summary
    for name in (
        "flight_delays_drift_psi_max",
        "flight_delays_drift_flagged_features",
        "flight_delays_last_alert_timestamp_seconds",
        "flight_delays_served_mae_minutes",  # nothing served yet
    ):
        assert name not in metrics, name


def test_each_request_builds_its_own_registry(client, warehouse, dag_runs):
    from prometheus_client import REGISTRY

    first = parse(client.get("/metrics").text)
    assert "flight_delays_served_mae_minutes" not in first
    add_served(warehouse, date(2013, 3, 16), 17.75, 21.25)
    second = parse(client.get("/metrics").text)
    assert one(second, "flight_delays_served_mae_minutes") == 17.75
    assert parse(client.get("/metrics").text) == second  # no sample added twice
    # Nothing registered in prometheus_client's process-wide registry.
    assert not [n for n in REGISTRY._names_to_collectors if n.startswith("flight_delays")]


def test_a_registry_that_cannot_be_read_still_answers_with_the_airflow_figures(
    client,
    monkeypatch,
    tmp_path,
    dag_runs,
):
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", f"sqlite:///{tmp_path}/none/x.db")
    response = client.get("/metrics")
    assert response.status_code == 200
    metrics = parse(response.text)
    assert one(metrics, "flight_delays_registry_up") == 0
    assert one(metrics, "flight_delays_dag_runs", dag_id="flight_delays", state="success") == 2
    assert "flight_delays_champion_holdout_mae_minutes" not in metrics


def test_a_baseline_champion_reports_the_baseline_mae(client, warehouse, dag_runs):
    from test_model_reports import run_row

    row = run_row(date(2013, 3, 22), "scheduled__w", "stepped down", 24.0, sha="ef" * 32)
    registry.record_run(warehouse, row, False, 1, step_down=True)
    metrics = parse(client.get("/metrics").text)
    assert one(metrics, "flight_delays_champion_holdout_mae_minutes", kind="baseline") == 21.5


# --- the page --------------------------------------------------------------------------
def test_the_page_says_alerts_are_off_without_a_connection_and_shows_no_drift_yet(client):
    page = client.get("/").text
    assert "Alerts are <strong>off</strong>" in page
    assert "<code>flight_delays_smtp</code> or <code>flight_delays_webhook</code>" in page
    assert "only written to the task log" in page
    assert "No alert has been recorded." in page
    assert "No drift figures yet." in page
    assert "No served day has been scored yet." in page


def test_the_page_shows_alerts_drift_and_served_days_escaped_with_units(
    client,
    project,
    warehouse,
    monkeypatch,
):
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WEBHOOK", "http://127.0.0.1:9/hook")
    add_served(warehouse, date(2013, 3, 15), 18.0, 21.0)
    add_served(warehouse, date(2013, 3, 16), 22.5, 21.25, flights=812)
    add_drift_and_alerts(warehouse)
    page = client.get("/").text
    assert "Alerts are <strong>on</strong>: sent through <code>flight_delays_webhook</code>" in page
    # The newest alert, every registry value escaped.
    assert "2013-03-17 09:15 UTC: failure" in page
    assert "train failed: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page and "scheduled__&lt;b&gt;" in page
    # Last night's drift: largest PSI first, a PSI that could not be computed last.
    assert "Day 2013-03-16: 1 of 4 features passed their threshold." in page
    table = page[page.index('<table id="drift">') :]
    table = table[: table.index("</table>")]
    order = [table.index(name) for name in ("carrier", "temp &lt;°F&gt;", "dep_hour", "wind_")]
    assert order == sorted(order)
    assert "PSI (no unit)" in table and "0.310" in table and "not computed" in table
    # Served against the baseline, newest day first, with units.
    served = page[page.index('<table id="served">') :]
    assert served.index("2013-03-16") < served.index("2013-03-15")
    assert "812 flights" in served and "22.50 min" in served and "21.25 min" in served
    assert "+1.25 min (+5.9%)" in served and "-3.00 min (-14.3%)" in served
    data = client.get("/api/monitoring").json()
    assert data["alert_channels"] == ["flight_delays_webhook"]
    assert [f["feature"] for f in data["drift"]["features"]][:2] == ["carrier", "temp <°F>"]
    assert data["served"][0]["day"] == "2013-03-16" and data["quarantined_rows"] == 0
    assert data["last_alert"]["kind"] == "failure"
    assert set(data["alert_times"]) == {"drift", "failure"}
