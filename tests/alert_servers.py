"""Real servers that receive alerts in the tests: an SMTP server (aiosmtpd) and an HTTP
server that keeps every POSTed JSON body; and the Airflow connection JSON for each."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mailbox:
    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)
        return "250 OK"

    def texts(self) -> list[str]:
        """Each mail's subject and its decoded parts, as one text."""
        found = []
        for message in self.messages:
            parts = [str(message["Subject"])]
            for part in message.walk():
                if part.get_content_maintype() == "text":
                    parts.append(part.get_content())
            found.append("\n".join(parts))
        return found


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An SMTP server on a free loopback port (aiosmtpd), no TLS, no login."""
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Hook:
    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"


@contextmanager
def webhook_server() -> Iterator[Hook]:
    """An HTTP server on a free loopback port that keeps the JSON of every POST."""
    hook = Hook(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.posts.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def smtp_connection(port: int) -> str:
    """The flight_delays_smtp connection for a plain local server (JSON form)."""
    extra = {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


def webhook_connection(url: str) -> str:
    """The flight_delays_webhook connection: the whole URL as its host."""
    return json.dumps({"conn_type": "http", "host": url})
