"""Per-day feature partitions (flight_delays.model.day_features, flight_features.window_features):
the window's table put together from day partitions is today's build_features on the
window, row for row and dtype for dtype; a partition is reused only when it was made
from the same raw files by the same code; a corrupt one is computed again with a
warning; concurrent writers of a day are safe."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import pandas as pd
import pyarrow
import pytest

from flight_delays import featurize, ingest
from flight_delays.base import schema
from flight_delays.intake import raw_partitions
from flight_delays.model import day_features, flight_features
from flight_delays.store import artifacts, io
from flight_delays.store.config import PARAMS_RELATIVE, ProjectPaths

FIRST = date(2013, 3, 7)
LAST = date(2013, 3, 14)  # holds 2013-03-10, the spring DST change (a missing hour)
WINDOW = 5
PARAMS = f"ingest: {{window_days: {WINDOW}}}\nsplit: {{holdout_days: 1}}\n"


@pytest.fixture(scope="module")
def warehouse(seeded_warehouse) -> Path:
    return seeded_warehouse(FIRST, LAST)


@pytest.fixture
def home(warehouse: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root on local folders whose raw partitions cover FIRST..LAST."""
    monkeypatch.delenv("FLIGHT_DELAYS_STORAGE_URL", raising=False)
    (tmp_path / "include").mkdir()
    (tmp_path / PARAMS_RELATIVE).write_text(PARAMS)
    db = artifacts.SOURCE_DB.path(tmp_path)
    db.parent.mkdir(parents=True)
    shutil.copy(warehouse, db)
    return tmp_path


def days_of(end: date) -> list[date]:
    return [end - timedelta(days=k) for k in range(WINDOW - 1, -1, -1)]


def whole_window(root: Path, end: date) -> tuple[pd.DataFrame, dict]:
    """Today's computation before day partitions: featurize the window's raw rows at once."""
    flights, weather = (
        pd.concat([pd.read_parquet(e.path(root, d)) for d in days_of(end)], ignore_index=True)
        for e in day_features.RAW_FILES
    )
    return flight_features.featurize_rows(flights, weather)


def run(home: Path, day: date) -> dict:
    ingest.run(day, root=home)
    return featurize.run(day, root=home)


def written(home: Path, day: date) -> pd.DataFrame:
    return pd.read_parquet(artifacts.FEATURES.path(home, day))


def assert_identical(home: Path, day: date, result: dict) -> None:
    expected, counts = whole_window(home, day)
    got = written(home, day)
    pd.testing.assert_frame_equal(got, expected, check_dtype=True, check_exact=True)
    assert list(got.index) == list(range(len(got)))
    counts.pop("contract")
    assert {k: result[k] for k in counts} == counts


def test_day_partitions_give_the_window_table_of_build_features(home: Path) -> None:
    day = LAST
    result = run(home, day)
    assert result["days_computed"] == WINDOW and result["days_reused"] == 0
    assert_identical(home, day, result)
    # the same bytes as the run artifact written from build_features directly
    expected, _ = whole_window(home, day)
    direct = home / "direct.parquet"
    expected.to_parquet(direct, index=False)
    assert artifacts.FEATURES.path(home, day).read_bytes() == direct.read_bytes()
    assert artifacts.DAY_FEATURES.days(home) == days_of(day)


