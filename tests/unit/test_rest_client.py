"""The REST client both stacks' live tests and the benchmarks share
(deploy/stack/flight_stack/rest.py), against a small local HTTP server that answers as
Airflow's API does: login, a run that succeeds, a task that fails, a refused login."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "stack"))
# The client speaks httpx, which the stacks' environment has (the airflow extra); the
# unit run on the package's own dependencies skips this module.
pytest.importorskip("httpx")

from flight_stack.rest import DAG_ID, RestApi, run_path


class FakeAirflow(BaseHTTPRequestHandler):
    # Set by the fixture for each test: the runs it knows, and every call it got.
    runs: ClassVar[dict[str, dict]] = {}
    calls: ClassVar[list[tuple[str, str, dict | None]]] = []
    # The DAG the dag-processor parses: found from this GET of it on (0: never).
    parsed_from: ClassVar[int] = 0

    def _answer(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def do_POST(self) -> None:
        body = self._body()
        self.calls.append(("POST", self.path, body))
        if self.path == "/auth/token":
            if body == {"username": "admin", "password": "right"}:
                return self._answer(201, {"access_token": "jwt"})
            return self._answer(401, {"detail": "Invalid credentials"})
        self._answer(404)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        if self.headers.get("Authorization") != "Bearer jwt":
            return self._answer(401)
        if self.path == f"/api/v2/dags/{DAG_ID}":
            asked = sum(1 for call in self.calls if call[1] == self.path)
            found = 0 < self.parsed_from <= asked
            return self._answer(200 if found else 404, {"dag_id": DAG_ID} if found else None)
        for run_id, run in self.runs.items():
            base = "/api/v2" + run_path(run_id)
            if self.path == base:
                return self._answer(200, {"dag_run_id": run_id, "state": run["state"]})
            if self.path == base + "/taskInstances":
                return self._answer(200, {"task_instances": run["tasks"]})
        self._answer(404)

    def do_PATCH(self) -> None:
        self.calls.append(("PATCH", self.path, self._body()))
        self._answer(200, {})

    def log_message(self, *args) -> None:  # quiet
        pass


class Client(RestApi):
    poll_seconds = 0.05

    def __init__(self, url: str, password: str = "right") -> None:
        self.api_url, self.password, self._token = url, password, None

    def credentials(self) -> tuple[str, str]:
        return "admin", self.password

    def failure_detail(self, run_id: str, dag_id: str, broken: list[dict]) -> str:
        return "logs of " + ", ".join(t["task_id"] for t in broken)


@pytest.fixture
def server():
    FakeAirflow.runs, FakeAirflow.calls, FakeAirflow.parsed_from = {}, [], 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeAirflow)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def task(task_id: str, state: str, try_number: int = 1) -> dict:
    return {"task_id": task_id, "state": state, "try_number": try_number}


def test_a_successful_run_is_returned_and_the_token_is_asked_for_once(server):
    FakeAirflow.runs["manual__2013-04-21T02:00:00+00:00"] = {
        "state": "success", "tasks": [task("ingest", "success")]}  # fmt: skip
    client = Client(server)
    run = client.wait_for_run("manual__2013-04-21T02:00:00+00:00", timeout=5)
    assert run["state"] == "success"
    assert client.tasks("manual__2013-04-21T02:00:00+00:00")[0]["task_id"] == "ingest"
    assert [c for c in FakeAirflow.calls if c[1] == "/auth/token"] == [
        ("POST", "/auth/token", {"username": "admin", "password": "right"})
    ]
    # The run id's ':' and '+' are escaped in the path.
    assert any("manual__2013-04-21T02%3A00%3A00%2B00%3A00" in c[1] for c in FakeAirflow.calls)


def test_a_failed_task_fails_at_once_naming_it_and_the_run_is_marked_failed(server):
    tasks = [task("ingest", "success"), task("train", "failed")]
    FakeAirflow.runs["r1"] = {"state": "running", "tasks": tasks}
    with pytest.raises(AssertionError) as failure:
        Client(server).wait_for_run("r1", timeout=30)
    message = str(failure.value)
    assert "run r1 of flight_delays is 'running'" in message
    assert "'train': ('failed', 1)" in message and "logs of train" in message
    assert (
        "PATCH",
        "/api/v2/dags/flight_delays/dagRuns/r1",
        {"state": "failed"},
    ) in FakeAirflow.calls


def test_a_retry_is_a_failure_unless_retries_are_expected(server):
    FakeAirflow.runs["r2"] = {"state": "running", "tasks": [task("score", "up_for_retry", 2)]}
    with pytest.raises(AssertionError, match="logs of score"):
        Client(server).wait_for_run("r2", timeout=30)
    with pytest.raises(AssertionError, match=r"waited up to 0 s"):
        Client(server).wait_for_run("r2", timeout=0.2, retries_ok=True)


def test_a_refused_login_says_so(server):
    with pytest.raises(AssertionError, match=r"login refused: .*Invalid credentials"):
        Client(server, password="wrong").ok("GET", "/dags")


def test_a_call_that_fails_names_the_path_and_the_status(server):
    with pytest.raises(AssertionError, match=r"GET /dags/nope: 404"):
        Client(server).ok("GET", "/dags/nope")


def test_an_api_server_that_is_not_there_is_an_error_not_a_hang():
    import httpx

    client = Client("http://127.0.0.1:9")  # nothing listens on the discard port
    client._token = "jwt"
    with pytest.raises(httpx.TransportError):
        client.ok("GET", "/dags")


def test_waiting_for_the_dag_ends_once_it_is_parsed_and_a_dag_never_parsed_is_named(server):
    FakeAirflow.parsed_from = 3  # the dag-processor is done by the third look
    client = Client(server)
    client.wait_for_dag(timeout=5)
    assert [c[1] for c in FakeAirflow.calls].count(f"/api/v2/dags/{DAG_ID}") == 3
    FakeAirflow.calls.clear()
    FakeAirflow.parsed_from = 0
    with pytest.raises(TimeoutError, match=f"{DAG_ID} was not parsed within 0 s"):
        client.wait_for_dag(timeout=0.3)
    assert len(FakeAirflow.calls) > 1  # it looked again before it gave up
