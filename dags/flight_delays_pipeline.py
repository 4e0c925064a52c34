"""flight_delays: nightly retraining of the NYC arrival-delay model. Wiring only.

Each task calls one step of the `flight_delays` package (installed in the Airflow
environment, see pyproject.toml). Steps are imported when a task runs, not when this
file is parsed, so parsing loads neither pandas nor scikit-learn.
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param, chain
from airflow.sdk.exceptions import AirflowFailException

from flight_delays.config import project_root
from flight_delays.dates import TIMEZONE, processed_day
from flight_delays.errors import PipelineDataError

# `airflow tasks test` and `dags test` (`make run`) end with ~700k live objects, and the
# interpreter's last collection walks them all (~2 s); frozen objects are skipped
# (docs/benchmarks.md). Only in those short-lived commands: the dag-processor, scheduler
# and api-server parse this file too. `make task` and `make step` register their own.
if sys.argv[1:3] in (["tasks", "test"], ["dags", "test"]):
    atexit.register(gc.freeze)

# The project root holds include/params.yaml and the artifact folders. Under Airflow the
# dags folder sits in the project (dags/..), unless FLIGHT_DELAYS_HOME says otherwise.
PROJECT_ROOT = str(project_root(anchor=__file__))

# Steps that read or write the warehouse (source data, model registry) get its URL from
# this Airflow connection when it exists (docker-compose and `make up` define it); else
# the package's default applies (FLIGHT_DELAYS_SOURCE_URL, then the embedded SQLite file).
WAREHOUSE_CONN_ID = "flight_delays_warehouse"

# Airflow 3's cron schedule gives each run a zero-length data interval whose logical date
# is the run time, and a manual run may have no logical date: derive the day explicitly.
DAY = "{{ processed_day(dag_run.logical_date, dag_run.run_after, params.day) }}"


def fail_fast(step: Callable[..., Any]) -> Callable[..., Any]:
    """Fail the task at once, without its retries, when the step raises the package's
    :class:`PipelineDataError` (bad data, settings or model file: the same inputs give
    the same error). Every other error (a database that refuses connections, a killed
    process) keeps its type and is retried."""

    @functools.wraps(step)  # PythonOperator reads the step's signature through this
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except PipelineDataError as exc:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc

    return run


def warehouse_url(conn: Any) -> str | None:
    """The warehouse URL of the Airflow connection, or None for the package's default.
    Resolved when the task runs, so the password never lands in rendered fields."""
    connection = conn.get(WAREHOUSE_CONN_ID)
    return connection.get_uri() if connection else None


# The tasks' callables: each imports its step when the task runs (not when this file is
# parsed) and passes the step what it needs from Airflow. run_id names the DAG run: train
# writes into a folder of its own run, and score records one registry row per run. Each
# returns its step's dict of plain values (XCom): artifact locations are strings, s3://
# URLs when the artifact root is in an object store.
@fail_fast
def ingest(day: str, root: str, conn: Any, params: dict) -> dict:
    from flight_delays import ingest

    return ingest.run(
        day=day, root=root, source_url=warehouse_url(conn), refetch=bool(params.get("refetch"))
    )


@fail_fast
def featurize(day: str, root: str) -> dict:
    from flight_delays import featurize

    return featurize.run(day=day, root=root)


@fail_fast
def split(day: str, root: str) -> dict:
    from flight_delays import split

    return split.run(day=day, root=root)


@fail_fast
def train(day: str, root: str, conn: Any, run_id: str) -> dict:
    from flight_delays import train

    return train.run(day=day, root=root, registry_url=warehouse_url(conn), run_id=run_id)


@fail_fast
def score(day: str, root: str, conn: Any, run_id: str) -> dict:
    from flight_delays import score

    return score.run(day=day, root=root, registry_url=warehouse_url(conn), run_id=run_id)


@fail_fast
def chart(day: str, root: str, conn: Any) -> dict:
    from flight_delays import chart

    return chart.run(day=day, root=root, registry_url=warehouse_url(conn))


STEPS = [ingest, featurize, split, train, score, chart]


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
    + """
### What a run does
| task | reads | writes |
|---|---|---|
| ingest | SQL source: missing days only | `data/raw/ds=*/`, `data/interim/ds=D/manifest.json` |
| featurize | raw partitions of the window | `data/processed/ds=D/features.parquet` |
| split | features (+ past-day delay stats) | `train.parquet`, `holdout.parquet` (last K days) |
| train | train split | `models/ds=D/run=R/model.skops`, `model_card.json`; hashes in registry |
| score | run R's model, splits, champion | one registry row per run; `data/output/ds=D/` |
| chart | predictions, registry history | `reports/figures/ds=D/*.png`, `reports/ds=D/index.html` |

Paths are under the artifact root: the project root, or `FLIGHT_DELAYS_STORAGE_URL` (a
folder or an fsspec URL such as `s3://bucket/prefix`), where the returned locations
(XCom) are URL strings; the embedded SQLite warehouse stays in the project root.

**Processed day D**: the `day` parameter if given, else the New York calendar day before
the logical date (the 02:00 run on D+1 processes D), else the day before the trigger time.
**R** is the Airflow run id: two runs of one day never train into the same folder, and a
retried score finds its run's registry row and changes nothing. A data error
(`flight_delays.errors.PipelineDataError`: bad rows, settings or model file) fails its
task at once; other errors are retried. Rows that break the data contract are
quarantined by ingest (`data/interim/quarantine/ds=D/`, one reason per row); a day
corrected in the warehouse is read again with the `refetch` parameter. Parameters:
`include/params.yaml`. The registry (runs, metrics, decisions, champion) is the warehouse
of connection `flight_delays_warehouse`; the reports are in the web UI under **Model
reports**.
""",
) as dag:
    tasks = [
        PythonOperator(
            task_id=step.__name__,
            python_callable=step,
            op_kwargs={"day": DAY, "root": PROJECT_ROOT},
        )
        for step in STEPS
    ]
    chain(*tasks)
