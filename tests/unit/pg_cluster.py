"""A throw-away PostgreSQL cluster for the unit tests that need the real server (advisory
locks cannot be faked with SQLite): initdb in a fresh folder, the server on a free
loopback port, trust logins (nothing else can reach it), stopped and deleted afterwards.

As root, the cluster belongs to `postgres` (initdb refuses root), as in the stack.
.ci/run installs the server: without it the tests that use this fail, naming the fix."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server's bin folder (Debian's layout), else initdb's on PATH."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(candidate) / b).exists() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yield the SQLAlchemy URL of the superuser's `postgres` database on a new cluster."""
    pg = postgres_bin()
    if pg is None:
        pytest.fail("these tests need the PostgreSQL server: apt-get install -y postgresql")
    # Not under pytest's tmp folder: as root that is private to root, and the server runs
    # as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="flight-delays-pg-unit-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*command: object, check: bool = True) -> None:
        done = subprocess.run(
            [*as_user, *map(str, command)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 or not check, f"{command}: {done.stderr}"

    try:
        run(pg / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8")  # fmt: skip
        options = f"-k {base} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
        run(pg / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-o", options, "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)
