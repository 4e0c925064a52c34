"""flight_delays_predict: serve the champion's predictions for a day's flights. Wiring only.

Scheduled every morning at 05:00 New York time, and also whenever the training DAG
changes the champion (its ``flight_delays_champion`` asset event). Its one task calls
:func:`flight_delays.predict.run` (imported when the task runs, not when this file is
parsed).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param
from airflow.sdk.exceptions import AirflowFailException

from flight_delays.base.dates import TIMEZONE, predicted_day, processed_day
from flight_delays.base.errors import failing_fast
from flight_delays.store.artifacts import ASSETS, asset_uri, written_by
from flight_delays.store.config import project_root
from flight_delays.store.db import warehouse_url
from flight_delays_alerts import (  # the plugins folder
    check_nightly_deadline,
    on_run_failure,
    recording_errors,
)

# As in the training DAG (flight_delays_pipeline.py): the project root, the fail-fast
# rule for data errors, and the Assets from the artifact catalog.
PROJECT_ROOT = str(project_root(anchor=__file__))
fail_fast = failing_fast(AirflowFailException)
CHAMPION, PREDICTIONS = (
    Asset(name=name, uri=asset_uri(ASSETS[name], PROJECT_ROOT))
    for name in ("flight_delays_champion", "flight_delays_predictions")
)


def champion_day(triggering_asset_events: Any) -> str | None:
    """The processed day of the newest champion event that started this run (None for a
    run on the clock or by hand). Several events can start one run; the newest names
    the champion that serves now."""
    events = triggering_asset_events[CHAMPION] if triggering_asset_events else []
    events = [event for event in events if (event.extra or {}).get("day")]
    return max(events, key=lambda event: event.timestamp).extra["day"] if events else None


NIGHTLY_DAG_ID = "flight_delays"


def run_day(context: Any) -> Any:
    """The day a run serves, for its failure alert (a run started by a new champion
    cannot be told apart here: it is named by its logical date, or its trigger time)."""
    dag_run = context["dag_run"]
    return predicted_day(dag_run.logical_date, dag_run.run_after, (dag_run.conf or {}).get("day"))


def nightly_deadline(dag_run: Any, try_number: int) -> None:
    """The night's deadline (docs/monitoring.md): a run on the clock (05:00 on P) checks
    that the nightly run for P-1, dated 02:00 on P, has succeeded, and alerts if not.
    Once per run: not on a retry or a cleared task (try 2 on), and not in a backfill,
    whose runs are for mornings long past (each would alert)."""
    if dag_run.logical_date is None or dag_run.run_type == "backfill" or try_number > 1:
        return
    local = pendulum.instance(dag_run.logical_date).in_timezone(TIMEZONE)
    nightly = local.set(hour=2, minute=0, second=0, microsecond=0)
    check_nightly_deadline(None, NIGHTLY_DAG_ID, nightly, processed_day(nightly))


@recording_errors
@fail_fast
def predict(
    root: str,
    conn: Any,
    run_id: str,
    dag_run: Any,
    ti: Any,
    params: dict,
    triggering_asset_events: Any,
) -> dict:
    from flight_delays import predict

    started_by_champion = champion_day(triggering_asset_events)
    if started_by_champion is None:
        nightly_deadline(dag_run, ti.try_number)
    day = predicted_day(
        dag_run.logical_date,
        dag_run.run_after,
        params.get("day"),
        started_by_champion,
    )
    url = warehouse_url(conn)
    return predict.run(day=day, root=root, source_url=url, registry_url=url, run_id=run_id)


with DAG(
    dag_id="flight_delays_predict",
    description="Every morning, and on each new champion: predict the arrival delay of "
    "every flight scheduled for the day.",
    # 05:00 New York time, with the first departures (2013's earliest leave at 05:00-05:15,
    # a few before: their predictions come too late); and on every champion change,
    # so a new champion (or the baseline taking over again) serves at once.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 5 * * *", timezone=TIMEZONE), assets=[CHAMPION]
    ),
    start_date=pendulum.datetime(2013, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=1,  # runs replace a day's predictions whole: one at a time
    dagrun_timeout=timedelta(hours=1),
    on_failure_callback=on_run_failure(run_day),  # one alert per failed run
    default_args={
        "owner": "ml-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=20),
    },
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Flight day to predict",
            description="YYYY-MM-DD. Empty: the New York day of the run (the 05:00 run on D "
            "serves D), or, for a run started by a new champion, the day after the one it "
            "was trained for.",
        ),
    },
    tags=["ml", "flights", "predictions"],
    doc_md=__doc__
    + f"""
### What a run does
| task | reads | writes |
|---|---|---|
| predict | champion, the day's schedule and weather, the days before | predictions |

**predict** reads the registry's champion, the day's schedule and weather from the
warehouse and the raw partitions of the days before; it writes {written_by("predict")}
and replaces the day's rows of the warehouse table `predictions`.

Every scheduled flight gets the champion's predicted arrival delay in minutes and the
baseline's (origin-and-hour median) beside it (a model serves only the days after the
one it was trained for: for that day or an earlier one, the baseline serves); the nightly
training run of D scores them against what happened (the *served* MAE, on the Model
reports page).
""",
) as dag:
    PythonOperator(
        task_id="predict",
        python_callable=predict,
        op_kwargs={"root": PROJECT_ROOT},
        outlets=[PREDICTIONS],
    )
