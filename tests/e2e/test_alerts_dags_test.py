"""The failure alert under `airflow dags test` (the path of `make run`): Airflow runs the
DAG's failure callback in the same process there. With no alert connection, the alert
is written to the log and recorded in the registry, once."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

pytestmark = pytest.mark.e2e


def test_a_failed_dags_test_run_logs_and_records_one_alert(project):
    from flight_delays.monitor.alerts import ALERTS
    from flight_delays.store.db import open_engine

    # 2013-01-10: its window is not in the test warehouse, so ingest fails at once.
    result = project.airflow("dags", "test", "flight_delays", "2013-01-11", check=False)
    output = result.stdout + result.stderr
    assert "ALERT (log only; log only: no alert connection)" in output, output[-4000:]
    assert "failed task: ingest" in output
    assert "NoFlightsError: no flights for" in output
    engine = open_engine(f"sqlite:///{project.root / 'warehouse.sqlite'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(ALERTS).where(ALERTS.c.day == date(2013, 1, 10))).mappings()
            rows = [dict(r) for r in rows]
    finally:
        engine.dispose()
    assert len(rows) == 1, rows
    assert rows[0]["kind"] == "failure" and rows[0]["channels"] == "log only: no alert connection"
    noted = [line for line in output.splitlines() if "could not" in line]
    assert "error: AirflowFailException: NoFlightsError: no flights for" in rows[0]["summary"], (
        noted
    )
