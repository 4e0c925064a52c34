"""The stack's private PostgreSQL cluster, where its data folder lives, and its two
databases: the metastore `airflow` and the demo `warehouse`, each with a user of its own.

As root, the cluster belongs to the `postgres` user (initdb refuses root), which must be
able to reach its data folder. `<state>/pg` is used when it can; when the checkout is
not traversable by that user (a clone under /root, mode 0700), the data goes to a stable
folder of its own for this state folder, `/var/lib/flight-delays/<name>-<hash>/pg`
(`/var/tmp/flight-delays/...` if /var/lib is not writable), reused by every `up`.
Standard library only: `make down` runs with any Python 3."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .settings import (
    PG_USER,
    Config,
    StackError,
    _pg_bin,
    _port_free,
    _tail,
    _write_private,
    say,
)

# Where a cluster goes when the postgres user cannot reach the state folder, in order.
DATA_BASES: tuple[Path, ...] = (Path("/var/lib/flight-delays"), Path("/var/tmp/flight-delays"))


def relocated_name(state: Path) -> str:
    """`<name>-<hash>` for a state folder: the checkout's name for the default `.stack`,
    else the state folder's own name, and 12 hex digits of the hash of its absolute path
    (two clones of the same name get two clusters)."""
    name = state.parent.name if state.name == ".stack" else state.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stack"
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    return f"{name[:40]}-{digest}"


def choose_data_folder(
    state: Path,
    reachable: Callable[[Path], bool],
    bases: Sequence[Path] | None = None,
) -> Path:
    """The cluster's data folder for ``state``: an existing cluster wherever it is (so a
    later `chmod` never hides the data behind a new, empty cluster), else `<state>/pg` if
    ``reachable`` says the postgres user can reach it, else the first relocated folder
    that ``reachable`` accepts. Creates nothing."""
    home = state / "pg"
    relocated = [base / relocated_name(state) / "pg" for base in bases or DATA_BASES]
    for candidate in (home, *relocated):
        if (candidate / "PG_VERSION").is_file():
            return candidate
    for candidate in (home, *relocated):
        if reachable(candidate):
            return candidate
    raise StackError(
        f"the {PG_USER} user can reach neither {home} nor any of "
        f"{', '.join(str(c) for c in relocated)}: set FLIGHT_DELAYS_STACK_DIR to a folder "
        "that every user can traverse (chmod o+x on each folder above it)"
    )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


class Postgres:
    """A private PostgreSQL cluster, owned by the `postgres` user when we run as root,
    listening on 127.0.0.1 only, no Unix socket. ``pgdata``: see :func:`choose_data_folder`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.bin = _pg_bin()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.owner = pwd.getpwnam(PG_USER)
            except KeyError:
                raise StackError(
                    f"running as root needs the `{PG_USER}` user to own the cluster "
                    "(apt-get install -y postgresql creates it)"
                ) from None
        self.pgdata = (
            choose_data_folder(cfg.state, self._reachable) if self.as_root else cfg.state / "pg"
        )

    @property
    def relocated(self) -> bool:
        """True when the data lives outside the state folder."""
        return self.pgdata.parent != self.cfg.state

    def _run(
        self, *args: str | Path, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict = {}
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if self.as_root:
            kwargs = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
            env["HOME"] = self.owner.pw_dir
        result = subprocess.run(
            [str(a) for a in args],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise StackError(
                f"{Path(str(args[0])).name} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _reachable(self, pgdata: Path) -> bool:
        """Can the postgres user get to where ``pgdata`` will be? Asked of that user itself
        (`test -x` on the nearest existing folder above it), as the kernel will. The state
        folder itself and the folders created for a relocated cluster are made traversable
        (see _prepare), so the question is about the folders above them. Creates nothing."""
        parent = pgdata.parent
        above = parent.parent if parent == self.cfg.state else parent.parent.parent
        existing = _nearest_existing(above)
        if parent != self.cfg.state and not os.access(existing, os.W_OK | os.X_OK):
            return False  # we could not create the relocated folder
        return self._run("test", "-x", existing, check=False).returncode == 0

    def _own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    @property
    def log(self) -> Path:
        """PostgreSQL writes its log as the postgres user: beside a relocated data folder
        (`<state>/logs/postgres.log` then links to it), else in the state's logs."""
        if self.relocated:
            return self.pgdata.parent / "postgres.log"
        return self.cfg.logs / "postgres.log"

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def _prepare(self) -> None:
        """Create the data folder (and, relocated, its parent with a note naming the state
        folder it belongs to); make its parent traversable by the postgres user."""
        parent = self.pgdata.parent
        parent.mkdir(parents=True, exist_ok=True)
        for folder in (parent.parent, parent) if self.relocated else (parent,):
            mode = folder.stat().st_mode
            if self.as_root and not mode & 0o001:
                # Listable by its owner only, but traversable (the state folder's secrets
                # are 0600 files).
                folder.chmod((mode | 0o711) & 0o7777)
        if self.relocated:
            (parent / "STACK_DIR").write_text(
                f"{self.cfg.state}\n# the state folder of the stack whose PostgreSQL data "
                "is here (deploy/stack/flight_stack/postgres.py)\n"
            )
        self.pgdata.mkdir(exist_ok=True)
        self.pgdata.chmod(0o700)
        self._own(self.pgdata)
        if self.as_root:
            probe = self._run("test", "-w", self.pgdata, check=False)
            if probe.returncode != 0:
                raise StackError(
                    f"the {PG_USER} user cannot write {self.pgdata}: every folder above it "
                    "must be traversable by others (chmod o+x), or set "
                    "FLIGHT_DELAYS_STACK_DIR to a folder that is"
                )

    def init(self, superuser_password: str) -> None:
        self._prepare()
        if self.relocated:
            say(
                f"the {PG_USER} user cannot reach {self.cfg.state}: "
                f"PostgreSQL data in {self.pgdata}"
            )
        # Beside the data folder (initdb wants it empty), where the postgres user reads it.
        pwfile = self.pgdata.parent / ".pg-pwfile"
        _write_private(pwfile, superuser_password + "\n")
        self._own(pwfile)
        try:
            say(f"initdb {self.pgdata}")
            self._run(
                self.bin / "initdb",
                "-D",
                self.pgdata,
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def configure(self) -> None:
        """The stack's settings, rewritten on every `up` (the port may change)."""
        conf = self.pgdata / "postgresql.conf"
        include = "include_if_exists = 'stack.conf'"
        if include not in conf.read_text():
            with conf.open("a") as handle:
                handle.write(f"\n# flight-delay-pipeline stack (stack.py)\n{include}\n")
        stack_conf = self.pgdata / "stack.conf"
        stack_conf.write_text(
            "# Written by deploy/stack/stack.py on every `make up`.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.cfg.pg_port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 100\n"
            "shared_buffers = 128MB\n"
        )
        self._own(stack_conf)

    def running_port(self) -> int | None:
        """The port of the running postmaster of this cluster, or None."""
        status = self._run(self.bin / "pg_ctl", "-D", self.pgdata, "status", check=False)
        if status.returncode != 0:
            return None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def _link_log(self) -> None:
        self.cfg.logs.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._own(self.log)
        if self.relocated:
            link = self.cfg.logs / "postgres.log"
            if not (link.is_symlink() and link.resolve() == self.log):
                link.unlink(missing_ok=True)
                link.symlink_to(self.log)

    def start(self) -> None:
        running = self.running_port()
        if running is not None:
            if running != self.cfg.pg_port:
                raise StackError(
                    f"this stack's PostgreSQL already runs on port {running}, not "
                    f"{self.cfg.pg_port}: `make down` first"
                )
            say(f"PostgreSQL already running on 127.0.0.1:{running}")
            return
        if not _port_free(self.cfg.pg_port):
            raise StackError(
                f"port {self.cfg.pg_port} on 127.0.0.1 is taken: choose another with "
                "FLIGHT_DELAYS_STACK_PG_PORT"
            )
        self._prepare()
        self.configure()
        self._link_log()
        say(f"starting PostgreSQL on 127.0.0.1:{self.cfg.pg_port} (data in {self.pgdata})")
        result = self._run(
            self.bin / "pg_ctl", "-D", self.pgdata, "-l", self.log, "-w", "-t", "60", "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not start; {self.log}:\n{_tail(self.log)}")

    def restart(self) -> None:
        """Restart the running cluster (fast shutdown: every connection is cut)."""
        result = self._run(
            self.bin / "pg_ctl", "-D", self.pgdata, "-l", self.log, "-m", "fast", "-w", "-t",
            "60", "restart", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not restart; {self.log}:\n{_tail(self.log)}")

    def stop(self) -> bool:
        """Stop the cluster if it runs; True if it was running."""
        if not self.initialised() or self.running_port() is None:
            return False
        for mode in ("fast", "immediate"):
            result = self._run(
                self.bin / "pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "-t", "30", "stop",
                check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return True
            say(f"pg_ctl stop -m {mode} failed: {result.stderr.strip()}")
        # Last resort: the postmaster's pid from its lock file.
        with contextlib.suppress(OSError, ValueError, IndexError, ProcessLookupError):
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        return True

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            if Path(f"/proc/{pid}").exists():
                return pid
        return None


def create_databases(cfg: Config, values: dict[str, str]) -> None:
    """The metastore database `airflow` and the `warehouse` database, each owned by a user
    of its own with the stack's password (set again on every `up`)."""
    import psycopg2  # from the venv: `up` needs it, `down` does not

    conn = psycopg2.connect(
        host="127.0.0.1",
        port=cfg.pg_port,
        user="postgres",
        password=values["postgres_password"],
        dbname="postgres",
        connect_timeout=10,
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for user, database, key in (
                ("airflow", "airflow", "airflow_db_password"),
                ("warehouse", "warehouse", "warehouse_password"),
            ):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(f'{verb} ROLE "{user}" LOGIN PASSWORD %s', (values[key],))
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if not cur.fetchone():
                    say(f"creating database {database} (owner {user})")
                    cur.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
                # Each user reaches its own database only.
                cur.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
    finally:
        conn.close()
