"""UI time zone: the web UI shows times in the project's time zone (New York) by default.

Airflow 3.3's UI has no server setting for this: it shows the browser's own time zone
until the user picks another in the user menu, and keeps that choice in the browser's
localStorage under ``timezone`` (the old ``[webserver] default_ui_timezone`` went with
Airflow 2's web server). Every run here is named by a New York flight day, and a UI in
UTC or the viewer's zone puts the 02:00 run on another date than its processed day.

So the api-server's HTML pages (the UI's single page app) get a one-line script in their
``<head>`` that sets that choice to ``[core] default_timezone`` when the browser has
none yet. A user who picks another zone keeps it. Pure ASGI: nothing imported here at
module level beyond the standard library, since task processes load the plugins folder
too. Changes to this file need an api-server restart.
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


def default_script(zone: str) -> bytes:
    """The script: set the UI's stored zone (a JSON value, as the UI stores it) unless set."""
    value = json.dumps(json.dumps(zone))  # a JS string literal holding the JSON text
    key = json.dumps(STORAGE_KEY)
    return (
        f"<script>try{{if(localStorage.getItem({key})===null)"
        f"localStorage.setItem({key},{value})}}catch(e){{}}</script>"
    ).encode()


class DefaultUiTimezone:
    """ASGI middleware adding :func:`default_script` after ``<head>`` of HTML responses
    to GET requests. Other responses (JSON, files, compressed bodies) pass untouched."""

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
                passthrough = not html or b"content-encoding" in headers
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
            body = b"".join(chunks).replace(b"<head>", b"<head>" + self.script, 1)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, inject)


class UiTimezonePlugin(AirflowPlugin):
    name = "flight_delays_ui_timezone"
    fastapi_root_middlewares = [  # noqa: RUF012 (AirflowPlugin declares it as a class list)
        {"middleware": DefaultUiTimezone, "args": [], "kwargs": {}, "name": "UI time zone"}
    ]
