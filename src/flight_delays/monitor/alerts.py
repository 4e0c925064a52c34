"""Alerts: what they say, when they are held back, and their record in the registry.

Pure core, no Airflow (the Airflow side, notifiers and connections, is
``plugins/flight_delays_alerts.py``; docs/monitoring.md):

- :class:`Alert` and :func:`failure_alert`: the fields of an alert (DAG, run id,
  processed day, failed task, the last line of its error, a link to the run);
- :func:`subject`, :func:`text_body`, :func:`html_body`, :func:`webhook_payload`: the
  same alert as a mail and as the JSON a webhook receives;
- :func:`rate_decision`: the anti-flood rule. At most ``limit.count`` alerts of one kind
  per DAG are sent in any ``limit.window``; the others are recorded, not sent, and the
  next alert that is sent says how many were held back ("N more runs failed");
- the ``alerts`` table (registry revision 0007_alerts): every alert, sent or not, with
  what each transport did (:func:`record`, :func:`recent`, :func:`latest`).

Times arrive as arguments (UTC): the core never reads the clock (the transports' time
budget is a thread's join timeout, :func:`dispatch`).
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    insert,
    select,
)

from flight_delays.monitor.alert_ledger import Ledger
from flight_delays.store.registry import METADATA

log = logging.getLogger(__name__)

KINDS = ("failure", "deadline", "late_data", "drift")
#: ``delivery`` of a recorded alert: sent by at least one transport; none was set up;
#: every transport failed; held back by the anti-flood rule.
SENT, LOG_ONLY, NOT_SENT, SUPPRESSED = "sent", "log only", "not sent", "suppressed"
TRIED = (SENT, NOT_SENT)

ALERTS = Table(
    "alerts",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250)),
    Column("day", Date),
    Column("summary", Text, nullable=False),
    Column("channels", Text, nullable=False),
    Column("delivery", String(20), nullable=False),
    Index("ix_alerts_dag_kind_at", "dag_id", "kind", "at"),
)


@dataclass(frozen=True)
class Alert:
    """One alert. ``fields``: label -> value, in the order they are shown; ``url``: a link
    to the run in the Airflow UI (None: no run to link)."""

    kind: str
    title: str
    dag_id: str
    at: datetime
    run_id: str | None = None
    day: date | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alert kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def summary(self) -> str:
        """One line: the title and the fields (recorded in the alerts table)."""
        parts = [f"{label}: {value}" for label, value in self.fields.items()]
        return "; ".join([self.title, *parts])

    def with_notes(self, *notes: str) -> Alert:
        return Alert(**{**vars(self), "notes": (*self.notes, *[n for n in notes if n])})


def last_line(text: str | None, limit: int = 500) -> str:
    """The last non-empty line of an error message (a traceback's is the exception),
    at most ``limit`` characters; '' for none."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow 3 web UI."""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def failure_alert(
    dag_id: str,
    run_id: str,
    day: date | None,
    task_id: str | None,
    error: str | None,
    url: str | None,
    at: datetime,
    kind: str = "failure",
) -> Alert:
    """The alert for a failed run: its DAG, run id, processed day, failed task, the last
    line of that task's error and a link to the run. ``kind`` 'late_data' when the run
    failed because the day did not arrive in time."""
    what = "late data" if kind == "late_data" else "run failed"
    fields = {
        "DAG": dag_id,
        "run": run_id,
        "day": day.isoformat() if day else "unknown",
        "failed task": task_id or "none (the run itself)",
        "error": last_line(error) or "unknown (see the task log)",
    }
    if url:
        fields["link"] = url
    return Alert(
        kind=kind,
        title=f"[flight_delays] {dag_id}: {what} for {fields['day']}",
        dag_id=dag_id,
        at=at,
        run_id=run_id,
        day=day,
        fields=fields,
        url=url,
    )


# --- formatting ----------------------------------------------------------------------------
def subject(alert: Alert) -> str:
    return alert.title


def text_body(alert: Alert) -> str:
    lines = [alert.title, ""]
    lines += [f"{label}: {value}" for label, value in alert.fields.items()]
    lines += ["", *alert.notes] if alert.notes else []
    lines += ["", f"kind: {alert.kind}; at {alert.at.isoformat(timespec='seconds')}"]
    return "\n".join(lines) + "\n"


def html_body(alert: Alert) -> str:
    """The mail body: a table of the fields (the link clickable), values escaped."""
    rows = []
    for label, value in alert.fields.items():
        shown = html.escape(str(value))
        if label == "link":
            shown = f'<a href="{html.escape(str(value), quote=True)}">{shown}</a>'
        rows.append(f"<tr><th align='left'>{html.escape(label)}</th><td>{shown}</td></tr>")
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in alert.notes)
    return (
        f"<h3>{html.escape(alert.title)}</h3><table>{''.join(rows)}</table>{notes}"
        f"<p>kind: {html.escape(alert.kind)}; at {alert.at.isoformat(timespec='seconds')}</p>"
    )


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The JSON a webhook receives: ``text`` (one message, as Slack, Mattermost and Teams
    incoming webhooks read it) and the same alert as structured fields."""
    return {
        "text": text_body(alert).strip(),
        "kind": alert.kind,
        "title": alert.title,
        "dag_id": alert.dag_id,
        "run_id": alert.run_id,
        "day": alert.day.isoformat() if alert.day else None,
        "fields": dict(alert.fields),
        "url": alert.url,
        "notes": list(alert.notes),
        "at": alert.at.isoformat(),
    }


def channels_text(results: Mapping[str, str]) -> str:
    """What each transport did, e.g. ``smtp: sent; webhook: not sent: connection refused``."""
    return "; ".join(f"{name}: {outcome}" for name, outcome in results.items())


def delivery_of(results: Mapping[str, str]) -> str:
    """:data:`SENT` if any transport sent it, :data:`LOG_ONLY` without transports, else
    :data:`NOT_SENT`."""
    if not results:
        return LOG_ONLY
    return SENT if any(outcome == SENT for outcome in results.values()) else NOT_SENT


# --- anti-flood --------------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimit:
    count: int = 3
    window: timedelta = timedelta(minutes=60)


@dataclass(frozen=True)
class RateDecision:
    """``send``: whether this alert goes out; ``held_back``: alerts of the same DAG and
    kind not sent since the last one that was (counted in this one when it is sent);
    ``last_in_window``: this is the last one the window lets through."""

    send: bool
    held_back: int = 0
    held_back_since: datetime | None = None
    last_in_window: bool = False

    def notes(self, limit: RateLimit, noun: str = "alerts") -> tuple[str, ...]:
        if not self.send:
            return ()
        minutes = int(limit.window.total_seconds() // 60)
        notes = []
        if self.held_back:
            first = self.held_back_since
            since = first.isoformat(timespec="minutes") if first else ""
            notes.append(
                f"{self.held_back} more {noun} of this DAG since {since} were not sent "
                f"(anti-flood: at most {limit.count} in {minutes} min); all are in the "
                f"registry's alerts table."
            )
        if self.last_in_window:
            notes.append(
                f"This is alert {limit.count} of {limit.count} in {minutes} min: further "
                f"{noun} of this DAG are recorded, not sent, until the window has room."
            )
        return tuple(notes)


def rate_decision(
    history: Sequence[tuple[datetime, str]], now: datetime, limit: RateLimit
) -> RateDecision:
    """Whether an alert of one DAG and kind is sent now.

    ``history``: the earlier alerts of that DAG and kind as (at, delivery), any order.
    Alerts that a transport sent or tried to send (:data:`TRIED`) count against the
    window: at most ``limit.count`` of them in any ``limit.window``. Alerts that were
    only logged (no connection) do not: nothing was flooded."""
    ordered = sorted(history)
    tried = [at for at, delivery in ordered if delivery in TRIED]
    in_window = [at for at in tried if now - at < limit.window]
    if len(in_window) >= limit.count:
        return RateDecision(send=False)
    last_tried = tried[-1] if tried else None
    held = [at for at, d in ordered if d == SUPPRESSED and (last_tried is None or at > last_tried)]
    return RateDecision(
        send=True,
        held_back=len(held),
        held_back_since=held[0] if held else None,
        last_in_window=len(in_window) + 1 == limit.count,
    )


def drift_message(day: date | str, drift: Mapping[str, Any] | None) -> tuple[str, dict] | None:
    """The title and fields of a ``drift`` alert for the processed ``day``, from what the
    score task returns under ``drift`` (:func:`flight_delays.monitor.drift.brief`); None when no
    watched feature passed the alert threshold, or drift was not measured (too few
    flights: never an alarm)."""
    if not drift or drift.get("skipped") or not drift.get("flagged"):
        return None
    flagged = list(drift["flagged"])
    largest = drift.get("max") or {}
    title = (
        f"input drift on {day}: {len(flagged)} feature(s) at or above PSI "
        f"{float(drift['alert']):.2f} against the training window"
    )
    fields = {"flagged features": ", ".join(flagged)}
    if largest.get("psi") is not None:
        fields["largest"] = f"{largest['feature']}: PSI {float(largest['psi']):.2f}"
    fields["runbook"] = "docs/monitoring.md, Runbook: drift"
    return title, fields


# --- the registry's alerts table -------------------------------------------------------------
def record(engine: Engine, alert: Alert, channels: str, delivery: str) -> int:
    """Record ``alert`` with what each transport did; returns its id."""
    values = {
        "at": alert.at,
        "kind": alert.kind,
        "dag_id": alert.dag_id,
        "run_id": alert.run_id,
        "day": alert.day,
        "summary": alert.summary,
        "channels": channels,
        "delivery": delivery,
    }
    with engine.begin() as conn:
        return int(conn.execute(insert(ALERTS).values(**values)).inserted_primary_key[0])


def recent(engine: Engine, dag_id: str, kind: str, since: datetime) -> list[tuple[datetime, str]]:
    """(at, delivery) of the alerts of ``dag_id`` and ``kind`` at or after ``since``, and
    those before it back to the newest tried one (the held-back count starts there)."""
    query = (
        select(ALERTS.c.at, ALERTS.c.delivery)
        .where(ALERTS.c.dag_id == dag_id, ALERTS.c.kind == kind)
        .order_by(ALERTS.c.at.desc(), ALERTS.c.id.desc())
        .limit(1000)
    )
    rows = []
    with engine.connect() as conn:
        for at, delivery in conn.execute(query):
            at = _utc(at)
            if at < since and delivery in TRIED:
                rows.append((at, delivery))
                break
            rows.append((at, delivery))
    return rows


def latest(engine: Engine) -> dict[str, Any] | None:
    """The newest alert (all columns), or None."""
    query = select(ALERTS).order_by(ALERTS.c.at.desc(), ALERTS.c.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def latest_by_kind(engine: Engine) -> dict[str, datetime]:
    """When the newest alert of each kind was recorded (UTC), for the kinds recorded."""
    query = select(ALERTS.c.kind, func.max(ALERTS.c.at)).group_by(ALERTS.c.kind)
    with engine.connect() as conn:
        return {kind: _utc(at) for kind, at in conn.execute(query) if at is not None}


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes: they were written as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- dispatch --------------------------------------------------------------------------------
#: A transport sends an alert or raises; the Airflow side builds them from its connections.
Transport = Callable[[Alert], None]
NO_CONNECTION = "log only: no alert connection"
#: Seconds the transports of one alert may take together (each an equal share). A
#: failure alert runs in the dag-processor, which kills a callback after 50 s
#: ([dag_processor] dag_file_processor_timeout), and the deadline check before the day's
#: predictions: a mail server that accepts a connection and never answers costs the SMTP
#: connection's timeout once per try, to connect and again to send (the provider's
#: defaults: 30 s, 6 tries), which would lose the webhook and the record, or hold the
#: predictions back.
TRANSPORT_BUDGET_S = 25.0


def _send_all(alert: Alert, transports: Mapping[str, Transport], budget_s: float) -> dict[str, str]:
    """What each transport did with ``alert``: one after the other, each in a thread of
    its own, given an equal share of ``budget_s``. Not at once: under ``airflow dags
    test`` and ``tasks test`` the Task SDK's channel to its supervisor, through which a
    notifier looks its connection up, is not safe for two threads. A transport still busy
    when its share is up is reported as not sent and abandoned: a daemon thread, which
    ends with the process (the dag-processor's callback process exits at once)."""
    share = budget_s / max(len(transports), 1)
    results = {}
    for name, transport in transports.items():
        outcome: list[str] = []

        def send(transport: Transport = transport, outcome: list[str] = outcome) -> None:
            try:
                transport(alert)
            except BaseException as exc:  # a thread's error would otherwise be lost
                outcome.append(f"{NOT_SENT}: {type(exc).__name__}: {last_line(str(exc), 200)}")
            else:
                outcome.append(SENT)

        thread = threading.Thread(target=send, name=f"alert-{name}", daemon=True)
        thread.start()
        thread.join(share)
        results[name] = outcome[0] if outcome else f"{NOT_SENT}: no answer within {share:g} s"
    return results


def _history(
    alert: Alert, engine: Engine | None, ledger: Ledger | None, limit: RateLimit
) -> list[tuple[datetime, str]]:
    """The earlier alerts the anti-flood rule counts: the registry's; when it cannot be
    read, this host's ledger's; else none (logged)."""
    since = alert.at - limit.window
    problem = "no registry"
    if engine is not None:
        try:
            return recent(engine, alert.dag_id, alert.kind, since)
        except Exception as exc:  # the registry must not stop an alert
            problem = f"could not read earlier alerts ({exc})"
    if ledger is not None:
        try:
            history = ledger.recent(alert.dag_id, alert.kind, since, TRIED)
        except Exception as exc:  # a ledger that cannot be read must not stop an alert
            log.warning("alert: %s, nor this host's ledger (%s): no anti-flood check", problem, exc)
            return []
        log.warning("alert: %s: the anti-flood rule counts this host's ledger", problem)
        return history
    log.warning("alert: %s: no anti-flood check", problem)
    return []


def dispatch(
    alert: Alert,
    transports: Mapping[str, Transport],
    engine: Engine | None,
    limit: RateLimit,
    noun: str = "alerts",
    budget_s: float | None = None,
    ledger: Ledger | None = None,
) -> dict[str, str]:
    """Send ``alert`` through every transport (none: it is only logged), unless the
    anti-flood rule holds it back; log it with what happened and record it in the alerts
    table. Never raises for a transport or the registry: a transport that is down is
    logged with the reason, one that has not answered within its share of ``budget_s``
    (all of them together, :data:`TRANSPORT_BUDGET_S`) too. ``ledger``: this host's list of alerts
    (:mod:`flight_delays.monitor.alert_ledger`), appended to every time, and the
    anti-flood rule's history when the registry cannot be read. Returns ``{"channels":
    ..., "delivery": ...}``."""
    decision = rate_decision(_history(alert, engine, ledger, limit), alert.at, limit)
    if not decision.send:
        minutes = int(limit.window.total_seconds() // 60)
        channels = f"suppressed: anti-flood, {limit.count} {noun} of this DAG in {minutes} min"
        delivery = SUPPRESSED
    else:
        alert = alert.with_notes(*decision.notes(limit, noun))
        if transports:  # a trace, should the process be killed while a transport hangs
            log.warning("ALERT sending through %s: %s", ", ".join(transports), alert.summary)
        budget = TRANSPORT_BUDGET_S if budget_s is None else budget_s
        results = _send_all(alert, transports, budget)
        channels = channels_text(results) if results else NO_CONNECTION
        delivery = delivery_of(results)
    log.warning("ALERT (%s; %s)\n%s", delivery, channels, text_body(alert))
    if engine is not None:
        try:
            record(engine, alert, channels, delivery)
        except Exception as exc:
            log.warning("alert: could not record it in the registry: %s", exc)
    if ledger is not None:
        try:
            ledger.add(alert.at, alert.dag_id, alert.kind, delivery)
        except Exception as exc:
            log.warning("alert: could not add it to this host's ledger %s: %s", ledger.path, exc)
    return {"channels": channels, "delivery": delivery, "summary": alert.summary}
