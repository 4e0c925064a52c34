"""Unit tests for flight_delays.ingest: missing-day fetching, write-once partitions, manifest."""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import create_engine, select, text

from flight_delays import ingest
from flight_delays.base import schema
from flight_delays.intake import raw_partitions, source
from flight_delays.store import io

SEEDED = (date(2013, 1, 1), date(2013, 1, 5))  # the source holds these days (cycle 0)


@pytest.fixture(scope="module")
def source_db(seeded_warehouse) -> Path:
    """A SQLite warehouse holding 2013-01-01 .. 2013-01-05 (cycle 0, no shift)."""
    return seeded_warehouse(*SEEDED)


@pytest.fixture
def source_url(source_db: Path, tmp_path: Path) -> str:
    """A private copy of the warehouse, so a test may edit it."""
    copy_path = tmp_path / "warehouse.sqlite"
    shutil.copy(source_db, copy_path)
    return f"sqlite:///{copy_path}"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root whose parameters ask for a three-day window."""
    project = tmp_path / "project"
    (project / "include").mkdir(parents=True)
    (project / "include" / "params.yaml").write_text(
        "ingest:\n  window_days: 3\nsplit:\n  holdout_days: 1\n"
    )
    return project


def partition(root: Path, day: str) -> Path:
    return root / "data" / "raw" / f"ds={day}"


def fingerprint(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Inode, modification time and bytes of every file: a rewrite changes at least one."""
    return {
        f.name: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes())
        for f in sorted(folder.iterdir())
    }


# --- pure core ---------------------------------------------------------------------------
def test_missing_days_keeps_window_order_and_skips_existing() -> None:
    window = [date(2013, 1, d) for d in (1, 2, 3, 4)]
    existing = [date(2013, 1, 3), date(2012, 12, 31)]

    assert raw_partitions.missing_days(window, existing) == [date(2013, 1, d) for d in (1, 2, 4)]
    assert raw_partitions.missing_days(window, window) == []
    assert raw_partitions.missing_days(window, iter([])) == window


def test_build_manifest_lists_every_day_and_does_not_mutate_inputs() -> None:
    window = [date(2013, 1, 1), date(2013, 1, 2)]
    partitions = [
        {
            "day": d,
            "path": f"/raw/ds={d}",
            "flight_rows": 10 * (i + 1),
            "weather_rows": 24,
            "sha256": {"weather.parquet": "b" * 64, "flights.parquet": "a" * 64},
        }
        for i, d in enumerate(window)
    ]
    before = copy.deepcopy(partitions)

    manifest = ingest.build_manifest(
        date(2013, 1, 2), window, partitions, [date(2013, 1, 2)], "sqlite:///w.sqlite"
    )

    assert partitions == before
    assert manifest["day"] == "2013-01-02"
    assert (manifest["window_start"], manifest["window_end"]) == ("2013-01-01", "2013-01-02")
    assert manifest["window_days"] == 2
    assert manifest["fetched"] == ["2013-01-02"]
    assert [p["fetched"] for p in manifest["days"]] == [False, True]
    assert (manifest["flight_rows"], manifest["weather_rows"]) == (30, 48)
    assert manifest["days"][0]["sha256"] == {
        "flights.parquet": "a" * 64,
        "weather.parquet": "b" * 64,
    }
    json.dumps(manifest)  # plain JSON: no dates or numpy values left
    with pytest.raises(ValueError, match="2013-01-03"):
        ingest.build_manifest(
            date(2013, 1, 3), [*window, date(2013, 1, 3)], partitions, [], "sqlite:///w.sqlite"
        )


# --- run -----------------------------------------------------------------------------------
def test_run_fetches_the_window_then_only_missing_days(
    root: Path, source_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[date] = []
    real_read_days = source.read_days

    def spy(engine: Any, days: Any, tables: Any = None) -> Any:
        read.extend(days)
        return real_read_days(engine, days, tables)

    monkeypatch.setattr(source, "read_days", spy)

    first = ingest.run("2013-01-04", root=root, source_url=source_url)
    kept = {d: fingerprint(partition(root, d)) for d in ("2013-01-02", "2013-01-03", "2013-01-04")}
    again = ingest.run(date(2013, 1, 4), root=root, source_url=source_url)
    later = ingest.run("2013-01-05", root=root, source_url=source_url)

    # The source is read once per day, ever.
    assert read == [date(2013, 1, d) for d in (2, 3, 4, 5)]
    assert (first["days"], first["fetched"]) == (3, 3)
    assert (again["days"], again["fetched"]) == (3, 0)
    assert (later["days"], later["fetched"]) == (3, 1)
    assert again["flight_rows"] == first["flight_rows"] > 0
    for day, prints in kept.items():
        assert fingerprint(partition(root, day)) == prints, day
    assert not partition(root, "2013-01-01").exists()  # outside every window asked for
    assert sorted(p.name for p in (root / "data" / "raw").iterdir()) == [
        "ds=2013-01-02",
        "ds=2013-01-03",
        "ds=2013-01-04",
        "ds=2013-01-05",
    ]  # no temporary folders left behind


def _one_day_select(engine: Any, table: str, key: list[str], day: date) -> pd.DataFrame:
    """The rows of one day as a plain query gives them: the contract's columns, by key."""
    contract = source.FLIGHTS if table == source.FLIGHTS.name else source.WEATHER
    columns = [c.name for c in contract.columns]
    reflected = source.reflect_source(engine)[table]
    query = (
        select(*(reflected.c[c] for c in columns))
        .where(reflected.c[schema.DAY] == day)
        .order_by(*(reflected.c[k] for k in key))
    )
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query).all()]
    return pd.DataFrame(rows, columns=columns)


