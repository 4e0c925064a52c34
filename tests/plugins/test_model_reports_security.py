"""Issue 20 on the Model reports plugin: what it serves from reports/ cannot act on the
Airflow origin, and nothing outside reports/ is served.

- every report file (local folder and object store) carries the sandboxing
  Content-Security-Policy and ``nosniff``;
- a report's charts still load under that policy, in a real Chromium: the sandboxed page
  sends no session cookie, so its figures come through signed, short-lived links;
- traversal to an ``.html`` and a ``.png`` that exist outside reports/ (data/, the
  project root, keys outside the reports prefix), with ``..``, its URL-encoded forms and
  absolute paths, sent as a raw HTTP client sends them (``curl --path-as-is``): the
  test client would resolve a literal ``..`` before the plugin saw it.
"""

# The fixtures of test_model_reports.py are imported, and pytest passes them by name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import io
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from test_model_reports import auth, client, load_plugin, plugin, project  # noqa: F401

CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
REPORT = "ds=2013-03-15/index.html"
# As tests/stack/stack_helpers.py launches the system Chromium (root, no GPU, offline).
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # fmt: skip
FIGURE = "figures/ds=2013-03-15/metric_history.png"


def png(width: int = 40, height: int = 30) -> bytes:
    """A real PNG (a browser decodes it: naturalWidth is ``width``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def report_page(figures: list[str]) -> str:
    """A run report as flight_delays.monitor.report.render writes it: inline style, figures
    linked relative to the page."""
    images = "".join(f'<figure><img src="{src}" alt="chart"></figure>' for src in figures)
    return (
        '<!doctype html><html><head><meta charset="utf-8"><style>h1{color:#222}</style>'
        f"</head><body><h1>run report</h1>{images}</body></html>"
    )


def raw_get(app, raw_path: str, token: str | None = None) -> tuple[int, dict, bytes]:
    """GET ``raw_path`` at the ASGI level, as uvicorn passes it on: the path
    percent-decoded, dot segments left as they are."""
    sent: list[dict] = []
    path, _, query = raw_path.partition("?")
    headers = [(b"host", b"testserver")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    response_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], response_headers, body


def assert_report_headers(response_headers, what: str) -> None:
    assert response_headers["content-security-policy"] == CSP, what
    assert response_headers["x-content-type-options"] == "nosniff", what


def signed_links(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


@pytest.fixture
def figures(project: Path) -> Path:
    """The report of 2013-03-15 with two real figures, linked as the chart task links them."""
    folder = project / "reports" / "figures" / "ds=2013-03-15"
    (folder / "metric_history.png").write_bytes(png(40, 30))
    (folder / "residuals.png").write_bytes(png(50, 20))
    links = [
        "../figures/ds=2013-03-15/metric_history.png",
        "../figures/ds=2013-03-15/residuals.png",
    ]
    (project / "reports" / REPORT).write_text(report_page(links))
    return project


# --- the headers, on a local folder --------------------------------------------------
def test_every_local_report_file_carries_the_csp_and_nosniff(client, figures):
    page = client.get(f"/reports/{REPORT}")
    assert page.status_code == 200 and "run report" in page.text
    assert_report_headers(page.headers, "page")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"  # its figure links expire
    figure = client.get(f"/reports/{FIGURE}")
    assert figure.status_code == 200 and figure.content == png(40, 30)
    assert_report_headers(figure.headers, "figure")
    assert figure.headers["content-type"] == "image/png"
    # A Range request on a figure (FileResponse's 206) keeps them too.
    part = client.get(f"/reports/{FIGURE}", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == b"\x89PNG\r\n\x1a\n"
    assert_report_headers(part.headers, "partial figure")


def test_the_plugins_own_page_is_not_sandboxed(client):
    """Only report files are: the plugin's page is ours and runs in the UI's frame."""
    page = client.get("/")
    assert page.status_code == 200 and "content-security-policy" not in page.headers


# --- the charts under the policy -----------------------------------------------------
def test_a_reports_figures_are_signed_links_to_the_same_files(client, figures):
    links = signed_links(client.get(f"/reports/{REPORT}").text)
    assert len(links) == 2
    assert all(link.startswith("../../signed-figures/") for link in links)
    # Resolved against the page's URL, as the browser does, with no session at all.
    anonymous = TestClient(client.app)
    for link, expected in zip(links, (png(40, 30), png(50, 20)), strict=True):
        response = anonymous.get("/reports/ds=2013-03-15/" + link)
        assert response.status_code == 200, link
        assert response.content == expected
        assert_report_headers(response.headers, link)


def test_only_relative_png_sources_are_signed(plugin):
    page = (
        '<img src="a.png"><IMG alt=x SRC=\'../figures/b.png\'><img data-src="c.png">'
        '<img src="https://evil.example/d.png"><img src="/model-reports/e.png">'
        '<img src="f.svg"><img src="../../../g.png"><img src="h.png?x=1">'
    )
    out = plugin.sign_figures(page, "ds=1/index.html", lambda path: f"<{path}>")
    assert '<img src="../../signed-figures/<ds=1/a.png>">' in out
    assert "SRC='../../signed-figures/<figures/b.png>'" in out
    for kept in ('data-src="c.png"', "https://evil.example/d.png", '"/model-reports/e.png"',
                 '"f.svg"', '"../../../g.png"', '"h.png?x=1"'):  # fmt: skip
        assert kept in out, kept


def test_a_bad_expired_or_foreign_figure_link_is_refused(client, figures, plugin, monkeypatch):
    from itsdangerous import URLSafeTimedSerializer

    anonymous = TestClient(client.app)
    link = signed_links(client.get(f"/reports/{REPORT}").text)[0].removeprefix("../../")
    assert anonymous.get(f"/{link}").status_code == 200
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    response = anonymous.get(f"/{tampered}")
    assert response.status_code == 403 and "not valid" in response.json()["detail"]
    foreign = URLSafeTimedSerializer("another-secret", salt=plugin.FIGURE_LINK_SALT)
    response = anonymous.get(f"/signed-figures/{foreign.dumps(FIGURE)}")
    assert response.status_code == 403
    monkeypatch.setattr(plugin, "FIGURE_LINK_TTL_S", -1)
    response = anonymous.get(f"/{link}")
    assert response.status_code == 403 and "expired" in response.json()["detail"]
    assert "reload the report" in response.json()["detail"]


def test_the_signed_route_serves_nothing_else_and_names_a_bad_storage_url(
    client, figures, monkeypatch
):
    anonymous = TestClient(client.app)
    link = signed_links(client.get(f"/reports/{REPORT}").text)[0].removeprefix("../../")
    for path in ("/signed-figures/", "/signed-figures/docs", "/signed-figures/openapi.json"):
        assert anonymous.get(path).status_code in (403, 404), path
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", "nosuchfs://bucket/prefix")
    response = anonymous.get(f"/{link}")
    assert response.status_code == 503 and "FLIGHT_DELAYS_STORAGE_URL" in response.text


def test_a_signed_link_grants_a_png_inside_reports_only(client, figures, plugin):
    from airflow.api_fastapi.auth.tokens import get_signing_key

    signer = plugin.figure_signer(get_signing_key("api", "secret_key"))
    (figures / "data").mkdir(exist_ok=True)
    (figures / "data" / "secret.png").write_bytes(b"\x89PNG secret")
    anonymous = TestClient(client.app)
    # Only this app signs, and only .png paths; a page is never granted.
    response = anonymous.get(f"/signed-figures/{signer.dumps(REPORT)}")
    assert response.status_code == 403
    # A signature does not lift report_path's checks.
    for path in ("../data/secret.png", "/" + str(figures / "data" / "secret.png")):
        response = anonymous.get(f"/signed-figures/{signer.dumps(path)}")
        assert response.status_code == 404 and b"secret" not in response.content, path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_report_renders_its_charts_in_chromium_under_the_policy(plugin, figures, auth):
    """Over real HTTP, with the UI's session cookie (SameSite=Lax, as Airflow sets it):
    the sandboxed page shows both figures; the plugin's own page keeps its chart."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("this test needs Chromium: apt-get install -y chromium")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(plugin.build_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_FLAGS)
            try:
                context = browser.new_context()
                cookie = {"name": "_token", "value": auth(), "url": base, "sameSite": "Lax"}
                context.add_cookies([{**cookie, "httpOnly": True}])
                page = context.new_page()
                response = page.goto(f"{base}/reports/{REPORT}")
                assert response is not None and response.status == 200
                assert response.headers["content-security-policy"] == CSP
                page.wait_for_function(
                    "[...document.images].every(i => i.complete)", timeout=15_000
                )
                widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
                assert widths == [40, 50]
                # The page is sandboxed: no script of its own may run.
                assert page.evaluate("window.origin") == "null"
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- traversal, on a local folder ----------------------------------------------------
def plant_outside(project: Path) -> list[Path]:
    """An .html and a .png in data/ and in the project root: real report types, so only
    the folder checks can refuse them."""
    (project / "data").mkdir(exist_ok=True)
    planted = []
    for folder in (project / "data", project):
        (folder / "secret.html").write_bytes(b"<p>secret page</p>")
        (folder / "secret.png").write_bytes(b"\x89PNGsecret")
        planted += [folder / "secret.html", folder / "secret.png"]
    return planted


