"""The Airflow side of the pipeline's alerts (docs/monitoring.md). Not a plugin (it
defines none): it lives in the plugins folder because every Airflow process has that
folder on ``sys.path`` (task processes, the dag-processor that runs DAG callbacks, the
scheduler, ``airflow dags test`` and ``tasks test``, the docker image's
/opt/airflow/plugins), while src/flight_delays never imports Airflow and dags/ is on
``sys.path`` only in some code paths. The plugins manager imports this file in every
process too, so it imports only the standard library at module level.

What is Airflow's here, and nothing else: the connections (``flight_delays_smtp``,
``flight_delays_webhook``: a transport is on when its connection exists), the provider
notifiers that send (the smtp provider's ``SmtpNotifier``, the http provider's
``HttpNotifier`` POSTing JSON), the task context, and the error XCom. What an alert
says, the anti-flood rule and the record: :mod:`flight_delays.monitor.alerts`.

- :func:`on_run_failure`: the DAGs' ``on_failure_callback`` (the dag-processor runs it
  once per failed run; a task that fails and then succeeds on a retry fails no run, so
  it sends nothing).
- :func:`recording_errors`: wraps a task callable so the last line of its error is
  kept (XCom ``flight_delays_error``) for that alert.
- :func:`send_alert`: any task callable's own alert (deadline, drift...), through the
  same transports, log and record.
- :func:`check_nightly_deadline`: the prediction run's check of the night's run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("flight_delays.alerts")

SMTP_CONN_ID = "flight_delays_smtp"
WEBHOOK_CONN_ID = "flight_delays_webhook"
ERROR_XCOM_KEY = "flight_delays_error"
#: Where the UI is when [api] base_url is not set (Airflow's own default port).
DEFAULT_BASE_URL = "http://localhost:8080"
#: Seconds the webhook's request may take unless its connection sets ``timeout``, and the
#: registry's connection and statements: a failure alert runs in the dag-processor, which
#: kills a callback after [dag_processor] dag_file_processor_timeout (50 s), so every part
#: of it is bounded (the SMTP connection's own ``timeout`` extra, default 30 s, bounds a mail).
WEBHOOK_TIMEOUT_S = 10.0
REGISTRY_TIMEOUT_S = 5.0


class ConnectionLookupError(RuntimeError):
    """Airflow raised on the lookup (an access denied by the execution API): not the same
    as a connection that is not defined. A lookup that merely fails (the metastore down)
    Airflow 3.3 reports as not defined (the Task SDK's ``_get_connection`` logs the
    backend's error at debug level and raises AirflowNotFoundException), so it cannot be
    told apart here: see flight_delays.store.db.REQUIRE_CONN_ENV."""


# --- connections and transports -------------------------------------------------------------
def _lookup(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, None when it is not defined (or, on Airflow 3.3,
    when its lookup failed); raises ConnectionLookupError when Airflow raises on it."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no way to ask
        if type(exc).__name__ == "AirflowNotFoundException":
            return None
        raise ConnectionLookupError(f"cannot look up connection {conn_id}: {exc}") from exc


def connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, or None when it is not defined or cannot be
    looked up (logged): for showing whether alerts are on."""
    try:
        return _lookup(conn_id)
    except ConnectionLookupError as exc:
        log.warning("alert: %s", exc)
        return None


class _Connections:
    """The ``conn`` accessor of a task's context, for code outside a task (callbacks). A
    lookup that Airflow fails raises; one it reports as "not defined" while the deployment
    defines the warehouse connection raises in db.warehouse_url: either way the registry is
    not taken from the settings instead of the warehouse connection that may exist."""

    def get(self, conn_id: str) -> Any | None:
        return _lookup(conn_id)


def alert_connections() -> dict[str, bool]:
    """Whether each alert connection exists: ``{"smtp": ..., "webhook": ...}``."""
    return {
        "smtp": connection(SMTP_CONN_ID) is not None,
        "webhook": connection(WEBHOOK_CONN_ID) is not None,
    }


def transports(settings: Any) -> dict[str, Callable[[Any], None]]:
    """One sender per alert connection that exists (none: alerts are only logged), with
    ``settings`` (:class:`flight_delays.store.config.AlertSettings`: the recipients). A
    connection whose lookup Airflow raises on (an access denied) gets a sender that fails
    with the reason, so the alert says "not sent" and why, rather than "no alert
    connection"; a lookup that merely fails Airflow 3.3 reports as not defined, so that
    one reads as no connection (:class:`ConnectionLookupError`)."""
    senders: dict[str, Callable[[Any], None]] = {}
    for name, conn_id in (("smtp", SMTP_CONN_ID), ("webhook", WEBHOOK_CONN_ID)):
        try:
            conn = _lookup(conn_id)
        except ConnectionLookupError as exc:
            senders[name] = functools.partial(_unreachable, exc)
            continue
        if conn is not None:
            senders[name] = (
                _smtp(settings) if name == "smtp" else _webhook(_timeout(conn, WEBHOOK_TIMEOUT_S))
            )
    return senders


def _smtp(settings: Any) -> Callable[[Any], None]:
    def send(alert: Any) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        from flight_delays.monitor import alerts

        SmtpNotifier(
            to=[a.strip() for a in settings.mail_to.split(",") if a.strip()],
            from_email=settings.mail_from,
            subject=alerts.subject(alert),
            html_content=alerts.html_body(alert),
            smtp_conn_id=SMTP_CONN_ID,
        ).notify({})

    return send


def _webhook(timeout: float) -> Callable[[Any], None]:
    def send(alert: Any) -> None:
        from airflow.providers.http.notifications.http import HttpNotifier

        from flight_delays.monitor import alerts

        HttpNotifier(
            http_conn_id=WEBHOOK_CONN_ID,
            method="POST",
            json=alerts.webhook_payload(alert),
            headers={"Content-Type": "application/json"},
            extra_options={"timeout": timeout},
        ).notify({})

    return send


def _unreachable(error: Exception, _alert: Any) -> None:
    raise error


def _timeout(conn: Any, default: float) -> float:
    """The connection's ``timeout`` extra in seconds (a URI's query gives a string), else
    ``default``: the notifier's own options would override the connection's."""
    try:
        value = float(conn.extra_dejson.get("timeout") or default)
    except (TypeError, ValueError):
        return default
    return value if value > 0 else default


def _settings() -> Any:
    from flight_delays.store.config import load_settings, project_root

    return load_settings(project_root(anchor=__file__))


def _registry_engine(
    settings_url: str | None, unreachable: str = "the alert is not recorded"
) -> Any | None:
    """The registry (the warehouse connection, else the settings' URL), migrated; None
    (logged, with what is lost: ``unreachable``) when it cannot be reached: an alert
    never waits for the registry."""
    from flight_delays.store import db, registry

    # The tasks' rule (db.warehouse_url): the connection wins over the settings.
    try:
        url = db.warehouse_url(_Connections()) or settings_url
        if not url:
            raise ValueError("no warehouse connection, and the settings could not be read")
        return registry.connect(url, timeout=REGISTRY_TIMEOUT_S)
    except Exception as exc:
        log.warning("alert: the registry is unreachable, %s: %s", unreachable, exc)
        return None


#: This host's list of alerts (flight_delays.monitor.alert_ledger), in Airflow's log folder.
LEDGER_FILE = "flight_delays_alerts.jsonl"


def _ledger() -> Any | None:
    """The anti-flood rule's history when the registry cannot be read; None (logged)
    when Airflow's log folder cannot be told."""
    from flight_delays.monitor.alert_ledger import Ledger

    try:
        from airflow.configuration import conf

        return Ledger(Path(conf.get("logging", "base_log_folder")) / LEDGER_FILE)
    except Exception as exc:
        log.warning("alert: no ledger of this host's alerts (no log folder: %s)", exc)
        return None


def base_url() -> str:
    try:
        from airflow.configuration import conf

        return conf.get("api", "base_url", fallback=None) or DEFAULT_BASE_URL
    except Exception:
        return DEFAULT_BASE_URL


def dispatch(alert: Any, settings: Any | None = None) -> dict[str, str]:
    """Send ``alert`` (a :class:`flight_delays.monitor.alerts.Alert`) through the transports that
    are set up, log it, and record it; never raises."""
    from flight_delays.monitor import alerts
    from flight_delays.store.config import AlertSettings

    try:
        settings = settings or _settings()
        alert_settings, settings_url = settings.alerts, settings.registry_url
    except Exception as exc:
        # A broken params.yaml fails every task of both DAGs at once: the one failure
        # nobody may miss. The alert goes out with the default alert settings (the
        # recipients, the anti-flood rule) through the connections, and says why.
        log.warning("alert: the settings could not be read, the defaults are used: %s", exc)
        alert_settings, settings_url = AlertSettings(), None
        alert = alert.with_notes(
            f"The pipeline's settings could not be read ({alerts.last_line(str(exc), 300)}): "
            "this alert went out with the default alert settings (recipients, anti-flood)."
        )
    try:
        senders = transports(alert_settings)
        engine = _registry_engine(settings_url)
        limit = alerts.RateLimit(
            alert_settings.rate_limit_count, timedelta(minutes=alert_settings.rate_limit_minutes)
        )
    except Exception as exc:  # the alert is still logged
        log.warning("ALERT (log only: %s)\n%s", exc, alerts.text_body(alert))
        return {"channels": f"log only: {exc}", "delivery": alerts.LOG_ONLY}
    noun = "failed runs" if alert.kind in ("failure", "late_data") else f"{alert.kind} alerts"
    try:
        return alerts.dispatch(alert, senders, engine, limit, noun=noun, ledger=_ledger())
    finally:
        if engine is not None:
            engine.dispose()


# --- the public function for a task's own alerts ------------------------------------------
def send_alert(
    kind: str,
    title: str,
    fields: Mapping[str, Any],
    *,
    day: date | str | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Send a non-failure alert from a task callable (drift, deadline...): ``kind`` (one of
    :data:`flight_delays.monitor.alerts.KINDS`), a one-line ``title``, ``fields`` (label -> value,
    shown in order). The DAG, run and a link to the run come from ``context`` (default:
    the running task's). Same transports, log, anti-flood rule and record as failure
    alerts. Never raises for a transport; returns ``{"channels", "delivery", ...}``."""
    from flight_delays.base.dates import parse_day
    from flight_delays.monitor import alerts

    if context is None:
        from airflow.sdk import get_current_context

        context = get_current_context()
    dag_id = context["dag"].dag_id if context.get("dag") else context["ti"].dag_id
    run_id = context.get("run_id")
    url = alerts.run_url(base_url(), dag_id, run_id) if run_id else None
    shown = {str(k): str(v) for k, v in fields.items()}
    if url:
        shown.setdefault("link", url)
    alert = alerts.Alert(
        kind=kind,
        title=title,
        dag_id=dag_id,
        at=datetime.now(UTC),
        run_id=run_id,
        day=parse_day(day) if day else None,
        fields=shown,
        url=url,
    )
    return dispatch(alert)


# --- failure alerts ---------------------------------------------------------------------------
_PASS_THROUGH = ("AirflowRescheduleException", "AirflowSkipException", "TaskDeferred")


def recording_errors(step: Callable[..., Any]) -> Callable[..., Any]:
    """A task callable that keeps the last line of its error in XCom (key
    :data:`ERROR_XCOM_KEY`) before it raises it, for the run's failure alert. A retried
    try starts with its XComs cleared, so a retry that succeeds leaves nothing."""

    @functools.wraps(step)  # PythonOperator reads the step's signature through this
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except Exception as exc:
            if type(exc).__name__ not in _PASS_THROUGH:
                _keep_error(exc)
            raise

    return run


def _keep_error(exc: BaseException) -> None:
    from flight_delays.monitor.alerts import last_line

    try:
        from airflow.sdk import get_current_context

        line = last_line(f"{type(exc).__name__}: {exc}")
        get_current_context()["ti"].xcom_push(key=ERROR_XCOM_KEY, value=line)
    except Exception as failed:  # never hide the task's own error
        log.warning("could not keep the error for the alert: %s", failed)


def _failed_task_error(context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The failed task's id and the last line of its error (from its XCom; else the
    run's failure reason, e.g. a task killed without a Python error)."""
    ti = context.get("ti")
    reason = context.get("reason")
    if ti is None:
        return None, f"run failed: {reason}" if reason else None
    error = None
    try:
        error = ti.xcom_pull(task_ids=ti.task_id, key=ERROR_XCOM_KEY)
    except Exception as exc:
        # `airflow dags test` runs the callback in its own process after the task's
        # supervisor is gone: no Task SDK channel, but the metastore is at hand.
        try:
            error = _error_from_metastore(ti)
        except Exception as failed:
            log.warning("could not read the failed task's error: %s; %s", exc, failed)
    return ti.task_id, error or (f"no Python error recorded (run: {reason})" if reason else None)


def _error_from_metastore(ti: Any) -> str | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(
        run_id=ti.run_id, key=ERROR_XCOM_KEY, task_ids=ti.task_id, dag_ids=ti.dag_id
    )
    with create_session() as session:
        row = session.scalars(query.limit(1)).first()
        return None if row is None else XComModel.deserialize_value(row)


def on_run_failure(day_of: Callable[[Mapping[str, Any]], date | None]) -> Callable[..., None]:
    """The DAG's ``on_failure_callback``: one alert for the failed run (kind 'late_data'
    when its error is late data, else 'failure'). ``day_of(context)``: the run's
    processed day (None: unknown)."""

    def alert_failed_run(context: Mapping[str, Any]) -> None:
        from flight_delays.monitor import alerts

        try:
            dag_id = context["dag"].dag_id
            run_id = str(context.get("run_id") or context["dag_run"].run_id)
            try:
                day = day_of(context)
            except Exception as exc:
                log.warning("could not tell the run's day: %s", exc)
                day = None
            task_id, error = _failed_task_error(context)
            late = bool(error) and ("LateDataError" in error or "late data:" in error)
            alert = alerts.failure_alert(
                dag_id=dag_id,
                run_id=run_id,
                day=day,
                task_id=task_id,
                error=error,
                url=alerts.run_url(base_url(), dag_id, run_id),
                at=datetime.now(UTC),
                kind="late_data" if late else "failure",
            )
            dispatch(alert)
        except Exception:  # a callback must never be what breaks
            log.exception("the failure alert could not be built")

    alert_failed_run.__name__ = "alert_failed_run"
    return alert_failed_run


# --- the night's deadline ----------------------------------------------------------------------
def _run_state(ti: Any, dag_id: str, run_id: str) -> str | None:
    """The state of run ``run_id`` of ``dag_id``; None when Airflow has no such run (a
    task run alone by ``tasks test`` records the day under a temporary run id)."""
    try:
        state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
    except Exception:
        return None
    return str(getattr(state, "value", state))  # an enum member, or its text


def _runs_recorded_for(day: date) -> list[str]:
    """The runs that recorded ``day`` in the registry, newest first; [] when none, or when
    the registry cannot be read (logged: the alert then goes out)."""
    from flight_delays.store import registry

    try:
        settings_url = _settings().registry_url
    except Exception:
        settings_url = None
    engine = _registry_engine(settings_url, "the deadline check cannot see a re-run")
    if engine is None:
        return []
    try:
        return registry.run_ids_of_day(engine, day)
    except Exception as exc:
        log.warning("deadline: could not read the registry's runs of %s: %s", day, exc)
        return []
    finally:
        engine.dispose()


def check_nightly_deadline(
    context: Mapping[str, Any] | None,
    nightly_dag_id: str,
    nightly_logical_date: datetime,
    day: date,
) -> bool:
    """Whether the nightly run for ``day`` (the one dated ``nightly_logical_date``: 02:00
    New York time on the next day) has succeeded, or another run of the nightly DAG that
    recorded ``day`` in the registry has (the runbook's re-run with ``day`` = D); if
    neither, a 'deadline' alert. A run that recorded the day and then failed, or is still
    going, does not count, nor a task run alone (``tasks test``). Called by the
    prediction run at 05:00 (``context``: the running task's when None); never raises
    (predictions go on either way)."""
    try:
        if context is None:
            from airflow.sdk import get_current_context

            context = get_current_context()
        ti = context["ti"]
        done = ti.get_dr_count(
            dag_id=nightly_dag_id, logical_dates=[nightly_logical_date], states=["success"]
        )
        if done:
            log.info("deadline: the nightly run for %s has succeeded", day)
            return True
        rerun = next(
            (r for r in _runs_recorded_for(day) if _run_state(ti, nightly_dag_id, r) == "success"),
            None,
        )
        if rerun is not None:
            log.info(
                "deadline: the nightly run dated %s has not succeeded, but run %s, which "
                "recorded %s in the registry, has: no alert", nightly_logical_date, rerun, day,
            )  # fmt: skip
            return True
        runs = ti.get_dr_count(dag_id=nightly_dag_id, logical_dates=[nightly_logical_date])
        state = "not finished or failed" if runs else "no run at all"
        send_alert(
            "deadline",
            f"[flight_delays] the nightly run for {day.isoformat()} has not succeeded by "
            "the prediction run",
            {
                "DAG": nightly_dag_id,
                "day": day.isoformat(),
                "nightly run dated": nightly_logical_date.isoformat(),
                "state": state,
                "checked by": f"{context['dag'].dag_id} run {context.get('run_id')}",
                "meaning": "predictions are served by the previous champion",
            },
            day=day,
            context=context,
        )
    except Exception as exc:
        log.warning("deadline: the check failed: %s", exc)
    return False
