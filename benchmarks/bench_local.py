"""The harness's sections that need no live stack: the six steps in one process against
`airflow dags test`, the training windows, the nightly increment, and the DAG file's
import time. Each comparison is measured in turn in one run (A B A B ...), medians."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import bench_measure as bm
from bench_project import PYTHON, REPO, Project
from bench_results import Results, Row, Target, flight_rows, step_rows

GB_MIB = 1e9 / bm.MIB  # 1 GB = 10^9 bytes, as for the stack's 2.0 GB


def warm_raw(project: Project, day: date, window: int) -> None:
    """The window's raw partitions on disk (untimed), as a nightly run finds them."""
    project.run_driver("ingest", day, project.params(window))


def steps(
    project: Project, day: date, window: int, repeat: int, results: Results
) -> dict[str, float]:
    """The six steps in one process against `airflow dags test` of the same run, in turn.
    Returns each step's own time (median), the reference of the live stack's overhead."""
    params = project.params(window, root=project.root)  # the DAG reads the root's file
    warm_raw(project, day, window)
    project.airflow_setup()
    records: list[dict[str, dict]] = []

    def in_process() -> bm.Run:
        measured, parsed = project.run_driver("all", day, params)
        records.append(parsed)
        return measured

    runs = bm.in_turn(
        {
            "in process": in_process,
            "dags test": lambda: bm.run(project.dags_test(day), project.env()),
        },
        repeat,
        prepare=lambda _: project.clean(),
    )
    a, b = runs["in process"], runs["dags test"]
    rows = flight_rows(records[-1])
    label = f"{day}, {window}-day window"
    for case, measured in (
        (f"six steps in one process ({label})", a),
        (f"`airflow dags test` ({label})", b),
    ):
        med, low, high = bm.spread([r.wall for r in measured])
        results.add(
            Row(
                "steps",
                case,
                med,
                low,
                high,
                max(r.peak_mib for r in measured),
                rows / med if rows else None,
                f"largest process {max(r.largest_mib for r in measured):.0f} MiB",
            )
        )
    fixed = bm.paired([r.wall for r in b], [r.wall for r in a])
    results.add(
        Row(
            "steps",
            "Airflow's fixed cost: dags test - in process",
            *fixed,
            note=f"pair by pair, {len(a)} pairs",
        )
    )
    own = step_rows("steps", "in process", records, rows, results)
    for bound, issue in ((6.0, 11), (3.0, 22)):
        results.target(
            Target(
                f"Airflow's fixed cost in `airflow dags test` ≤ {bound:.0f} s over the six "
                f"steps in one process (issue {issue})",
                f"{fixed[0]:.1f} s (pairs {fixed[1]:.1f} to {fixed[2]:.1f} s)",
                fixed[0] <= bound,
            )
        )
    results.series["steps"] = {
        "in process": bm.median([r.wall for r in a]),
        "airflow dags test": bm.median([r.wall for r in b]),
    }
    results.series["own"] = own
    return own


def windows(project: Project, day: date, sizes: list[int], repeat: int, results: Results) -> None:
    """Each training window end to end in one process, the windows in turn."""
    warm_raw(project, day, max(sizes))
    params = {w: project.params(w) for w in sizes}
    records: dict[int, list[dict[str, dict]]] = {w: [] for w in sizes}

    def case(w: int):
        def measure() -> bm.Run:
            measured, parsed = project.run_driver("all", day, params[w])
            records[w].append(parsed)
            return measured

        return measure

    runs = bm.in_turn({w: case(w) for w in sizes}, repeat, prepare=lambda _: project.clean())
    series = {}
    for w in sizes:
        rows = flight_rows(records[w][-1])
        med, low, high = bm.spread([r.wall for r in runs[w]])
        peak = max(r.peak_mib for r in runs[w])
        results.add(
            Row(
                "windows",
                f"{w}-day window to {day}: end to end, one process",
                med,
                low,
                high,
                peak,
                rows / med if rows else None,
                f"{rows:,} flights" if rows else "",
            )
        )
        own = step_rows("windows", f"{w} days", records[w], rows, results)
        step_peak = max(r[s]["peak_mib"] for r in records[w] for s in r)
        series[w] = {"rows": rows, "wall": med, "own": own, "peak": peak, "step_peak": step_peak}
    results.series["windows"] = series
    big = max(sizes)
    s = series[big]
    train = s["own"].get("train", float("nan"))
    bound = 1.2 * train + 2.0
    worst = max(v["step_peak"] for v in series.values())
    results.target(
        Target(
            f"{big}-day window end to end ≤ 1.2 x train + 2 s, peak RSS ≤ 1 GB every step",
            f"{s['wall']:.1f} s against {bound:.1f} s (train {train:.1f} s); largest step peak "
            f"{worst:.0f} MiB ({worst * bm.MIB / 1e9:.2f} GB)",
            s["wall"] <= bound and worst <= GB_MIB,
        )
    )
    linear_target(series, results)


