"""flight_delays: nightly retraining of the NYC arrival-delay model. Wiring only.

Each task calls one step of the `flight_delays` package (installed in the Airflow
environment, see pyproject.toml). Steps are imported when a task runs, not when this
file is parsed, so parsing loads neither pandas nor scikit-learn.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param, chain

from flight_delays.dates import TIMEZONE, processed_day

# The project root holds include/params.yaml and the artifact folders. Under Airflow the
# dags folder sits in the project (dags/..), unless FLIGHT_DELAYS_HOME says otherwise.
PROJECT_ROOT = os.environ.get("FLIGHT_DELAYS_HOME") or str(Path(__file__).resolve().parents[1])

STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]
# Steps that read or write the warehouse (source data, model registry) get its URL from
# this Airflow connection when it exists (docker-compose and `make up` define it); else
# the package's default applies (FLIGHT_DELAYS_SOURCE_URL, then the embedded SQLite file).
WAREHOUSE_CONN_ID = "flight_delays_warehouse"
WAREHOUSE_ARG = {"ingest": "source_url", "score": "registry_url", "chart": "registry_url"}

# Airflow 3's cron schedule gives each run a zero-length data interval whose logical date
# is the run time, and a manual run may have no logical date: derive the day explicitly.
DAY = "{{ processed_day(dag_run.logical_date, dag_run.run_after, params.day) }}"


def _step(name: str):
    """The file wrapper `flight_delays.<name>.run`, imported only when the task runs."""

    def run_step(day: str, root: str, conn, run_id: str) -> dict:
        kwargs = {"day": day, "root": root}
        if name in WAREHOUSE_ARG:
            # Resolved here, at run time, so the password never lands in rendered fields.
            connection = conn.get(WAREHOUSE_CONN_ID)
            kwargs[WAREHOUSE_ARG[name]] = connection.get_uri() if connection else None
        if name == "score":
            kwargs["run_id"] = run_id  # recorded with the decision in the registry
        return importlib.import_module(f"flight_delays.{name}").run(**kwargs)

    run_step.__name__ = f"{name}_run"
    run_step.__doc__ = f"Run flight_delays.{name}.run for the processed day."
    return run_step


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
| train | train split | `models/ds=D/model.skops`, `model_card.json` |
| score | model, splits, champion | `data/output/ds=D/metrics.json`, predictions; registry row |
| chart | predictions, registry history | `reports/figures/ds=D/*.png`, `reports/ds=D/index.html` |

**Processed day D**: the `day` parameter if given, else the New York calendar day before
the logical date (the 02:00 run on D+1 processes D), else the day before the trigger time.
Parameters: `include/params.yaml`. The registry (runs, metrics, decisions, champion) is
the warehouse of connection `flight_delays_warehouse`; the reports are in the web UI under
**Model reports**.
""",
) as dag:
    tasks = [
        PythonOperator(
            task_id=name,
            python_callable=_step(name),
            op_kwargs={"day": DAY, "root": PROJECT_ROOT},
        )
        for name in STEPS
    ]
    chain(*tasks)
