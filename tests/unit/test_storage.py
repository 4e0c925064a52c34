"""flight_delays.store.storage without a server: how the storage URL and recorded locations
become paths, the local-only catalog entries, exclusive writes, and the same io calls on
another fsspec file system (memory://). The S3 runs: tests/unit/test_storage_s3.py."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from upath import UPath

from flight_delays.store import artifacts, io, storage
from flight_delays.store.config import ProjectPaths, project_paths
from flight_delays.store.storage import ENV_STORAGE_URL

DAY = date(2013, 3, 31)


def test_the_artifact_root_is_the_project_root_unless_the_setting_names_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_STORAGE_URL, raising=False)
    assert project_paths(tmp_path).root == tmp_path.resolve()
    monkeypatch.setenv(ENV_STORAGE_URL, "artifacts")  # relative: to the project root
    assert project_paths(tmp_path).root == tmp_path.resolve() / "artifacts"
    monkeypatch.setenv(ENV_STORAGE_URL, f"file://{tmp_path}/elsewhere/")
    assert project_paths(tmp_path).root == tmp_path / "elsewhere"
    monkeypatch.setenv(ENV_STORAGE_URL, "memory://bucket/prefix/")
    paths = project_paths(tmp_path)
    assert isinstance(paths.root, UPath) and str(paths.root) == "memory://bucket/prefix"
    assert paths.home == tmp_path.resolve()
    # XCom and the registry hold strings: read back, they are the same path.
    metrics = artifacts.METRICS.path(paths.root, DAY)
    assert str(metrics) == "memory://bucket/prefix/data/output/ds=2013-03-31/metrics.json"
    assert storage.locate(str(metrics)) == metrics


def test_local_entries_stay_in_the_project_root(tmp_path: Path) -> None:
    remote = storage.locate("memory://bucket/prefix")
    paths = ProjectPaths(remote, home=tmp_path)
    assert paths.source_db == tmp_path / "data" / "source" / "flights.sqlite"
    assert (
        str(artifacts.PROCESSED.path(paths.root, DAY))
        == "memory://bucket/prefix/data/processed/ds=2013-03-31"
    )
    with pytest.raises(ValueError, match="local project root"):
        artifacts.SOURCE_DB.path(remote)
    with pytest.raises(ValueError, match="needs the local project root"):
        ProjectPaths(remote)
    assert [e.name for e in artifacts.CATALOG if e.local] == ["source", "source_db"]


def test_relative_and_is_local_answer_for_both_kinds_of_path(tmp_path: Path) -> None:
    assert storage.is_local(tmp_path) and not storage.is_local(storage.locate("memory://b/p"))
    assert storage.relative(tmp_path / "a" / "b.json", tmp_path) == "a/b.json"
    root = storage.locate("memory://b/p")
    assert storage.relative(root / "a" / "b.json", root) == "a/b.json"
    with pytest.raises(ValueError, match="not under"):
        storage.relative(storage.locate("memory://b/q/x"), root)


def test_an_exclusive_write_never_replaces_a_file(tmp_path: Path) -> None:
    final = io.write_bytes(b"first", tmp_path / "marker.json", exclusive=True)
    with pytest.raises(FileExistsError):
        io.write_bytes(b"second", final, exclusive=True)
    assert final.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["marker.json"]  # no temporary left


def test_io_reads_and_writes_the_formats_on_another_file_system() -> None:
    root = storage.locate(f"memory://{uuid.uuid4().hex}/prefix")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = io.write_parquet(frame, artifacts.FEATURES.path(root, DAY))
    pd.testing.assert_frame_equal(io.read_parquet(str(path), artifacts.FEATURES), frame)
    io.write_json({"v": 1}, artifacts.METRICS.path(root, DAY))
    assert io.read_json(artifacts.METRICS.path(root, DAY), artifacts.METRICS) == {"v": 1}
    assert artifacts.METRICS.days(root) == [DAY]
    assert len(io.sha256(path)) == 64
    with pytest.raises(io.MissingArtifactError, match="'split' task"):
        io.read_parquet(artifacts.TRAIN_TABLE.path(root, DAY), artifacts.TRAIN_TABLE)
    assert [str(p) for p in artifacts.clean(root)] == [
        f"{root}/data/processed/ds=2013-03-31",
        f"{root}/data/output/ds=2013-03-31",
    ]
    assert not artifacts.FEATURES.path(root, DAY).exists()


def test_a_move_copies_the_named_files_last_and_deletes_them_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = storage.locate(f"memory://{uuid.uuid4().hex}/p")
    for name in ("_committed.json", "flights.parquet", "weather.parquet"):
        io.write_bytes(name.encode(), root / "a" / name)
    calls: list[tuple[str, str]] = []
    fs = root.fs
    real_copy, real_rm = fs.copy, fs.rm_file
    monkeypatch.setattr(fs, "copy", lambda s, d, **k: (calls.append(("copy", s)), real_copy(s, d)))
    monkeypatch.setattr(fs, "rm_file", lambda p, **k: (calls.append(("rm", p)), real_rm(p)))

    storage.move_folder(root / "a", root / "b", last=("_committed.json",))

    names = [(op, path.rsplit("/", 1)[1]) for op, path in calls]
    assert names[2] == ("copy", "_committed.json") and names[3] == ("rm", "_committed.json")
    assert (root / "b" / "flights.parquet").read_bytes() == b"flights.parquet"
    assert not (root / "a").exists()


# --- durability: the folder is fsynced after the rename ------------------------------------
@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync, rename and replace of storage, in order: ("fsync", path synced),
    ("rename", final name). The path of an fsynced descriptor is read from /proc."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("rename", str(dst)))

    def rename(src: str, dst: str) -> None:
        real_rename(src, dst)
        events.append(("rename", str(dst)))

    monkeypatch.setattr(storage.os, "fsync", fsync)
    monkeypatch.setattr(storage.os, "replace", replace)
    monkeypatch.setattr(storage.os, "rename", rename)
    return events


def test_an_atomic_write_syncs_the_file_then_renames_then_syncs_its_folder(
    tmp_path: Path, synced: list[tuple[str, str]]
) -> None:
    final = io.write_bytes(b"payload", tmp_path / "out" / "metrics.json")

    assert final.read_bytes() == b"payload"
    folder = str((tmp_path / "out").resolve())
    kinds = [kind for kind, _ in synced]
    assert kinds == ["fsync", "rename", "fsync"], synced
    temp_synced = synced[0][1]
    assert Path(temp_synced).parent == Path(folder) and Path(temp_synced).name.endswith(".tmp")
    assert synced[1] == ("rename", str(final))
    assert synced[2] == ("fsync", folder)  # the folder, after the rename
    # An exclusive write (a link, not a rename) syncs the folder too.
    synced.clear()
    io.write_bytes(b"once", tmp_path / "out" / "_committed.json", exclusive=True)
    assert synced[-1] == ("fsync", folder)


def test_a_folder_move_syncs_both_folders(tmp_path: Path, synced: list[tuple[str, str]]) -> None:
    (tmp_path / "a" / "ds=1").mkdir(parents=True)
    storage.move_folder(tmp_path / "a" / "ds=1", tmp_path / "b" / "v1")
    assert synced == [
        ("rename", str(tmp_path / "b" / "v1")),
        ("fsync", str((tmp_path / "b").resolve())),
        ("fsync", str((tmp_path / "a").resolve())),
    ]


def test_a_failed_folder_sync_fails_the_write_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).is_dir():
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        io.write_bytes(b"payload", tmp_path / "metrics.json")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_an_object_store_write_syncs_no_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(folder: Path) -> None:
        raise AssertionError(f"an object store has no folder to sync, asked for {folder}")

    monkeypatch.setattr(storage, "fsync_folder", refuse)
    root = storage.locate(f"memory://{uuid.uuid4().hex}/p")
    assert io.write_bytes(b"x", root / "a.json").read_bytes() == b"x"
    io.write_bytes(b"y", root / "b" / "c.json")
    storage.move_folder(root / "b", root / "d")
    assert (root / "d" / "c.json").read_bytes() == b"y"


# --- the lock -----------------------------------------------------------------------------
def _hold_in_turn(folder: storage.ArtifactPath, holders: int) -> list[int]:
    """Run ``holders`` threads that each take ``storage.lock(folder)`` for a moment; the
    number of holders seen inside at once, by each."""
    inside: list[int] = []
    seen: list[int] = []
    start = threading.Barrier(holders)

    def hold() -> None:
        start.wait()
        with storage.lock(folder):
            inside.append(1)
            seen.append(len(inside))
            time.sleep(0.02)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(holders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a holder never got the lock"
    return seen


def test_a_lock_orders_its_holders_and_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    local = tmp_path / "root" / "runs" / "ds=2013-03-31"
    remote = storage.locate("memory://bucket/runs/ds=2013-03-31")
    for folder in (local, remote):
        assert _hold_in_turn(folder, 6) == [1] * 6, folder
    # The local lock is the folder itself; the object store's a file, deleted by its holder.
    assert local.is_dir() and list(local.iterdir()) == []
    assert list(temporary.iterdir()) == []


def test_a_waiter_that_locked_a_deleted_lock_file_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race made to happen: while this process waits for the lock, the holder deletes
    # the file and a newcomer creates and locks a new one. The lock this process then gets
    # is of a file no longer there: it must not count.
    target = str(tmp_path / "flight-delays-lock-x")
    real_flock = fcntl.flock
    calls: list[int] = []

    def flock_after_a_swap(fd: int, operation: int) -> None:
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:
            os.unlink(target)
            os.close(os.open(target, os.O_CREAT | os.O_RDONLY, 0o644))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_swap)
    fd = storage._locked_file(target)
    try:
        assert len(calls) == 2 and calls[0] != calls[1]
        assert os.fstat(fd).st_ino == os.stat(target).st_ino == calls[1]
    finally:
        os.close(fd)


def test_a_link_planted_as_the_lock_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not a lock")
    target = tmp_path / "flight-delays-lock-y"
    target.symlink_to(elsewhere)
    with pytest.raises(OSError) as raised:
        storage._locked_file(str(target))
    assert raised.value.errno == errno.ELOOP
    assert elsewhere.read_text() == "not a lock"
