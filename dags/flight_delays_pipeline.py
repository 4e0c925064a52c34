"""flight_delays: nightly retraining of the NYC arrival-delay model. Wiring only.

Each task calls one step of the `flight_delays` package (installed in the Airflow
environment, see pyproject.toml). Steps are imported when a task runs, not when this
file is parsed, so parsing loads neither pandas nor scikit-learn.
"""

from __future__ import annotations

import atexit
import gc
import sys
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, Param, chain
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSkipException,
)

from flight_delays.base.dates import TIMEZONE, processed_day
from flight_delays.base.errors import failing_fast
from flight_delays.store.artifacts import ASSETS, asset_uri, written_by
from flight_delays.store.config import project_root
from flight_delays.store.db import warehouse_url
from flight_delays_alerts import on_run_failure, recording_errors, send_alert  # plugins/

# `airflow tasks test` and `dags test` (`make run`) pay two costs the project can cut
# (docs/benchmarks.md): ~2 s of garbage collection at exit over ~700k live objects (the
# heap is frozen at exit), and ~5 s for Cadwyn to build every version of the in-process
# execution API (only the newest is built): plugins/command_speedups.py. Only in those
# short-lived commands: the dag-processor, scheduler and api-server parse this file too.
# `make task` and `make step` do the same themselves.
if sys.argv[1:3] in (["tasks", "test"], ["dags", "test"]):
    try:
        from command_speedups import speed_up_test_command  # the plugins folder
    except ImportError:  # another plugins folder: freeze the heap at least
        atexit.register(gc.freeze)
    else:
        speed_up_test_command()

# The project root holds include/params.yaml and the artifact folders. Under Airflow the
# dags folder sits in the project (dags/..), unless FLIGHT_DELAYS_HOME says otherwise.
PROJECT_ROOT = str(project_root(anchor=__file__))

# Airflow 3's cron schedule gives each run a zero-length data interval whose logical date
# is the run time, and a manual run may have no logical date: derive the day explicitly.
DAY = "{{ processed_day(dag_run.logical_date, dag_run.run_after, params.day) }}"

# A data error (flight_delays.base.errors.PipelineDataError: bad rows, settings or model
# file) fails its task at once, without the retries; every other error is retried.
fail_fast = failing_fast(AirflowFailException)


def run_day(context: Any) -> Any:
    """The processed day of a run, for its failure alert (docs/monitoring.md)."""
    dag_run = context["dag_run"]
    return processed_day(dag_run.logical_date, dag_run.run_after, (dag_run.conf or {}).get("day"))


# Lineage, from the artifact catalog (the prediction DAG declares the same Assets).
ASSET = {
    name: Asset(name=name, uri=asset_uri(entry, PROJECT_ROOT)) for name, entry in ASSETS.items()
}
CHAMPION = ASSET["flight_delays_champion"]


# The tasks' callables: each imports its step when the task runs (not when this file is
# parsed) and passes its runner (`<step>.run`) what it needs from Airflow. run_id names
# the DAG run: train writes into its own run's folder; score records one row per run. Each
# returns its step's dict of plain values (XCom): artifact locations are strings, s3://
# URLs when the artifact root is in an object store.
@recording_errors
@fail_fast
def ingest(day: str, root: str, conn: Any, params: dict) -> dict:
    from flight_delays import ingest

    try:
        return ingest.run(
            day=day,
            root=root,
            source_url=warehouse_url(conn),
            refetch=bool(params.get("refetch")),
            now=pendulum.now("UTC"),
        )
    except ingest.DayNotLoadedYet as waiting:
        # Late data: look again later without using a retry (reschedule); at
        # ingest.wait_until the step raises LateDataError, which fails the run and alerts.
        raise AirflowRescheduleException(waiting.retry_at) from waiting


@recording_errors
@fail_fast
def featurize(day: str, root: str) -> dict:
    from flight_delays import featurize

    return featurize.run(day=day, root=root)


@recording_errors
@fail_fast
def split(day: str, root: str) -> dict:
    from flight_delays import split

    return split.run(day=day, root=root)


@recording_errors
@fail_fast
def train(day: str, root: str, conn: Any, run_id: str) -> dict:
    from flight_delays import train

    return train.run(day=day, root=root, registry_url=warehouse_url(conn), run_id=run_id)


@recording_errors
@fail_fast
def score(day: str, root: str, conn: Any, run_id: str) -> dict:
    from flight_delays import score
    from flight_delays.monitor import alerts

    result = score.run(day=day, root=root, registry_url=warehouse_url(conn), run_id=run_id)
    # Input drift past its threshold alerts (never fails the task: docs/monitoring.md).
    drifted = alerts.drift_message(day, result.get("drift"))
    if drifted is not None:
        send_alert("drift", *drifted, day=day)
    return result


