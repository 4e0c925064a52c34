"""The DAG under `airflow dags test` with the artifact root in S3 (moto's server, started
in this process; Airflow runs in a subprocess that reaches it by its port): every task
succeeds, the artifacts land in the bucket and nowhere under the project root, and the
tasks' return values (XCom) are plain values that name the objects by s3:// URL."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from datetime import date

import pytest

from flight_delays.store import artifacts, io, storage
from s3_support import moto_server, new_bucket, point_s3_at

pytestmark = pytest.mark.e2e

# Dated 2013-03-21 at 02:00: processes 2013-03-20, a day no other e2e test runs.
RUN_DATE = "2013-03-21T02:00:00-04:00"
DAY = date(2013, 3, 20)


def test_dags_test_with_the_artifact_root_in_s3(project, tmp_path, monkeypatch):
    with moto_server() as endpoint:
        point_s3_at(monkeypatch, endpoint, tmp_path)
        url = f"s3://{new_bucket()}/prefix"
        # A registry of its own: this run's champion must not change the other tests'.
        warehouse = tmp_path / "warehouse.sqlite"
        shutil.copy(project.root / "warehouse.sqlite", warehouse)
        env = {
            **project.env,
            **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
            "FLIGHT_DELAYS_STORAGE_URL": url,
            "FLIGHT_DELAYS_SOURCE_URL": f"sqlite:///{warehouse}",
            # A metastore of its own too: Airflow keeps one URI per asset name, and the
            # other tests' runs declared the assets under the local root.
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        }
        before = sorted(p for p in project.root.rglob("*") if f"ds={DAY}" in str(p))
        in_s3 = dataclasses.replace(project, env=env)
        in_s3.airflow("db", "migrate")
        result = in_s3.airflow("dags", "test", "flight_delays", RUN_DATE)
        output = result.stdout + result.stderr
        finished = re.search(r"DagRun Finished: .*?state=(\w+)", output)
        assert finished and finished.group(1) == "success", output[-3000:]

        root = storage.locate(url)
        metrics = io.read_json(artifacts.METRICS.path(root, DAY), artifacts.METRICS)
        assert metrics["holdout_rows"] > 0 and metrics["model"]["mae"] > 0
        for entry in (artifacts.MANIFEST, artifacts.FEATURES, artifacts.PREDICTIONS,
                      artifacts.DAY_MODEL_CARD, artifacts.REPORT):  # fmt: skip
            assert entry.path(root, DAY).is_file(), entry.name
        assert metrics["challenger"]["model"].startswith(f"{url}/models/ds={DAY}/run=")
        # Nothing of the day was written under the project root.
        assert sorted(p for p in project.root.rglob("*") if f"ds={DAY}" in str(p)) == before
        # The tasks returned strings naming objects (Airflow logs each return value).
        returned = re.findall(r"Returned value was: (\{.*)", output)
        # The six steps, and publish when the run changed the champion (else skipped).
        assert len(returned) in (6, 7), output[-3000:]
        assert f"'metrics': '{url}/data/output/ds={DAY}/metrics.json'" in output
        assert "UPath(" not in output and "S3Path(" not in output
