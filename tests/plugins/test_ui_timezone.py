"""plugins/ui_timezone.py: the UI's own page gets the New York default time zone, once,
and nothing else is touched: not the plugins' pages and report files, not the API, its
docs or /static, not a HEAD, a 206 or a 304 (issue 20). Against small ASGI apps, and
against Airflow's real api-server app (its routes, with this plugins folder loaded)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "ui_timezone.py"
spec = importlib.util.spec_from_file_location("ui_timezone", PLUGIN)
ui_timezone = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ui_timezone)

UI_INDEX = Path(importlib.util.find_spec("airflow").origin).parent / "ui" / "dist" / "index.html"


def ui_page_endpoint():
    """A stand-in for the endpoint of Airflow's UI page route (ui_timezone.is_ui_page)."""

    def webapp():
        return None

    webapp.__module__, webapp.__qualname__ = ui_timezone.UI_PAGE_ENDPOINT
    return webapp


def serve(
    body: bytes,
    content_type: bytes,
    chunks: int = 1,
    status: int = 200,
    ui_page: bool = True,
    **extra_headers: bytes,
):
    """A tiny ASGI app answering every request with ``body`` in ``chunks`` pieces; with
    ``ui_page``, routed as the UI's page route is (the router records its endpoint)."""

    async def app(scope, receive, send):
        if ui_page:
            scope["endpoint"] = ui_page_endpoint()
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers += [(k.replace("_", "-").encode(), v) for k, v in extra_headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        size = -(-len(body) // chunks)
        for i in range(chunks):
            part = body[i * size : (i + 1) * size]
            await send({"type": "http.response.body", "body": part, "more_body": i < chunks - 1})

    return app


def call(app, method: str = "GET") -> tuple[dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/", "headers": []}
    asyncio.run(app(scope, receive, send))
    headers = {k: v for k, v in sent[0]["headers"]}
    return headers, b"".join(m.get("body", b"") for m in sent[1:])


def raw_headers(app, method: str = "GET") -> list[tuple[bytes, bytes]]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": "/", "headers": []}, receive, send))
    return sent[0]["headers"]


def test_the_ui_page_gets_the_default_once_with_a_correct_length():
    page = UI_INDEX.read_bytes()
    assert b"<head>" in page  # the UI's own index.html: where the script goes
    middleware = ui_timezone.DefaultUiTimezone(serve(page, b"text/html; charset=utf-8", 3),
                                               zone="America/New_York")  # fmt: skip
    headers, body = call(middleware)
    script = ui_timezone.default_script("America/New_York")
    assert body.count(script) == 1 and body.index(script) == body.index(b"<head>") + 6
    assert body.replace(script, b"") == page  # nothing else changed
    assert int(headers[b"content-length"]) == len(body)
    # The value is what the UI's useLocalStorage reads back: JSON of the zone name.
    literal = script.split(b"setItem(")[1].split(b",", 1)[1].split(b")}")[0]
    assert json.loads(json.loads(literal)) == "America/New_York"


def test_an_edited_page_drops_its_etag_and_gets_its_new_length():
    page = b"<html><head><title>UI</title></head><body></body></html>"
    app = serve(page, b"text/html; charset=utf-8", etag=b'"abc123"', cache_control=b"no-cache")
    headers = raw_headers(ui_timezone.DefaultUiTimezone(app, zone="America/New_York"))
    names = [k for k, _ in headers]
    assert b"etag" not in names  # it named the unedited bytes
    assert names.count(b"content-length") == 1
    script = ui_timezone.default_script("America/New_York")
    assert dict(headers)[b"content-length"] == str(len(page) + len(script)).encode()
    assert dict(headers)[b"cache-control"] == b"no-cache"  # the rest is kept


def test_a_page_without_head_is_sent_as_it_came_with_its_etag():
    page = b"<p>no head element</p>"
    app = serve(page, b"text/html", etag=b'"abc123"')
    middleware = ui_timezone.DefaultUiTimezone(app, zone="America/New_York")
    headers, body = call(middleware)
    assert body == page and headers[b"etag"] == b'"abc123"'


@pytest.mark.parametrize(
    ("content_type", "method", "status", "ui_page", "extra"),
    [
        (b"application/json", "GET", 200, True, {}),
        (b"text/html", "POST", 200, True, {}),
        (b"text/html", "HEAD", 200, True, {}),
        (b"text/html", "GET", 200, True, {"content_encoding": b"gzip"}),
        (b"text/html", "GET", 206, True, {"content_range": b"bytes 0-14/900"}),
        (b"text/html", "GET", 200, True, {"content_range": b"bytes 0-14/900"}),
        (b"text/html", "GET", 304, True, {}),
        (b"text/html", "GET", 404, True, {}),
        (b"text/html; charset=utf-8", "GET", 200, False, {}),
    ],
    ids=[
        "json",
        "post",
        "head",
        "compressed",
        "partial-206",
        "content-range-on-200",
        "not-modified-304",
        "error-404",
        "html-of-another-route",
    ],
)
def test_other_responses_pass_untouched(content_type, method, status, ui_page, extra):
    body = b"<head>{}</head>"
    app = serve(body, content_type, status=status, ui_page=ui_page, etag=b'"e1"', **extra)
    middleware = ui_timezone.DefaultUiTimezone(app, zone="Europe/Paris")
    assert raw_headers(middleware, method) == raw_headers(app, method)
    assert call(middleware, method)[1] == body


def test_utc_sets_nothing():
    body = b"<html><head></head></html>"
    assert call(ui_timezone.DefaultUiTimezone(serve(body, b"text/html"), zone="UTC"))[1] == body


def test_the_plugin_registers_the_middleware_and_imports_nothing_heavy():
    assert ui_timezone.UiTimezonePlugin.fastapi_root_middlewares[0]["middleware"] is (
        ui_timezone.DefaultUiTimezone
    )
    code = (
        "import sys, importlib.util, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(PLUGIN)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new & {'fastapi', 'starlette', 'flight_delays', 'pandas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- against Airflow's own api-server app ---------------------------------------------
@pytest.fixture(scope="module")
def api_server():
    """Airflow's api-server app (core: UI, REST API, auth, plugins) built as the
    api-server builds it, with this project's plugins folder (tests/conftest.py): the
    middleware is registered by the plugin, not here."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    app = create_app(apps="core")
    yield TestClient(app, headers={"Accept-Encoding": "identity"})
    purge_cached_app()


SCRIPT = ui_timezone.default_script("America/New_York")  # tests/conftest.py's zone


@pytest.mark.parametrize("path", ["/", "/dags/flight_delays/runs/scheduled__x", "/assets"])
def test_the_real_ui_pages_get_the_default(api_server, path):
    response = api_server.get(path)
    assert response.status_code == 200
    assert response.content.count(SCRIPT) == 1
    assert int(response.headers["content-length"]) == len(response.content)
    assert "etag" not in response.headers


@pytest.mark.parametrize(
    "path", ["/docs", "/static/index.html", "/auth/login", "/api/v2/version", "/model-reports/"]
)
def test_the_apis_docs_static_login_and_plugin_routes_are_not_touched(api_server, path):
    response = api_server.get(path)
    assert response.status_code < 500, path
    assert SCRIPT not in response.content, path
    assert b"localStorage" not in response.content, path


def test_a_range_request_for_a_static_page_gets_a_true_206(api_server):
    whole = api_server.get("/static/index.html")
    assert whole.status_code == 200 and b"<head>" in whole.content and "etag" in whole.headers
    part = api_server.get("/static/index.html", headers={"Range": "bytes=0-299"})
    assert part.status_code == 206
    assert part.content == whole.content[:300]
    assert part.headers["content-range"] == f"bytes 0-299/{len(whole.content)}"
    assert part.headers["etag"] == whole.headers["etag"]


def test_a_head_request_is_not_edited(api_server):
    head = api_server.head("/static/index.html")
    whole = api_server.get("/static/index.html")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(whole.content))
    assert head.headers["etag"] == whole.headers["etag"]


def test_a_report_file_served_by_the_real_app_is_not_touched(api_server, tmp_path, monkeypatch):
    """A report page through the real api-server: sent byte for byte, with its policy."""
    monkeypatch.setenv("FLIGHT_DELAYS_HOME", str(tmp_path))
    page = b"<!doctype html><html><head><title>r</title></head><body>run report</body></html>"
    (tmp_path / "reports" / "ds=2013-03-15").mkdir(parents=True)
    (tmp_path / "reports" / "ds=2013-03-15" / "index.html").write_bytes(page)
    token = admin_token()
    response = api_server.get(
        "/model-reports/reports/ds=2013-03-15/index.html",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert response.content == page
    assert response.headers["content-security-policy"].startswith("sandbox;")


def admin_token() -> str:
    """A token of the api-server's own auth manager (Airflow's default, the simple one),
    for an admin; the token check reads the revoked-token table of the metastore."""
    from airflow import settings
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken

    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    manager = get_auth_manager()
    # The signer and the validator are cached per class; another test module's may hold
    # its own JWT secret: both are rebuilt from the current configuration.
    type(manager)._get_token_signer.__func__.cache_clear()
    type(manager)._get_token_validator.__func__.cache_clear()
    return manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
