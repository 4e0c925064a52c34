"""The Model reports plugin, served in-process by FastAPI's test client with Airflow's
real token checks (the simple auth manager, JWTs signed with a test secret): access
control, the page, the JSON API, the report files and the read-only registry engine.
(Against the real api-server and in a browser: tests/stack/test_ui.py.)"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from flight_delays.store import registry

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "model_reports.py"
SECRET = "model-reports-test-secret-" + "0123456789abcdef" * 4
SHA = "ab" * 32


def load_plugin(name: str = "model_reports_under_test"):
    spec = importlib.util.spec_from_file_location(name, PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_row(day: date, run_id: str | None, decision: str, mae: float, sha: str = SHA) -> dict:
    return {
        "processed_day": day,
        "run_id": run_id,
        "window_start": day - timedelta(days=13),
        "window_end": day,
        "holdout_start": day - timedelta(days=2),
        "holdout_end": day,
        "holdout_rows": 2913,
        "model_path": f"/models/registry/{sha}.skops",
        "model_sha256": sha,
        "challenger_mae": mae,
        "champion_mae": 21.5,
        "baseline_mae": 21.5,
        "champion_kind": "baseline",
        "champion_day": None,
        "metrics_json": "{}",
        "decision": decision,
        "reason": "challenger <beats> baseline" if decision == "promoted" else "worse",
    }


@pytest.fixture
def auth(monkeypatch):
    """Airflow's simple auth manager with a known JWT secret, and a factory of tokens.

    The token check asks the metastore whether a token was revoked: the throw-away
    metastore of the test session gets that one table."""
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", SECRET)
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken

    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    manager = create_auth_manager()
    type(manager)._get_token_validator.__func__.cache_clear()

    def token(role: str | None = "admin", valid_for: int = 600) -> str:
        user = SimpleAuthManagerUser(username=f"user-{role}", role=role)
        return manager.generate_jwt(user, expiration_time_in_seconds=valid_for)

    return token


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root with a migrated registry (two runs, one promoted), their reports
    and history figures, and a file outside reports/ that must never be served."""
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", url)
    engine = registry.connect(url)
    first, second = date(2013, 3, 15), date(2013, 3, 16)
    registry.record_run(
        engine, run_row(first, "scheduled__2013-03-16T06:00:00+00:00", "promoted", 18.25), True, 0
    )
    registry.record_run(
        engine, run_row(second, "local__0f1e", "kept", 19.5, sha="cd" * 32), False, 1
    )
    engine.dispose()
    for day in (first, second):
        (tmp_path / "reports" / f"ds={day}").mkdir(parents=True)
        (tmp_path / "reports" / f"ds={day}" / "index.html").write_text("<h1>run report</h1>")
    figures = tmp_path / "reports" / "figures" / f"ds={first}"
    figures.mkdir(parents=True)
    (figures / "metric_history.png").write_bytes(b"\x89PNG\r\n\x1a\nhistory")
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text("secret: yes\n")
    return tmp_path


@pytest.fixture
def plugin(project, auth):
    module = load_plugin()
    yield module
    module.reset_engine()


@pytest.fixture
def client(plugin, auth):
    return TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {auth()}"})


