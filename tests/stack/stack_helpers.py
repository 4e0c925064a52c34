"""Helpers of the live stack tests: the Stack handle (stack.py, the airflow CLI, the REST
API v2 with a JWT), the test parameters, the browser set-up (Playwright on the system
Chromium) and small utilities used by conftest.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pandas as pd
from flight_stack import procs, settings

from flight_delays.store.config import ProjectPaths

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "stack" / "stack.py"
PYTHON = sys.executable
DAG_ID = "flight_delays"
TZ = "America/New_York"

# Short enough to run in seconds, long enough to train on (as tests/e2e).
WINDOW_DAYS = 14
PARAMS = f"""\
ingest: {{window_days: {WINDOW_DAYS}}}
split: {{holdout_days: 3}}
train: {{max_iter: 60, learning_rate: 0.1, min_samples_leaf: 20}}
"""
SEEDED = (date(2013, 2, 20), date(2013, 4, 30))  # original 2013 days in the warehouse

# Headless Chromium flags measured to work on these machines (shared/DESIGN.md): as root,
# Chromium needs --no-sandbox; /dev/shm is small in containers.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]
VIEWPORT = {"width": 1400, "height": 1000}

# Measurements of this session, printed in pytest's terminal summary (conftest.py).
TIMINGS: dict[str, str] = {}


def chromium_binary() -> str | None:
    """The system Chromium (Debian's `chromium`): Playwright drives it through
    ``executable_path``, so no browser download is needed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_path(run_id: str, dag_id: str = DAG_ID) -> str:
    """REST path of a DAG run (run ids hold ':' and '+')."""
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


@dataclass
class Stack:
    root: Path
    state: Path
    env: dict[str, str]
    api_url: str
    _token: str | None = None

    def script(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """deploy/stack/stack.py with this stack's FLIGHT_DELAYS_STACK_* settings."""
        result = subprocess.run(
            [PYTHON, str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"stack.py {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-8000:]}"
            )
        return result

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The airflow CLI with this stack's settings (its PostgreSQL metastore)."""
        return self.script("run", "airflow", *args, check=check)

    @property
    def warehouse_url(self) -> str:
        """The warehouse connection the components get (parsed as the stack parses it)."""
        generated = settings.parse_env((self.state / "generated.env").read_text())
        return generated[settings.WAREHOUSE_CONN_ENV]

    @property
    def admin_password(self) -> str:
        passwords = self.state / "airflow" / "simple_auth_manager_passwords.json"
        return json.loads(passwords.read_text())[settings.ADMIN_USER]

    def token(self) -> str:
        if self._token is None:
            response = httpx.post(
                f"{self.api_url}/auth/token",
                json={"username": settings.ADMIN_USER, "password": self.admin_password},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """REST API v2 call with the admin's JWT."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(
            method, f"{self.api_url}/api/v2{path}", headers=headers, timeout=60, **kwargs
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def wait_for_run(self, run_id: str, timeout: float = 300, dag_id: str = DAG_ID) -> dict:
        """Poll a DAG run until it succeeds. Fails at once when a task fails or waits for
        a retry (retries are for flaky infrastructure, which a test stack must not have),
        naming the task and its error, and after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.ok("GET", run_path(run_id, dag_id))
            tasks = self.ok("GET", f"{run_path(run_id, dag_id)}/taskInstances")["task_instances"]
            broken = [t for t in tasks if t["state"] in ("failed", "up_for_retry")]
            if run["state"] in ("success", "failed") or broken or time.monotonic() > deadline:
                break
            time.sleep(2)
        if run["state"] != "success":
            # Fail the run, so that its retries do not hold one of the DAG's two active-run
            # slots (max_active_runs=2) for minutes and queue the next tests' runs.
            self.api("PATCH", run_path(run_id, dag_id), json={"state": "failed"})
            states = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks}
            errors = "\n".join(self.task_error(run_id, t, dag_id) for t in broken)
            raise AssertionError(
                f"run {run_id} is {run['state']!r} (waited up to {timeout:.0f} s): {states}\n"
                + errors
            )
        return run

    def task_error(self, run_id: str, task: dict, dag_id: str = DAG_ID) -> str:
        """The error events of a task's log (JSON lines), for the failure message."""
        log = (
            self.state / "logs" / "airflow" / f"dag_id={dag_id}" / f"run_id={run_id}"
            / f"task_id={task['task_id']}" / f"attempt={max(task['try_number'], 1)}.log"
        )  # fmt: skip
        lines = []
        try:
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("level") == "error":
                        details = [
                            f"{d.get('exc_type')}: {d.get('exc_value')}"
                            for d in event.get("error_detail") or []
                        ]
                        lines.append(f"  {event.get('event')} {' '.join(details)}")
        except OSError:
            return f"{task['task_id']}: no log at {log}"
        return f"{task['task_id']} ({log}):\n" + "\n".join(lines[-5:])


class StatsdListener:
    """A UDP socket on loopback that takes the StatsD datagrams Airflow's components send
    ([metrics] statsd_host/statsd_port), bound before the stack starts. A thread drains
    it (so a full buffer never drops the packets a test waits for) and keeps every
    metric name seen, with a count, and the newest lines."""

    def __init__(self) -> None:
        import collections
        import threading

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port: int = self.sock.getsockname()[1]
        self.names: collections.Counter[str] = collections.Counter()
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self.examples: dict[str, str] = {}  # name -> the first line that carried it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="statsd-listener", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                for line in data.decode("utf-8", "replace").splitlines():
                    self.lines.append(line)
                    name = line.split(":", 1)[0]
                    self.names[name] += 1
                    self.examples.setdefault(name, line)

    def seen(self, prefix: str) -> list[str]:
        """The metric names seen so far that start with ``prefix``."""
        with self._lock:
            return sorted(name for name in self.names if name.startswith(prefix))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def leftovers(state: Path) -> list[int]:
    """Processes of the stack whose state folder is ``state`` that are still running."""
    return procs.stack_pids(replace(settings.Config.from_env(), state=state))


def replay_window(first: date, last: date) -> list[tuple[int, tuple[date, date]]]:
    """The (replay cycle, original 2013 range) pairs whose rows cover the days first..last."""
    from flight_delays.intake.demo import cycle_of, shift_days

    pairs: dict[int, list[date]] = {}
    day = first
    while day <= last:
        cycle = cycle_of(day)
        pairs.setdefault(cycle, []).append(day - timedelta(days=shift_days(cycle)))
        day += timedelta(days=1)
    return [(cycle, (min(days), max(days))) for cycle, days in sorted(pairs.items())]


def log_in(page, stack: Stack, path: str = f"/dags/{DAG_ID}") -> None:
    """Open ``path`` in the UI, get sent to the login form, log in as admin, and wait
    until the browser is back on ``path``, logged in (the JWT is in the _token cookie).

    ``page``: a Playwright Page."""
    from playwright.sync_api import Error as PlaywrightError

    # The UI redirects to the login form on the client side; on a loaded machine the first
    # navigation was seen aborted mid-redirect (net::ERR_ABORTED): try it once more.
    for attempt in (1, 2):
        try:
            page.goto(f"{stack.api_url}{path}")
            page.wait_for_url("**/auth/login**")
            break
        except PlaywrightError:
            if attempt == 2:
                raise
    page.fill("input[name=username]", settings.ADMIN_USER)
    page.fill("input[name=password]", stack.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{stack.api_url}{path}")


def check_day(root: Path, day: date) -> dict:
    """The day's artifacts exist and are sane; returns metrics.json."""
    paths = ProjectPaths(root)
    metrics = json.loads((paths.output(day) / "metrics.json").read_text())
    for who in ("model", "baseline"):
        assert math.isfinite(metrics[who]["mae"]) and metrics[who]["mae"] > 0, metrics
    predictions = pd.read_parquet(paths.output(day) / "predictions.parquet")
    assert len(predictions) > 0
    assert pd.to_datetime(predictions["local_date"]).dt.date.max() == day
    # The model file sits in the day's folder or in a run's folder inside it.
    models = list(paths.model_dir(day).rglob("model.skops"))
    assert models and all(m.stat().st_size > 0 for m in models), paths.model_dir(day)
    figures = sorted(paths.figures(day).glob("*.png"))
    assert figures, f"no figures in {paths.figures(day)}"
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    return metrics


def fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every per-day artifact file under the project root."""
    found = {}
    for pattern in (
        "data/interim/ds=*/**/*",
        "data/processed/ds=*/**/*",
        "data/output/ds=*/**/*",
        "models/ds=*/**/*",
        "reports/figures/ds=*/**/*",
        "data/raw/ds=*/**/*",
    ):
        for path in root.glob(pattern):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
    return found


def parse_metrics(body: str) -> dict[str, dict[tuple, float]]:
    """A Prometheus text exposition, through prometheus_client's own parser: metric name
    -> {sorted label items: value}; a sample given twice fails."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples = found.setdefault(sample.name, {})
            key = tuple(sorted(sample.labels.items()))
            assert key not in samples, f"{sample.name}{dict(key)} twice"
            samples[key] = sample.value
    return found
