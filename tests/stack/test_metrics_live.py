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
from prometheus_client.parser import text_string_to_metric_families
from stack_helpers import TIMINGS, Stack, StatsdListener

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


def parse(body: str) -> dict[str, dict[tuple, float]]:
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples = found.setdefault(sample.name, {})
            key = tuple(sorted(sample.labels.items()))
            assert key not in samples, f"{sample.name}{dict(key)} twice"
            samples[key] = sample.value
    return found


def test_the_metrics_route_answers_on_the_api_server(stack: Stack):
    url = f"{stack.api_url}/model-reports/metrics"
    refused = httpx.get(url, timeout=30)
    assert refused.status_code == 401 and "flight_delays_" not in refused.text
    response = httpx.get(url, headers={"Authorization": f"Bearer {stack.token()}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    metrics = parse(response.text)
    assert metrics["flight_delays_registry_up"] == {(): 1.0}  # make up migrated it
    runs = metrics["flight_delays_dag_runs"]
    assert {(("dag_id", d), ("state", s)) for d in DAG_IDS for s in STATES} <= set(runs)
    # The same figures as the REST API's, per DAG (no run moves between the two reads
    # unless another test runs in parallel: the states are compared only when stable).
    for dag_id in DAG_IDS:
        rest = stack.ok("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 1000})["dag_runs"]
        success = [r for r in rest if r["state"] == "success"]
        assert runs[(("dag_id", dag_id), ("state", "success"))] == len(success)
        last = metrics.get("flight_delays_dag_last_success_timestamp_seconds", {})
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
