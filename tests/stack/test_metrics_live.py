"""Metrics on the live no-Docker stack (the session's shared stack, conftest.py):

- Airflow's own metrics: the stack's components send StatsD datagrams to the UDP socket
  the tests bound before `up` (FLIGHT_DELAYS_STACK_STATSD_PORT), and the scheduler's are
  among them;
- the Model reports plugin's Prometheus route on the real api-server: closed without a
  login, and with a token its output parses with prometheus_client's parser and agrees
  with the REST API about the DAGs' runs.
"""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from stack_helpers import TIMINGS, Stack, StatsdListener
from stack_helpers import parse_metrics as parse

pytestmark = pytest.mark.stack

DAG_IDS = ("flight_delays", "flight_delays_predict")
STATES = ("queued", "running", "success", "failed")


def test_the_scheduler_sends_statsd_metrics_to_the_configured_socket(
    stack: Stack, statsd: StatsdListener
):
    started = time.monotonic()
    deadline = started + 90
    while not statsd.seen("airflow.scheduler"):
        assert time.monotonic() < deadline, (
            f"no scheduler metric within 90 s on UDP 127.0.0.1:{statsd.port}; "
            f"seen: {statsd.seen('')[:30]}"
        )
        time.sleep(1)
    names = statsd.seen("airflow.scheduler")
    TIMINGS["StatsD: scheduler metric names seen"] = f"{len(names)} (e.g. {names[0]})"
    # A datagram is name:value|type (StatsD's line format).
    line = statsd.examples[names[0]]
    _, rest = line.split(":", 1)
    value, kind = rest.split("|", 1)
    float(value)
    assert kind[0] in "cgmsh", line


def test_the_metrics_route_answers_on_the_api_server(stack: Stack):
    url = f"{stack.api_url}/model-reports/metrics"
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 401 and "flight_delays_" not in refused.text
    headers = {"Authorization": f"Bearer {stack.token()}"}

    def rest_runs() -> dict[str, list[dict]]:
        return {
            dag_id: stack.ok("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1000})["dag_runs"]
            for dag_id in DAG_IDS
        }

    # Other live tests of the session may finish a run between two reads: compare only
    # when the REST API says the same before and after the scrape.
    for _attempt in range(5):
        before = rest_runs()
        response = httpx.get(url, headers=headers, timeout=30)
        if rest_runs() == before:
            break
        time.sleep(2)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse(response.text)
    assert metrics["flight_delays_registry_up"] == {(): 1.0}  # make up migrated it
    runs = metrics["flight_delays_dag_runs"]
    assert {(("dag_id", d), ("state", s)) for d in DAG_IDS for s in STATES} <= set(runs)
    last = metrics.get("flight_delays_dag_last_success_timestamp_seconds", {})
    for dag_id, rest in before.items():
        success = [r for r in rest if r["state"] == "success"]
        assert runs[(("dag_id", dag_id), ("state", "success"))] == len(success)
        key = (("dag_id", dag_id),)
        if success:
            newest = max(datetime.fromisoformat(r["end_date"]) for r in success)
            assert last[key] == pytest.approx(newest.timestamp(), abs=1e-3)
        else:
            assert key not in last


# The commands docs/monitoring.md gives, run as written (bash, curl and jq).
DOCUMENTED_CURL = """
TOKEN=$(curl -s -X POST "$API/auth/token" -H 'Content-Type: application/json' \\
  -d "{\\"username\\": \\"admin\\", \\"password\\": \\"$PASSWORD\\"}" | jq -r .access_token)
curl -s -H "Authorization: Bearer $TOKEN" "$API/model-reports/metrics"
"""


def test_the_documented_curl_commands_scrape_the_route(stack: Stack, tmp_path):
    import os
    import shutil
    import subprocess

    from stack_helpers import REPO

    assert DOCUMENTED_CURL.strip() in (REPO / "docs" / "monitoring.md").read_text()
    for tool in ("bash", "curl", "jq"):
        assert shutil.which(tool), f"the documented commands need {tool}"
    env = {**os.environ, "API": stack.api_url, "PASSWORD": stack.admin_password}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", DOCUMENTED_CURL],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (tmp_path / "metrics.txt").write_text(result.stdout)  # a sample, kept with the test
    metrics = parse(result.stdout)
    assert metrics["flight_delays_registry_up"] == {(): 1.0}


def test_after_a_run_the_route_reports_it_and_agrees_with_the_registry(live_dag: Stack):
    """A night for 2013-04-26 (a day no other live test processes): the route's figures
    against the page's JSON (the same registry) and the day's quarantine summary."""
    import json

    from stack_helpers import DAG_ID

    stack = live_dag
    run = stack.ok(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"dag_run_id": "metrics_2013-04-27", "logical_date": "2013-04-27T02:00:00-04:00"},
    )
    run = stack.wait_for_run(run["dag_run_id"])
    headers = {"Authorization": f"Bearer {stack.token()}"}
    base = f"{stack.api_url}/model-reports"
    # The scheduled run of the recent days may record between two reads: read again then.
    for _attempt in range(3):
        before = httpx.get(f"{base}/api/runs", headers=headers, timeout=30).json()
        body = httpx.get(f"{base}/metrics", headers=headers, timeout=30).text
        after = httpx.get(f"{base}/api/runs", headers=headers, timeout=30).json()
        if before == after:
            break
    metrics = parse(body)
    last = metrics["flight_delays_dag_last_success_timestamp_seconds"][(("dag_id", DAG_ID),)]
    assert last >= datetime.fromisoformat(run["end_date"]).timestamp() - 1e-3
    newest = max(r["processed_day"] for r in after["runs"])
    midnight = datetime.fromisoformat(newest + "T00:00:00+00:00").timestamp()
    assert metrics["flight_delays_last_processed_day_timestamp_seconds"] == {(): midnight}
    champion = after["champion"]
    mae = metrics["flight_delays_champion_holdout_mae_minutes"]
    if champion["kind"] == "model":
        assert mae == {(("kind", "model"),): pytest.approx(champion["mae"])}
    else:
        newest_run = next(r for r in after["runs"] if r["processed_day"] == newest)
        assert mae == {(("kind", "baseline"),): pytest.approx(newest_run["baseline_mae"])}
    summary = stack.root / "data" / "interim" / "quarantine" / f"ds={newest}" / "summary.json"
    expected = json.loads(summary.read_text())["quarantined"] if summary.is_file() else 0
    assert metrics["flight_delays_quarantined_rows"] == {(): expected}
    TIMINGS["metrics route after a run"] = f"newest day {newest}, quarantined {expected}"
    page = httpx.get(f"{base}/", headers=headers, timeout=30)
    assert page.status_code == 200
    for section in ("Alerts are <strong>", "Last night's input drift", "day by day"):
        assert section in page.text, section
