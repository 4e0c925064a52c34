"""Is the stack up? Airflow's own health report (/api/v2/monitor/health on the
api-server): every component healthy, with heartbeats from the processes that run now;
under Celery, each worker's own word that it is ready (its log). Standard library only."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
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


def log_sizes(cfg: Config, names: tuple[str, ...]) -> dict[str, int]:
    """The size of each program's log now: where the lines of its next start begin."""
    sizes = {}
    for name in names:
        try:
            sizes[name] = (cfg.logs / f"{name}.log").stat().st_size
        except OSError:
            sizes[name] = 0
    return sizes


def workers_not_ready(cfg: Config, since: dict[str, int]) -> list[str]:
    """The Celery workers whose log has no ``celery@<name> ready.`` after the offset in
    ``since`` (:func:`log_sizes` before they started): not (yet) consuming tasks."""
    waiting = []
    for name, offset in since.items():
        try:
            with (cfg.logs / f"{name}.log").open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            text = ""
        if f"celery@{name} ready." not in text:
            waiting.append(name)
    return waiting


def wait_workers(
    cfg: Config, process: subprocess.Popen, since: dict[str, int], timeout: float
) -> list[str]:
    """Wait until every worker in ``since`` is ready, supervisord exits or ``timeout`` s;
    returns the workers still not ready."""
    deadline = time.monotonic() + timeout
    waiting = workers_not_ready(cfg, since)
    while waiting and time.monotonic() < deadline and process.poll() is None:
        time.sleep(1)
        waiting = workers_not_ready(cfg, since)
    return waiting


def wait_healthy(
    cfg: Config, alive: Callable[[], bool], since: datetime | None, timeout: float | None = None
) -> dict | None:
    """Poll the health endpoint until every component reports (``since``: from processes
    started after it), or ``alive()`` (supervisord runs) turns False, or ``timeout`` s
    (default ``cfg.up_timeout``); returns the last report."""
    deadline = time.monotonic() + (cfg.up_timeout if timeout is None else timeout)
    report = None
    while time.monotonic() < deadline and alive():
        report = health(cfg)
        if healthy(report, since=since):
            break
        time.sleep(1)
    return report


#: The supervisord program behind each part of the health report.
PROGRAM_OF = {
    "metadatabase": "postgres",
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "dag_processor": "dag-processor",
}


def unhealthy_programs(report: dict | None) -> list[str]:
    """The programs whose part of ``report`` is not healthy; the api-server when there
    is no report at all (it did not answer)."""
    if not report:
        return ["api-server"]
    return [PROGRAM_OF[n] for n in PARTS if (report.get(n) or {}).get("status") != "healthy"]
