"""The anti-flood rule when the registry cannot be read: this host's ledger of alerts
(flight_delays.monitor.alert_ledger) stands in for the alerts table."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
from datetime import timedelta

from alert_support import LIMIT, T0, append_when_started, failed
from sqlalchemy import create_engine

from flight_delays.monitor import alert_ledger, alerts
from flight_delays.monitor.alert_ledger import Ledger


def test_a_backfill_with_the_registry_down_sends_three_then_holds_the_rest(tmp_path):
    # The warehouse down is the likeliest cause of a run of failures: without a history
    # every one of them would be mailed.
    ledger, sent = Ledger(tmp_path / "logs" / "alerts.jsonl"), []
    outcomes = [
        alerts.dispatch(
            failed(T0 + timedelta(seconds=i)), {"smtp": sent.append}, None, LIMIT, ledger=ledger
        )
        for i in range(10)
    ]
    assert [o["delivery"] for o in outcomes] == [alerts.SENT] * 3 + [alerts.SUPPRESSED] * 7
    assert len(sent) == 3
    alerts.dispatch(failed(T0 + timedelta(minutes=61)), {"smtp": sent.append}, None, LIMIT,
                    ledger=ledger)  # fmt: skip
    assert len(sent) == 4 and sent[3].notes[0].startswith("7 more alerts of this DAG")
    assert len(list(ledger.entries())) == 11


def test_a_registry_that_fails_to_answer_hands_the_count_to_the_ledger(tmp_path, caplog):
    # An engine whose database cannot be opened: reading the earlier alerts fails.
    broken = create_engine(f"sqlite:///{tmp_path / 'gone' / 'registry.sqlite'}")
    ledger, sent = Ledger(tmp_path / "alerts.jsonl"), []
    for i in range(4):
        alerts.dispatch(failed(T0 + timedelta(seconds=i)), {"webhook": sent.append}, broken,
                        LIMIT, ledger=ledger)  # fmt: skip
    assert len(sent) == 3
    assert "could not read earlier alerts" in caplog.text
    assert "the anti-flood rule counts this host's ledger" in caplog.text
    # The ledger is kept while the registry works too, so it has the whole history.
    assert [e[3] for e in ledger.entries()] == [alerts.SENT] * 3 + [alerts.SUPPRESSED]


def test_the_ledger_skips_a_cut_line_and_keeps_two_days_when_it_grows(tmp_path, monkeypatch):
    ledger = Ledger(tmp_path / "alerts.jsonl")
    ledger.add(T0 - timedelta(days=3), "flight_delays", "failure", alerts.SENT)
    with ledger.path.open("a") as handle:
        handle.write('{"at": "2026-12-05T06:59:00+00:00", "dag_id": "flight_del')  # cut short
        handle.write("\n")
    with ledger.path.open("ab") as handle:
        handle.write(b'{"at": "\xff\xfe"}\n')  # not UTF-8: skipped, never raised
    ledger.add(T0, "flight_delays", "failure", alerts.SENT)
    assert [e[0] for e in ledger.entries()] == [T0 - timedelta(days=3), T0]
    assert alerts.dispatch(failed(T0), {}, None, LIMIT, ledger=ledger)["delivery"] == "log only"
    monkeypatch.setattr(alert_ledger, "MAX_LINES", 2)
    ledger.add(T0 + timedelta(minutes=1), "flight_delays", "drift", alerts.LOG_ONLY)
    lines = ledger.path.read_text().splitlines()
    # 3 days old: out; of the rest, the newest MAX_LINES // 2.
    assert [json.loads(line)["kind"] for line in lines] == ["drift"]
    # recent() gives what the registry's recent() gives: the window, then back to the
    # newest tried alert before it.
    assert ledger.path.stat().st_mode & 0o777 == 0o664
    assert ledger.recent("flight_delays", "drift", T0, alerts.TRIED) == [
        (T0 + timedelta(minutes=1), alerts.LOG_ONLY)
    ]
    assert ledger.recent("other_dag", "failure", T0, alerts.TRIED) == []


def test_the_ledger_gives_the_window_and_back_to_the_newest_tried_alert(tmp_path):
    # What the registry's recent() gives: the held-back count starts at the newest alert
    # that a transport tried, even before the window.
    ledger = Ledger(tmp_path / "alerts.jsonl")
    for minutes, delivery in [(0, alerts.SENT), (10, alerts.SENT), (20, alerts.SUPPRESSED),
                              (90, alerts.SUPPRESSED)]:  # fmt: skip
        ledger.add(T0 + timedelta(minutes=minutes), "flight_delays", "failure", delivery)
    since = T0 + timedelta(minutes=60)
    assert ledger.recent("flight_delays", "failure", since, alerts.TRIED) == [
        (T0 + timedelta(minutes=90), alerts.SUPPRESSED),
        (T0 + timedelta(minutes=20), alerts.SUPPRESSED),
        (T0 + timedelta(minutes=10), alerts.SENT),
    ]


def test_a_line_appended_by_another_process_while_the_file_is_cut_is_kept(tmp_path, monkeypatch):
    # The cut rewrites the file from what it read and renames the copy over it: an append
    # between the read and the rename would go to the replaced file. Another process
    # appends right after the cut has read the file; its line must be in the file after.
    # (A spawned process: a forked one would inherit the lock it has to wait for.)
    monkeypatch.setattr(alert_ledger, "MAX_LINES", 4)
    ledger = Ledger(tmp_path / "alerts.jsonl")
    for minute in range(4):
        ledger.add(T0 + timedelta(minutes=minute), "flight_delays", "failure", alerts.SENT)
    read = Ledger.entries
    spawn = multiprocessing.get_context("spawn")
    started = spawn.Event()
    other = spawn.Process(target=append_when_started, args=(str(ledger.path), started))

    def entries_then_another_append(self):
        found = list(read(self))
        if not started.is_set():  # the first cut only
            other.start()
            assert started.wait(timeout=60), "the other process did not start"
            # Unlocked, it appends at once; locked, it waits for the cut (under its own
            # LOCK_WAIT_S of 5 s, after which it would write anyway).
            other.join(timeout=3)
        return iter(found)

    monkeypatch.setattr(Ledger, "entries", entries_then_another_append)
    try:
        ledger.add(T0 + timedelta(minutes=4), "flight_delays", "failure", alerts.SENT)  # cut
        other.join(timeout=60)
    finally:
        if other.is_alive():
            other.kill()
    assert other.exitcode == 0
    assert "other_process" in [dag_id for _at, dag_id, _kind, _delivery in read(ledger)]


def test_a_writer_lock_held_too_long_delays_the_append_then_lets_it_through(
    tmp_path, monkeypatch, caplog
):
    # A process that forked while it held the lock keeps it for the child's life: the
    # alert must not wait for that.
    monkeypatch.setattr(alert_ledger, "LOCK_WAIT_S", 0.2)
    ledger = Ledger(tmp_path / "alerts.jsonl")
    ledger.add(T0, "flight_delays", "failure", alerts.SENT)  # creates the lock file
    holder = os.open(tmp_path / ".alerts.jsonl.lock", os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        ledger.add(T0 + timedelta(minutes=1), "flight_delays", "drift", alerts.SENT)
    finally:
        os.close(holder)
    assert [kind for _at, _dag, kind, _delivery in ledger.entries()] == ["failure", "drift"]
    assert "appending without it" in caplog.text


def test_a_lock_that_cannot_be_had_at_all_lets_the_append_through(tmp_path, monkeypatch, caplog):
    # The lock file cannot be created (here a folder is in its place, as a folder this
    # user may not write to would), or the file system has no locks (ENOLCK on NFS
    # without lockd): the line is still written, so the alert still counts.
    ledger = Ledger(tmp_path / "alerts.jsonl")
    (tmp_path / ".alerts.jsonl.lock").mkdir()
    ledger.add(T0, "flight_delays", "failure", alerts.SENT)
    (tmp_path / ".alerts.jsonl.lock").rmdir()

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(alert_ledger.fcntl, "flock", no_locks)
    ledger.add(T0 + timedelta(minutes=1), "flight_delays", "drift", alerts.SENT)
    assert [kind for _at, _dag, kind, _delivery in ledger.entries()] == ["failure", "drift"]
    assert caplog.text.count("appending without it") == 2
    assert "No locks available" in caplog.text
