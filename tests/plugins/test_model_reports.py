"""The Model reports plugin, served in-process by FastAPI's test client: access control,
the runs page, the JSON API and the report files. (Against the real api-server: the
stack tests.)"""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flight_delays import registry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "model_reports_under_test", REPO / "plugins" / "model_reports.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", url)
    engine = registry.connect(url)
    day = date(2013, 3, 15)
    row = {
        "processed_day": day,
        "run_id": "scheduled__2013-03-16",
        "window_start": day - timedelta(days=13),
        "window_end": day,
        "holdout_start": day - timedelta(days=2),
        "holdout_end": day,
        "holdout_rows": 2913,
        "model_path": "/models/registry/ab.skops",
        "model_sha256": "ab" * 32,
        "challenger_mae": 18.25,
        "champion_mae": 21.5,
        "baseline_mae": 21.5,
        "champion_kind": "baseline",
        "champion_day": None,
        "metrics_json": "{}",
        "decision": "promoted",
        "reason": "challenger <beats> baseline",
    }
    registry.record_run(engine, row, True, 0)
    engine.dispose()
    report = tmp_path / "reports" / "ds=2013-03-15"
    report.mkdir(parents=True)
    (report / "index.html").write_text("<h1>run report</h1>")
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text("secret: yes\n")
    return module


def test_every_route_needs_a_logged_in_user(plugin):
    client = TestClient(plugin.app)
    for path in ("/", "/api/runs", "/reports/ds=2013-03-15/index.html", "/docs"):
        assert client.get(path).status_code in (401, 404), path
    assert client.get("/").status_code == 401


def test_runs_page_json_and_reports(plugin):
    plugin.app.dependency_overrides[plugin.can_read_dag] = lambda: None
    client = TestClient(plugin.app)

    page = client.get("/")
    assert page.status_code == 200
    assert "Current champion: the model trained for 2013-03-15" in page.text
    assert 'href="reports/ds=2013-03-15/index.html"' in page.text
    assert "18.25" in page.text and "challenger &lt;beats&gt; baseline" in page.text

    data = client.get("/api/runs").json()
    assert data["champion"]["processed_day"] == "2013-03-15"
    assert [r["decision"] for r in data["runs"]] == ["promoted"]

    report = client.get("/reports/ds=2013-03-15/index.html")
    assert report.status_code == 200 and "run report" in report.text
    assert client.get("/reports/ds=2013-03-16/index.html").status_code == 404
    assert client.get("/reports/../include/params.yaml").status_code == 404
    assert client.get("/reports/..%2Finclude%2Fparams.yaml").status_code == 404


def test_the_plugin_registers_a_fastapi_app_and_a_nav_entry(plugin):
    (app,) = plugin.ModelReportsPlugin.fastapi_apps
    assert app["url_prefix"] == "/model-reports"
    (view,) = plugin.ModelReportsPlugin.external_views
    assert view["destination"] == "nav" and not view["href"].startswith("/")