def test_a_cold_window_is_computed_a_batch_at_a_time_with_the_same_table(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The memory of a cold window is bounded by a batch of days, not the window.
    monkeypatch.setattr(day_features, "BATCH_DAYS", 2)
    calls: list[int] = []
    compute = flight_features.featurize_by_day

    def counted(flights, weather, days):
        calls.append(len(days))
        return compute(flights, weather, days)

    monkeypatch.setattr(flight_features, "featurize_by_day", counted)
    result = run(home, LAST)
    assert calls == [2] * (WINDOW // 2) + ([WINDOW % 2] if WINDOW % 2 else [])
    assert result["days_computed"] == WINDOW
    assert_identical(home, LAST, result)


def test_a_later_run_reuses_the_days_it_shares_and_computes_the_new_one(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run(home, LAST - timedelta(days=1))
    calls: list[int] = []
    real = flight_features._build  # the core under build_features and featurize_by_day

    def counted(flights: pd.DataFrame, weather: pd.DataFrame):
        calls.append(len(flights))
        return real(flights, weather)

    monkeypatch.setattr(flight_features, "_build", counted)
    with caplog.at_level("INFO", logger="flight_delays.featurize"):
        result = run(home, LAST)
    assert (result["days_reused"], result["days_computed"]) == (WINDOW - 1, 1)
    # only the new day was featurized
    assert calls == [len(pd.read_parquet(artifacts.RAW_FLIGHTS.path(home, LAST)))]
    assert f"{WINDOW} days ({WINDOW - 1} reused from day partitions, 1 computed)" in caplog.text
    counts = json.loads(artifacts.FEATURE_COUNTS.path(home, LAST).read_text())
    assert counts["days_reused"] == WINDOW - 1
    assert_identical(home, LAST, result)
    # a rerun of the same day featurizes nothing
    calls.clear()
    assert run(home, LAST)["days_reused"] == WINDOW and calls == []


def test_a_refetched_raw_day_is_computed_again(home: Path) -> None:
    run(home, LAST)
    changed = LAST - timedelta(days=2)
    # A corrected day: its partition replaced by one with a flight's delay changed.
    flights_path = artifacts.RAW_FLIGHTS.path(home, changed)
    flights = pd.read_parquet(flights_path)
    weather = pd.read_parquet(artifacts.RAW_WEATHER.path(home, changed))
    flights.loc[0, "arr_delay"] = 999.0
    raw_partitions.supersede(ProjectPaths(home), changed)
    assert raw_partitions.write_partition(
        artifacts.RAW_PARTITION.path(home, changed), flights, weather
    )

    result = run(home, LAST)
    assert (result["days_reused"], result["days_computed"]) == (WINDOW - 1, 1)
    assert 999.0 in written(home, LAST)[schema.TARGET].to_numpy()
    assert_identical(home, LAST, result)


def test_a_change_of_the_feature_code_recomputes_every_day(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(home, LAST)
    before = artifacts.DAY_FEATURES.path(home, LAST).read_bytes()
    monkeypatch.setattr(flight_features, "code_fingerprint", lambda: "another version")
    result = run(home, LAST)
    assert (result["days_reused"], result["days_computed"]) == (0, WINDOW)
    assert artifacts.DAY_FEATURES.path(home, LAST).read_bytes() != before
    assert_identical(home, LAST, result)


def test_the_code_fingerprint_follows_the_source_and_the_libraries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "feature_code.py"
    module.write_text("X = 1\n")
    fake = type(featurize)("feature_code")
    fake.__file__ = str(module)
    first = day_features.code_fingerprint([fake])
    assert day_features.code_fingerprint([fake]) == first
    module.write_text("X = 2\n")
    assert day_features.code_fingerprint([fake]) != first
    module.write_text("X = 1\n")
    real = day_features.metadata.version
    monkeypatch.setattr(
        day_features.metadata,
        "version",
        lambda name: "99.0" if name == "pandas" else real(name),
    )
    assert day_features.code_fingerprint([fake]) != first


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no key"])
def test_a_corrupt_partition_is_computed_again_with_a_warning(
    home: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    run(home, LAST)
    bad = artifacts.DAY_FEATURES.path(home, LAST - timedelta(days=1))
    if damage == "garbage":
        bad.write_bytes(b"not parquet at all")
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-100])
    else:  # readable Parquet, but not a day partition (no key in its footer)
        pd.read_parquet(bad).to_parquet(bad, index=False)
    with caplog.at_level("WARNING"):
        result = run(home, LAST)
    assert (result["days_reused"], result["days_computed"]) == (WINDOW - 1, 1)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(bad) in m and "computing the day again" in m for m in warned), warned
    assert_identical(home, LAST, result)
    assert day_features.load(bad, _key_of(home, bad)) is not None  # rewritten whole


def _key_of(home: Path, partition: Path) -> day_features.Key:
    day = date.fromisoformat(partition.parent.name.removeprefix("ds="))
    raw = {
        e.filename: hashlib.sha256(e.path(home, day).read_bytes()).hexdigest()
        for e in day_features.RAW_FILES
    }
    return day_features.Key(day.isoformat(), raw, flight_features.code_fingerprint())


def test_a_partition_made_for_another_day_is_not_served(home: Path) -> None:
    run(home, LAST)
    one, other = (artifacts.DAY_FEATURES.path(home, LAST - timedelta(days=k)) for k in (1, 2))
    other.write_bytes(one.read_bytes())  # the wrong day's file under this day's name
    result = run(home, LAST)
    assert result["days_computed"] == 1
    assert_identical(home, LAST, result)


def test_two_writers_of_a_day_write_the_same_bytes(home: Path) -> None:
    run(home, LAST)
    path = artifacts.DAY_FEATURES.path(home, LAST)
    first = path.read_bytes()
    path.unlink()
    featurize.run(LAST, root=home)
    assert path.read_bytes() == first


def _featurize_in_a_process(home: str, day: str) -> dict:
    return featurize.run(day, root=home)


def test_concurrent_runs_sharing_days_give_the_tables_of_build_features(home: Path) -> None:
    # A backfill with several active runs: overlapping windows featurized at once, in
    # processes, each writing the days it shares with the others.
    ends = [LAST - timedelta(days=k) for k in range(3)]
    for end in ends:
        ingest.run(end, root=home)
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_featurize_in_a_process, [str(home)] * 3, map(str, ends)))
    for end, result in zip(ends, results, strict=True):
        assert_identical(home, end, result)
    folder = artifacts.DAY_FEATURES_DIR.path(home, LAST).parent
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]  # no temp file left
    again = [featurize.run(end, root=home) for end in ends]
    assert all(r["days_reused"] == WINDOW for r in again)