def test_read_days_gives_each_day_what_a_one_day_query_gives(source_url: str) -> None:
    engine = create_engine(source_url)
    try:
        days = [date(2013, 1, 4), date(2013, 1, 2), date(2013, 1, 9)]  # the 9th: no rows
        together = source.read_days(engine, days)
        assert list(together) == sorted(days)
        for day in days:
            for got, (table, key) in zip(
                together[day],
                [
                    (source.FLIGHTS.name, schema.FLIGHT_KEY),
                    (source.WEATHER.name, schema.WEATHER_KEY),
                ],
                strict=True,
            ):
                want = _one_day_select(engine, table, key, day)
                pd.testing.assert_frame_equal(got, want, check_dtype=not want.empty)
        assert together[date(2013, 1, 2)][0].shape[0] > 500
        flights, weather = together[date(2013, 1, 9)]
        assert flights.empty and weather.empty
        assert schema.DAY in flights.columns and schema.DAY in weather.columns
    finally:
        engine.dispose()


def select_count(work: Any) -> int:
    """How many SELECT statements ``work()`` sends to any database."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        work()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    return len(sent)


def test_the_missing_days_cost_the_same_queries_as_one_day(
    root: Path, source_url: str, tmp_path: Path
) -> None:
    # Three missing days (a first run) against one (a nightly run): one query a table
    # for the range, not one a day.
    three = select_count(lambda: ingest.run("2013-01-04", root=root, source_url=source_url))
    nightly = tmp_path / "nightly"
    shutil.copytree(root / "include", nightly / "include")
    ingest.run("2013-01-03", root=nightly, source_url=source_url)
    one = select_count(lambda: ingest.run("2013-01-04", root=nightly, source_url=source_url))
    assert three == one
    assert [p.name for p in sorted((nightly / "data" / "raw").iterdir())] == [
        f"ds=2013-01-0{d}" for d in (1, 2, 3, 4)
    ]


def test_raw_partition_holds_the_day_in_the_contract_columns(root: Path, source_url: str) -> None:
    ingest.run("2013-01-03", root=root, source_url=source_url)

    flights = pd.read_parquet(partition(root, "2013-01-03") / "flights.parquet")
    weather = pd.read_parquet(partition(root, "2013-01-03") / "weather.parquet")

    assert list(flights.columns) == schema.FLIGHT_COLUMNS
    assert list(weather.columns) == schema.WEATHER_COLUMNS
    assert flights[schema.DAY].dtype == "datetime64[ns]"
    assert (flights[schema.DAY] == pd.Timestamp("2013-01-03")).all()
    assert (weather[schema.DAY] == pd.Timestamp("2013-01-03")).all()
    engine = create_engine(source_url)
    try:
        with engine.connect() as conn:
            expected = conn.execute(
                text("SELECT COUNT(*) FROM flights WHERE local_date = '2013-01-03'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert len(flights) == expected


def test_manifest_records_rows_hashes_and_fetched_days(root: Path, source_url: str) -> None:
    ingest.run("2013-01-04", root=root, source_url=source_url)
    result = ingest.run("2013-01-05", root=root, source_url=source_url)

    path = root / "data" / "interim" / "ds=2013-01-05" / "manifest.json"
    assert result["manifest"] == str(path)
    manifest = json.loads(path.read_text())
    assert manifest["day"] == "2013-01-05"
    assert (manifest["window_start"], manifest["window_end"]) == ("2013-01-03", "2013-01-05")
    assert manifest["fetched"] == ["2013-01-05"]
    assert manifest["source"] == source_url
    assert [p["day"] for p in manifest["days"]] == ["2013-01-03", "2013-01-04", "2013-01-05"]
    for entry in manifest["days"]:
        folder = Path(entry["path"])
        assert folder == partition(root, entry["day"])
        flights = pd.read_parquet(folder / "flights.parquet")
        weather = pd.read_parquet(folder / "weather.parquet")
        assert (entry["flight_rows"], entry["weather_rows"]) == (len(flights), len(weather))
        assert entry["sha256"] == {
            name: io.sha256(folder / name) for name in ("flights.parquet", "weather.parquet")
        }
    assert manifest["flight_rows"] == result["flight_rows"]
    assert result["flight_rows"] == sum(p["flight_rows"] for p in manifest["days"])


def test_a_day_without_flights_fails_naming_it_and_writes_nothing(
    root: Path, source_url: str
) -> None:
    # Window 2013-01-05 .. 2013-01-07: the source stops at 2013-01-05.
    with pytest.raises(raw_partitions.NoFlightsError) as caught:
        ingest.run("2013-01-07", root=root, source_url=source_url)

    message = str(caught.value)
    assert "2013-01-06" in message and source_url in message
    assert "--cycles 0" in message  # the demo hint names the cycle that covers the day
    assert not partition(root, "2013-01-06").exists()
    assert not partition(root, "2013-01-07").exists()
    assert not (root / "data" / "interim" / "ds=2013-01-07").exists()
    assert [p.name for p in (root / "data" / "raw").iterdir()] == ["ds=2013-01-05"]


def test_a_day_without_weather_gets_an_empty_weather_file(
    root: Path, source_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(source_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM weather WHERE local_date = '2013-01-02'"))
    finally:
        engine.dispose()

    with caplog.at_level(logging.WARNING, logger="flight_delays.intake.raw_partitions"):
        ingest.run("2013-01-03", root=root, source_url=source_url)

    weather = pd.read_parquet(partition(root, "2013-01-02") / "weather.parquet")
    assert weather.empty and list(weather.columns) == schema.WEATHER_COLUMNS
    assert any("2013-01-02" in r.getMessage() for r in caplog.records)
    assert not pd.read_parquet(partition(root, "2013-01-03") / "weather.parquet").empty


def test_the_source_url_comes_from_the_settings(
    root: Path, source_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLIGHT_DELAYS_SOURCE_URL", source_url)
    result = ingest.run("2013-01-03", root=root)
    assert result["fetched"] == 3


def test_a_missing_source_fails_clearly(root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "absent.sqlite"
    with pytest.raises(source.SourceSchemaError, match=r"absent\.sqlite"):
        ingest.run("2013-01-03", root=root, source_url=f"sqlite:///{missing}")
    assert not missing.exists()


def test_a_broken_partition_is_reported_not_rewritten(root: Path, source_url: str) -> None:
    broken = partition(root, "2013-01-02")
    broken.mkdir(parents=True)
    (broken / "flights.parquet").write_bytes(b"left by hand")

    with pytest.raises(raw_partitions.BrokenPartitionError, match=r"lacks weather\.parquet"):
        ingest.run("2013-01-03", root=root, source_url=source_url)
    assert (broken / "flights.parquet").read_bytes() == b"left by hand"

    (broken / "weather.parquet").write_bytes(b"not parquet either")
    with pytest.raises(
        raw_partitions.BrokenPartitionError, match=r"flights\.parquet is not readable"
    ):
        ingest.run("2013-01-03", root=root, source_url=source_url)
    assert (broken / "flights.parquet").read_bytes() == b"left by hand"


# --- write_partition -----------------------------------------------------------------------
def tiny_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    flights = pd.DataFrame({c: [1] for c in schema.FLIGHT_COLUMNS})
    weather = pd.DataFrame({c: [] for c in schema.WEATHER_COLUMNS})
    return flights, weather


def test_write_partition_never_touches_an_existing_partition(tmp_path: Path) -> None:
    final = tmp_path / "raw" / "ds=2013-01-01"
    assert raw_partitions.write_partition(final, *tiny_frames()) is True
    before = fingerprint(final)

    assert raw_partitions.write_partition(final, *tiny_frames()) is False
    assert fingerprint(final) == before


def test_write_partition_discards_its_copy_when_a_concurrent_run_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "raw" / "ds=2013-01-01"
    real_rename = os.rename

    def rename_after_a_rival(src: str | Path, dst: str | Path) -> None:
        # The rival renames its complete partition in between our check and our rename.
        Path(dst).mkdir()
        (Path(dst) / "flights.parquet").write_bytes(b"rival")
        real_rename(src, dst)

    monkeypatch.setattr(raw_partitions.os, "rename", rename_after_a_rival)

    assert raw_partitions.write_partition(final, *tiny_frames()) is False
    assert [p.name for p in final.iterdir()] == ["flights.parquet"]
    assert (final / "flights.parquet").read_bytes() == b"rival"
    assert [p.name for p in final.parent.iterdir()] == ["ds=2013-01-01"]  # ours is gone
