"""This host's own list of the alerts it dispatched: the anti-flood rule's history when
the registry cannot be read (docs/monitoring.md, "Anti-flood").

The registry's ``alerts`` table is the record, shared by every process of the stack. When
the warehouse is down, which is also when a backfill fails run after run, the rule would
have no history and every alert would go out. So every alert is also appended here, and
the rule reads this file when the registry cannot answer. It holds one JSON object a
line (``at``, ``dag_id``, ``kind``, ``delivery``); a line that does not parse (a write
cut short) is skipped. Appends go through one ``write`` of a line under ``O_APPEND``;
past :data:`MAX_LINES` the file is rewritten, keeping :data:`KEEP` of history (at most
half as many lines). Writers take an exclusive ``flock`` on a lock file beside it, so no
append lands in a file that a rewrite is replacing; readers need none (the rewrite is a
rename). The Airflow side puts it in the log folder, which both stacks share
between their Airflow processes; a Celery worker on another host has its own.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Alerts older than this are dropped when the file is rewritten; the anti-flood window
#: (``alerts.rate_limit_minutes``) is far shorter.
KEEP = timedelta(days=2)
#: Lines past which an append rewrites the file, keeping at most half as many.
MAX_LINES = 2000
#: Seconds an append waits for the writer lock before it writes without it: an alert is
#: never held up by the ledger (a process that forked while holding the lock keeps it).
LOCK_WAIT_S = 5.0

log = logging.getLogger(__name__)


class Ledger:
    """The alerts of this host, in the file at ``path`` (created on the first append)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def entries(self) -> Iterator[tuple[datetime, str, str, str]]:
        """(at, dag_id, kind, delivery) of every readable line, in file order."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                at = datetime.fromisoformat(item["at"])
                yield (
                    at if at.tzinfo else at.replace(tzinfo=UTC),
                    str(item["dag_id"]),
                    str(item["kind"]),
                    str(item["delivery"]),
                )
            except (ValueError, KeyError, TypeError):
                continue

    def recent(
        self, dag_id: str, kind: str, since: datetime, tried: tuple[str, ...]
    ) -> list[tuple[datetime, str]]:
        """(at, delivery) of the alerts of ``dag_id`` and ``kind`` at or after ``since``,
        and those before it back to the newest whose delivery is in ``tried``: what the
        registry's :func:`flight_delays.monitor.alerts.recent` gives."""
        ours = sorted(
            ((at, delivery) for at, d, k, delivery in self.entries() if d == dag_id and k == kind),
            reverse=True,
        )
        rows = []
        for at, delivery in ours:
            rows.append((at, delivery))
            if at < since and delivery in tried:
                break
        return rows

    def add(self, at: datetime, dag_id: str, kind: str, delivery: str) -> None:
        """Append one alert; past :data:`MAX_LINES`, keep only :data:`KEEP` of them, at
        most the newest ``MAX_LINES // 2`` (so a rewrite comes once in many appends)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._writing():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o664)
            try:
                os.write(fd, _line(at, dag_id, kind, delivery).encode("utf-8"))
            finally:
                os.close(fd)
            # Lines are counted, not parsed: an append does not decode the whole file.
            if self.path.read_bytes().count(b"\n") > MAX_LINES:
                self._prune(at - KEEP)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this file's writer lock (``flock`` on ``.<name>.lock`` beside it: the
        ledger itself is replaced by a rename, a lock on it would not outlive a rewrite).
        The kernel releases it if the process dies."""
        fd = self._take_lock()
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _take_lock(self) -> int | None:
        """The lock file, open and locked; None (logged) when the lock cannot be had
        within :data:`LOCK_WAIT_S`, or at all (a folder this user cannot create it in, a
        file system without locks): the append then goes ahead unlocked, and a rewrite
        may lose it, but the alert still counts for the next ones."""
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o664)  # flock needs no write access
        except OSError as exc:
            log.warning(
                "alert ledger %s: no writer lock (%s); appending without it", self.path, exc
            )
            return None
        with suppress(OSError):  # as for the ledger: every Airflow process's
            os.fchmod(fd, 0o664)  # (only the owner may, and need, change it)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                reason = f"held by another process for {LOCK_WAIT_S:g} s"
            except OSError as exc:  # e.g. ENOLCK: NFS without lockd, some FUSE mounts
                reason = str(exc)
            os.close(fd)
            log.warning(
                "alert ledger %s: no writer lock %s (%s); appending without it",
                self.path,
                lock,
                reason,
            )
            return None

    def _prune(self, before: datetime) -> None:
        """Rewrite the file without the alerts older than ``before``, by a rename: a
        reader sees the old file or the new one. Called under the writer lock."""
        kept = [_line(*entry) for entry in self.entries() if entry[0] >= before]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text("".join(kept[-(MAX_LINES // 2) :]), encoding="utf-8")
        tmp.chmod(0o664)  # as appends create it: every Airflow process of the host
        os.replace(tmp, self.path)


def _line(at: datetime, dag_id: str, kind: str, delivery: str) -> str:
    """One alert as the ledger holds it: a JSON object and a newline."""
    entry = {"at": at.isoformat(), "dag_id": dag_id, "kind": kind, "delivery": delivery}
    return json.dumps(entry) + "\n"