def test_a_partition_holding_rows_of_other_days_falls_back_to_the_whole_window(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.run(LAST, root=home)
    # A partition frozen before the contract checked the day: it also holds a flight of
    # the day after, whose schedule counts then count with that day's flights.
    shifted = LAST - timedelta(days=2)
    path = artifacts.RAW_FLIGHTS.path(home, shifted)
    flights = pd.read_parquet(path)
    flights.loc[0, schema.DAY] = pd.Timestamp(shifted + timedelta(days=1))
    flights.to_parquet(path, index=False)
    manifest = artifacts.MANIFEST.path(home, LAST)
    drop_hashes = json.loads(manifest.read_text())
    for entry in drop_hashes["days"]:
        entry.pop("sha256")  # as a manifest of before the hashes: read the raw files
    io.write_json(drop_hashes, manifest)
    with caplog.at_level("WARNING"):
        result = featurize.run(LAST, root=home)
    assert "holds rows dated on other days" in caplog.text
    assert str(artifacts.RAW_PARTITION.path(home, shifted)) in caplog.text
    assert result["days_reused"] == 0
    assert_identical(home, LAST, result)


def test_rows_breaking_the_contract_are_left_out_with_their_reason_on_reuse_too(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.run(LAST, root=home)
    broken_day = LAST - timedelta(days=1)
    path = artifacts.RAW_FLIGHTS.path(home, broken_day)
    flights = pd.read_parquet(path)
    flights.loc[0, "sched_dep_time"] = 2575  # not a clock time
    flights.to_parquet(path, index=False)
    manifest = json.loads(artifacts.MANIFEST.path(home, LAST).read_text())
    for entry in manifest["days"]:
        entry.pop("sha256")
    io.write_json(manifest, artifacts.MANIFEST.path(home, LAST))
    for attempt in range(2):  # computed, then reused: the same count and warning
        caplog.clear()
        with caplog.at_level("WARNING", logger="flight_delays.featurize"):
            result = featurize.run(LAST, root=home)
        assert result["failed_contract"] == 1
        assert result["days_reused"] == (0 if attempt == 0 else WINDOW)
        assert "left out 1 flights of older partitions" in caplog.text
        assert_identical(home, LAST, result)


def _drop_recorded_hashes(home: Path, day: date) -> None:
    """The manifest of ``day`` as one of before the hashes: the raw files are hashed."""
    manifest = json.loads(artifacts.MANIFEST.path(home, day).read_text())
    for entry in manifest["days"]:
        entry.pop("sha256")
    io.write_json(manifest, artifacts.MANIFEST.path(home, day))


def _alone(home: Path, day: date) -> tuple[pd.DataFrame, dict]:
    """featurize_rows of the one day's raw rows."""
    return flight_features.featurize_rows(
        *(pd.read_parquet(e.path(home, day)) for e in day_features.RAW_FILES)
    )


def _stored(home: Path, day: date) -> tuple[pd.DataFrame, dict]:
    path = artifacts.DAY_FEATURES.path(home, day)
    found = day_features.load(path, _key_of(home, path))
    assert found is not None
    return found


def test_days_computed_in_one_batch_get_the_rows_and_counts_of_each_day_alone(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(home, LAST)
    batch = [LAST - timedelta(days=3), LAST - timedelta(days=1)]  # not adjacent
    # one of them corrected, with a flight breaking the contract (a partition frozen
    # before the contract): its count and reason must stay with its day
    path = artifacts.RAW_FLIGHTS.path(home, batch[0])
    flights = pd.read_parquet(path)
    flights.loc[0, "sched_dep_time"] = 2575
    flights.to_parquet(path, index=False)
    _drop_recorded_hashes(home, LAST)
    artifacts.DAY_FEATURES.path(home, batch[1]).unlink()
    calls: list[int] = []
    real = flight_features._build

    def counted(flights: pd.DataFrame, weather: pd.DataFrame):
        calls.append(len(flights))
        return real(flights, weather)

    monkeypatch.setattr(flight_features, "_build", counted)
    result = featurize.run(LAST, root=home)
    assert (result["days_reused"], result["days_computed"]) == (WINDOW - 2, 2)
    # one computation over both days' rows (the contract's failing row left out)
    raw_rows = [len(pd.read_parquet(artifacts.RAW_FLIGHTS.path(home, d))) for d in batch]
    assert calls == [sum(raw_rows) - 1]
    assert result["failed_contract"] == 1
    assert_identical(home, LAST, result)
    for d in batch:
        frame, counts = _stored(home, d)
        expected, expected_counts = _alone(home, d)
        pd.testing.assert_frame_equal(frame, expected, check_exact=True)
        assert counts == expected_counts
    assert _stored(home, batch[0])[1]["contract"] == {"hhmm": 1}
    assert _stored(home, batch[1])[1]["failed_contract"] == 0


def test_a_day_without_rows_gets_an_empty_partition_with_zero_counts(home: Path) -> None:
    ingest.run(LAST, root=home)
    empty = LAST - timedelta(days=2)
    for entry in day_features.RAW_FILES:  # every flight and weather row of the day gone
        path = entry.path(home, empty)
        pd.read_parquet(path).iloc[:0].to_parquet(path, index=False)
    _drop_recorded_hashes(home, LAST)
    result = featurize.run(LAST, root=home)
    assert result["days_computed"] == WINDOW
    assert_identical(home, LAST, result)
    frame, counts = _stored(home, empty)
    assert len(frame) == 0 and counts == _alone(home, empty)[1]
    assert counts["flights_in"] == 0 and all(v in (0, {}) for v in counts.values())
    # the right dtypes: those of the window's table
    assert frame.dtypes.to_dict() == written(home, LAST).dtypes.to_dict()
    assert featurize.run(LAST, root=home)["days_reused"] == WINDOW


def test_featurize_by_day_refuses_rows_of_a_day_not_asked_for(home: Path) -> None:
    ingest.run(LAST, root=home)
    flights, weather = (pd.read_parquet(e.path(home, LAST)) for e in day_features.RAW_FILES)
    with pytest.raises(ValueError, match=f"rows of {LAST}, not among the days"):
        flight_features.featurize_by_day(flights, weather, [LAST - timedelta(days=1)])
    _table, counts = flight_features.featurize_by_day(flights, weather, [LAST, FIRST])
    assert counts[LAST] == _alone(home, LAST)[1]
    assert counts[FIRST]["flights_in"] == 0 and counts[FIRST]["contract"] == {}


def _file(frame: pd.DataFrame) -> bytes:
    """``frame`` as a raw partition file holds it."""
    sink = pyarrow.BufferOutputStream()
    frame.to_parquet(sink, index=False)
    return sink.getvalue().to_pybytes()


def _as_read(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames as pandas reads their files back (Parquet has no seconds unit)."""
    return [pd.read_parquet(BytesIO(_file(f))) for f in frames]


def test_the_days_raw_rows_are_the_frames_of_pandas_concat_even_when_typed_apart() -> None:
    # One conversion for the batch instead of one a day and file: the frame must be what
    # pandas.concat of the days' frames was, also when the days' files type a column
    # apart (older partitions) and when a day has no rows.
    days = [date(2013, 3, 7), date(2013, 3, 8), date(2013, 3, 9)]
    flights = [
        pd.DataFrame({schema.DAY: [pd.Timestamp(days[0])] * 2, "carrier": ["AA", "B6"],
                      schema.TARGET: [1.5, None]}),
        pd.DataFrame({schema.DAY: pd.Series([], dtype="datetime64[ns]"),
                      "carrier": pd.Series([], dtype="str"),
                      schema.TARGET: pd.Series([], dtype="float64")}),
        pd.DataFrame({schema.DAY: [pd.Timestamp(days[2])], "carrier": ["UA"],
                      schema.TARGET: [7]}),  # int64 here, float64 on the first day
    ]  # fmt: skip
    weather = [
        pd.DataFrame({schema.DAY: [pd.Timestamp(d)], "origin": ["JFK"], "temp": [40.0 + k]})
        for k, d in enumerate(days)
    ]
    tables = [
        (day_features._read(_file(f)), day_features._read(_file(w)))
        for f, w in zip(flights, weather, strict=True)
    ]
    got_flights, got_weather = day_features._frames(days, tables)
    flights, weather = _as_read(flights), _as_read(weather)
    expected = pd.concat([flights[0], flights[2]], ignore_index=True)
    pd.testing.assert_frame_equal(got_flights, expected, check_exact=True)
    assert got_flights[schema.TARGET].dtype == "float64"
    expected = pd.concat(weather, ignore_index=True)
    pd.testing.assert_frame_equal(got_weather, expected, check_exact=True)


def test_the_first_partition_holding_another_days_rows_is_named() -> None:
    # The first day in order whose flights or weather hold a row of another day (a
    # missing day, NaT, counts as another), whichever of its files it is.
    days = [date(2013, 3, 7), date(2013, 3, 8), date(2013, 3, 9)]

    def day_file(stamp) -> pyarrow.Table:
        frame = pd.DataFrame({schema.DAY: [pd.Timestamp(stamp)], "origin": ["JFK"]})
        return day_features._read(_file(frame))

    flights = [day_file(days[0]), day_file(days[1]), day_file(days[0])]  # the third: wrong
    weather = [day_file(days[0]), day_file(None), day_file(days[2])]  # the second: NaT
    with pytest.raises(day_features._OtherDays) as raised:
        day_features._frames(days, list(zip(flights, weather, strict=True)))
    assert raised.value.args == (days[1],)
    good = [day_file(d) for d in days]
    flights[2] = good[2]
    with pytest.raises(day_features._OtherDays) as raised:  # the weather's alone
        day_features._frames(days, list(zip(flights, weather, strict=True)))
    assert raised.value.args == (days[1],)
    got, _weather = day_features._frames(days, list(zip(good, good, strict=True)))
    assert list(got[schema.DAY]) == [pd.Timestamp(d) for d in days]


def test_files_typed_apart_in_their_pandas_metadata_only_are_joined_by_pandas() -> None:
    # int64 and Int64 are both int64 to Arrow: only the pandas metadata tells them apart,
    # and pandas.concat of the two frames gives Int64, as it always did.
    days = [date(2013, 3, 7), date(2013, 3, 8)]
    frames = [
        pd.DataFrame({schema.DAY: [pd.Timestamp(days[0])], "flight": [1]}),
        pd.DataFrame({schema.DAY: [pd.Timestamp(days[1])], "flight": pd.array([2], "Int64")}),
    ]
    tables = [(day_features._read(_file(f)),) * 2 for f in frames]
    got, _weather = day_features._frames(days, tables)
    expected = pd.concat(_as_read(frames), ignore_index=True)
    assert expected["flight"].dtype == "Int64"
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_day_partitions_are_joined_as_pandas_concat_of_their_frames_without_their_keys() -> None:
    # The window's table from its days' partitions: one Arrow concatenation when they
    # agree in type, pandas' promotion when they do not (in Arrow, or only in the pandas
    # metadata), an empty day left out; never a day's key in the window's metadata.
    def partition(frame: pd.DataFrame, day: str) -> pyarrow.Table:
        table = pyarrow.Table.from_pandas(frame, preserve_index=False)
        key = {**table.schema.metadata, day_features.METADATA_KEY: day.encode()}
        return table.replace_schema_metadata(key)

    same = [pd.DataFrame({"flight": [1, 2]}), pd.DataFrame({"flight": [3]})]
    empty = pd.DataFrame({"flight": pd.Series([], dtype="float64")})
    cases = [
        (same, "int64"),
        ([*same, empty], "int64"),  # the empty day's float64 is left out
        ([same[0], pd.DataFrame({"flight": [3.5]})], "float64"),  # apart in Arrow
        ([same[0], pd.DataFrame({"flight": pd.array([3], "Int64")})], "Int64"),  # in pandas
    ]
    for frames, dtype in cases:
        tables = [partition(f, f"day {k}") for k, f in enumerate(frames)]
        joined = day_features._joined(tables)
        assert day_features.METADATA_KEY not in (joined.schema.metadata or {})
        expected = pd.concat([f for f in frames if len(f)], ignore_index=True)
        assert expected["flight"].dtype == dtype
        pd.testing.assert_frame_equal(joined.to_pandas(), expected, check_exact=True)


def test_a_raw_partition_typed_apart_gives_the_table_of_build_features(home: Path) -> None:
    # An older partition whose flight numbers were written as floats (a null once came
    # through SQL): its days cannot be joined in Arrow, and the window's table must still
    # be build_features of the window's raw rows, as pandas joins them.
    ingest.run(LAST, root=home)
    path = artifacts.RAW_FLIGHTS.path(home, LAST - timedelta(days=1))
    flights = pd.read_parquet(path)
    flights["flight"] = flights["flight"].astype("float64")
    flights.to_parquet(path, index=False)
    manifest = json.loads(artifacts.MANIFEST.path(home, LAST).read_text())
    for entry in manifest["days"]:
        entry.pop("sha256")  # as a manifest of before the hashes: read the raw files
    io.write_json(manifest, artifacts.MANIFEST.path(home, LAST))
    result = featurize.run(LAST, root=home)
    assert result["days_computed"] == WINDOW
    assert_identical(home, LAST, result)
