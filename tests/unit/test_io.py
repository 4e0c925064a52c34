import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flight_delays.store import artifacts, io
from flight_delays.store.io import (
    MissingArtifactError,
    atomic_path,
    read_parquet,
    sha256,
    write_json,
    write_parquet,
)


def test_failed_write_leaves_neither_final_nor_temporary_file(tmp_path):
    final = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_version(tmp_path):
    final = write_json({"v": 1}, tmp_path / "m.json")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("{broken")
        raise RuntimeError
    assert json.loads(final.read_text()) == {"v": 1}


def test_parquet_round_trip_and_hash_follows_content(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = write_parquet(frame, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_parquet(path, artifacts.FEATURES), frame)
    first = sha256(path)
    write_parquet(frame.assign(a=[1, 3]), path)
    assert sha256(path) != first and len(first) == 64


def test_missing_upstream_artifact_names_file_and_task(tmp_path):
    missing = tmp_path / "ds=2013-03-15" / "train.parquet"
    with pytest.raises(MissingArtifactError) as info:
        read_parquet(missing, artifacts.TRAIN_TABLE)
    assert info.value.artifact is artifacts.TRAIN_TABLE and info.value.task == "split"
    message = str(info.value)
    assert str(missing) in message
    # The fix: the producing step for the same processed day, without Airflow.
    assert "`python -m flight_delays run split --day 2013-03-15`" in message


def test_missing_artifact_outside_a_day_folder_names_a_placeholder_day(tmp_path):
    missing = tmp_path / "ds=not-a-day" / "manifest.json"
    with pytest.raises(MissingArtifactError) as info:
        read_parquet(missing, artifacts.MANIFEST)
    assert "`python -m flight_delays run ingest --day <YYYY-MM-DD>`" in str(info.value)


@pytest.mark.parametrize("rows", [0, 1, 5, 7])
def test_write_parquet_writes_the_bytes_of_to_parquet_a_row_group_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    # Written a few rows at a time here (WRITE_ROWS 3): the same file as one conversion.
    monkeypatch.setattr(io, "WRITE_ROWS", 3)
    frame = pd.DataFrame(
        {
            "local_date": pd.date_range("2013-01-01", periods=rows, freq="D"),
            "carrier": pd.Series(["UA", None, "DL", "AA", "B6", "UA", "WN"][:rows], dtype="str"),
            "delay": np.arange(rows, dtype="float64") - 2.5,
            "flight": np.arange(rows, dtype="int64"),
        }
    ).iloc[::-1]  # an index that is not 0..n-1 is not written, as with index=False
    expected = tmp_path / "expected.parquet"
    frame.to_parquet(expected, index=False, row_group_size=3)
    written = io.write_parquet(frame, tmp_path / "written.parquet")
    assert written.read_bytes() == expected.read_bytes()
    back = io.read_parquet(written, artifacts.FEATURES)
    pd.testing.assert_frame_equal(back, frame.reset_index(drop=True))


def test_a_text_column_read_from_many_row_groups_is_one_arrow_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Grouping by a text column of many chunks is slower (docs/benchmarks.md): the read
    # joins them. Checked here, so a pandas upgrade that changes the Arrow arrays shows.
    monkeypatch.setattr(io, "WRITE_ROWS", 2)
    frame = pd.DataFrame(
        {"carrier": pd.Series(["UA", "DL", None, "AA", "B6"], dtype="str"), "n": range(5)}
    )
    back = io.read_parquet(io.write_parquet(frame, tmp_path / "t.parquet"), artifacts.FEATURES)
    assert isinstance(back["carrier"].array, pd.arrays.ArrowStringArray)
    assert back["carrier"].array.__arrow_array__().num_chunks == 1
    pd.testing.assert_frame_equal(back, frame)


def test_a_pinned_table_is_read_as_it_was_hashed_after_the_file_is_replaced(tmp_path):
    # What a model card relies on: a writer replaces the file (atomically, by a rename)
    # while the step still reads; every read of the pinned artifact sees the bytes hashed.
    first = pd.DataFrame({"day": ["2013-01-01", "2013-01-02", "2013-01-02"], "x": [1, 2, 3]})
    path = write_parquet(first, tmp_path / "train.parquet")
    hashed, from_path = sha256(path), read_parquet(path, artifacts.TRAIN_TABLE)
    pinned = io.pin(path, artifacts.TRAIN_TABLE)
    write_parquet(pd.DataFrame({"day": ["2013-02-01"], "x": [9]}), path)
    assert sha256(path) != hashed
    assert pinned.sha256 == hashed
    assert io.parquet_rows(pinned, artifacts.TRAIN_TABLE) == 3
    # Read as the path read it before the replace: the same frame, dtypes included.
    pd.testing.assert_frame_equal(read_parquet(pinned, artifacts.TRAIN_TABLE), from_path)
    newest = read_parquet(pinned, artifacts.TRAIN_TABLE, filters=[("day", ">=", "2013-01-02")])
    assert newest["x"].tolist() == [2, 3]
    pinned.close()
    pinned_json = io.pin(write_json({"v": 1}, tmp_path / "m.json"), artifacts.MANIFEST)
    assert io.read_json(pinned_json, artifacts.MANIFEST) == {"v": 1}
    assert io.read_bytes(pinned_json, artifacts.MANIFEST) == b'{\n  "v": 1\n}\n'
    pinned_json.close()


def test_a_closed_pin_keeps_its_hash_and_refuses_a_read(tmp_path):
    path = write_parquet(pd.DataFrame({"x": [1]}), tmp_path / "train.parquet")
    pinned = io.pin(path, artifacts.TRAIN_TABLE)
    pinned.close()
    pinned.close()  # twice: nothing more happens
    assert pinned.sha256 == sha256(path)
    with pytest.raises(ValueError, match="pinned and closed"):
        read_parquet(pinned, artifacts.TRAIN_TABLE)


def test_pinning_a_missing_artifact_names_its_producer(tmp_path):
    with pytest.raises(MissingArtifactError, match="'split' task"):
        io.pin(tmp_path / "data" / "processed" / "ds=2013-03-31" / "train.parquet",
               artifacts.TRAIN_TABLE)  # fmt: skip
