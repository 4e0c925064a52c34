"""Is the stack up? Airflow's own health report (/api/v2/monitor/health on the
api-server): every component healthy, with heartbeats from the processes that run now.
Standard library only."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime

from .settings import Config

#: The parts of the report that must say "healthy" (the api-server answers it).
PARTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def health(cfg: Config, timeout: float = 3) -> dict | None:
    """The api-server's health report, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{cfg.api_url}/api/v2/monitor/health", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _heartbeat(component: dict) -> datetime | None:
    for key, value in component.items():
        if key.endswith("heartbeat") and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return None


def healthy(report: dict | None, since: datetime | None = None) -> bool:
    """Every component healthy, and (``since``) its heartbeat newer than ``since``: after a
    restart the metastore still holds the heartbeats of the previous processes."""
    if not report:
        return False
    for name in PARTS:
        part = report.get(name) or {}
        if part.get("status") != "healthy":
            return False
        if since is not None and name != "metadatabase":
            beat = _heartbeat(part)
            if beat is None or beat < since:
                return False
    return True


def wait_healthy(cfg: Config, process: subprocess.Popen, since: datetime) -> dict | None:
    """Poll the health endpoint until every component reports from these processes, or
    ``process`` (supervisord) exits, or ``cfg.up_timeout``; returns the last report."""
    deadline = time.monotonic() + cfg.up_timeout
    report = None
    while time.monotonic() < deadline and process.poll() is None:
        report = health(cfg)
        if healthy(report, since=since):
            break
        time.sleep(1)
    return report
