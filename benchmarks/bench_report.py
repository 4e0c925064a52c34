"""The harness's output: the results table, the targets table, the markdown subsection it
adds to docs/benchmarks-log.md (section "Benchmark harness runs", newest run first, older
runs never rewritten; docs/benchmarks.md keeps the method and the headline figures) and
the chart (PNG)."""

from __future__ import annotations

from pathlib import Path

from bench_results import ROW_COLUMNS, TARGET_COLUMNS, Results

LOG = "benchmarks-log.md"  # the page of the dated runs, in docs/ (or --out)
SECTION = "## Benchmark harness runs"
INTRO = """\
Dated runs of `benchmarks/harness.py`, newest first; what each row measures and how:
docs/benchmarks.md, "Benchmark harness".
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
            cases = {
                "ingest": "ingest step",
                "read_sql": "pandas.read_sql, a query a day",
                "read_days": "range read, a query a table",
                "read_rows": "the range read row by row (no COPY)",
            }
            width = 0.8 / len(cases)
            for k, (case, label) in enumerate(cases.items()):
                ax.bar(
                    [i + (k - 1.5) * width for i in range(len(names))],
                    [data[n].get(case, 0) for n in names],
                    width,
                    label=label,
                )
            ax.set_xticks(list(range(len(names))), names)
            ax.set_ylabel("rows per second")
            ax.set_title("Ingest throughput")
            ax.legend(fontsize=7)
    fig.suptitle(f"Benchmark harness, {title}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
