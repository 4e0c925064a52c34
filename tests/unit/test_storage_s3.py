"""Storage by URL against an S3 server started in-process (moto's server mode): the six
steps for one day with the artifact root at s3://bucket/prefix give the metrics of the
same run on local folders and leave every artifact of the catalog in the bucket; and the
unhappy paths: a missing object, a bad storage URL, a failed write, a partition without
its commit marker, a partition changed after its commit, a lost commit race."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from flight_delays import cli, featurize, ingest, split, summary
from flight_delays.base import schema
from flight_delays.intake import raw_partitions
from flight_delays.store import artifacts, io, registry, storage
from flight_delays.store.config import PARAMS_RELATIVE, load_settings, project_paths
from flight_delays.store.storage import ENV_STORAGE_URL
from s3_support import moto_server, new_bucket, point_s3_at

DAY = date(2013, 3, 31)
# A short window on a few real 2013 days, one booster: the six steps in seconds.
PARAMS = """\
ingest: {window_days: 8}
split: {holdout_days: 2, recent_days: 2, history_days: 4}
train: {max_iter: 20, learning_rate: 0.2, min_samples_leaf: 20, bagging_models: 1}
"""
INGEST_PARAMS = "ingest: {window_days: 2}\nsplit: {holdout_days: 1}\n"
SEEDED = (date(2013, 3, 22), date(2013, 4, 2))
# The metrics.json keys that describe the model's quality and the decision, not the run.
QUALITY = ("model", "champion", "baseline", "holdout_rows", "holdout_start", "holdout_end")


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new, empty bucket; s3fs pointed at the server with fake credentials."""
    point_s3_at(monkeypatch, s3_endpoint, tmp_path)
    return new_bucket()


@pytest.fixture(scope="module")
def warehouse(seeded_warehouse) -> Path:
    return seeded_warehouse(*SEEDED)


def make_home(base: Path, warehouse: Path, params: str = PARAMS) -> Path:
    """A project root: its parameter file and its own copy of the embedded warehouse
    (which also holds its registry)."""
    (base / "include").mkdir(parents=True)
    (base / PARAMS_RELATIVE).write_text(params)
    db = artifacts.SOURCE_DB.path(base)
    db.parent.mkdir(parents=True)
    shutil.copy(warehouse, db)
    return base


def objects(url: str) -> list[str]:
    """Every object under ``url``, relative to it."""
    return storage.listing(storage.locate(url), "")