@recording_errors
@fail_fast
def chart(day: str, root: str, conn: Any) -> dict:
    from flight_delays import chart

    return chart.run(day=day, root=root, registry_url=warehouse_url(conn))


@recording_errors
def publish(day: str, ti: Any, outlet_events: Any) -> dict:
    """Emit a ``champion`` asset event when this run's score changed the champion (a
    promotion or a step-down), carrying the new champion's model hash and MAE; skipped
    otherwise, so the prediction DAG runs only for a new champion."""
    from flight_delays.model import promotion

    extra = promotion.champion_event(ti.xcom_pull(task_ids="score"), day)
    if extra is None:
        raise AirflowSkipException("the champion did not change: no champion event")
    outlet_events[CHAMPION].extra = extra
    return extra


STEPS = [ingest, featurize, split, train, score, chart]
# What each task makes, as Airflow Assets (lineage in the UI's Assets view).
OUTLETS = {
    step: [ASSET[f"flight_delays_{name}"]]
    for step, name in [("featurize", "features"), ("train", "model"), ("score", "metrics"),
                       ("chart", "report")]
}  # fmt: skip


with DAG(
    dag_id="flight_delays",
    description="Nightly: ingest yesterday's flights, retrain, score against the baseline, chart.",
    schedule="0 2 * * *",  # 02:00 New York time: the flight day that just ended is complete
    # Tasks are not created for runs dated before start_date, and people backfill and
    # test on the 2013 history: start where the data starts. catchup=False keeps the
    # scheduler from creating those runs by itself.
    start_date=pendulum.datetime(2013, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=2,  # two cores: more parallel runs only queue behind each other
    max_consecutive_failed_dag_runs=5,
    dagrun_timeout=timedelta(hours=2),
    # One alert per failed run, by mail and/or webhook when their Airflow connections
    # exist, else in the log; always recorded in the registry (docs/monitoring.md).
    on_failure_callback=on_run_failure(run_day),
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Flight day to process",
            description="YYYY-MM-DD. Empty: the local day before the run's logical date "
            "(or before the trigger time when the run has no logical date).",
        ),
        "refetch": Param(
            False,
            type="boolean",
            title="Re-fetch the processed day from the warehouse",
            description="For a day corrected in the source: its raw partition is read again "
            "(checked first) and the earlier one kept in data/raw/superseded/.",
        ),
    },
    user_defined_macros={"processed_day": processed_day},
    tags=["ml", "flights", "nightly"],
    doc_md=__doc__
    + f"""
### What a run does
| task | reads | writes (from the artifact catalog) |
|---|---|---|
| ingest | SQL source: missing days only | {written_by("ingest")} |
| featurize | raw partitions of the window | {written_by("featurize")} |
| split | features (+ past-day delay stats) | {written_by("split")} (last K days held out) |
| train | train split | {written_by("train")}; hashes in the registry |
| score | run R's model, splits, champion | {written_by("score")}; one registry row per run |
| chart | predictions, registry history | {written_by("chart")} |
| publish | score's decision | a `flight_delays_champion` asset event (skipped: no change) |

Paths are under the artifact root: the project root, or `FLIGHT_DELAYS_STORAGE_URL` (a
folder or an fsspec URL such as `s3://bucket/prefix`), where the returned locations
(XCom) are URL strings; the embedded SQLite warehouse stays in the project root.

**Processed day D**: the `day` parameter if given, else the New York calendar day before
the logical date (the 02:00 run on D+1 processes D), else the day before the trigger time.
**R** is the Airflow run id: two runs of one day never train into the same folder, and a
retried score finds its run's registry row and changes nothing. A data error
(`flight_delays.base.errors.PipelineDataError`: bad rows, settings or model file) fails its
task at once; other errors are retried. Rows that break the data contract are
quarantined by ingest (`data/interim/quarantine/ds=D/`, one reason per row); a day
corrected in the warehouse is read again with the `refetch` parameter. Parameters:
`include/params.yaml`. The registry (runs, metrics, decisions, champion) is the warehouse
of connection `flight_delays_warehouse`; the reports are in the web UI under **Model
reports**.
""",
) as dag:
    tasks = {
        step.__name__: PythonOperator(
            task_id=step.__name__,
            python_callable=step,
            op_kwargs={"day": DAY, "root": PROJECT_ROOT},
            outlets=OUTLETS.get(step.__name__, []),
        )
        for step in STEPS
    }
    chain(*tasks.values())
    # Beside chart, after score: the champion event needs only score's decision.
    tasks["score"] >> PythonOperator(
        task_id="publish",
        python_callable=publish,
        op_kwargs={"day": DAY},
        outlets=[CHAMPION],
    )
