"""The Airflow web UI in a real browser, against the live stack (conftest.py): Playwright
for Python driving the system Chromium (pytest-playwright's ``page`` fixture, launched
with ``executable_path``; no browser download).

- the DAG page after a login, with the six tasks;
- the Assets view: the catalog's assets, the champion linking both DAGs;
- a backfill made from the UI's Trigger -> Backfill dialog (POST /api/v2/backfills),
  whose three runs succeed with one artifact set per day;
- the Model reports page: the metric-history chart, the champion's card and the runs,
  each linked to its Airflow run, which the link opens.

Screenshots of the Model reports page go to the test's tmp folder; with
FLIGHT_DELAYS_SCREENSHOTS=<folder> (e.g. docs/img) they are written there too (docs/ui.md
shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from stack_helpers import (
    DAG_ID,
    REPO,
    TIMINGS,
    TZ,
    Stack,
    check_day,
    fingerprint,
    log_in,
)

pytestmark = pytest.mark.stack

STEPS = ["ingest", "featurize", "split", "train", "score", "chart"]
# Runs at 02:00 New York on 9, 10 and 11 April 2013 (the range ends at midnight, so not
# the 12th's run) process the flight days 8, 9 and 10 April: inside the seeded days, and
# apart from the days the other live tests process. Midnight in UTC or in New York (the
# UI's time zone) selects the same three runs.
BACKFILL_FROM, BACKFILL_TO = date(2013, 4, 9), date(2013, 4, 12)
BACKFILL_DAYS = [date(2013, 4, 8), date(2013, 4, 9), date(2013, 4, 10)]


def save_screenshot(page: Page, tmp_path: Path, name: str, **kwargs) -> Path:
    """A PNG of the page in tmp_path, copied to $FLIGHT_DELAYS_SCREENSHOTS if set."""
    path = tmp_path / name
    page.screenshot(path=path, **kwargs)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("FLIGHT_DELAYS_SCREENSHOTS")
    if target:
        folder = Path(target) if Path(target).is_absolute() else REPO / target
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)
    return path


def pick_datetime(page: Page, dialog, index: int, day: date) -> None:
    """Fill the dialog's index-th date-time picker (a popover with a date and a time
    field) with midnight of ``day``, as a person types it."""
    dialog.get_by_test_id("datetime-input").nth(index).click()
    popover = page.locator("[data-scope=popover][data-part=content][data-state=open]").last
    popover.get_by_placeholder("YYYY/MM/DD").fill(day.strftime("%Y/%m/%d"))
    popover.get_by_placeholder("HH:mm").fill("00:00")
    page.keyboard.press("Escape")  # closes the popover, not the dialog
    expect(dialog.get_by_test_id("datetime-input").nth(index)).to_contain_text(
        day.strftime("%b %d, %Y 00:00")
    )


def test_headless_chromium_logs_in_and_finds_the_six_tasks(stack: Stack, page: Page):
    log_in(page, stack)
    for step in STEPS:
        expect(page.get_by_text(step, exact=True).first).to_be_visible(timeout=45_000)
    expect(page.get_by_text("0 2 * * *").first).to_be_visible()
    expect(page.get_by_text(DAG_ID).first).to_be_visible()


def test_the_assets_view_links_both_dags_through_the_champion(
    stack: Stack, page: Page, tmp_path: Path
):
    """Lineage in the UI: the Assets page lists the catalog's assets, and the champion's
    page shows the training DAG's publish task producing it and the prediction DAG
    scheduled on it."""
    log_in(page, stack, "/assets")
    for name in ("flight_delays_features", "flight_delays_model", "flight_delays_champion"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=45_000)
    page.get_by_text("flight_delays_champion", exact=True).first.click()
    expect(page.get_by_text("flight_delays_predict").first).to_be_visible(timeout=45_000)
    expect(page.get_by_text(DAG_ID, exact=True).first).to_be_visible()
    save_screenshot(page, tmp_path, "assets_champion.png", full_page=True)


def test_the_ui_defaults_to_new_york_time_and_keeps_a_users_choice(stack: Stack, page: Page):
    # plugins/ui_timezone.py: Airflow 3.3 has no server setting for the UI's zone.
    log_in(page, stack)
    assert page.evaluate("localStorage.getItem('timezone')") == '"America/New_York"'
    page.evaluate("localStorage.setItem('timezone', JSON.stringify('Europe/Paris'))")
    page.reload()
    assert page.evaluate("localStorage.getItem('timezone')") == '"Europe/Paris"'


def test_a_logged_out_browser_gets_no_model_reports(stack: Stack, page: Page):
    response = page.goto(f"{stack.api_url}/model-reports/")
    assert response is not None and response.status == 401
    assert "Current champion" not in page.content()


def test_backfill_from_the_ui_dialog_runs_three_days(live_dag: Stack, page: Page):
    stack = live_dag
    before = fingerprint(stack.root)
    log_in(page, stack)
    page.get_by_role("button", name="Trigger").click()
    dialog = page.locator("[role=dialog][data-state=open]").last
    dialog.get_by_text("Backfill", exact=True).click()
    pick_datetime(page, dialog, 0, BACKFILL_FROM)
    pick_datetime(page, dialog, 1, BACKFILL_TO)
    dialog.locator("input[name=max_active_runs]").fill("2")
    # The dialog's dry run (POST /api/v2/backfills/dry_run) counts the runs to make.
    expect(dialog.get_by_text("3 runs will be triggered.")).to_be_visible(timeout=30_000)
    started = time.monotonic()
    with page.expect_response(
        lambda r: r.url.endswith("/api/v2/backfills") and r.request.method == "POST"
    ) as created:
        dialog.get_by_role("button", name="Run Backfill").click()
    assert created.value.status == 200, created.value.text()
    backfill = created.value.json()
    assert backfill["dag_id"] == DAG_ID and backfill["max_active_runs"] == 2
    expect(page.get_by_text("Backfill generated").first).to_be_visible()

    # The scheduler makes the backfill's runs; other tests' backfills have other dates.
    runs = stack.backfill_runs([(d + timedelta(days=1)).isoformat() for d in BACKFILL_DAYS])
    assert len(runs) == 3, runs
    runs = [stack.wait_for_run(r["dag_run_id"], timeout=600) for r in runs]
    TIMINGS["backfill of 3 days from the UI dialog, wall time"] = (
        f"{time.monotonic() - started:.1f} s"
    )
    assert sorted(pendulum_day(r["logical_date"]) - timedelta(days=1) for r in runs) == (
        BACKFILL_DAYS
    )
    for day in BACKFILL_DAYS:
        check_day(stack.root, day)
    after = fingerprint(stack.root)
    changed = sorted(name for name, value in before.items() if after.get(name) != value)
    assert not changed, f"the backfill overwrote or removed artifacts of other days: {changed}"
    for day in BACKFILL_DAYS:
        outputs = [n for n in after if n.startswith(f"data/output/ds={day}/")]
        assert sorted(Path(n).name for n in outputs) == ["metrics.json", "predictions.parquet"]


def pendulum_day(timestamp: str) -> date:
    """The New York calendar day of an API timestamp."""
    import pendulum

    return pendulum.parse(timestamp).in_timezone(TZ).date()


@pytest.fixture
def scored(live_dag: Stack) -> dict:
    """The registry as the plugin serves it, with at least one scored and charted run
    (the backfill test's, or one made here when this test runs alone)."""
    stack = live_dag
    url = f"{stack.api_url}/model-reports/api/runs"
    headers = {"Authorization": f"Bearer {stack.token()}"}
    data = httpx.get(url, headers=headers, timeout=30).json()
    if not data["runs"]:
        run = stack.ok(
            "POST",
            f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": "ui_2013-04-16", "logical_date": "2013-04-16T02:00:00-04:00"},
        )
        stack.wait_for_run(run["dag_run_id"], timeout=420)
        data = httpx.get(url, headers=headers, timeout=30).json()
    return data


def test_model_reports_page_shows_the_chart_the_champion_and_run_links(
    live_dag: Stack, scored: dict, page: Page, tmp_path: Path
):
    stack = live_dag
    latest = scored["runs"][0]
    log_in(page, stack)  # the plugin reads the UI's session cookie
    page.goto(f"{stack.api_url}/model-reports/")
    expect(page.locator("#runs")).to_be_visible()

    # The metric-history chart: the latest run's PNG, loaded (not a broken image).
    chart = page.locator("img#history")
    expect(chart).to_have_attribute("src", "history.png")
    chart.scroll_into_view_if_needed()
    assert page.wait_for_function("document.querySelector('img#history').naturalWidth > 300")

    card = page.locator("#champion")
    champion = scored["champion"]
    if champion["kind"] == "model":
        expect(card).to_contain_text(
            f"Current champion: the model trained for {champion['processed_day']}"
        )
        expect(card).to_contain_text(champion["model_sha256"])
        expect(card).to_contain_text(f"{champion['mae']:.2f} min; baseline")
        expect(card).to_contain_text("Promoted on")
    else:
        expect(card).to_contain_text("Current champion: the naive baseline")

    # One row per recorded run (more if a run of another test was recorded meanwhile).
    assert page.locator("#runs tr").count() >= len(scored["runs"]) + 1  # and the header
    for run in scored["runs"]:
        row = page.locator("#runs tr", has_text=run["run_id"])
        expect(row).to_have_count(1)
        expect(row).to_contain_text(run["processed_day"])
        expect(row).to_contain_text(run["decision"])
    save_screenshot(page, tmp_path, "model_reports.png", full_page=True)

    # The run's link opens its Airflow run in the UI (out of the plugin's frame).
    page.locator("#runs a.grid", has_text=latest["run_id"]).first.click()
    page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/"))
    expect(page.get_by_text(latest["run_id"]).first).to_be_visible(timeout=45_000)


def test_model_reports_inside_the_ui_navigation(
    live_dag: Stack, scored: dict, page: Page, tmp_path: Path
):
    stack = live_dag
    log_in(page, stack)
    page.get_by_role("link", name=re.compile("Model rep")).first.click()
    page.wait_for_url(re.compile(r"/plugin/model-reports"))
    frame = page.frame_locator("iframe").first
    expect(frame.locator("#runs")).to_be_visible(timeout=45_000)
    expect(frame.locator("#champion")).to_contain_text("Current champion")
    frame.locator("img#history").wait_for()
    page.wait_for_timeout(500)  # the chart paints
    save_screenshot(page, tmp_path, "model_reports_in_ui.png")


def test_a_run_report_shows_its_charts_under_its_sandbox_policy(
    live_dag: Stack, scored: dict, page: Page
):
    """Issue 20: a report file carries a sandboxing Content-Security-Policy, and its
    charts still load on the real api-server (through the plugin's signed figure links:
    a sandboxed page sends no session cookie). The UI's time-zone script stays out."""
    stack = live_dag
    run = next(r for r in scored["runs"] if r["report"])
    log_in(page, stack)
    response = page.goto(f"{stack.api_url}/model-reports/{run['report']}")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == (
        "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert b"localStorage" not in response.body()
    expect(page.get_by_text("Holdout metrics")).to_be_visible()
    page.wait_for_function(
        "document.images.length > 0 && [...document.images].every(i => i.complete)",
        timeout=30_000,
    )
    widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert widths and all(width > 100 for width in widths), widths
    assert page.evaluate("window.origin") == "null"  # sandboxed: an opaque origin
