"""plugins/ui_timezone.py: the UI's HTML gets the New York default time zone, once, and
nothing else is touched."""

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


def serve(body: bytes, content_type: bytes, chunks: int = 1, **extra_headers: bytes):
    """A tiny ASGI app answering every request with ``body`` in ``chunks`` pieces."""

    async def app(scope, receive, send):
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        headers += [(k.replace("_", "-").encode(), v) for k, v in extra_headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
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


@pytest.mark.parametrize(
    ("content_type", "method", "extra"),
    [
        (b"application/json", "GET", {}),
        (b"text/html", "POST", {}),
        (b"text/html", "GET", {"content_encoding": b"gzip"}),
    ],
    ids=["json", "post", "compressed"],
)
def test_other_responses_pass_untouched(content_type, method, extra):
    body = b"<head>{}</head>"
    middleware = ui_timezone.DefaultUiTimezone(
        serve(body, content_type, **extra), zone="Europe/Paris"
    )
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
