"""docs/benchmarks.md is a reference page: after its title and one sentence comes the
headline table, before any section; every row says when and how its figure was measured,
names the command that measures it again and links the section with the details, in
benchmarks.md or in the log page of dated runs, docs/benchmarks-log.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGE = DOCS / "benchmarks.md"
LOG = DOCS / "benchmarks-log.md"
HEADER = ["area", "figure", "measured", "reproduce", "details"]
# what the headline table covers (issue 21): a row whose area starts with each
AREAS = (
    "model quality",
    "run time",
    "memory",
    "the fresh machine",
    "live stack",
    "compose stack",
)
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated ones."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def headline() -> tuple[list[str], list[list[str]], list[str]]:
    """(the lines before the table, the table's rows with the header first, the lines
    before the table that start a section)."""
    lines = PAGE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    rows = [cells(line) for line in lines[start:end]]
    return lines[:start], [rows[0], *rows[2:]], [ln for ln in lines[:start] if ln.startswith("##")]


def test_the_page_starts_with_its_title_one_sentence_and_the_headline_table():
    before, rows, sections = headline()
    assert before[0] == "# Benchmarks"
    assert not sections, f"the headline table must come before the first section: {sections}"
    prose = [line for line in before[1:] if line.strip()]
    assert len(prose) == 1 and prose[0].rstrip().endswith("."), prose
    assert rows[0] == HEADER, rows[0]
    assert len(rows) > len(AREAS)


def test_the_headline_table_covers_every_area():
    _, rows, _ = headline()
    areas = [row[0].lower() for row in rows[1:]]
    for area in AREAS:
        assert any(a.startswith(area) for a in areas), (area, areas)


@pytest.mark.parametrize("row", headline()[1][1:], ids=lambda row: row[0])
def test_each_row_has_its_figure_conditions_command_and_a_section_that_exists(row):
    assert len(row) == len(HEADER), row
    _area, figure, measured, reproduce, details = row
    assert re.search(r"\*\*[^*]+\*\*", figure), f"no figure in bold: {figure}"
    assert re.search(r"20\d\d-\d\d-\d\d|issue \d+", measured), f"no date or issue: {measured}"
    assert re.search(r"`[^`]+`", reproduce), f"no command: {reproduce}"
    links = LINK.findall(details)
    assert links, f"no link to the details: {details}"
    for target in links:
        assert_resolves(target)


def assert_resolves(target: str) -> None:
    page, _, fragment = target.partition("#")
    text = {"": PAGE, PAGE.name: PAGE, LOG.name: LOG}[page].read_text()
    if fragment:
        assert fragment in anchors(text), f"{target}: no such section"


def test_every_link_between_the_two_pages_resolves():
    for text in (PAGE.read_text(), LOG.read_text()):
        for target in LINK.findall(text):
            if target.partition("#")[0] in ("", PAGE.name, LOG.name):
                assert_resolves(target)


def test_anchors_follow_github():
    assert anchor("Served step-down (issue 18): a served score") == (
        "served-step-down-issue-18-a-served-score"
    )
    assert anchor("2026-11-28 15:20 (vm, load 0.81)") == "2026-11-28-1520-vm-load-081"
    assert anchor("The fresh machine: `make run` from a clone") == (
        "the-fresh-machine-make-run-from-a-clone"
    )


def test_the_dated_runs_are_in_the_log_newest_first_and_not_in_the_reference():
    dated = r"^### (\d{4}-\d\d-\d\d \d\d:\d\d) "
    assert not re.findall(dated, PAGE.read_text(), flags=re.M), "a dated run in benchmarks.md"
    runs = LOG.read_text().split("\n## Benchmark harness runs\n", 1)[1].split("\n## ", 1)[0]
    stamps = re.findall(dated, runs, flags=re.M)
    assert stamps and stamps == sorted(stamps, reverse=True), stamps
