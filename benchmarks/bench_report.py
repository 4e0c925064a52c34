"""The harness's output: the results table, the targets table, the markdown subsection it
adds to docs/benchmarks.md (section "Benchmark harness", newest run first, older runs
never rewritten) and the chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from bench_results import ROW_COLUMNS, TARGET_COLUMNS, Results

SECTION = "## Benchmark harness"
INTRO = """\
`benchmarks/harness.py` measures, in one run on one machine, each comparison side by
side (cases in turn, A B A B ..., medians; the machine is shared and noisy):

- **steps**: the six steps in one process (the `run()` functions `python -m flight_delays
  run all` calls), `airflow dags test` of the same run (`make run`'s engine, with the
  Makefile's settings and a project-local SQLite Airflow home) and, with the live stack,
  REST-triggered runs of the same day and window;
- **windows**: 30, 90, 180 and 365 days ending 2013-12-31, end to end in one process, with
  each step's own time, peak RSS and rows (flights of the window) per second;
- **nightly**: ingest of one new day with 364 on disk (a fresh process), and featurize of a
  nightly run (the night before run first) at 364 and 30 days (364: the night
  before of a 365-day window would start in 2012);
- **dag-import**: the DAG file against an empty DAG file, each `runpy` in a fresh
  interpreter;
- **backfill**: 30 days on the live stack with 1, 2 and 4 active runs. The limit is the
  backfill's own (`airflow backfill create --max-active-runs`, `POST /api/v2/backfills`
  `max_active_runs`): Airflow 3.3's scheduler checks a backfill's runs against it, not
  against the DAG's `max_active_runs` (2), so the DAG file is not edited. Tasks are still
  bound by `parallelism` and `max_active_tasks_per_dag` (4, deploy/airflow.env). Each
  setting backfills runs of its own (the 30 days to the steps' day, then the 30 before,
  then the 30 before those): a reprocessed run keeps its run id, and rerunning it after
  its artifacts were deleted is other work;
- **ingest**: the ingest step for 30 days into a fresh root, from SQLite and from
  PostgreSQL, against a bare `pandas.read_sql` of the same queries (rows of flights and
  weather per second).

The live stack is a private `deploy/stack/stack.py up` (free ports, state in /tmp, its
warehouse seeded with 2013 days), stopped at the end; its idle memory is the sum of every
component's processes, supervisord and PostgreSQL. Orchestration overhead per task: task
duration (REST task instances) minus the step's own time in one process against the same
warehouse, plus the gaps between tasks, over the six tasks.

```
.venv/bin/python benchmarks/harness.py              # everything: about 1.5 h, 2 cores
.venv/bin/python benchmarks/harness.py --no-stack   # without the live stack: ~40 min
.venv/bin/python benchmarks/harness.py --only steps,backfill --repeat 3
.venv/bin/python benchmarks/harness.py --quick --out /tmp/bench   # tiny, for tests
```

Each run prints its tables, adds a dated subsection here (newest first; older runs are
never rewritten) and draws a chart into `docs/img/`. Wall times are whole processes
(imports included) unless the row says "own time" (the step's `run()` call alone); peak
RSS is the process tree's (summed, sampled every 50 ms), or, for a step, the one
process's high-water mark while it ran. The criteria of the targets that issue 11 states
loosely: "cost linear in rows" is met when the end-to-end seconds per extra 1,000 rows
between the two largest windows are at most 1.5 times those between the two smallest;
"featurize work independent of the window" when a nightly featurize at 364 days takes at
most twice its time at 30 days (the window holds 12 times the days); a GB is 10^9
bytes. Train speed has a table of its own (issue 11's train target).
"""


def markdown_table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(list(header)), line(["---"] * len(header)), *map(line, rows)])


def machine_line(machine: dict[str, str]) -> str:
    return (
        f"Machine: {machine['host']}: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram']} RAM, {machine['os']}, Python {machine['python']}; load average "
        f"at start {machine['load']} (1/5/15 min); threads: {machine['threads']}."
    )


def subsection(
    title: str, machine: dict[str, str], settings: str, results: Results, chart: str | None
) -> str:
    parts = [f"### {title}", "", machine_line(machine), "", settings, ""]
    if results.targets:
        parts += [
            "Targets (issue 11):",
            "",
            markdown_table(TARGET_COLUMNS, [t.cells() for t in results.targets]),
            "",
        ]
    parts += [markdown_table(ROW_COLUMNS, [r.cells() for r in results.rows]), ""]
    parts += [f"- {note}" for note in results.notes]
    if results.notes:
        parts.append("")
    if chart:
        parts += [f"![Benchmark harness, {title}]({chart})", ""]
    return "\n".join(parts)


def insert_run(doc: str, text: str) -> str:
    """``doc`` with ``text`` as the newest subsection of the harness section (made, with
    its introduction, at the end of the document the first time). Older runs stay as
    they are, below it."""
    if SECTION not in doc.splitlines():
        return doc.rstrip("\n") + f"\n\n{SECTION}\n{INTRO}\n{text.rstrip()}\n"
    lines = doc.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip("\n") == SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    first_run = next((i for i in range(start + 1, end) if lines[i].startswith("### ")), end)
    if not lines[first_run - 1].endswith("\n"):
        lines[first_run - 1] += "\n"
    block = text.rstrip("\n") + "\n\n"
    if lines[first_run - 1].strip():
        block = "\n" + block
    return "".join(lines[:first_run]) + block + "".join(lines[first_run:])


def chart(results: Results, path: Path, title: str) -> bool:
    """The chart of the run: one panel per section measured. False: nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("steps", "windows", "backfill", "ingest") if results.series.get(p)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        data = results.series[panel]
        if panel == "steps":
            ax.bar(
                list(data),
                list(data.values()),
                color=["#4c72b0", "#dd8452", "#55a868"][: len(data)],
            )
            ax.set_ylabel("wall time (s)")
            ax.set_title("One run: in process vs Airflow")
            ax.tick_params(axis="x", labelrotation=15)
        elif panel == "windows":
            sizes = sorted(data)
            bottom = [0.0] * len(sizes)
            for step in ("ingest", "featurize", "split", "train", "score", "chart"):
                heights = [data[w]["own"].get(step, 0.0) for w in sizes]
                ax.bar([str(w) for w in sizes], heights, bottom=bottom, label=step)
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
            ax.set_xlabel("training window (days)")
            ax.set_ylabel("own time per step (s)")
            ax.set_title("Steps by window (one process)")
            ax.legend(fontsize=7)
            twin = ax.twinx()
            twin.plot([str(w) for w in sizes], [data[w]["step_peak"] for w in sizes], "k.-")
            twin.set_ylabel("largest step peak RSS (MiB)")
            twin.set_ylim(bottom=0)
        elif panel == "backfill":
            ax.plot([str(k) for k in data], list(data.values()), "o-")
            ax.set_xlabel("max active runs")
            ax.set_ylabel("backfill wall time (s)")
            ax.set_title("Backfill on the live stack")
        else:
            names = list(data)
            x = range(len(names))
            ax.bar(
                [i - 0.2 for i in x], [data[n]["ingest"] for n in names], 0.4, label="ingest step"
            )
            ax.bar(
                [i + 0.2 for i in x],
                [data[n]["read_sql"] for n in names],
                0.4,
                label="pandas.read_sql",
            )
            ax.set_xticks(list(x), names)
            ax.set_ylabel("rows per second")
            ax.set_title("Ingest throughput")
            ax.legend(fontsize=7)
    fig.suptitle(f"Benchmark harness, {title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