def test_the_six_steps_on_s3_give_the_metrics_of_local_folders(
    warehouse: Path,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local_home = make_home(tmp_path / "local", warehouse)
    monkeypatch.delenv(ENV_STORAGE_URL, raising=False)
    local = cli.run_steps(cli.STEPS, DAY, root=local_home)

    s3_home = make_home(tmp_path / "s3", warehouse)
    url = f"s3://{bucket}/prefix"
    monkeypatch.setenv(ENV_STORAGE_URL, url)
    remote = cli.run_steps(cli.STEPS, DAY, root=s3_home)

    # What the steps return (XCom under Airflow) names the objects by URL, as strings:
    # plain values only, no path objects.
    assert json.loads(json.dumps(remote)) == remote
    assert remote["score"]["metrics"] == f"{url}/data/output/ds=2013-03-31/metrics.json"
    assert remote["train"]["model"].startswith(f"{url}/models/ds=2013-03-31/run=")
    assert all(isinstance(p, str) and p.startswith(url) for p in remote["chart"]["figures"])
    local_metrics = json.loads(Path(local["score"]["metrics"]).read_text())
    remote_metrics = json.loads(storage.locate(remote["score"]["metrics"]).read_bytes())
    assert {k: remote_metrics[k] for k in QUALITY} == {k: local_metrics[k] for k in QUALITY}
    assert remote_metrics["decision"]["reason"] == local_metrics["decision"]["reason"]
    pd.testing.assert_frame_equal(
        io.read_parquet(remote["score"]["predictions"], artifacts.PREDICTIONS),
        pd.read_parquet(local["score"]["predictions"]),
    )

    # Every object in the bucket is an instance of a catalog entry (no temporary names),
    # and the entries are those the local run wrote.
    in_bucket = objects(url)
    strays = [key for key in in_bucket if artifacts.match(key) is None]
    assert not strays, f"objects the catalog does not name: {strays}"
    remote_entries = {artifacts.match(key).name for key in in_bucket}
    local_files = [p for p in local_home.rglob("*") if p.is_file()]
    local_entries = {
        artifacts.match(p.relative_to(local_home).as_posix()).name
        for p in local_files
        if p.relative_to(local_home) != PARAMS_RELATIVE
    }
    assert remote_entries == local_entries - {"source_db"}
    promoted = remote_metrics["decision"]["promoted"]
    expected = {
        entry.name
        for entry in artifacts.CATALOG
        if entry.producer in cli.STEPS and entry.format != "folder" and not entry.local
    } - {"quarantine_flights", "quarantine_weather"}  # the seeded days keep the contract
    if not promoted:
        expected.discard("stored_model")
    assert expected <= remote_entries, expected - remote_entries
    # Every window day is a committed partition; the warehouse file stays on local disk.
    manifest = io.read_json(f"{url}/data/interim/ds=2013-03-31/manifest.json", artifacts.MANIFEST)
    for entry in manifest["days"]:
        assert entry["path"].startswith(f"{url}/data/raw/ds=")
        assert raw_partitions.committed(storage.locate(entry["path"]))
    assert artifacts.SOURCE_DB.path(s3_home).is_file()
    # The registry (SQL) records the run's model by its URL.
    engine = registry.connect(load_settings(s3_home).registry_url)
    try:
        challenger = registry.find_challenger(engine, DAY, remote["train"]["run_id"])
    finally:
        engine.dispose()
    assert challenger.model_path == remote["train"]["model"]
    # The report links its figures relative to itself, which holds in the bucket too.
    page = storage.locate(remote["chart"]["report"]).read_bytes().decode()
    assert 'src="../figures/ds=2013-03-31/calibration.png"' in page
    # `make run`'s closing summary finds the day and names the objects by URL.
    assert summary.main(["--root", str(s3_home)]) == 0
    printed = capsys.readouterr().out
    assert f"metrics:     {url}/data/output/ds=2013-03-31/metrics.json" in printed
    assert f"{url}/reports/figures/ds=2013-03-31/calibration.png" in printed


def test_a_missing_object_names_its_producer(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_home(tmp_path, warehouse)
    monkeypatch.setenv(ENV_STORAGE_URL, f"s3://{bucket}/prefix")
    with pytest.raises(io.MissingArtifactError) as info:
        split.run(DAY, root=home)
    assert info.value.task == "featurize"
    message = str(info.value)
    assert f"s3://{bucket}/prefix/data/processed/ds=2013-03-31/features.parquet" in message
    assert "`python -m flight_delays run featurize --day 2013-03-31`" in message
    with pytest.raises(io.MissingArtifactError, match="'ingest' task"):
        featurize.run(DAY, root=home)


def test_the_rows_of_a_parquet_object_are_read_from_its_footer(bucket: str) -> None:
    # What the train step asks before it reads a table that may be over train.max_rows.
    root = storage.locate(f"s3://{bucket}/prefix")
    path = artifacts.TRAIN_TABLE.path(root, DAY)
    io.write_parquet(pd.DataFrame({schema.DAY: [pd.Timestamp(DAY)] * 3, "x": [1, 2, 3]}), path)
    assert io.parquet_rows(path, artifacts.TRAIN_TABLE) == 3
    with pytest.raises(io.MissingArtifactError, match="'split' task"):
        io.parquet_rows(artifacts.TRAIN_TABLE.path(root, DAY - timedelta(days=1)),
                        artifacts.TRAIN_TABLE)  # fmt: skip


def test_a_pinned_object_is_read_as_it_was_hashed_after_it_is_replaced(bucket: str) -> None:
    # The train step's model card: the object is fetched once, hashed, and every read
    # (the footer, a column, the rows) sees those bytes, whatever is PUT meanwhile.
    path = artifacts.TRAIN_TABLE.path(storage.locate(f"s3://{bucket}/prefix"), DAY)
    io.write_parquet(pd.DataFrame({schema.DAY: ["2013-03-30", "2013-03-31"], "x": [1, 2]}), path)
    hashed = io.sha256(path)
    pinned = io.pin(path, artifacts.TRAIN_TABLE)
    io.write_parquet(pd.DataFrame({schema.DAY: ["2013-03-31"], "x": [9]}), path)
    assert io.sha256(path) != hashed == pinned.sha256
    assert io.parquet_rows(pinned, artifacts.TRAIN_TABLE) == 2
    assert io.read_parquet(pinned, artifacts.TRAIN_TABLE)["x"].tolist() == [1, 2]
    pinned.close()
    with pytest.raises(io.MissingArtifactError, match="'split' task"):
        io.pin(artifacts.TRAIN_TABLE.path(path.parents[1], DAY - timedelta(days=1)),
               artifacts.TRAIN_TABLE)  # fmt: skip


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("foo://bucket/prefix", "unknown storage protocol 'foo'"),
        ("s3:///prefix", "names no bucket"),
        ("gs://bucket/prefix", "needs a driver that is not installed"),
    ],
)
def test_a_bad_storage_url_is_refused_naming_the_setting(
    url: str,
    problem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if url.startswith("gs:") and importlib.util.find_spec("gcsfs"):
        pytest.skip("gcsfs is installed here: gs:// URLs work")
    (tmp_path / "include").mkdir()
    (tmp_path / PARAMS_RELATIVE).write_text(INGEST_PARAMS)
    monkeypatch.setenv(ENV_STORAGE_URL, url)
    with pytest.raises(storage.StorageURLError, match=problem) as info:
        load_settings(tmp_path)
    assert f"{ENV_STORAGE_URL}= {url!r}" in str(info.value)
    # The step command reports it in one line and exits 1.
    with caplog.at_level(logging.ERROR, logger="flight_delays.cli"):
        assert cli.main(["run", "split", "--day", "2013-03-31", "--root", str(tmp_path)]) == 1
    assert ENV_STORAGE_URL in caplog.text and "Traceback" not in caplog.text


def test_a_failed_write_leaves_no_object_and_a_retry_writes_it_whole(bucket: str) -> None:
    final = storage.locate(f"s3://{bucket}/prefix/data/output/ds=2013-03-31/metrics.json")
    with pytest.raises(RuntimeError), io.atomic_path(final) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed mid-write")
    assert objects(f"s3://{bucket}") == []  # no object, no temporary one
    assert not tmp.parent.exists()  # the local staging folder is gone too
    io.write_json({"v": 1}, final)  # the retry
    with pytest.raises(RuntimeError), io.atomic_path(final) as tmp:
        tmp.write_text("{broken")
        raise RuntimeError("killed mid-rewrite")
    assert json.loads(final.read_bytes()) == {"v": 1}
    assert objects(f"s3://{bucket}") == ["prefix/data/output/ds=2013-03-31/metrics.json"]


def _ingest_home(warehouse: Path, tmp_path: Path, bucket: str, monkeypatch) -> Path:
    home = make_home(tmp_path / "home", warehouse, INGEST_PARAMS)
    monkeypatch.setenv(ENV_STORAGE_URL, f"s3://{bucket}/prefix")
    return home


def test_a_partition_without_its_commit_marker_is_fetched_again(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _ingest_home(warehouse, tmp_path, bucket, monkeypatch)
    partition = artifacts.RAW_PARTITION.path(load_settings(home).paths.root, DAY)
    # A writer killed after its data files, before its marker: left by hand here.
    (partition / "flights.parquet").write_bytes(b"half of a partition")
    (partition / "weather.parquet").write_bytes(b"")
    assert not raw_partitions.committed(partition)

    result = ingest.run(DAY, root=home)

    assert result["fetched"] == 2  # the day before, and the uncommitted day again
    assert raw_partitions.committed(partition)
    manifest = io.read_json(result["manifest"], artifacts.MANIFEST)
    flights = io.read_parquet(partition / "flights.parquet", artifacts.RAW_FLIGHTS)
    assert len(flights) == manifest["days"][-1]["flight_rows"] > 0
    marker = json.loads((partition / raw_partitions.COMMIT_FILE).read_bytes())["files"]
    assert marker["flights.parquet"]["sha256"] == io.sha256(partition / "flights.parquet")


def test_a_committed_partition_is_never_rewritten_and_a_lost_commit_is_discarded(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition = storage.locate(f"s3://{bucket}/prefix/data/raw/ds=2013-03-31")
    flights = pd.DataFrame({"flight": [1, 2]})
    weather = pd.DataFrame({"temp": [50.0]})
    assert raw_partitions.write_partition(partition, flights, weather) is True
    marker = (partition / raw_partitions.COMMIT_FILE).read_bytes()

    assert (
        raw_partitions.write_partition(partition, flights.assign(flight=[3, 4]), weather) is False
    )
    kept = io.read_parquet(partition / "flights.parquet", artifacts.RAW_FLIGHTS)
    assert kept["flight"].tolist() == [1, 2]

    # A rival commits between our check and our marker: its marker stays, we return False.
    monkeypatch.setattr(raw_partitions, "committed", lambda path: False)
    assert raw_partitions.write_partition(partition, flights, weather) is False
    assert (partition / raw_partitions.COMMIT_FILE).read_bytes() == marker


def test_a_partition_changed_after_its_commit_is_reported(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _ingest_home(warehouse, tmp_path, bucket, monkeypatch)
    ingest.run(DAY, root=home)
    partition = artifacts.RAW_PARTITION.path(load_settings(home).paths.root, DAY)
    frame = io.read_parquet(partition / "flights.parquet", artifacts.RAW_FLIGHTS)
    io.write_parquet(frame.iloc[1:], partition / "flights.parquet")  # e.g. a rival's bytes
    with pytest.raises(
        raw_partitions.BrokenPartitionError, match="differs from the one its commit"
    ):
        ingest.run(DAY, root=home)


def test_refetch_moves_the_partition_aside_marker_last_and_fetches_the_day_again(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _ingest_home(warehouse, tmp_path, bucket, monkeypatch)
    ingest.run(DAY, root=home)
    paths = load_settings(home).paths
    before = {
        name: (artifacts.RAW_PARTITION.path(paths.root, DAY) / name).read_bytes()
        for name in (*raw_partitions.PARTITION_FILES, raw_partitions.COMMIT_FILE)
    }

    result = ingest.run(DAY, root=home, refetch=True)

    kept = artifacts.SUPERSEDED.path(paths.root, DAY) / "v1"
    assert {name: (kept / name).read_bytes() for name in before} == before
    assert (kept / "quarantine" / "summary.json").is_file()
    assert raw_partitions.committed(
        artifacts.RAW_PARTITION.path(paths.root, DAY)
    )  # fetched again by the refetch
    assert result["flight_rows"] > 0
    assert artifacts.match(storage.relative(kept / "flights.parquet", paths.root)) is (
        artifacts.SUPERSEDED
    )


def test_clean_deletes_the_derived_objects_and_keeps_the_rest(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _ingest_home(warehouse, tmp_path, bucket, monkeypatch)
    ingest.run(DAY, root=home)
    featurize.run(DAY, root=home)
    root = project_paths(home).root
    assert artifacts.FEATURES.path(root, DAY).is_file()

    assert artifacts.main(["clean", "--root", str(home)]) == 0

    left = objects(str(root))
    assert left and all(not artifacts.match(key).derived for key in left)
    assert artifacts.RAW_COMMIT.path(root, DAY).is_file()
    assert not artifacts.MANIFEST.path(root, DAY).exists()
    assert not artifacts.DAY_FEATURES.path(root, DAY).exists()


def test_day_feature_partitions_are_reused_in_the_bucket_and_redone_for_a_refetched_day(
    warehouse: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _ingest_home(warehouse, tmp_path, bucket, monkeypatch)
    root = project_paths(home).root
    before = DAY - timedelta(days=1)
    ingest.run(before, root=home)
    assert featurize.run(before, root=home)["days_computed"] == 2
    ingest.run(DAY, root=home)
    first = featurize.run(DAY, root=home)
    assert (first["days_reused"], first["days_computed"]) == (1, 1)
    assert artifacts.DAY_FEATURES.days(root) == [before - timedelta(days=1), before, DAY]
    table = io.read_parquet(first["features"], artifacts.FEATURES)

    # A day fetched again unchanged has the same bytes: its partition stays good.
    ingest.run(DAY, root=home, refetch=True)
    assert featurize.run(DAY, root=home)["days_reused"] == 2
    # A corrected day: its partition is computed again, the other day still reused.
    with sqlite3.connect(artifacts.SOURCE_DB.path(home)) as db:
        db.execute(
            "UPDATE flights SET arr_delay = 999 WHERE local_date = ? AND arr_delay IS NOT NULL",
            (DAY.isoformat(),),
        )
    ingest.run(DAY, root=home, refetch=True)
    again = featurize.run(DAY, root=home)
    assert (again["days_reused"], again["days_computed"]) == (1, 1)
    corrected = io.read_parquet(again["features"], artifacts.FEATURES)
    on_day = corrected[schema.DAY] == pd.Timestamp(DAY)
    assert (corrected.loc[on_day, schema.TARGET] == 999).all()
    pd.testing.assert_frame_equal(corrected.loc[~on_day], table.loc[~on_day])
    # A partition object that cannot be read is computed again, not served.
    artifacts.DAY_FEATURES.path(root, before).write_bytes(b"broken")
    assert featurize.run(DAY, root=home)["days_computed"] == 1
    assert all(artifacts.match(key) is not None for key in objects(str(root)))
