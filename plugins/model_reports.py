"""Airflow plugin: a "Model reports" page in the Airflow web UI.

A FastAPI app mounted by the api-server at /model-reports, with a navigation entry (an
external view shown inside the UI). The page shows the metric-history chart of every
run (drawn from the registry), the current champion's card (trained day, MAE against
the baseline, model file hash, promotion time), and every run recorded in the model
registry with its decision, a link to its report (the catalog's ``report``) and a
link to its Airflow run in the grid view. Reports and figures are read through the
artifact catalog from the artifact root, a local folder or an object store
($FLIGHT_DELAYS_STORAGE_URL, e.g. s3://bucket/prefix; flight_delays.store.storage).

It also shows whether alerts are on and the newest alert, last night's input drift and
the served MAE against the baseline's day by day (issue 18; the registry's ``alerts`` and
``drift_scores`` tables are read only when they exist), and serves the pipeline's
metrics in the Prometheus text format at /model-reports/metrics (docs/monitoring.md):
built per request in a CollectorRegistry of its own, from Airflow's metadata DB (the two
DAGs' runs), the registry and the artifact root (the quarantine summary).

Plugin endpoints are not protected by Airflow unless the plugin does it: every route
here requires a logged-in user allowed to read the flight_delays DAG (the UI's session
cookie or a bearer token from POST /auth/token).

The registry is read only: one pooled engine, built on the first request, with connect
and statement timeouts, on a read-only connection; the web server never migrates the
schema (airflow-init and `make up` do). A missing ``flight_delays_warehouse`` connection
is a 503 page and an error in the log, never a silent fallback to a local database.

Plugins are imported by every Airflow process, task processes included, and this module
is imported while a DAG is deserialized: FastAPI, the api-server's security module,
SQLAlchemy and pandas are imported only when the app is built (the api-server reads
``fastapi_apps``) or a request arrives. Changes to this file need an api-server restart.
"""

# No `from __future__ import annotations`: the routes are defined inside build_app(), and
# FastAPI resolves string annotations in the module's globals, where their types are not.

import functools
import hashlib
import html
import logging
import posixpath
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from airflow.plugins_manager import AirflowPlugin

from flight_delays_alerts import SMTP_CONN_ID, WEBHOOK_CONN_ID  # same folder, standard library only

log = logging.getLogger(__name__)

DAG_ID = "flight_delays"
WAREHOUSE_CONN_ID = "flight_delays_warehouse"
#: The same warehouse as a role that may only SELECT (the page never writes): both stacks
#: create the role and define this connection for the api-server.
READER_CONN_ID = "flight_delays_warehouse_reader"
URL_PREFIX = "/model-reports"
HISTORY_PNG = "history.png"
# The page must answer quickly or fail: it runs in the api-server's thread pool, next to
# the UI and the task execution API.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000
POOL = {"pool_size": 2, "max_overflow": 2, "pool_timeout": 10, "pool_recycle": 1800}


class WarehouseMissing(RuntimeError):
    """The Airflow connection to the warehouse (which holds the registry) is not defined."""


def project_root() -> Path:
    """The project root (flight_delays.store.config.project_root): FLIGHT_DELAYS_HOME, else the
    project this plugins folder belongs to."""
    from flight_delays.store import config  # here, not at import: task processes load this file

    return config.project_root(anchor=__file__)


def artifact_root() -> Any:
    """The artifact root (flight_delays.store.config.project_paths: $FLIGHT_DELAYS_STORAGE_URL,
    else the project root): a local Path, or a UPath in an object store."""
    from flight_delays.store import config

    return config.project_paths(project_root()).root


def reports_folder(root: Any = None) -> Any:
    """The folder the plugin serves reports and figures from: the catalog's ``reports``
    under the artifact root (``root``, default :func:`artifact_root`)."""
    from flight_delays.store import artifacts

    return artifacts.REPORTS.path(root if root is not None else artifact_root())


def registry_url() -> str:
    """The URL the page reads the registry with: the SELECT-only connection
    ``flight_delays_warehouse_reader`` (both stacks define it), else the DAG's warehouse
    connection, whose owner role the read-only session setting alone restrains (logged as
    a warning); WarehouseMissing without either."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(READER_CONN_ID).get_uri()
    except AirflowNotFoundException:
        pass
    try:
        url = Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID).get_uri()
    except AirflowNotFoundException as exc:
        raise WarehouseMissing(
            f"the Airflow connection {WAREHOUSE_CONN_ID!r} is not defined, so the model "
            "registry cannot be read. Define it as the DAG has it (make up sets "
            "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE; docker-compose's airflow-init stores it "
            "in the metastore) and restart the api-server."
        ) from exc
    from flight_delays.store.db import sqlalchemy_url

    if sqlalchemy_url(url).get_backend_name() != "sqlite":
        log.warning(
            "model reports: no Airflow connection %r, so the registry is read with %r, as "
            "the warehouse's owner (only the read-only session setting restrains it); "
            "define %r with a SELECT-only role (docs/ui.md)",
            READER_CONN_ID,
            WAREHOUSE_CONN_ID,
            READER_CONN_ID,
        )
    return url


def engine_args(url: str) -> tuple[Any, dict[str, Any]]:
    """The SQLAlchemy URL and create_engine() keywords of a read-only, time-bounded
    connection to the registry at ``url``.

    PostgreSQL: connect_timeout, a statement_timeout and read-only transactions set by
    the server for the session. SQLite: the busy timeout, and the file opened read-only
    (``mode=ro``), so a wrong path fails instead of creating an empty database.
    """
    from flight_delays.store.db import sqlalchemy_url

    parsed = sqlalchemy_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c default_transaction_read_only=on"
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S, "options": options}
        kwargs.update(POOL)
    elif backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parsed = parsed.set(
                database="file:" + quote(database, safe="/"),
                query={**parsed.query, "mode": "ro", "uri": "true"},
            )
        kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_S}
    else:
        kwargs.update(POOL)
    return parsed, kwargs


_engine: Any = None
_engine_lock = threading.Lock()


def registry_engine() -> Any:
    """The plugin's one pooled engine, built on first use (not at import: task processes
    import this module too). Not cached when the connection is missing, so defining it
    needs only an api-server restart, not a new build."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                from sqlalchemy import create_engine

                url, kwargs = engine_args(registry_url())
                _engine = create_engine(url, **kwargs)
                log.info("model reports: registry engine for %s", url.render_as_string())
    return _engine