def linear_target(series: dict[int, dict], results: Results) -> None:
    """Cost linear in rows: the seconds per extra 1,000 rows between the two largest
    windows at most 1.5 times that between the two smallest (a superlinear step shows as a
    growing slope)."""
    sizes = sorted(w for w in series if series[w]["rows"])
    if len(sizes) < 3:
        results.target(Target("cost linear in rows", "needs 3 or more windows", None))
        return

    def slope(a: int, b: int) -> float:
        return (
            (series[b]["wall"] - series[a]["wall"]) / (series[b]["rows"] - series[a]["rows"]) * 1e3
        )

    first, last = slope(sizes[0], sizes[1]), slope(sizes[-2], sizes[-1])
    ratio = last / first if first > 0 else float("inf")
    results.target(
        Target(
            "cost linear in rows (end to end)",
            f"{first:.3f} s per 1,000 rows ({sizes[0]}→{sizes[1]} days), {last:.3f} "
            f"({sizes[-2]}→{sizes[-1]}): ratio {ratio:.2f}",
            ratio <= 1.5,
            "criterion: ratio of the slopes ≤ 1.5",
        )
    )


def nightly(
    project: Project, day: date, window: int, small: int, repeat: int, results: Results
) -> None:
    """Ingest of one new day with ``window - 1`` days on disk; and featurize of a nightly
    run (the previous day's run done first) at the largest and the smallest window."""
    from flight_delays.store import artifacts
    from flight_delays.store.config import ProjectPaths

    paths = ProjectPaths(project.root)
    warm_raw(project, day - timedelta(days=1), window - 1)
    params = project.params(window)

    def forget_day(_: str) -> None:
        for folder in (
            artifacts.RAW_PARTITION.path(paths.root, day),
            artifacts.QUARANTINE.path(paths.root, day),
        ):
            shutil.rmtree(folder, ignore_errors=True)

    cli = [
        PYTHON,
        "-m",
        "flight_delays",
        "run",
        "ingest",
        "--day",
        day.isoformat(),
        "--root",
        str(project.root),
        "--params",
        str(params),
    ]
    runs = bm.in_turn({"ingest": lambda: bm.run(cli, project.env())}, repeat, prepare=forget_day)
    med, low, high = bm.spread([r.wall for r in runs["ingest"]])
    results.add(
        Row(
            "nightly",
            f"ingest of {day} with {window - 1} days present "
            "(`python -m flight_delays run ingest`)",
            med,
            low,
            high,
            max(r.peak_mib for r in runs["ingest"]),
            note="whole process",
        )
    )

    # The night before must fit in the data too: a 365-day window ending 2013-12-30 would
    # start in 2012, so the large case is one day shorter.
    large = window - 1
    featurize: dict[int, list[float]] = {large: [], small: []}

    def case(w: int):
        def measure() -> bm.Run:
            project.clean()
            p = project.params(w)
            project.run_driver("ingest..featurize", day - timedelta(days=1), p)  # last night
            measured, parsed = project.run_driver("ingest..featurize", day, p)
            featurize[w].append(parsed["featurize"]["seconds"])
            return measured

        return measure

    bm.in_turn({large: case(large), small: case(small)}, repeat)
    for w in (small, large):
        med, low, high = bm.spread(featurize[w])
        results.add(
            Row(
                "nightly",
                f"featurize of {day}, {w}-day window, the night before done",
                med,
                low,
                high,
                note="own time",
            )
        )
    ratio = bm.median(featurize[large]) / bm.median(featurize[small])
    results.target(
        Target(
            "featurize work per run independent of the window",
            f"{large}-day / {small}-day featurize time: {ratio:.2f}",
            ratio <= 2.0,
            f"criterion: ≤ 2 (the window holds {large / small:.0f}x the days)",
        )
    )


# A DAG file imported in a fresh interpreter, timed from inside it (interpreter start-up
# left out).
DAG_IMPORT = """
import runpy, time
t = time.perf_counter()
runpy.run_path({dag!r})
print(f"elapsed={{time.perf_counter() - t:.3f}}")
"""

EMPTY_DAG = """\
from airflow.sdk import DAG

with DAG(dag_id="empty", schedule=None):
    pass
"""


def dag_import(project: Project, repeat: int, results: Results) -> None:
    """The DAG file against an empty DAG file, each imported (``runpy``) in a fresh
    interpreter, in turn."""
    empty = project.work / "empty_dag.py"
    empty.write_text(EMPTY_DAG)
    env = project.env()
    cases = {
        "project DAG": [
            PYTHON,
            "-c",
            DAG_IMPORT.format(dag=str(REPO / "dags" / "flight_delays_pipeline.py")),
        ],
        "empty DAG": [PYTHON, "-c", DAG_IMPORT.format(dag=str(empty))],
    }
    runs = bm.in_turn({n: (lambda c=c: bm.run(c, env)) for n, c in cases.items()}, repeat)

    def elapsed(run: bm.Run) -> float:
        return float(run.output.rsplit("elapsed=", 1)[1].split()[0])

    for name, measured in runs.items():
        med, low, high = bm.spread([elapsed(r) for r in measured])
        results.add(
            Row(
                "dag import",
                f"{name}: runpy in a fresh interpreter",
                med,
                low,
                high,
                max(r.peak_mib for r in measured),
                note=f"whole process {bm.median([r.wall for r in measured]):.2f} s",
            )
        )
    diff = bm.paired(
        [elapsed(r) for r in runs["project DAG"]], [elapsed(r) for r in runs["empty DAG"]]
    )
    results.add(Row("dag import", "project DAG - empty DAG", *diff, note="pair by pair"))
