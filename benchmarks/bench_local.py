"""The harness's sections without the live stack: the six steps in one process against
`airflow dags test` (Airflow's fixed cost), the training windows (time and memory), the
developer loop (`make step` and `make task` against the step's own time), and each step
at ``factor`` times the rows (``rows``)."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import bench_core as bc
from bench_core import Results
from bench_project import AIRFLOW, DAG_ID, PYTHON, REPO, Project


def steps(project: Project, day: date, window: int, repeat: int, results: Results) -> None:
    """The six steps in one process and `airflow dags test` of the same run, in turn."""
    params = project.params(window, root=project.root)  # the DAG reads the root's file
    project.driver("ingest", day, params)  # the window's raw partitions, as a night finds them
    project.airflow_setup()
    nights: list[dict[str, dict]] = []
    # `airflow dags test` of the nightly run that processes the day (dated the next day).
    dags_test = [AIRFLOW, "dags", "test", DAG_ID, str(day + timedelta(days=1))]
    cases = {"in": project.case("all", day, params, nights),
             "dags": lambda: bc.run(dags_test, project.env())}  # fmt: skip
    runs = bc.in_turn(cases, repeat, prepare=project.clean)
    rows, label = bc.flight_rows(nights[-1]), f"{day}, {window}-day window"
    for case, measured in (
        ("six steps in one process", runs["in"]),
        ("`airflow dags test`", runs["dags"]),
    ):
        peak = max(r.peak_mib for r in measured)
        results.add("steps", f"{case} ({label})", [r.wall for r in measured], peak, rows)
    fixed = bc.paired([r.wall for r in runs["dags"]], [r.wall for r in runs["in"]])
    results.add("steps", "Airflow's fixed cost: dags test - in process", fixed, note="pairs")
    results.steps("steps", "in process", nights)
    for bound, issue in ((6.0, 11), (3.0, 22)):
        results.target(
            f"Airflow's fixed cost in `airflow dags test` ≤ {bound:.0f} s over the six steps "
            f"in one process (issue {issue})",
            f"{bc.median(fixed):.1f} s (pairs {min(fixed):.1f} to {max(fixed):.1f} s)",
            bc.median(fixed) <= bound,
        )


def windows(project: Project, day: date, sizes: list[int], repeat: int, results: Results) -> None:
    """Each training window end to end in one process, the windows in turn: the largest
    within 1.2 x train + 2 s, every step under 1 GB (the cost in rows: the rows section)."""
    project.driver("ingest", day, project.params(max(sizes)))
    nights: dict[int, list[dict[str, dict]]] = {w: [] for w in sizes}
    cases = {w: project.case("all", day, project.params(w), nights[w]) for w in sizes}
    runs = bc.in_turn(cases, repeat, prepare=project.clean)
    figures = {}  # window: (median wall, train's own time, largest step peak)
    for w in sizes:
        flights, walls = bc.flight_rows(nights[w][-1]), [r.wall for r in runs[w]]
        peak = max(r.peak_mib for r in runs[w])
        note, case = f"{flights:,} flights" if flights else "", f"{w}-day window to {day}"
        results.add("windows", f"{case}: end to end, one process", walls, peak, flights, note)
        own = results.steps("windows", f"{w} days", nights[w])
        step_peak = max(s["peak_mib"] for night in nights[w] for s in night.values())
        figures[w] = (bc.median(walls), own.get("train", float("nan")), step_peak)
    wall, train, _ = figures[max(sizes)]
    worst = max(f[2] for f in figures.values())
    results.target(
        f"{max(sizes)}-day window end to end ≤ 1.2 x train + 2 s, peak RSS ≤ 1 GB every step",
        f"{wall:.1f} s against {1.2 * train + 2:.1f} s (train {train:.1f} s); largest step "
        f"peak {worst:.0f} MiB ({worst / bc.GB_MIB:.2f} GB)",
        wall <= 1.2 * train + 2 and worst <= bc.GB_MIB,
    )


def dev_loop(project: Project, day: date, window: int, repeat: int, results: Results) -> None:
    """The step ``split`` through `make step` (``python -m flight_delays run``) and `make
    task` (dev/run_tasks.py: through Airflow, in one process) against its own time (its
    ``run()`` call, in the driver), in turn; its inputs made once by featurize. One thread,
    as the developer loop's figures were measured (docs/benchmarks.md)."""
    params = project.params(window, root=project.root)
    project.airflow_setup()
    env = project.env() | {"FLIGHT_DELAYS_THREADS": "1"}
    project.driver("ingest..featurize", day, params, env)
    nights: list[dict[str, dict]] = []
    cases = {
        "make step S=split": [PYTHON, "-m", "flight_delays", "run", "split", "--day", str(day)],
        "make task T=split": [PYTHON, f"{REPO}/dev/run_tasks.py", "split", "--day", str(day)],
    }
    measure = {name: lambda c=cmd: bc.run(c, env) for name, cmd in cases.items()}
    runs = bc.in_turn({"own": project.case("split", day, params, nights, env)} | measure, repeat)
    own = [night["split"]["seconds"] for night in nights]
    results.add("dev loop", "split: the step's own time (run(), in one process)", own)
    for name, bound in zip(cases, (1.5, 6.0), strict=True):
        walls = [r.wall for r in runs[name]]
        over = bc.median(walls) - bc.median(own)
        results.add("dev loop", f"`{name} DAY={day}`", walls, note=f"{over:.2f} s over own time")
        results.target(
            f"`{name}` ≤ {bound} s over the step's own time", f"{over:.2f} s", over <= bound
        )