def reset_engine() -> None:
    """Dispose of the engine (tests, or a changed connection)."""
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None


# --- reading the registry ------------------------------------------------------------
def _utc(moment: Any) -> datetime | None:
    """A registry timestamp as an aware UTC datetime (SQLite returns naive UTC)."""
    if moment is None or moment != moment:  # None or NaT
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromisoformat(str(moment))
    if hasattr(moment, "to_pydatetime"):
        moment = moment.to_pydatetime()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _day(value: Any) -> str | None:
    if value is None or value != value:
        return None
    return value.isoformat()[:10] if hasattr(value, "isoformat") else str(value)[:10]


def grid_link(run_id: str | None) -> str | None:
    """The Airflow UI page of a DAG run (the grid with the run's tasks), relative to the
    plugin's page (/model-reports/), so it keeps any base URL the api-server is under.
    The UI's route is dags/:dagId/runs/:runId (airflow/ui, Airflow 3.3)."""
    from flight_delays.store import config  # here, not at import: task processes load this file

    if not run_id or run_id.startswith(config.LOCAL_RUN_PREFIX):
        return None
    return f"../dags/{quote(DAG_ID, safe='')}/runs/{quote(run_id, safe='')}"


def read_registry(engine: Any, root: Any) -> dict[str, Any]:
    """The champion card and every run (newest processed day first), as plain values;
    a run's report link is the report's path under ``root`` (the artifact root, a Path
    or a UPath), which the page's ``reports/`` route serves.

    Read through the registry's public reads; columns the page does not know are
    ignored. A registry whose schema was never created reads as no runs at all.
    """
    from flight_delays.model import serving
    from flight_delays.store import artifacts, registry

    if registry.current_revision(engine) is None:
        return {
            "champion": _champion_card(None, []),
            "runs": [],
            "history_figure": None,
            "served": [],
            "drift": read_drift(engine),
            "last_alert": read_last_alert(engine),
        }
    champion = registry.current_champion(engine)
    frame = serving.with_served(registry.history(engine), serving.served_scores(engine))
    # One listing for every run's report (in an object store, not a request per run).
    reported = {day.isoformat() for day in artifacts.REPORT.days(root)}
    runs = []
    for run in frame.to_dict("records"):
        day = _day(run["processed_day"])
        created = _utc(run.get("created_at"))
        run_id = run.get("run_id")
        run_id = run_id if isinstance(run_id, str) and run_id else None  # None or NaN
        runs.append(
            {
                "id": int(run["id"]),
                "processed_day": day,
                "run_id": run_id,
                "challenger_mae": float(run["challenger_mae"]),
                "champion_mae": float(run["champion_mae"]),
                "baseline_mae": float(run["baseline_mae"]),
                # The predictions served for the day, against its actual delays.
                "served_mae": _finite(run["served_mae"]),
                "champion_kind": run["champion_kind"],
                "decision": run["decision"],
                "reason": run["reason"],
                "model_sha256": run["model_sha256"],
                "recorded_at": created.isoformat() if created else None,
                "report": artifacts.REPORT.relative(day) if day in reported else None,
                "grid": grid_link(run_id),
            }
        )
    runs.reverse()  # newest processed day first (history() is oldest first)
    return {
        "champion": _champion_card(champion, runs),
        "runs": runs,
        "history_figure": HISTORY_PNG if runs else None,
        # Issue 18: the served MAE day by day, last night's drift, the newest alert.
        "served": read_served(engine),
        "drift": read_drift(engine),
        "last_alert": read_last_alert(engine),
    }


