"""Airflow plugin: a "Model reports" page in the Airflow web UI.

A FastAPI app mounted by the api-server at /model-reports, with a navigation entry
(an external view shown inside the UI). It lists every run recorded in the model
registry (metrics of challenger, champion and baseline, the decision and its reason),
names the current champion, and serves each run's report (reports/ds=<day>/index.html)
and its figures.

Plugin endpoints are not protected by Airflow unless the plugin does it: every route
here requires a logged-in user allowed to read the flight_delays DAG (the UI's session
cookie or a bearer token from POST /auth/token). Heavy imports (pandas, SQLAlchemy) wait
for the first request. Changes to this file need an api-server restart.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any, ClassVar

from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

DAG_ID = "flight_delays"
WAREHOUSE_CONN_ID = "flight_delays_warehouse"
URL_PREFIX = "/model-reports"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def project_root() -> Path:
    """FLIGHT_DELAYS_HOME, else the project this plugins folder belongs to."""
    return Path(os.environ.get("FLIGHT_DELAYS_HOME") or Path(__file__).resolve().parents[1])


def registry_url() -> str:
    """The warehouse connection the DAG uses, else the package's default."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID).get_uri()
    except AirflowNotFoundException:
        from flight_delays.config import load_settings

        return load_settings(project_root()).registry_url


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


def _runs() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from flight_delays import registry

    engine = registry.connect(registry_url())
    try:
        champion = registry.current_champion(engine)
        runs = registry.history(engine)
    finally:
        engine.dispose()
    reports = project_root() / "reports"
    rows = []
    for run in runs.to_dict("records"):
        day = run["processed_day"].isoformat()
        rows.append(
            {
                "id": int(run["id"]),
                "processed_day": day,
                "run_id": run["run_id"],
                "challenger_mae": run["challenger_mae"],
                "champion_mae": run["champion_mae"],
                "baseline_mae": run["baseline_mae"],
                "champion_kind": run["champion_kind"],
                "decision": run["decision"],
                "reason": run["reason"],
                "report": f"reports/ds={day}/index.html"
                if (reports / f"ds={day}" / "index.html").is_file()
                else None,
            }
        )
    champ = {
        "kind": champion.kind,
        "processed_day": champion.processed_day.isoformat() if champion.processed_day else None,
        "model_sha256": champion.model_sha256,
    }
    return champ, rows


@app.get("/api/runs")
def runs_json() -> dict[str, Any]:
    """The registry as JSON: the champion and every run, newest first."""
    champion, rows = _runs()
    return {"champion": champion, "runs": rows[::-1]}


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    champion, rows = _runs()
    esc = html.escape
    if champion["kind"] == "baseline":
        champ = "the naive baseline (no model has beaten it yet)"
    else:
        champ = f"the model trained for {champion['processed_day']}"
    body = []
    for run in reversed(rows):
        link = (
            f'<a href="{esc(run["report"])}">{esc(run["processed_day"])}</a>'
            if run["report"]
            else esc(run["processed_day"])
        )
        body.append(
            f"<tr><td>{link}</td>"
            f'<td class="num">{run["challenger_mae"]:.2f}</td>'
            f'<td class="num">{run["champion_mae"]:.2f}</td>'
            f'<td class="num">{run["baseline_mae"]:.2f}</td>'
            f'<td class="{esc(run["decision"])}">{esc(run["decision"])}</td>'
            f"<td>{esc(run['reason'])}</td></tr>"
        )
    table = "".join(body) or '<tr><td colspan="6">No run has been scored yet.</td></tr>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Model reports</title><style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.3rem .6rem}}
th{{background:#f3f3f3}}td.num{{text-align:right}}.promoted{{color:#0a6b2d;font-weight:600}}
</style></head><body>
<h1>flight_delays: model reports</h1>
<p id="champion">Current champion: {esc(champ)}.</p>
<table id="runs"><tr><th>Processed day</th><th>Challenger MAE (min)</th>
<th>Champion MAE (min)</th><th>Baseline MAE (min)</th><th>Decision</th><th>Reason</th></tr>
{table}</table></body></html>"""


@app.get("/reports/{path:path}")
def report_file(path: str) -> FileResponse:
    """A run report or one of its figures, from the project's reports/ folder only."""
    reports = (project_root() / "reports").resolve()
    target = (reports / path).resolve()
    if not target.is_relative_to(reports) or target.suffix not in {".html", ".png"}:
        raise HTTPException(status_code=404, detail="not a report file")
    if not target.is_file():
        raise HTTPException(status_code=404, detail=f"no such report file: {path}")
    return FileResponse(target)


class ModelReportsPlugin(AirflowPlugin):
    name = "flight_delays_model_reports"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Model reports"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Model reports",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "model-reports",
        }
    ]
