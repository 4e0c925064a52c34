"""What the alert tests share: a fixed clock, a run's link, the anti-flood limit they
assume, and a failure alert built from them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from flight_delays.monitor import alerts
from flight_delays.monitor.alert_ledger import Ledger

T0 = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
URL = "http://ui.example/dags/flight_delays/runs/manual__2013-03-16T07%3A00%3A00%2B00%3A00"
LIMIT = alerts.RateLimit(count=3, window=timedelta(minutes=60))


def failed(
    at: datetime = T0, error: str = "Traceback...\nValueError: bad <rows>\n"
) -> alerts.Alert:
    """The failure alert of ingest in the run of 2013-03-16, at ``at``."""
    return alerts.failure_alert(
        dag_id="flight_delays",
        run_id="manual__2013-03-16T07:00:00+00:00",
        day=date(2013, 3, 15),
        task_id="ingest",
        error=error,
        url=URL,
        at=at,
    )


def append_when_started(path: str, started: Any) -> None:
    """In another process: say so through ``started`` (an Event), then append one alert
    of ``other_process`` to the ledger at ``path``."""
    started.set()
    Ledger(path).add(T0, "other_process", "failure", alerts.SENT)
