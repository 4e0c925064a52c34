"""Helpers of the live stack tests: the Stack handle (deploy/stack/flight_stack/handle.py:
stack.py, the airflow CLI, the REST API v2 with a JWT), the test parameters, the browser
set-up (Playwright on the system Chromium) and small utilities used by conftest.py."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import socket
import sys
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
from flight_stack import settings

# The handle and the REST client, for the test modules (they live in deploy/stack, where
# the benchmarks reach them too).
from flight_stack.handle import PYTHON as PYTHON
from flight_stack.handle import SCRIPT as SCRIPT
from flight_stack.handle import Stack as Stack
from flight_stack.handle import free_port as free_port
from flight_stack.handle import leftovers as leftovers
from flight_stack.rest import DAG_ID as DAG_ID
from flight_stack.rest import run_path as run_path

from flight_delays.store import artifacts
from flight_delays.store.config import ProjectPaths

REPO = Path(__file__).resolve().parents[2]
# The days a backfill command makes runs for, as the docs tests read them.
sys.path.insert(0, str(REPO / "tests" / "e2e"))
from doc_blocks import backfill_logical_days as backfill_logical_days  # noqa: E402

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
    metrics = json.loads((artifacts.OUTPUT.path(paths.root, day) / "metrics.json").read_text())
    for who in ("model", "baseline"):
        assert math.isfinite(metrics[who]["mae"]) and metrics[who]["mae"] > 0, metrics
    predictions = pd.read_parquet(artifacts.OUTPUT.path(paths.root, day) / "predictions.parquet")
    assert len(predictions) > 0
    assert pd.to_datetime(predictions["local_date"]).dt.date.max() == day
    # The model file sits in the day's folder or in a run's folder inside it.
    models = list(artifacts.MODEL_DAY.path(paths.root, day).rglob("model.skops"))
    assert models and all(m.stat().st_size > 0 for m in models), artifacts.MODEL_DAY.path(
        paths.root, day
    )
    figures = sorted(artifacts.FIGURES.path(paths.root, day).glob("*.png"))
    assert figures, f"no figures in {artifacts.FIGURES.path(paths.root, day)}"
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