def traversal_paths(project: Path) -> list[str]:
    """Request paths under /reports/ that name the planted files."""
    absolute = str(project / "data" / "secret.html")
    return [
        "/reports/../data/secret.html",
        "/reports/../secret.png",
        "/reports/ds=2013-03-15/../../data/secret.png",
        "/reports/ds=2013-03-15/../../secret.html",
        "/reports/%2e%2e/data/secret.html",
        "/reports/%2E%2E/secret.png",
        "/reports/..%2fdata%2fsecret.png",
        "/reports/%2e%2e%2Fsecret.html",
        "/reports/ds=2013-03-15%2F..%2F..%2Fdata%2Fsecret.html",
        "/reports/" + absolute,  # /reports//tmp/...: an absolute path
        "/reports/" + absolute.replace("/", "%2F"),
        "/reports/" + str(project / "secret.png"),
    ]


def test_traversal_to_an_html_or_png_outside_local_reports_is_a_404(client, project, auth):
    plant_outside(project)
    app = client.app
    # The raw path reaches the route as it is sent: a literal dot segment inside
    # reports/ is served (the folder checks resolve it), so the ones below are refused
    # by those checks, not by a client or a router.
    status, _, body = raw_get(app, "/reports/ds=2013-03-16/../ds=2013-03-15/index.html", auth())
    assert status == 200 and b"run report" in body
    for path in traversal_paths(project):
        status, _, body = raw_get(app, path, auth())
        assert status == 404, path
        assert b"secret" not in body, path


