"""UI time zone: the web UI shows times in the project's time zone (New York) by default.

Airflow 3.3's UI has no server setting for this: it shows the browser's own time zone
until the user picks another in the user menu, and keeps that choice in the browser's
localStorage under ``timezone`` (the old ``[webserver] default_ui_timezone`` went with
Airflow 2's web server). Every run here is named by a New York flight day, and a UI in
UTC or the viewer's zone puts the 02:00 run on another date than its processed day.

So the UI's own page (the single page app's index.html, which the api-server's catch-all
route answers for every UI path) gets a one-line script in its ``<head>`` that sets that
choice to ``[core] default_timezone`` when the browser has none yet. A user who picks
another zone keeps it.

Nothing else is touched (issue 20): not the plugins' apps (/model-reports and its report
files), not the REST API or its /docs page, not /static files, not the login page. The
route is known only once the app has routed the request, so the middleware decides on
the route that answered (:func:`is_ui_page`), and edits only a complete 200 answer to a
GET: never a HEAD, a 206 or a compressed body. An edited body drops its ``ETag`` (it
named the other bytes) and gets its ``Content-Length`` recomputed.

Pure ASGI: nothing imported here at module level beyond the standard library, since task
processes load the plugins folder too. Changes to this file need an api-server restart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STORAGE_KEY = "timezone"  # the key of the UI's time-zone choice (airflow/ui, 3.3)
# The route that serves the UI's index.html for every UI path (the catch-all at the end
# of airflow.api_fastapi.core_api.app.init_views, Airflow 3.3): (module, qualified name)
# of its endpoint. If a later Airflow renames it, nothing is edited (the live UI test,
# tests/stack/test_ui.py, then finds no New York default).
UI_PAGE_ENDPOINT = ("airflow.api_fastapi.core_api.app", "init_views.<locals>.webapp")
# Headers that describe the bytes as they were: wrong once the body is edited.
STALE_AFTER_EDIT = (b"content-length", b"etag", b"content-md5", b"digest", b"repr-digest")


def is_ui_page(scope: Message) -> bool:
    """Whether the request was routed to the UI's own page route. Starlette's router
    records the matched endpoint in the request's scope before it calls it, so at the
    start of the response the scope names the route that answered."""
    endpoint = scope.get("endpoint")
    found = (getattr(endpoint, "__module__", None), getattr(endpoint, "__qualname__", None))
    return found == UI_PAGE_ENDPOINT


def default_script(zone: str) -> bytes:
    """The script: set the UI's stored zone (a JSON value, as the UI stores it) unless set."""
    value = json.dumps(json.dumps(zone))  # a JS string literal holding the JSON text
    key = json.dumps(STORAGE_KEY)
    return (
        f"<script>try{{if(localStorage.getItem({key})===null)"
        f"localStorage.setItem({key},{value})}}catch(e){{}}</script>"
    ).encode()


class DefaultUiTimezone:
    """ASGI middleware adding :func:`default_script` after ``<head>`` of the UI's own
    page (:func:`is_ui_page`): a 200, uncompressed, HTML answer to a GET. Every other
    response passes untouched, byte for byte and header for header."""

    def __init__(self, app: Callable[..., Awaitable[None]], zone: str | None = None) -> None:
        self.app = app
        if zone is None:
            from airflow.configuration import conf  # the api-server only

            zone = conf.get("core", "default_timezone", fallback="UTC")
        # "utc" is Airflow's default and the UI's own fallback: nothing to set then.
        self.script = None if zone.lower() in ("utc", "system") else default_script(zone)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if self.script is None or scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        passthrough = False
        chunks: list[bytes] = []

        async def inject(message: Message) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                # Only a whole body is edited: a 206 is a byte range of another
                # representation, and a 304 or an error page is not the UI's page.
                editable = (
                    message.get("status") == 200
                    and html
                    and b"content-encoding" not in headers
                    and b"content-range" not in headers
                    and is_ui_page(scope)
                )
                passthrough = not editable
                if passthrough:
                    await send(message)
                else:
                    start = message
                return
            if passthrough or message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            original = b"".join(chunks)
            body = original.replace(b"<head>", b"<head>" + self.script, 1)
            headers = start["headers"]
            if body != original:
                headers = [(k, v) for k, v in headers if k.lower() not in STALE_AFTER_EDIT]
                headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, inject)


class UiTimezonePlugin(AirflowPlugin):
    name = "flight_delays_ui_timezone"
    fastapi_root_middlewares = [  # noqa: RUF012 (AirflowPlugin declares it as a class list)
        {"middleware": DefaultUiTimezone, "args": [], "kwargs": {}, "name": "UI time zone"}
    ]
