"""The harness's ``rows`` section (issue 22, item 4): each step at 90 and 365 days on the
real warehouse and on a synthetic one with ``factor`` times the flights of each day
(:mod:`flight_delays.intake.synthetic`).

Each step runs in a fresh process of its own, as a nightly task does
(``bench_driver.py STEP``), one after the other with no data in the root, so a step's
peak RSS is its own process's high-water mark, imports included, and featurize builds
every day of the window (no day features kept from an earlier run). Targets: every step
at most 2 GB at ``factor`` x and 365 days; the cost linear in rows (each step's seconds
per 1,000 rows at ``factor`` x at most 1.5 times its cost on the real rows, same window);
featurize at least 200k rows/s.
"""

from __future__ import annotations

import shutil
from datetime import date

import bench_local
from bench_project import Project
from bench_results import STEPS, Results, Target, flight_rows, step_rows

WINDOWS = (90, 365)
GB_MIB = bench_local.GB_MIB
FEATURIZE_ROWS_PER_S = 200_000
LINEAR = 1.5


def _one_night(project: Project, day: date, window: int) -> dict[str, dict]:
    """The six steps of one night, each in its own process, with no data in the root
    (the models and the registry stay, so score meets a champion as a night does): by
    step, its own seconds, its peak RSS (MiB) and its result."""
    shutil.rmtree(project.root / "data", ignore_errors=True)
    params = project.params(window)
    # The driver's own high-water mark of the step (VmHWM, reset before it, so it holds
    # the imports too), not the kernel's mark of the whole process: a child forked from
    # a large parent starts with the parent's pages counted.
    return {step: project.run_driver(step, day, params)[1][step] for step in STEPS}


def rows(
    real: Project,
    synthetic: Project,
    day: date,
    repeat: int,
    results: Results,
    windows: tuple[int, ...] = WINDOWS,
) -> dict[str, dict]:
    """Both warehouses at each window, ``repeat`` times; rows, targets, series."""
    series: dict[str, dict] = {}
    for window in windows:
        for project in (real, synthetic):
            label = f"x{project.factor}, {window} days"
            nights = [_one_night(project, day, window) for _ in range(repeat)]
            flights = flight_rows(nights[-1])
            own = step_rows("rows", label, nights, flights, results)
            peak = {s: max(n[s]["peak_mib"] for n in nights) for s in STEPS}
            series[label] = {"factor": project.factor, "window": window, "rows": flights}
            series[label].update(own=own, peak=peak)
    results.series["rows"] = series
    _targets(series, synthetic.factor, windows, results)
    return series


def _targets(
    series: dict[str, dict], factor: int, windows: tuple[int, ...], results: Results
) -> None:
    big = series[f"x{factor}, {max(windows)} days"]
    step, peak = max(big["peak"].items(), key=lambda item: item[1])
    results.target(
        Target(
            f"every step ≤ 2 GB at {factor}x the rows and {max(windows)} days",
            f"largest: {step} {peak:,.0f} MiB ({peak * 2**20 / 1e9:.2f} GB; "
            + ", ".join(f"{s} {m:,.0f}" for s, m in big["peak"].items())
            + ")",
            peak <= GB_MIB,
            "each step's own process, imports included",
        )
    )
    rates = {
        label: s["rows"] / s["own"]["featurize"]
        for label, s in series.items()
        if s["factor"] == factor
    }
    results.target(
        Target(
            f"featurize ≥ {FEATURIZE_ROWS_PER_S // 1000}k rows/s at {factor}x",
            ", ".join(f"{label}: {rate / 1e3:,.0f}k rows/s" for label, rate in rates.items()),
            min(rates.values()) >= FEATURIZE_ROWS_PER_S,
            "every day of the window featurized",
        )
    )
    worst = (0.0, "")
    for window in windows:
        one, many = series[f"x1, {window} days"], series[f"x{factor}, {window} days"]
        for step in STEPS:
            per_row_one = one["own"][step] / one["rows"]
            per_row_many = many["own"][step] / many["rows"]
            ratio = per_row_many / per_row_one
            if ratio > worst[0]:
                worst = (ratio, f"{step} at {window} days")
    results.target(
        Target(
            "cost linear in rows (each step, x1 against x" + f"{factor})",
            f"largest ratio of the seconds per row: {worst[0]:.2f} ({worst[1]})",
            worst[0] <= LINEAR,
            f"criterion: ≤ {LINEAR} (below 1: fixed costs spread over more rows)",
        )
    )