# --- an artifact root in an object store ---------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    from s3_support import moto_server

    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_plugin(project, auth, s3_endpoint, monkeypatch):
    """The plugin on an S3 artifact root holding the project's reports (and none left on
    the local disk), the bucket's URL and an authenticated client."""
    from flight_delays.store import io as artifact_io
    from s3_support import new_bucket, point_s3_at

    point_s3_at(monkeypatch, s3_endpoint, project)
    bucket = new_bucket()
    url = f"s3://{bucket}/prefix"
    figures = project / "reports" / "figures" / "ds=2013-03-15"
    (figures / "metric_history.png").write_bytes(png(40, 30))
    (project / "reports" / REPORT).write_text(
        report_page(["../figures/ds=2013-03-15/metric_history.png"])
    )
    local = project / "reports"
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{url}/reports/{file.relative_to(local).as_posix()}"
        artifact_io.write_bytes(file.read_bytes(), target)
    shutil.rmtree(local)
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", url)
    module = load_plugin("model_reports_security_on_s3")
    app_client = TestClient(module.build_app(), headers={"Authorization": f"Bearer {auth()}"})
    yield module, bucket, app_client
    module.reset_engine()


def test_every_object_store_report_file_carries_the_csp_and_nosniff(s3_plugin):
    _, _, s3_client = s3_plugin
    page = s3_client.get(f"/reports/{REPORT}")
    assert page.status_code == 200 and "run report" in page.text
    assert_report_headers(page.headers, "page")
    figure = s3_client.get(f"/reports/{FIGURE}")
    assert figure.status_code == 200 and figure.content == png(40, 30)
    assert_report_headers(figure.headers, "figure")
    (link,) = signed_links(page.text)
    anonymous = TestClient(s3_client.app)
    signed = anonymous.get("/reports/ds=2013-03-15/" + link)
    assert signed.status_code == 200 and signed.content == png(40, 30)
    assert_report_headers(signed.headers, "signed figure")


