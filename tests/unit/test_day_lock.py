"""The day lock of `score` on a real PostgreSQL server (flight_delays.store.db.advisory_lock,
flight_delays.store.registry.day_lock, flight_delays.score.day_lock): runs of the same day
wait for each other, runs of other days do not, a killed holder releases it, and a
failing connection is named. With SQLite as the registry, the lock stays the file lock."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pg_cluster import free_port, throwaway_cluster
from sqlalchemy import Engine, create_engine, text

from flight_delays import score, train
from flight_delays.store import registry, storage
from flight_delays.store.db import LockError, advisory_lock, open_engine

DAY, OTHER_DAY = date(2013, 3, 27), date(2013, 3, 28)
HOLD = 0.4  # seconds each holder keeps the lock


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with throwaway_cluster() as url:
        yield url


def free_now(engine: Engine, day: date) -> bool:
    """Whether another session could take the day lock of ``day`` at once (it is let go)."""
    namespace, key = registry.day_lock_key(day)
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"),
                           {"ns": namespace, "key": key}).scalar_one()  # fmt: skip
        if got:
            conn.execute(
                text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": namespace, "key": key}
            )
    return bool(got)


def hold_in_threads(url: str, days: list[date], barrier: threading.Barrier | None = None):
    """Take the day lock of each of ``days`` in a thread of its own (own engine, as a
    separate process would have); returns each holder's (entered, left) times."""
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def holder(day: date) -> None:
        engine = open_engine(url)
        try:
            with registry.day_lock(engine, day):
                entered = time.monotonic()
                if barrier is not None:
                    barrier.wait()  # every holder inside at once, or BrokenBarrierError
                time.sleep(HOLD)
                spans.append((entered, time.monotonic()))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=holder, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return sorted(spans)


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg"])
def test_two_holders_of_the_same_day_take_it_one_after_the_other(
    pg_url: str, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flight_delays.store.db")
    url = pg_url.replace("postgresql", driver, 1)  # psycopg2 and psycopg 3 alike

    first, second = hold_in_threads(url, [DAY, DAY])

    assert first[1] <= second[0], f"the critical sections overlap: {first} {second}"
    assert second[1] - first[0] >= 2 * HOLD
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("the day lock of 2013-03-27: waiting; held by backend") for m in messages
    )
    assert sum(m.startswith("the day lock of 2013-03-27: releasing") for m in messages) == 2


def test_holders_of_different_days_do_not_wait_for_each_other(pg_url: str) -> None:
    # Both must be inside at the same time to pass the barrier; serialized, it breaks.
    first, second = hold_in_threads(pg_url, [DAY, OTHER_DAY], threading.Barrier(2, timeout=10))
    assert second[0] < first[1]


