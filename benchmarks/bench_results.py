"""What the benchmark harness collects: rows of the results table, the targets of issue
11 with their verdicts, and the series the chart draws."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

#: The nightly DAG's steps, in order: what the in-process sections time one by one.
STEPS = ("ingest", "featurize", "split", "train", "score", "chart")

ROW_COLUMNS = (
    "section",
    "case",
    "median (s)",
    "min / max (s)",
    "peak RSS (MiB)",
    "rows/s",
    "note",
)
TARGET_COLUMNS = ("target", "measured", "met")


@dataclass(frozen=True)
class Row:
    section: str
    case: str
    seconds: float | None  # the median
    low: float | None = None
    high: float | None = None
    peak_mib: float | None = None
    rows_per_s: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        spread = (
            "" if self.low is None or self.high is None else f"{self.low:.2f} / {self.high:.2f}"
        )
        return [
            self.section,
            self.case,
            "" if self.seconds is None else f"{self.seconds:.2f}",
            spread,
            "" if self.peak_mib is None else f"{self.peak_mib:.0f}",
            "" if self.rows_per_s is None else f"{self.rows_per_s:,.0f}",
            self.note,
        ]


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured in this run
    why: str = ""

    def cells(self) -> list[str]:
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[self.met]
        return [self.name, self.measured, f"{verdict}{f': {self.why}' if self.why else ''}"]


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    # Series for the chart, by panel: {"steps": {...}, "windows": {...}, ...}
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def target(self, target: Target) -> None:
        self.targets.append(target)


def step_rows(
    section: str, label: str, records: list[dict[str, dict]], rows: int | None, results: Results
) -> dict[str, float]:
    """One row per step: its own time (median over the runs) and peak RSS (max)."""
    own = {}
    for step in STEPS:
        seconds = [r[step]["seconds"] for r in records if step in r]
        if not seconds:
            continue
        med, low, high = statistics.median(seconds), min(seconds), max(seconds)
        own[step] = med
        peak = max(r[step]["peak_mib"] for r in records if step in r)
        results.add(
            Row(
                section,
                f"{label}: {step}",
                med,
                low,
                high,
                peak,
                rows / med if rows and med > 0 else None,
                "own time, in one process",
            )
        )
    return own


def flight_rows(records: dict[str, dict]) -> int | None:
    result = records.get("ingest", {}).get("result")
    return (
        int(result["flight_rows"]) if isinstance(result, dict) and "flight_rows" in result else None
    )