def _champion_card(champion: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The champion and the run that promoted it (the newest promoted run of its file)."""
    if champion is None or champion.model_sha256 is None:
        # Why the baseline serves: never beaten, or a decayed model stepped down (the
        # newest step-down), or a person rolled back (the registry's champion moves).
        stepped = next((r for r in runs if r["decision"] == "stepped down"), None)
        ever = any(r["decision"] == "promoted" for r in runs)
        return {
            "kind": "baseline",
            "processed_day": None,
            "model_sha256": None,
            "since": "step_down" if stepped else "rollback" if ever else "start",
            "stepped_down": stepped,
        }
    promoted = next(
        (
            r
            for r in runs
            if r["decision"] == "promoted"
            and r["model_sha256"] == champion.model_sha256
            and r["processed_day"] == _day(champion.processed_day)
        ),
        None,
    )
    card = {
        "kind": "model",
        "processed_day": _day(champion.processed_day),
        "model_sha256": champion.model_sha256,
        "version": champion.version,
        "mae": None,
        "baseline_mae": None,
        "promoted_at": None,
        "run_id": None,
        "grid": None,
    }
    if promoted is not None:
        card.update(
            mae=promoted["challenger_mae"],
            baseline_mae=promoted["baseline_mae"],
            promoted_at=promoted["recorded_at"],
            run_id=promoted["run_id"],
            grid=promoted["grid"],
        )
    return card


_history_cache: dict[str, Any] = {"key": None, "png": b""}
_history_lock = threading.Lock()


def history_png(engine: Any) -> bytes | None:
    """The metric-history chart of every recorded run (flight_delays.chart.metric_history,
    the chart the chart task draws), as PNG bytes; None before the first run.

    Drawn here rather than taken from a run's reports/figures: a run draws the history as
    of its own day, so the newest day's chart misses the runs a later backfill of older
    days recorded. Drawn again only when the registry changed (new row or new champion).
    """
    from flight_delays import chart
    from flight_delays.model import serving
    from flight_delays.store import registry

    if registry.current_revision(engine) is None:
        return None
    frame = registry.history(engine)
    if frame.empty:
        return None
    served = serving.served_scores(engine)
    frame = serving.with_served(frame, served)
    version = registry.current_champion(engine).version
    key = (len(frame), int(frame["id"].max()), version, len(served))
    with _history_lock:
        if _history_cache["key"] != key:
            import io

            figure = chart.metric_history(frame)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=chart.DPI)
            _history_cache.update(key=key, png=buffer.getvalue())
        return _history_cache["png"]


REPORT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png"}
# Report files are written by tasks (and, in an object store, by anyone who can write the
# bucket) but served on the Airflow origin: a planted page must not run with the viewer's
# session. `sandbox` gives the page an opaque origin and no scripts; it may show only
# same-origin images and its inline <style>. nosniff keeps a PNG from being read as HTML.
REPORT_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
REPORT_HEADERS = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
# A sandboxed page has an opaque origin, so the browser sends no SameSite=Lax cookie (the
# UI's _token) with its image requests: a report's figures would all be 401. The page is
# served with each same-origin figure rewritten to a signed, short-lived link to that one
# file (SIGNED_ROUTE), instead of widening the policy.
SIGNED_ROUTE = "signed-figures"
FIGURE_LINK_TTL_S = 15 * 60
FIGURE_LINK_SALT = "flight-delays.model-reports.figure"
_IMG_SRC = re.compile(r"""(<img\b[^>]*?\ssrc\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def figure_signer(secret: str) -> Any:
    """The signer of figure links (itsdangerous, HMAC-SHA256, timestamped), keyed by the
    api-server's shared ``[api] secret_key`` and salted apart from Airflow's own uses."""
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(
        secret, salt=FIGURE_LINK_SALT, signer_kwargs={"digest_method": hashlib.sha256}
    )


def sign_figures(page: str, page_path: str, sign: Callable[[str], str]) -> str:
    """``page`` (a report served at ``reports/<page_path>``) with every ``<img>`` whose
    src is a relative link to a .png rewritten to ``<SIGNED_ROUTE>/<sign(path)>``, where
    path is the file under reports/ the browser would have asked for. Other sources
    (absolute, other origins, unquoted, other types) are left as they are: the policy
    or the route's login check refuses them."""
    folder = posixpath.dirname(page_path)
    # The page's URL is <app>/reports/<page_path>: one "../" per segment reaches <app>/.
    up = "../" * (page_path.count("/") + 1)

    def one(match: re.Match[str]) -> str:
        src = html.unescape(match.group(3)).strip()
        parts = urlsplit(src)
        if not src or parts.scheme or parts.netloc or parts.query or parts.fragment:
            return match.group(0)
        if src.startswith("/"):
            return match.group(0)
        target = posixpath.normpath(posixpath.join(folder, unquote(parts.path)))
        if target == ".." or target.startswith("../") or not target.endswith(".png"):
            return match.group(0)
        quote_mark = match.group(2)
        return f"{match.group(1)}{quote_mark}{up}{SIGNED_ROUTE}/{sign(target)}{quote_mark}"

    return _IMG_SRC.sub(one, page)


def report_path(reports: Any, path: str) -> Any:
    """The file ``path`` names under ``reports`` (a Path, or a UPath in an object store),
    or None when it is not a report file: outside the folder (``..``, a symlink out), not
    .html/.png, not a regular file, or not a path at all (a NUL byte)."""
    from flight_delays.store import storage

    if not storage.is_local(reports):
        # An object store has no symlinks: refuse any part that climbs or is empty.
        parts = path.split("/")
        if "\x00" in path or any(part in ("", ".", "..") for part in parts):
            return None
        if PurePosixPath(path).suffix not in REPORT_TYPES:
            return None
        target = reports / path
        return target if target.is_file() else None
    try:
        root = reports.resolve()
        target = (root / path).resolve()
    except (ValueError, OSError):  # ValueError: embedded null byte
        return None
    if not target.is_relative_to(root) or target.suffix not in REPORT_TYPES:
        return None
    return target if target.is_file() else None


# --- HTML ----------------------------------------------------------------------------
def _num(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def _finite(value: Any) -> float | None:
    """A float, or None for a missing value (None or NaN)."""
    return None if value is None or value != value else float(value)


def _when(iso: str | None) -> str:
    return "" if not iso else iso[:16].replace("T", " ") + " UTC"


def render_page(data: dict[str, Any]) -> str:
    """The HTML page for read_registry()'s ``data``; every registry value is escaped."""
    esc = html.escape
    champion = data["champion"]
    if champion["kind"] == "baseline":
        why = {
            "start": "no model has beaten it yet.",
            "rollback": "a person rolled the champion back to it "
            "(<code>python -m flight_delays.store.registry show</code> lists the moves).",
        }
        stepped = champion.get("stepped_down")
        if stepped:
            why["step_down"] = (
                f"the champion model stepped down in the run for "
                f"{esc(stepped['processed_day'])}: {esc(stepped['reason'])}"
            )
        card = (
            "<p>Current champion: the naive baseline (origin \N{MULTIPLICATION SIGN} hour "
            f"median); {why[champion.get('since', 'start')]}</p>"
        )
    else:
        gain = ""
        if champion["mae"] is not None and champion["baseline_mae"]:
            better = 1 - champion["mae"] / champion["baseline_mae"]
            gain = f" ({better:+.1%} against the baseline)"
        run = (
            f'<a href="{esc(champion["grid"])}" target="_top">{esc(champion["run_id"])}</a>'
            if champion["grid"]
            else esc(champion["run_id"] or "")
        )
        card = (
            f"<p>Current champion: the model trained for {esc(champion['processed_day'])}.</p>"
            "<dl>"
            f"<dt>Trained for</dt><dd>{esc(champion['processed_day'])}</dd>"
            f"<dt>Holdout MAE</dt><dd>{_num(champion['mae'])} min; baseline "
            f"{_num(champion['baseline_mae'])} min{gain}</dd>"
            f"<dt>Model file SHA-256</dt><dd><code>{esc(champion['model_sha256'])}</code></dd>"
            f"<dt>Promoted on</dt><dd>{esc(_when(champion['promoted_at']))}</dd>"
            f"<dt>Airflow run</dt><dd>{run}</dd>"
            "</dl>"
        )
    figure = (
        f'<img id="history" src="{esc(data["history_figure"])}" '
        'alt="Holdout MAE of challenger, champion and baseline over processed days">'
        if data["history_figure"]
        else '<p id="history">No metric-history chart yet: the chart task draws it.</p>'
    )
    body = []
    for run in data["runs"]:
        day = esc(run["processed_day"])
        report = f'<a href="{esc(run["report"])}">report</a>' if run["report"] else ""
        grid = (
            f'<a class="grid" href="{esc(run["grid"])}" target="_top">{esc(run["run_id"])}</a>'
            if run["grid"]
            else ""
        )
        body.append(
            f"<tr><td>{day}</td><td>{grid}</td><td>{report}</td>"
            f'<td class="num">{_num(run["challenger_mae"])}</td>'
            f'<td class="num">{_num(run["champion_mae"])}</td>'
            f'<td class="num">{_num(run["baseline_mae"])}</td>'
            f'<td class="num">{_num(run["served_mae"])}</td>'
            f'<td class="{esc(run["decision"])}">{esc(run["decision"])}</td>'
            f"<td>{esc(run['reason'])}</td></tr>"
        )
    table = "".join(body) or '<tr><td colspan="9">No run has been scored yet.</td></tr>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Model reports</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.3rem .6rem}}
th{{background:#f3f3f3}}td.num{{text-align:right}}.promoted{{color:#0a6b2d;font-weight:600}}
.stepped{{color:#a3000b;font-weight:600}}
#champion{{border:1px solid #ccc;border-radius:6px;padding:.2rem 1rem;max-width:60rem;
margin-bottom:1rem}}dl{{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}}
dt{{font-weight:600}}dd{{margin:0}}img#history{{max-width:100%;height:auto}}
</style></head><body>
<h1>flight_delays: model reports</h1>
<section>{figure}</section>
<section id="champion"><h2>Champion</h2>{card}</section>
{render_monitoring(data)}
<h2>Runs</h2>
<table id="runs"><tr><th>Processed day</th><th>Airflow run</th><th>Report</th>
<th>Challenger MAE (min)</th><th>Champion MAE (min)</th><th>Baseline MAE (min)</th>
<th title="the predictions served for the day, against its actual delays">Served MAE (min)</th>
<th>Decision</th><th>Reason</th></tr>
{table}</table></body></html>"""


def unavailable_page(message: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Model reports unavailable</title></head><body>"
        "<h1>Model reports are unavailable</h1>"
        f"<p>{html.escape(message)}</p></body></html>"
    )


# --- monitoring: alerts, drift, served scores and the metrics route (issue 18) -------
# The two DAGs the metrics route reports on (Airflow's metadata DB).
DAG_IDS = ("flight_delays", "flight_delays_predict")
RUN_STATES = ("queued", "running", "success", "failed")
# The Airflow connections that turn alerts on (an SMTP server, a webhook); with neither,
# alerts are written to the task log only.
ALERT_CONN_IDS = (SMTP_CONN_ID, WEBHOOK_CONN_ID)
TOP_DRIFT = 5  # features shown on the page, largest PSI first
SERVED_DAYS = 60  # served days shown on the page, newest first
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what every Prometheus reads


def _has_table(engine: Any, name: str) -> bool:
    from sqlalchemy import inspect

    return inspect(engine).has_table(name)


def alert_channels() -> list[str]:
    """The alert connections that are defined (empty: alerts are off, task log only)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    found = []
    for conn_id in ALERT_CONN_IDS:
        try:
            Connection.get_connection_from_secrets(conn_id)
        except AirflowNotFoundException:
            continue
        found.append(conn_id)
    return found


def read_alert_times(engine: Any) -> dict[str, datetime]:
    """When the newest alert of each kind was recorded; {} without any, or in a registry
    from before revision 0007_alerts."""
    from flight_delays.monitor import alerts

    if not _has_table(engine, alerts.ALERTS.name):
        return {}
    return alerts.latest_by_kind(engine)


def read_last_alert(engine: Any) -> dict[str, Any] | None:
    """The newest alert of the registry (:func:`flight_delays.monitor.alerts.latest`), sent or
    not (``delivery``: sent, not sent, log only, suppressed); None without one, or in a
    registry from before revision 0007_alerts (the page never migrates it)."""
    from flight_delays.monitor import alerts

    if not _has_table(engine, alerts.ALERTS.name):
        return None
    row = alerts.latest(engine)
    if row is None:
        return None
    at = _utc(row["at"])
    return {
        "at": at.isoformat() if at else None,
        "kind": row["kind"],
        "dag_id": row["dag_id"],
        "run_id": row["run_id"],
        "day": _day(row["day"]),
        "summary": row["summary"],
        "channels": row["channels"],
        "delivery": row["delivery"],
    }


def read_drift(engine: Any, top: int | None = TOP_DRIFT) -> dict[str, Any] | None:
    """Last night's drift: the newest day's rows of :func:`flight_delays.store.registry.
    drift_scores` (the run of that day recorded last), the watched features, largest PSI
    first (one whose PSI could not be computed last), ``top`` of them (None: all). Only
    the watched features (those with a threshold) are shown and counted: the
    measured-only ones (day-level weather, traffic, past-day delays) take a few values a
    day and are large every night (docs/monitoring.md, "Input drift"). None without rows
    (or before revision 0006_drift)."""
    from flight_delays.store import registry

    frame = registry.drift_scores(engine)
    if frame.empty:
        return None
    watched = frame[frame["threshold"].notna()]
    features = [
        {
            "feature": row["feature"],
            "kind": row["kind"],
            "psi": _finite(row["psi"]),
            "threshold": _finite(row["threshold"]),
            "flagged": bool(row["flagged"]),
        }
        for row in watched.to_dict("records")
    ]
    return {
        "day": _day(frame["processed_day"].iloc[0]),
        "run_id": frame["run_id"].iloc[0],
        "flagged": sum(f["flagged"] for f in features),
        "features": features if top is None else features[:top],
        "count": len(features),
        "measured": len(frame),
    }


def read_served(engine: Any) -> list[dict[str, Any]]:
    """Every served day (the served MAE against the baseline's on the same flights),
    newest first."""
    from flight_delays.model import serving

    frame = serving.served_scores(engine)
    served = []
    for row in frame.to_dict("records"):
        served.append(
            {
                "day": _day(row["flight_day"]),
                "flights": int(row["flights"]),
                "served_mae": float(row["served_mae"]),
                "baseline_mae": float(row["baseline_mae"]),
                "champion_kind": row["champion_kind"],
                "champion_day": _day(row["champion_day"]),
            }
        )
    served.reverse()
    return served


def quarantined_rows(root: Any, day: str) -> int | None:
    """Rows of ``day`` the data contract kept back (the quarantine summary ingest writes
    when it fetches the day, under the artifact root ``root``); 0 when the day had none
    (no summary), None when it cannot be read."""
    from flight_delays.base.dates import parse_day
    from flight_delays.store import artifacts, io

    summary = artifacts.QUARANTINE_SUMMARY.path(root, parse_day(day))
    try:
        if not summary.is_file():
            return 0
        return int(io.read_json(summary, artifacts.QUARANTINE_SUMMARY)["quarantined"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("model reports: cannot read the quarantine summary %s: %s", summary, exc)
        return None


def read_monitoring(engine: Any, root: Any) -> dict[str, Any]:
    """What the metrics route reports from the registry and the artifact root."""
    from flight_delays.store import registry

    if registry.current_revision(engine) is None:
        return {"champion": None, "newest_day": None, "quarantined_rows": None,
                "served": [], "drift": read_drift(engine, None), "last_alert": None,
                "alert_times": {}}  # fmt: skip
    # Scraped every few seconds: the columns read below, not the runs' JSON payloads.
    columns = ["processed_day", "decision", "model_sha256", "challenger_mae", "baseline_mae"]
    frame = registry.history(engine, columns)
    runs = [
        {
            "processed_day": _day(run["processed_day"]),
            "decision": run["decision"],
            "model_sha256": run["model_sha256"],
            "challenger_mae": float(run["challenger_mae"]),
            "baseline_mae": float(run["baseline_mae"]),
            "recorded_at": None,
            "run_id": None,
            "grid": None,
        }
        for run in frame.to_dict("records")
    ]
    runs.reverse()  # newest processed day first, as _champion_card expects
    newest = max((r["processed_day"] for r in runs), default=None)
    champion = _champion_card(registry.current_champion(engine), runs)
    card = None
    if champion["kind"] == "model" and champion["mae"] is not None:
        card = {"kind": "model", "mae": champion["mae"], "baseline_mae": champion["baseline_mae"]}
    elif champion["kind"] == "baseline" and runs:
        # The baseline serves: its MAE on the newest run's holdout.
        newest_run = next(r for r in runs if r["processed_day"] == newest)
        card = {"kind": "baseline", "mae": newest_run["baseline_mae"],
                "baseline_mae": newest_run["baseline_mae"]}  # fmt: skip
    return {
        "champion": card,
        "newest_day": newest,
        "quarantined_rows": quarantined_rows(root, newest) if newest else None,
        "served": read_served(engine),
        "drift": read_drift(engine, None),
        "last_alert": read_last_alert(engine),
        "alert_times": read_alert_times(engine),
    }


def read_dag_runs(session: Any) -> dict[str, dict[str, Any]]:
    """Per DAG of :data:`DAG_IDS`: its runs by state and the end of its newest successful
    run, from Airflow's metadata DB."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, select

    query = (
        select(DagRun.dag_id, DagRun.state, func.count(), func.max(DagRun.end_date))
        .where(DagRun.dag_id.in_(DAG_IDS))
        .group_by(DagRun.dag_id, DagRun.state)
    )
    found: dict[str, dict[str, Any]] = {
        dag_id: {"states": dict.fromkeys(RUN_STATES, 0), "last_success": None} for dag_id in DAG_IDS
    }
    for dag_id, state, count, last_end in session.execute(query).all():
        state = str(getattr(state, "value", state))
        found[dag_id]["states"][state] = int(count)
        if state == "success" and last_end is not None:
            found[dag_id]["last_success"] = _utc(last_end)
    return found


def _midnight(day: str) -> float:
    """The start of ``day`` (an ISO date) in UTC, as seconds since the epoch."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def metrics_registry(dag_runs: dict[str, dict[str, Any]], data: dict[str, Any] | None) -> Any:
    """A new prometheus_client CollectorRegistry holding this request's metrics (nothing
    is kept between requests). ``data``: :func:`read_monitoring`, or None when the
    registry could not be read (``flight_delays_registry_up`` 0, no registry metrics)."""
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry(auto_describe=True)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, doc, labels, registry=reg)

    last = gauge(
        "flight_delays_dag_last_success_timestamp_seconds",
        "End of the newest successful run of the DAG (Airflow metadata DB), Unix time",
        ("dag_id",),
    )
    runs = gauge(
        "flight_delays_dag_runs", "DAG runs in Airflow's metadata DB, by state", ("dag_id", "state")
    )
    for dag_id, found in dag_runs.items():
        if found["last_success"] is not None:
            last.labels(dag_id).set(found["last_success"].timestamp())
        for state, count in found["states"].items():
            runs.labels(dag_id, state).set(count)
    gauge("flight_delays_registry_up", "1 if the model registry could be read").set(
        0 if data is None else 1
    )
    if data is None:
        return reg
    champion = data["champion"]
    if champion is not None:
        gauge(
            "flight_delays_champion_holdout_mae_minutes",
            "Holdout MAE of the champion (a model: on the holdout of the run that promoted "
            "it; the baseline: on the newest run's holdout), minutes of arrival delay",
            ("kind",),
        ).labels(champion["kind"]).set(champion["mae"])
        if champion["baseline_mae"] is not None:
            gauge(
                "flight_delays_champion_holdout_baseline_mae_minutes",
                "Holdout MAE of the naive baseline on the champion's holdout, minutes",
            ).set(champion["baseline_mae"])
    if data["newest_day"] is not None:
        gauge(
            "flight_delays_last_processed_day_timestamp_seconds",
            "Start (00:00 UTC) of the newest processed day in the registry, Unix time",
        ).set(_midnight(data["newest_day"]))
    if data["quarantined_rows"] is not None:
        gauge(
            "flight_delays_quarantined_rows",
            "Rows of the newest processed day that the data contract quarantined",
        ).set(data["quarantined_rows"])
    if data["served"]:
        newest = data["served"][0]
        gauge(
            "flight_delays_served_mae_minutes",
            "MAE of the predictions served for the last served day, minutes",
        ).set(newest["served_mae"])
        gauge(
            "flight_delays_served_baseline_mae_minutes",
            "MAE of the naive baseline on the same flights of the last served day, minutes",
        ).set(newest["baseline_mae"])
        gauge("flight_delays_served_flights", "Flights scored on the last served day").set(
            newest["flights"]
        )
        gauge(
            "flight_delays_served_day_timestamp_seconds",
            "Start (00:00 UTC) of the last served day, Unix time",
        ).set(_midnight(newest["day"]))
    drift = data["drift"]
    if drift is not None:
        worst = next((f for f in drift["features"] if f["psi"] is not None), None)
        if worst is not None:
            gauge(
                "flight_delays_drift_psi_max",
                "Largest population stability index (PSI, no unit) of last night's "
                "features against the training window",
                ("feature", "kind"),
            ).labels(worst["feature"], worst["kind"]).set(worst["psi"])
        gauge(
            "flight_delays_drift_flagged_features",
            "Features of last night whose PSI passed its threshold",
        ).set(drift["flagged"])
        gauge(
            "flight_delays_drift_day_timestamp_seconds",
            "Start (00:00 UTC) of the day of the newest drift figures, Unix time",
        ).set(_midnight(drift["day"]))
    if data["alert_times"]:
        # One series per kind, each kept once recorded: a later alert of another kind
        # must not make a rule on this one see it vanish.
        last_alert = gauge(
            "flight_delays_last_alert_timestamp_seconds",
            "When the newest alert of each kind was recorded, Unix time",
            ("kind",),
        )
        for kind, at in sorted(data["alert_times"].items()):
            last_alert.labels(kind).set(at.timestamp())
    return reg


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def render_monitoring(data: dict[str, Any]) -> str:
    """The page's monitoring sections: alerts, last night's drift, and the served MAE
    against the baseline's day by day. Every value from the registry is escaped; every
    number has its unit (PSI has none: it says so)."""
    esc = html.escape
    channels = data.get("alert_channels") or []
    if channels:
        state = (
            '<p id="alerts-state">Alerts are <strong>on</strong>: sent through '
            + ", ".join(f"<code>{esc(c)}</code>" for c in channels)
            + ".</p>"
        )
    else:
        state = (
            '<p id="alerts-state">Alerts are <strong>off</strong>: no Airflow connection '
            + " or ".join(f"<code>{esc(c)}</code>" for c in ALERT_CONN_IDS)
            + " is defined, so alerts are only written to the task log.</p>"
        )
    alert = data.get("last_alert")
    if alert is None:
        last = '<p id="last-alert">No alert has been recorded.</p>'
    else:
        last = (
            '<dl id="last-alert">'
            f"<dt>Last alert</dt><dd>{esc(_when(alert['at']))}: {esc(str(alert['kind']))}</dd>"
            f"<dt>DAG and run</dt><dd>{esc(str(alert['dag_id']))} "
            f"<code>{esc(str(alert['run_id'] or ''))}</code></dd>"
            f"<dt>Processed day</dt><dd>{esc(alert['day'] or '')}</dd>"
            f"<dt>Summary</dt><dd>{esc(str(alert['summary'] or ''))}</dd>"
            f"<dt>Delivery</dt><dd>{esc(str(alert['delivery'] or ''))}: "
            f"{esc(str(alert['channels'] or 'the task log only'))}</dd>"
            "</dl>"
        )
    drift = data.get("drift")
    if drift is None:
        drift_html = '<p id="drift">No drift figures yet.</p>'
    else:
        rows = "".join(
            f"<tr><td>{esc(str(f['feature']))}</td><td>{esc(str(f['kind']))}</td>"
            f'<td class="num">{_psi(f["psi"])}</td><td class="num">{_psi(f["threshold"])}</td>'
            f'<td class="{"stepped" if f["flagged"] else ""}">'
            f"{'drifted' if f['flagged'] else 'no'}</td></tr>"
            for f in drift["features"]
        )
        drift_html = (
            f"<p>Day {esc(drift['day'])}: {drift['flagged']} of {drift['count']} features "
            f"passed their threshold. The {len(drift['features'])} largest:</p>"
            '<table id="drift"><tr><th>Feature</th><th>Kind</th>'
            "<th>PSI (no unit)</th><th>Threshold (PSI)</th><th>Flagged</th></tr>"
            f"{rows}</table>"
        )
    served = data.get("served") or []
    if not served:
        served_html = '<p id="served">No served day has been scored yet.</p>'
    else:
        rows = []
        for day in served[:SERVED_DAYS]:
            diff = day["served_mae"] - day["baseline_mae"]
            share = f"{diff / day['baseline_mae']:+.1%}" if day["baseline_mae"] else ""
            champion = (
                f"model of {esc(day['champion_day'] or '')}"
                if day["champion_kind"] == "model"
                else esc(str(day["champion_kind"]))
            )
            rows.append(
                f'<tr><td>{esc(day["day"])}</td><td class="num">{day["flights"]} flights</td>'
                f'<td class="num">{_num(day["served_mae"])} min</td>'
                f'<td class="num">{_num(day["baseline_mae"])} min</td>'
                f'<td class="num {"stepped" if diff > 0 else "promoted"}">{_signed(diff)} min'
                f" ({share})</td><td>{champion}</td></tr>"
            )
        served_html = (
            f"<p>The {min(len(served), SERVED_DAYS)} newest served days (of {len(served)}); "
            "negative: the served predictions beat the baseline.</p>"
            '<table id="served"><tr><th>Flight day</th><th>Flights</th>'
            "<th>Served MAE (min)</th><th>Baseline MAE (min)</th>"
            "<th>Served &minus; baseline (min)</th><th>Champion that served</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return (
        f'<section id="alerts"><h2>Alerts</h2>{state}{last}</section>'
        f"<section><h2>Last night's input drift</h2>{drift_html}</section>"
        "<section><h2>Served MAE against the baseline, day by day</h2>"
        f"{served_html}</section>"
    )


def _psi(value: float | None) -> str:
    return "not computed" if value is None else f"{value:.3f}"


# --- the app -------------------------------------------------------------------------
@functools.cache
def build_app() -> Any:
    """The FastAPI app, built once, when the api-server first asks for it."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from sqlalchemy.exc import SQLAlchemyError

    def can_read_dag(user: GetUserDep) -> None:
        from airflow.api_fastapi.app import get_auth_manager

        allowed = get_auth_manager().is_authorized_dag(
            method="GET", user=user, details=DagDetails(id=DAG_ID)
        )
        if not allowed:
            raise HTTPException(status_code=403, detail=f"not allowed to read the {DAG_ID} DAG")

    # No /docs or /openapi.json: FastAPI serves those outside the app's dependencies.
    app = FastAPI(
        title="flight_delays model reports",
        dependencies=[Depends(can_read_dag)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    class Unavailable(Exception):
        pass

    @app.exception_handler(Unavailable)
    def unavailable(request: Request, exc: Unavailable) -> Any:
        message = str(exc)
        if not request.url.path.endswith("/"):  # the JSON API or the chart
            return JSONResponse({"detail": message}, status_code=503)
        return HTMLResponse(unavailable_page(message), status_code=503)

    def storage_root() -> Any:
        """The artifact root; a bad FLIGHT_DELAYS_STORAGE_URL: Unavailable, naming it."""
        from flight_delays.store.storage import StorageURLError

        try:
            return artifact_root()
        except StorageURLError as exc:
            log.error("model reports: %s", exc)
            raise Unavailable(str(exc)) from exc

    def secret_key() -> str:
        """The api-server's ``[api] secret_key``, which every api-server shares (Airflow
        signs its own sessions with it)."""
        from airflow.api_fastapi.auth.tokens import get_signing_key

        return get_signing_key("api", "secret_key")

    def registry_data() -> dict[str, Any]:
        root = storage_root()
        data = registry_read(lambda engine: read_registry(engine, root))
        return {**data, "alert_channels": alert_channels()}

    def registry_read(read: Any) -> Any:
        """``read(engine)``; a missing connection or a failing registry: Unavailable."""
        try:
            return read(registry_engine())
        except WarehouseMissing as exc:
            log.error("model reports: %s", exc)
            raise Unavailable(str(exc)) from exc
        except SQLAlchemyError as exc:
            log.error("model reports: cannot read the model registry: %s", exc)
            raise Unavailable(
                "cannot read the model registry (unreachable, too slow, or its schema is not "
                "migrated: python -m flight_delays.store.registry upgrade): "
                f"{type(exc).__name__}"
            ) from exc

    @app.get("/api/runs")
    def runs_json() -> dict[str, Any]:
        """The registry as JSON: the champion's card and every run, newest first."""
        data = registry_data()
        return {"champion": data["champion"], "runs": data["runs"]}

    @app.get("/api/monitoring")
    def monitoring_json() -> dict[str, Any]:
        """Alerts, last night's drift (every feature) and the served days, as JSON."""
        root = storage_root()
        data = registry_read(lambda engine: read_monitoring(engine, root))
        return {**data, "alert_channels": alert_channels()}

    @app.get("/metrics")
    def metrics(session: SessionDep) -> Response:
        """Prometheus text format, built per request in a registry of its own: the DAGs'
        runs from Airflow's metadata DB, the rest from the model registry and the
        artifact root. A registry that cannot be read is flight_delays_registry_up 0,
        not a failed scrape: the Airflow figures still answer."""
        from prometheus_client import generate_latest

        dag_runs = read_dag_runs(session)
        try:
            root = storage_root()
            data = registry_read(lambda engine: read_monitoring(engine, root))
        except Unavailable as exc:
            log.error("model reports: metrics without the registry: %s", exc)
            data = None
        body = generate_latest(metrics_registry(dag_runs, data))
        return Response(
            body, media_type=METRICS_CONTENT_TYPE, headers={"Cache-Control": "no-cache"}
        )

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return render_page(registry_data())

    @app.get(f"/{HISTORY_PNG}")
    def history_chart() -> Response:
        """The metric-history chart of every run, drawn from the registry."""
        png = registry_read(history_png)
        if png is None:
            raise HTTPException(status_code=404, detail="no run has been recorded yet")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    def serve_report_file(path: str) -> Response:
        """The file ``path`` names under reports/, with the report headers; a page gets
        its figures as signed links (sign_figures)."""
        from flight_delays.store import storage

        # A bad storage URL is a 503 naming the setting, not a 500.
        target = report_path(reports_folder(storage_root()), path)
        if target is None:
            raise HTTPException(status_code=404, detail="no such report file")
        media_type = REPORT_TYPES[target.suffix]
        if target.suffix == ".html":
            # surrogateescape: bytes that are not UTF-8 go back out as they came in.
            page = target.read_bytes().decode("utf-8", "surrogateescape")
            signer = figure_signer(secret_key())
            body = sign_figures(page, path, signer.dumps).encode("utf-8", "surrogateescape")
            # The links expire: a cached copy of the page would show broken figures.
            headers = {**REPORT_HEADERS, "Cache-Control": "no-store"}
            return Response(body, media_type=media_type, headers=headers)
        if storage.is_local(target):
            return FileResponse(target, media_type=media_type, headers=REPORT_HEADERS)
        return Response(target.read_bytes(), media_type=media_type, headers=REPORT_HEADERS)

    @app.get("/reports/{path:path}")
    def report_file(path: str) -> Response:
        """A run report or one of its figures, from the artifact root's reports/ only."""
        return serve_report_file(path)

    # The figures of a sandboxed report page: no session cookie comes with them, so this
    # app is mounted apart from the login check; the signed token alone names the one
    # file it grants, for FIGURE_LINK_TTL_S. Every check of report_path still applies.
    signed = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    signed.add_exception_handler(Unavailable, unavailable)

    @signed.get("/{token}")
    def signed_figure(token: str) -> Response:
        from itsdangerous import BadSignature, SignatureExpired

        try:
            path = figure_signer(secret_key()).loads(token, max_age=FIGURE_LINK_TTL_S)
        except SignatureExpired as exc:
            raise HTTPException(
                status_code=403,
                detail=f"this figure link has expired (links last {FIGURE_LINK_TTL_S // 60} "
                "minutes): reload the report",
            ) from exc
        except BadSignature as exc:
            raise HTTPException(
                status_code=403, detail="this figure link is not valid: reload the report"
            ) from exc
        if not isinstance(path, str) or not path.endswith(".png"):
            raise HTTPException(status_code=403, detail="this figure link is not valid")
        return serve_report_file(path)

    app.mount(f"/{SIGNED_ROUTE}", signed)
    return app


class _FastAPIApps:
    """``fastapi_apps`` that builds the app when read: only the api-server reads it."""

    def __get__(self, instance: Any, owner: Any) -> list[dict[str, Any]]:
        return [{"app": build_app(), "url_prefix": URL_PREFIX, "name": "Model reports"}]


class ModelReportsPlugin(AirflowPlugin):
    name = "flight_delays_model_reports"
    fastapi_apps = _FastAPIApps()  # type: ignore[assignment]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Model reports",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "model-reports",
        }
    ]