# --- access control ------------------------------------------------------------------
def test_every_route_needs_a_logged_in_user(plugin):
    client = TestClient(plugin.build_app())
    for path in ("/", "/api/runs", "/history.png", "/reports/ds=2013-03-15/index.html"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "2013-03-15" not in response.text
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert client.get(path).status_code in (401, 404), path


def test_the_ui_session_cookie_is_accepted(plugin, auth):
    client = TestClient(plugin.build_app(), cookies={"_token": auth()})
    assert client.get("/api/runs").status_code == 200


def test_a_forged_token_is_refused(plugin, auth):
    import jwt

    # The claims of a real admin token, signed with another key.
    header = jwt.get_unverified_header(auth())
    claims = jwt.decode(auth(), options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-api-servers-secret-" + "x" * 64, algorithm=header["alg"])
    client = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {forged}"})
    response = client.get("/api/runs")
    assert response.status_code == 403  # Airflow's answer to a bad signature
    assert "runs" not in response.json()


def test_an_expired_token_is_refused(plugin, auth):
    expired = auth(valid_for=-3600)  # beyond the validator's leeway
    client = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {expired}"})
    response = client.get("/api/runs")
    assert response.status_code == 401
    assert response.json()["detail"] == "Token Expired"


def test_a_user_without_dag_read_permission_gets_403(plugin, auth):
    # The simple auth manager gives a user without a role no permission at all.
    client = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {auth(None)}"})
    for path in ("/", "/api/runs", "/reports/ds=2013-03-15/index.html"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "flight_delays DAG" in response.json()["detail"]
    viewer = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {auth('viewer')}"})
    assert viewer.get("/api/runs").status_code == 200


# --- the page and the API ------------------------------------------------------------
def test_page_shows_history_chart_champion_card_and_run_links(client):
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert '<img id="history" src="history.png"' in text
    assert "Current champion: the model trained for 2013-03-15" in text
    assert SHA in text and "18.25 min; baseline 21.50 min (+15.1% against the baseline)" in text
    assert "challenger &lt;beats&gt; baseline" in text  # registry text is escaped
    # The promoting run links to its Airflow run in the grid view, out of the UI's iframe.
    grid = "../dags/flight_delays/runs/scheduled__2013-03-16T06%3A00%3A00%2B00%3A00"
    assert f'href="{grid}" target="_top"' in text
    assert 'href="reports/ds=2013-03-16/index.html"' in text
    # A run's own figures are served by the report route.
    figure = client.get("/reports/figures/ds=2013-03-15/metric_history.png")
    assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")


def test_the_history_chart_is_drawn_from_every_run_and_redrawn_after_a_new_one(
    client, project, plugin
):
    first = client.get("/history.png")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(b"\x89PNG\r\n\x1a\n") and len(first.content) > 10_000
    assert client.get("/history.png").content == first.content  # unchanged registry
    engine = registry.connect(f"sqlite:///{project / 'warehouse.sqlite'}")
    registry.record_run(engine, run_row(date(2013, 3, 17), "manual__x", "kept", 25.0), False, 1)
    engine.dispose()
    second = client.get("/history.png")
    assert second.status_code == 200 and second.content != first.content


def test_json_lists_runs_newest_first_with_the_champion_card(client):
    data = client.get("/api/runs").json()
    assert [r["processed_day"] for r in data["runs"]] == ["2013-03-16", "2013-03-15"]
    kept, promoted = data["runs"]
    assert kept["run_id"] == "local__0f1e" and kept["grid"] is None  # made outside Airflow
    assert promoted["grid"].startswith("../dags/flight_delays/runs/scheduled__")
    champion = data["champion"]
    assert champion["kind"] == "model" and champion["processed_day"] == "2013-03-15"
    assert champion["mae"] == 18.25 and champion["baseline_mae"] == 21.5
    assert champion["model_sha256"] == SHA and champion["promoted_at"].endswith("+00:00")


def test_an_empty_registry_shows_the_baseline_and_no_chart(client, project):
    (project / "warehouse.sqlite").unlink()
    registry.connect(f"sqlite:///{project / 'warehouse.sqlite'}").dispose()
    page = client.get("/").text
    assert "Current champion: the naive baseline" in page
    assert "No run has been scored yet." in page and "No metric-history chart yet" in page
    assert client.get("/history.png").status_code == 404


def test_after_a_step_down_the_card_says_why_the_baseline_serves(client, project):
    engine = registry.connect(f"sqlite:///{project / 'warehouse.sqlite'}")
    row = run_row(date(2013, 3, 22), "scheduled__w", "stepped down", 24.0, sha="ef" * 32)
    row["reason"] = "the champion <model of 2013-03-15> decayed"
    registry.record_run(engine, row, False, 1, step_down=True)
    engine.dispose()
    data = client.get("/api/runs").json()
    assert data["champion"]["kind"] == "baseline" and data["champion"]["since"] == "step_down"
    page = client.get("/").text
    assert "Current champion: the naive baseline" in page
    assert "stepped down in the run for 2013-03-22" in page
    assert "the champion &lt;model of 2013-03-15&gt; decayed" in page  # escaped
    assert '<td class="stepped down">stepped down</td>' in page
    assert "no model has beaten it yet" not in page


def test_a_served_day_shows_its_served_mae(client, project):
    from flight_delays.model import serving

    engine = registry.connect(f"sqlite:///{project / 'warehouse.sqlite'}")
    served = {
        "flight_day": date(2013, 3, 16),
        "flights": 812,
        "served_mae": 17.75,
        "baseline_mae": 21.0,
        "champion_kind": "model",
        "champion_day": date(2013, 3, 15),
        "model_sha256": SHA,
    }
    serving.record_served_score(engine, served, "scheduled__x")
    engine.dispose()
    runs = {r["processed_day"]: r for r in client.get("/api/runs").json()["runs"]}
    assert runs["2013-03-16"]["served_mae"] == 17.75
    assert runs["2013-03-15"]["served_mae"] is None
    assert '<td class="num">17.75</td>' in client.get("/").text


def test_an_unmigrated_registry_is_read_as_no_runs_and_not_migrated(client, project):
    (project / "warehouse.sqlite").unlink()
    import sqlite3

    sqlite3.connect(project / "warehouse.sqlite").close()  # exists, but empty
    data = client.get("/api/runs").json()
    assert data["runs"] == [] and data["champion"]["kind"] == "baseline"
    with sqlite3.connect(project / "warehouse.sqlite") as conn:
        tables = conn.execute("select name from sqlite_master").fetchall()
    assert tables == []  # the web server never creates the schema


# --- report files --------------------------------------------------------------------
def test_report_files_are_served_from_reports_only(client, project):
    report = client.get("/reports/ds=2013-03-15/index.html")
    assert report.status_code == 200 and "run report" in report.text
    assert client.get("/reports/ds=2013-03-17/index.html").status_code == 404
    assert client.get("/reports/../include/params.yaml").status_code == 404
    assert client.get("/reports/..%2Finclude%2Fparams.yaml").status_code == 404
    (project / "reports" / "notes.txt").write_text("not a report")
    assert client.get("/reports/notes.txt").status_code == 404


def test_a_symlink_out_of_reports_is_not_followed(client, project):
    outside = project / "include" / "secret.html"
    outside.write_text("<p>secret</p>")
    (project / "reports" / "ds=2013-03-15" / "leak.html").symlink_to(outside)
    (project / "reports" / "escape").symlink_to(project / "include", target_is_directory=True)
    for path in ("/reports/ds=2013-03-15/leak.html", "/reports/escape/secret.html"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "secret" not in response.text


def test_a_nul_byte_in_the_path_is_a_404_not_a_500(client):
    for path in ("/reports/ds=2013-03-15/index.html%00.png", "/reports/%00"):
        assert client.get(path).status_code == 404, path


# --- the registry connection ---------------------------------------------------------
def test_a_missing_connection_is_a_loud_503_not_a_local_registry(
    plugin, client, project, monkeypatch, caplog
):
    monkeypatch.delenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE")
    monkeypatch.chdir(project)
    before = sorted(p.name for p in project.rglob("*"))
    with caplog.at_level(logging.ERROR):
        page = client.get("/")
        api = client.get("/api/runs")
        chart = client.get("/history.png")
    assert page.status_code == 503 and api.status_code == 503 and chart.status_code == 503
    assert "flight_delays_warehouse" in page.text and "is not defined" in page.text
    assert "flight_delays_warehouse" in api.json()["detail"]
    assert any("flight_delays_warehouse" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in project.rglob("*")) == before  # no SQLite file made


def test_the_select_only_reader_connection_is_preferred(plugin, monkeypatch, caplog):
    owner = "postgresql://warehouse:owner-secret@db:5432/warehouse"
    reader = "postgresql://warehouse_reader:reader-secret@db:5432/warehouse"
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", owner)
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE_READER", reader)
    with caplog.at_level(logging.WARNING):
        assert plugin.registry_url().startswith("postgres")
        assert "warehouse_reader" in plugin.registry_url()
    assert not [r for r in caplog.records if "model reports" in r.getMessage()]


def test_without_the_reader_the_owner_reads_and_a_warning_says_so(plugin, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE_READER", raising=False)
    owner = "postgresql://warehouse:owner-secret@db:5432/warehouse"
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", owner)
    with caplog.at_level(logging.WARNING):
        assert "warehouse:" in plugin.registry_url()
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "flight_delays_warehouse_reader" in warning and "SELECT-only" in warning
    assert "owner-secret" not in warning


def test_an_unreachable_registry_is_a_503(plugin, client, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE", f"sqlite:///{tmp_path}/none/x.db")
    response = client.get("/api/runs")
    assert response.status_code == 503 and "cannot read the model registry" in response.text
    assert not (tmp_path / "none").exists()


def test_one_engine_is_built_on_the_first_request_and_reused(plugin, client):
    assert plugin._engine is None  # not at import
    client.get("/api/runs")
    engine = plugin._engine
    assert engine is not None
    client.get("/")
    assert plugin._engine is engine


def test_the_engine_is_read_only_with_timeouts(project):
    module = load_plugin()
    url, kwargs = module.engine_args("postgres://u:p@db:5432/warehouse")
    assert url.drivername == "postgresql"
    args = kwargs["connect_args"]
    assert args["connect_timeout"] == module.CONNECT_TIMEOUT_S
    assert f"statement_timeout={module.STATEMENT_TIMEOUT_MS}" in args["options"]
    assert "default_transaction_read_only=on" in args["options"]
    assert kwargs["pool_pre_ping"] and kwargs["pool_size"] >= 1

    from sqlalchemy import create_engine

    url, kwargs = module.engine_args(f"sqlite:///{project / 'warehouse.sqlite'}")
    assert kwargs["connect_args"] == {"timeout": module.CONNECT_TIMEOUT_S}
    engine = create_engine(url, **kwargs)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select count(*) from model_runs")).scalar() == 2
        with pytest.raises(Exception, match="readonly"), engine.begin() as conn:
            conn.execute(text("delete from model_runs"))
    finally:
        engine.dispose()


# --- registration and the task path --------------------------------------------------
def test_the_plugin_registers_a_fastapi_app_and_a_nav_entry(plugin):
    (app,) = plugin.ModelReportsPlugin().fastapi_apps
    assert app["url_prefix"] == "/model-reports" and app["app"] is plugin.build_app()
    (view,) = plugin.ModelReportsPlugin.external_views
    assert view["destination"] == "nav" and not view["href"].startswith("/")


def test_importing_the_plugin_does_not_import_fastapi_or_the_registry():
    """Task processes import the plugins folder: they must not pay for the web app."""
    code = (
        "import sys, importlib.util, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(PLUGIN)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "new = {m.split('.')[0] if not m.startswith('airflow') else m\n"
        "       for m in set(sys.modules) - before}\n"
        "heavy = ['fastapi', 'starlette', 'sqlalchemy', 'pandas', 'flight_delays',\n"
        "         'airflow.api_fastapi.core_api.security', 'airflow.api_fastapi.app']\n"
        "print(sorted(m for m in heavy if m in new))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


# --- an artifact root in an object store ---------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    from s3_support import moto_server

    with moto_server() as endpoint:
        yield endpoint


def test_reports_are_read_from_an_s3_artifact_root(project, auth, s3_endpoint, monkeypatch):
    """With FLIGHT_DELAYS_STORAGE_URL at a bucket, the page links and serves the reports
    and figures the chart task put there, through the catalog, and nothing else."""
    from flight_delays.store import io
    from s3_support import new_bucket, point_s3_at

    point_s3_at(monkeypatch, s3_endpoint, project)
    url = f"s3://{new_bucket()}/prefix"
    local = project / "reports"
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        io.write_bytes(file.read_bytes(), f"{url}/reports/{file.relative_to(local).as_posix()}")
    shutil.rmtree(local)  # nothing on the local disk to fall back on
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", url)
    plugin = load_plugin("model_reports_on_s3")
    try:
        client = TestClient(plugin.build_app(), headers={"Authorization": f"Bearer {auth()}"})
        runs = client.get("/api/runs").json()["runs"]
        assert [r["report"] for r in runs] == [
            "reports/ds=2013-03-16/index.html",
            "reports/ds=2013-03-15/index.html",
        ]
        report = client.get("/reports/ds=2013-03-15/index.html")
        assert report.status_code == 200 and "run report" in report.text
        assert report.headers["content-type"].startswith("text/html")
        figure = client.get("/reports/figures/ds=2013-03-15/metric_history.png")
        assert figure.status_code == 200 and figure.content.startswith(b"\x89PNG")
        assert figure.headers["content-type"] == "image/png"
        io.write_bytes(b"not a report", f"{url}/reports/notes.txt")
        io.write_bytes(b"secret: yes", f"{url}/include/params.yaml")
        for path in (
            "ds=2013-03-17/index.html",
            "notes.txt",
            "../include/params.yaml",
            "..%2Finclude%2Fparams.yaml",
            "ds=2013-03-15//index.html",
            "ds=2013-03-15/index.html%00.png",
        ):
            assert client.get(f"/reports/{path}").status_code == 404, path
    finally:
        plugin.reset_engine()


def test_a_bad_storage_url_is_a_503_naming_the_setting(client, monkeypatch):
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", "nosuchfs://bucket/prefix")
    for path in ("/", "/api/runs", "/reports/ds=2013-03-15/index.html"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "FLIGHT_DELAYS_STORAGE_URL" in response.text, path