# The rows section (issue 22): each step in a fresh process of its own, as a nightly task
# runs, with no data in the root (the models and the registry stay, so score meets a
# champion): a step's peak is its own process's, imports included, and featurize builds
# every day of the window. The synthetic warehouse: flight_delays.intake.synthetic.


def _one_night(project: Project, day: date, window: int) -> dict[str, dict]:
    shutil.rmtree(project.root / "data", ignore_errors=True)
    params = project.params(window)
    return {step: project.driver(step, day, params)[1][step] for step in bc.STEPS}


def rows(
    real: Project,
    synthetic: Project,
    day: date,
    repeat: int,
    results: bc.Results,
    windows: tuple[int, ...],
) -> None:
    own, peak, flights = {}, {}, {}  # by (factor, window)
    for window in windows:
        for project in (real, synthetic):
            key = (project.factor, window)
            nights = [_one_night(project, day, window) for _ in range(repeat)]
            own[key] = results.steps("rows", f"x{key[0]}, {window} days", nights)
            peak[key] = {s: max(n[s]["peak_mib"] for n in nights) for s in bc.STEPS}
            flights[key] = bc.flight_rows(nights[-1])
    factor, big = synthetic.factor, max(windows)
    step, most = max(peak[factor, big].items(), key=lambda item: item[1])
    results.target(
        f"every step ≤ 2 GB at {factor}x the rows and {big} days",
        f"largest: {step} {most:,.0f} MiB ({most / bc.GB_MIB:.2f} GB; "
        + ", ".join(f"{s} {m:,.0f}" for s, m in peak[factor, big].items())
        + ")",
        most <= 2 * bc.GB_MIB,
        "each step's own process, imports included",
    )
    rates = {w: flights[factor, w] / own[factor, w]["featurize"] for w in windows}
    results.target(
        f"featurize ≥ 200k rows/s at {factor}x",
        ", ".join(f"{w} days: {rate / 1e3:,.0f}k rows/s" for w, rate in rates.items()),
        min(rates.values()) >= 200_000,
        "every day of the window featurized",
    )
    ratios = {
        (s, w): (own[factor, w][s] / flights[factor, w]) / (own[1, w][s] / flights[1, w])
        for w in windows
        for s in bc.STEPS
    }
    (s, w), worst = max(ratios.items(), key=lambda item: item[1])
    results.target(
        f"cost linear in rows (each step, x1 against x{factor})",
        f"largest ratio of the seconds per row: {worst:.2f} ({s} at {w} days)",
        worst <= 1.5,
        "criterion: ≤ 1.5 (below 1: fixed costs spread over more rows)",
    )