HOLDER = """
import sys, time
from datetime import date
from flight_delays.store import registry
from flight_delays.store.db import open_engine
with registry.day_lock(open_engine(sys.argv[1]), date.fromisoformat(sys.argv[2])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_releases_the_lock(pg_url: str, engine: Engine) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_url, DAY.isoformat()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not free_now(engine, DAY)  # held by the other process
        assert free_now(engine, OTHER_DAY)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        deadline = time.monotonic() + 20
        while not free_now(engine, DAY):  # the server notices the closed socket at once
            assert time.monotonic() < deadline, "a SIGKILLed holder kept the day lock"
            time.sleep(0.1)
        with registry.day_lock(engine, DAY):
            assert not free_now(engine, DAY)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_the_key_is_the_day_apart_from_airflows_and_the_migration_locks(
    pg_url: str, engine: Engine
) -> None:
    # The unit tests also run without Airflow (.ci/run, Python 3.13): there, the check of
    # Airflow's own lock ids is left to the main suite, which has Airflow.
    DBLocks = pytest.importorskip("airflow.utils.db").DBLocks

    env = (Path(registry.__file__).parent / "migrations" / "env.py").read_text()
    migration_key = int(re.search(r"PG_LOCK_KEY = (0x[0-9a-f_]+)", env).group(1), 0)
    assert registry.day_lock_key(DAY) == (0x66646179, 734954)
    assert registry.day_lock_key(DAY) == registry.day_lock_key(date(2013, 3, 27))
    assert registry.day_lock_key(DAY) != registry.day_lock_key(OTHER_DAY)
    # Airflow's and the registry migration's locks use the single-bigint key space; hold
    # them all (and the day's numbers as bigints) in one session: the day lock is free.
    namespace, key = registry.day_lock_key(DAY)
    bigints = [lock.value for lock in DBLocks] + [migration_key, namespace, key]
    bigints.append((namespace << 32) | key)
    with engine.connect() as conn:
        for value in bigints:
            conn.execute(text("SELECT pg_advisory_lock(CAST(:k AS bigint))"), {"k": value})
        assert free_now(engine, DAY)
        conn.execute(text("SELECT pg_advisory_unlock_all()"))


def test_an_unreachable_database_is_named_without_its_password() -> None:
    engine = open_engine(f"postgresql://etl:s3cret@127.0.0.1:{free_port()}/warehouse")
    try:
        with pytest.raises(LockError) as raised, registry.day_lock(engine, DAY):
            pytest.fail("the block must not run without the lock")
    finally:
        engine.dispose()
    message = str(raised.value)
    assert message.startswith("cannot take the day lock of 2013-03-27: the database at")
    assert "127.0.0.1" in message and "/warehouse" in message and "s3cret" not in message


def terminate_holder(engine: Engine, day: date) -> int:
    """End the session that holds the day lock of ``day`` (as a server restart or a
    network cut would); returns its pid."""
    namespace, key = registry.day_lock_key(day)
    with engine.connect() as conn:
        pid = conn.execute(
            text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                 "AND classid = CAST(:ns AS oid) AND objid = CAST(:key AS oid)"),
            {"ns": namespace, "key": key},
        ).scalar_one()  # fmt: skip
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


def test_a_lock_lost_while_held_fails_the_block(engine: Engine) -> None:
    lost = "the day lock of 2013-03-27 was lost while held"
    with pytest.raises(LockError, match=lost), registry.day_lock(engine, DAY):
        terminate_holder(engine, DAY)
    # When the block failed itself, its own error is the one raised.
    with pytest.raises(KeyError, match="the block's own"), registry.day_lock(engine, DAY):
        terminate_holder(engine, DAY)
        raise KeyError("the block's own")
    assert free_now(engine, DAY)


def test_the_lock_refuses_a_registry_that_is_not_postgresql(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    refused = "advisory locks need PostgreSQL, not sqlite"
    with pytest.raises(ValueError, match=refused), registry.day_lock(engine, DAY):
        pytest.fail("the block must not run")
    too_big = advisory_lock(create_engine("postgresql://u@h/d"), 2**31, 1, "a lock")
    with pytest.raises(ValueError, match="is not a 32-bit integer"), too_big:
        pytest.fail("the block must not run")


# --- score.day_lock: which lock for which registry -----------------------------------------
@pytest.fixture
def folder_locks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    taken: list[object] = []
    real = storage.lock

    def lock(folder):
        taken.append(folder)
        return real(folder)

    monkeypatch.setattr(storage, "lock", lock)
    return taken


def test_score_takes_the_advisory_lock_on_postgresql(
    engine: Engine, tmp_path: Path, folder_locks: list[object]
) -> None:
    with score.day_lock(engine, DAY, tmp_path / "out"):
        assert not free_now(engine, DAY)
    assert free_now(engine, DAY) and folder_locks == []


def test_score_keeps_the_folder_lock_with_a_sqlite_registry(
    tmp_path: Path, folder_locks: list[object]
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    with score.day_lock(engine, DAY, tmp_path / "out"):
        assert folder_locks == [tmp_path / "out"]


def test_a_score_of_a_day_waits_while_another_holds_its_lock(
    split_artifacts: dict, pg_url: str, engine: Engine
) -> None:
    art = split_artifacts
    day, root, params = art["day"], art["root"], art["params_file"]
    train.run(day, root=root, params_file=params, registry_url=pg_url, run_id="run-a")
    done: list[dict] = []
    scorer = threading.Thread(
        target=lambda: done.append(
            score.run(day, root=root, params_file=params, registry_url=pg_url, run_id="run-a")
        )
    )
    with registry.day_lock(engine, day):
        scorer.start()
        deadline = time.monotonic() + 60
        while registry.day_lock_waiters(engine, day) == 0:  # the score asks for the lock, and waits
            assert scorer.is_alive() and time.monotonic() < deadline, "score took no lock"
            time.sleep(0.1)
        assert not done and registry.recorded_run(engine, day, "run-a") is None
    scorer.join(timeout=120)
    assert done and done[0]["run_id"] == "run-a"
    assert registry.recorded_run(engine, day, "run-a") is not None
    assert os.path.isfile(done[0]["metrics"])