def test_traversal_to_keys_outside_the_reports_prefix_is_a_404(s3_plugin, auth):
    """Keys outside reports/ (in the prefix, at the bucket's root), and keys whose names
    climb out of it: S3 keeps ``reports/../data/x`` as it is, but a store or a proxy in
    front of it that resolves dot segments would read data/x. The plugin refuses every
    path with such a segment, whatever the store would do."""
    import s3fs

    _, bucket, s3_client = s3_plugin
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    planted = {
        f"{bucket}/prefix/data/secret.html": b"<p>secret page</p>",
        f"{bucket}/prefix/secret.png": b"\x89PNGsecret",
        f"{bucket}/secret.html": b"<p>secret page</p>",
        # Literal names with dot segments, under the reports prefix:
        f"{bucket}/prefix/reports/../data/secret.html": b"<p>secret page</p>",
        f"{bucket}/prefix/reports/../secret.png": b"\x89PNGsecret",
        f"{bucket}/prefix/reports/./secret.png": b"\x89PNGsecret",
        f"{bucket}/prefix/reports//secret.html": b"<p>secret page</p>",
    }
    for key, body in planted.items():
        fs.pipe(key, body)
    app = s3_client.app
    status, _, _ = raw_get(app, f"/reports/{REPORT}", auth())
    assert status == 200  # the raw client reaches the route
    for path in (
        "/reports/../data/secret.html",
        "/reports/../secret.png",
        "/reports/../../secret.html",
        "/reports/./secret.png",
        "/reports//secret.html",
        "/reports/%2e%2e/data/secret.html",
        "/reports/%2E%2E%2Fsecret.png",
        "/reports/..%2f..%2fsecret.html",
        "/reports/ds=2013-03-15%2F..%2F..%2Fdata%2Fsecret.html",
        f"/reports//{bucket}/prefix/secret.png",
        f"/reports/%2F{bucket}%2Fsecret.html",
    ):
        status, _, body = raw_get(app, path, auth())
        assert status == 404, path
        assert b"secret" not in body, path


def test_an_absolute_path_on_a_store_that_honours_it_is_a_404(project, auth, monkeypatch):
    """fsspec's memory store replaces the folder with an absolute path joined to it (S3
    does not): only the plugin's empty-segment check stands between the route and the
    store's other files there."""
    from upath import UPath

    root = f"memory://flight-delays-{id(project)}/prefix"
    UPath(f"{root}/reports/{REPORT}").write_text(report_page([]))
    UPath(f"{root}/data/secret.html").write_bytes(b"<p>secret page</p>")
    UPath(f"{root}/secret.png").write_bytes(b"\x89PNGsecret")
    monkeypatch.setenv("FLIGHT_DELAYS_STORAGE_URL", root)
    module = load_plugin("model_reports_security_in_memory")
    app = module.build_app()
    try:
        status, headers, _ = raw_get(app, f"/reports/{REPORT}", auth())
        assert status == 200
        assert_report_headers(headers, "page in memory")
        store = root.removeprefix("memory:/")  # /flight-delays-N/prefix
        for path in (f"/reports/{store}/data/secret.html", f"/reports/%2F{store[1:]}/secret.png"):
            status, _, body = raw_get(app, path, auth())
            assert status == 404, path
            assert b"secret" not in body, path
    finally:
        module.reset_engine()
        UPath(root).fs.rm(root.removeprefix("memory://"), recursive=True)
