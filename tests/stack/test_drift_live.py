"""Input drift on the live no-Docker stack (issue 18): a day whose flight distances the
warehouse suddenly holds in kilometres (a unit change at the source, which the data
contract cannot refuse: the distances stay positive) is measured by the night's `score`
task and shows everywhere a person or a scraper looks: the run report, the Model reports
page, the metrics route and a `drift` alert recorded in the registry.

The page and the route show last night's drift: the newest processed day's. So the
drifted day is tomorrow (New York), the last day the session's replay put in the
warehouse (conftest.py, ``recent_days``): no other live test processes it, it lies in
no other run's window, and it is newer than the day of any scheduled run of the session
(a session that crosses 02:00 New York gets a scheduled run that processes today, which
would freeze today's raw partition in miles first). The warehouse gets its miles back at
the end.
"""

from __future__ import annotations

import json
from datetime import date

import httpx
import pytest
import sqlalchemy as sa
from stack_helpers import DAG_ID, TIMINGS, Stack, parse_metrics

from flight_delays.monitor.alerts import ALERTS
from flight_delays.store import artifacts
from flight_delays.store.db import open_engine

pytestmark = pytest.mark.stack

KM_PER_MILE = 1.609344


def test_a_drifted_day_shows_in_the_report_the_page_the_metrics_and_an_alert(
    live_dag: Stack, recent_days: tuple[date, date]
):
    stack, day = live_dag, recent_days[1]  # tomorrow, New York
    # Raw partitions are write-once: a day frozen before the change would keep its miles.
    frozen = artifacts.RAW_PARTITION.path(stack.root, day)
    assert not frozen.exists(), f"{day} was ingested before the test changed it: {frozen}"
    engine = open_engine(stack.warehouse_url)
    backup = "flights_drift_test_backup"
    with engine.begin() as conn:
        conn.execute(sa.text(f"drop table if exists {backup}"))
        conn.execute(
            sa.text(f"create table {backup} as select * from flights where local_date = :day"),
            {"day": day},
        )
        changed = conn.execute(
            sa.text("update flights set distance = round(distance * :km) where local_date = :day"),
            {"day": day, "km": KM_PER_MILE},
        ).rowcount
    assert changed > 500
    try:
        run_id = f"drift_{day}"
        stack.ok(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": {"day": day.isoformat()}},
        )
        run = stack.wait_for_run(run_id, timeout=420)
        assert run["state"] == "success", run

        # metrics.json and the run report.
        metrics = json.loads(artifacts.METRICS.path(stack.root, day).read_text())
        drift = metrics["drift"]
        assert drift["skipped"] is None
        assert "distance" in drift["flagged"] and drift["features"]["distance"] >= drift["alert"]
        report = artifacts.REPORT.path(stack.root, day).read_text()
        assert "Input drift" in report and "distance" in report
        assert artifacts.BY_NAME["figure_drift"].path(stack.root, day).is_file()

        # The Model reports page and its JSON (the newest drift day is this one).
        headers = {"Authorization": f"Bearer {stack.token()}"}
        base = f"{stack.api_url}/model-reports"
        monitoring = httpx.get(f"{base}/api/monitoring", headers=headers, timeout=30).json()
        assert monitoring["drift"]["day"] == day.isoformat()
        shown = {f["feature"]: f for f in monitoring["drift"]["features"]}
        assert shown["distance"]["flagged"] and shown["distance"]["psi"] >= drift["alert"]
        page = httpx.get(f"{base}/", headers=headers, timeout=30).text
        table = page[page.index('<table id="drift">') :]
        assert "distance" in table[: table.index("</table>")]

        # The metrics route: the largest watched PSI is the distance's.
        scraped = parse_metrics(httpx.get(f"{base}/metrics", headers=headers, timeout=30).text)
        (labels, psi) = next(iter(scraped["flight_delays_drift_psi_max"].items()))
        assert dict(labels)["feature"] == "distance"
        assert psi == pytest.approx(drift["features"]["distance"])
        assert scraped["flight_delays_drift_flagged_features"][()] >= 1

        # One drift alert for the run, naming the feature (log only: no connection here).
        with engine.connect() as conn:
            recorded = [
                dict(r)
                for r in conn.execute(
                    sa.select(ALERTS).where(ALERTS.c.run_id == run_id, ALERTS.c.kind == "drift")
                ).mappings()
            ]
        assert len(recorded) == 1, recorded
        assert "distance" in recorded[0]["summary"] and recorded[0]["day"] == day
        TIMINGS["drifted day: distance PSI"] = f"{drift['features']['distance']:.2f}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("delete from flights where local_date = :day"), {"day": day})
            conn.execute(sa.text(f"insert into flights select * from {backup}"))
            conn.execute(sa.text(f"drop table {backup}"))
        engine.dispose()
