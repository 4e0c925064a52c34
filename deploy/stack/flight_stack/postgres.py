"""The stack's private PostgreSQL cluster, where its data folder lives, and its two
databases: the metastore `airflow` and the demo `warehouse`, each with a user of its own.
supervisord runs the server (the `postgres` program of supervisord.conf) and starts it
again when it dies; this module prepares the cluster and answers where it is.

Where the data lives: only in a trusted folder (:func:`untrusted`): every folder from
`/` down to it owned by root or the user running `up`, and writable by no one else. A
world-writable tree (`/tmp`, `/var/tmp`, even with the sticky bit) never holds the
cluster: anyone could plant one there, and root would then run it, chown it and write
its configuration through links someone else controls. `<state>/pg` when it is trusted
(and, as root, reachable by the `postgres` user, who owns the cluster: initdb refuses
root); else a stable folder of its own for this state folder, reused by every `up`:
`/var/lib/flight-delays/<name>-<hash>/pg` as root (a root-owned 0755 chain),
`$XDG_STATE_HOME/flight-delays/<name>-<hash>/pg` (`~/.local/state/...`) otherwise. A
cluster found in an untrusted folder, the old `/var/tmp/flight-delays/...` included, is
refused with a message that says what to do with it.
Standard library only: `make down` runs with any Python 3."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from .settings import (
    PG_USER,
    READER_ROLE,
    Config,
    StackError,
    _pg_bin,
    _port_free,
    _tail,
    _write_private,
    say,
)

# Where a cluster goes when `<state>/pg` will not do: as root (a root-owned 0755 chain).
ROOT_DATA_BASES: tuple[Path, ...] = (Path("/var/lib/flight-delays"),)
# Where older versions also put it, world-writable: a cluster there is refused, never used.
LEGACY_BASES: tuple[Path, ...] = (Path("/var/tmp/flight-delays"),)


def user_data_bases() -> tuple[Path, ...]:
    """Where a cluster goes when `<state>/pg` will not do, for a user other than root."""
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return (Path(state_home) / "flight-delays",)


def relocated_name(state: Path) -> str:
    """`<name>-<hash>` for a state folder: the checkout's name for the default `.stack`,
    else the state folder's own name, and 12 hex digits of the hash of its absolute path
    (two clones of the same name get two clusters)."""
    name = state.parent.name if state.name == ".stack" else state.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "stack"
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    return f"{name[:40]}-{digest}"


def untrusted(path: Path, owners: Collection[int] = (), own: Collection[int] = ()) -> str | None:
    """Why ``path`` is no safe place for the stack's data, or None when it is.

    Trusted: every folder from `/` down to ``path`` (those that exist; the rest will be
    created by `up`) is a real folder, not a link, owned by root or by one of ``owners``
    (default: the user running this), with no group or other write bit. ``path`` itself
    may also belong to one of ``own`` (the cluster's owner). The sticky bit does not help:
    in /tmp anyone may create the folder before us."""
    owners = {0, *(owners or (os.geteuid(),))}
    path = Path(os.path.abspath(path))
    for folder in (*reversed(path.parents), path):
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            return None  # nor does anything below it
        except OSError as exc:
            return f"{folder} cannot be examined ({exc.strerror})"
        if stat.S_ISLNK(info.st_mode):
            return f"{folder} is a symbolic link"
        if not stat.S_ISDIR(info.st_mode):
            return f"{folder} is not a folder"
        allowed = owners | set(own) if folder == path else owners
        if info.st_uid not in allowed:
            return f"{folder} belongs to uid {info.st_uid}, not to root or uid {max(owners)}"
        if info.st_mode & 0o022:
            who = "everyone" if info.st_mode & 0o002 else "its group"
            return f"{folder} is writable by {who} (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def untrusted_data(pgdata: Path) -> str | None:
    """:func:`untrusted` for a data folder, which may belong to the postgres user."""
    own = set()
    with contextlib.suppress(KeyError):
        own.add(pwd.getpwnam(PG_USER).pw_uid)
    return untrusted(pgdata, own=own)


def choose_data_folder(
    state: Path,
    reachable: Callable[[Path], bool],
    bases: Sequence[Path] | None = None,
    why_not: Callable[[Path], str | None] = untrusted_data,
    legacy: Sequence[Path] | None = None,
) -> Path:
    """The cluster's data folder for ``state``. In order:

    1. an existing cluster in a trusted folder (``why_not`` says None), wherever it is (so
       a later `chmod` never hides the data behind a new, empty cluster);
    2. an existing cluster in an untrusted folder (``legacy`` places included) is refused:
       StackError naming it, why, and what to do;
    3. `<state>/pg`, else the first relocated folder, that is trusted and that
       ``reachable`` says the cluster's owner can reach.
    Creates nothing."""
    home = state / "pg"
    bases = ROOT_DATA_BASES if bases is None else bases
    legacy = LEGACY_BASES if legacy is None else legacy
    relocated = [base / relocated_name(state) / "pg" for base in bases]
    candidates = [home, *relocated]
    reasons = {c: why_not(c) for c in candidates}
    clusters = [*candidates, *(base / relocated_name(state) / "pg" for base in legacy)]
    for candidate in candidates:
        if (candidate / "PG_VERSION").is_file() and reasons[candidate] is None:
            return candidate
    trusted = [c for c in candidates if reasons[c] is None]
    for candidate in clusters:
        if (candidate / "PG_VERSION").is_file():
            why = reasons.get(candidate) or why_not(candidate) or "not a place this stack uses"
            target = trusted[-1] if trusted else relocated[0] if relocated else home
            raise StackError(
                f"refusing the PostgreSQL cluster in {candidate}: {why}. Anyone who can "
                "write there could have planted it or could change it. If it is this "
                f"stack's data from an older version, move it (as root) to {target} "
                "(owned by the postgres user, mode 0700); otherwise delete it"
            )
    for candidate in candidates:
        if reasons[candidate] is None and reachable(candidate):
            return candidate
    said = "; ".join(f"{c}: {reasons[c] or 'not reachable by its owner'}" for c in candidates)
    raise StackError(
        f"no trusted folder that the cluster's owner can reach for the PostgreSQL data "
        f"({said}): "
        "set FLIGHT_DELAYS_STACK_DIR to a folder that only root or you can write, and that "
        "every user can traverse (chmod o+x, no g+w/o+w, on each folder above it)"
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
        self.pgdata = choose_data_folder(
            cfg.state,
            self._reachable,
            ROOT_DATA_BASES if self.as_root else user_data_bases(),
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
        """Can the cluster's owner get to where ``pgdata`` will be? As root, asked of the
        postgres user itself (`test -x` on the nearest existing folder above it), as the
        kernel will. The state folder itself and the folders created for a relocated
        cluster are made traversable (see _prepare), so the question is about the folders
        above them. Creates nothing."""
        parent = pgdata.parent
        above = parent.parent if parent == self.cfg.state else parent.parent.parent
        existing = _nearest_existing(above)
        if parent != self.cfg.state and not os.access(existing, os.W_OK | os.X_OK):
            return False  # we could not create the relocated folder
        if not self.as_root:
            return True  # our own cluster: we reach what we create
        return self._run("test", "-x", existing, check=False).returncode == 0

    def _own(self, path: Path) -> None:
        if self.as_root:  # never through a link
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid, follow_symlinks=False)

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
        folder it belongs to), each new folder writable by its owner only; make its
        parent traversable by the postgres user. Checks the chain again once created: a
        folder swapped in meanwhile is refused."""
        parent = self.pgdata.parent
        for folder in reversed([parent, *parent.parents]):
            if not folder.exists():
                folder.mkdir(mode=0o755)
                folder.chmod(0o755)  # whatever the umask
        for folder in (parent.parent, parent) if self.relocated else (parent,):
            mode = folder.stat().st_mode
            if self.as_root and not mode & 0o001:
                # Listable by its owner only, but traversable (the state folder's secrets
                # are 0600 files).
                folder.chmod((mode | 0o711) & 0o7777)
        why = untrusted(parent)
        if why is not None:
            raise StackError(f"refusing to keep the PostgreSQL data in {self.pgdata}: {why}")
        if self.relocated:
            _write_private(
                parent / "STACK_DIR",
                f"{self.cfg.state}\n# the state folder of the stack whose PostgreSQL data "
                "is here (deploy/stack/flight_stack/postgres.py)\n",
                0o644,
            )
        if not self.pgdata.exists():
            self.pgdata.mkdir(mode=0o700)
        if self.pgdata.is_symlink() or not self.pgdata.is_dir():
            raise StackError(f"{self.pgdata} is not a folder (a link?): refusing it")
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
            home = self.cfg.state / "pg"
            why = untrusted_data(home) or f"the {PG_USER} user cannot reach {self.cfg.state}"
            say(f"not in {home} ({why}): PostgreSQL data in {self.pgdata}")
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

    def _read_own(self, name: str) -> str:
        """A file of the data folder, opened without following a link (the folder belongs
        to the postgres user: as root, never read or write through a link placed there)."""
        fd = os.open(self.pgdata / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd) as handle:
            return handle.read()

    def _write_own(self, name: str, text: str) -> None:
        """Replace a file of the data folder (mode 0600, the cluster owner's), never
        writing through a link (see settings._write_private)."""
        _write_private(self.pgdata / name, text)
        self._own(self.pgdata / name)

    def configure(self) -> None:
        """The stack's settings, rewritten on every `up` (the port may change)."""
        include = "include_if_exists = 'stack.conf'"
        conf = self._read_own("postgresql.conf")
        if include not in conf:
            self._write_own(
                "postgresql.conf", f"{conf}\n# flight-delay-pipeline stack (stack.py)\n{include}\n"
            )
        self._write_own(
            "stack.conf",
            "# Written by deploy/stack/stack.py on every `make up`.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.cfg.pg_port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 100\n"
            "shared_buffers = 128MB\n",
        )

    def ready_command(self) -> list[str]:
        """pg_isready for this cluster: exits 0 once the server accepts connections (1
        while it starts or recovers, 2 when nothing answers)."""
        port = str(self.cfg.pg_port)
        return [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port, "-t", "3"]

    def wait_ready(self, timeout: float, alive: Callable[[], bool]) -> bool:
        """Wait until the server accepts connections, ``alive`` (its supervisor runs) turns
        False, or ``timeout`` s; True when it accepts them."""
        deadline = time.monotonic() + timeout
        while alive():
            if self._run(*self.ready_command(), check=False).returncode == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return False

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
        """Start the server with pg_ctl, outside supervisord: for one-off uses (a
        benchmark's private cluster). The stack's `up` runs it under supervisord instead
        (the `postgres` program), which starts it again when it dies."""
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


def _superuser(cfg: Config, values: dict[str, str], database: str) -> Any:
    """An autocommit connection to ``database`` as the cluster's superuser."""
    import psycopg2  # from the venv: `up` needs it, `down` does not

    conn = psycopg2.connect(
        host="127.0.0.1",
        port=cfg.pg_port,
        user="postgres",
        password=values["postgres_password"],
        dbname=database,
        connect_timeout=10,
    )
    conn.autocommit = True
    return conn


def create_databases(cfg: Config, values: dict[str, str]) -> None:
    """The metastore database `airflow` and the `warehouse` database, each owned by a user
    of its own with the stack's password (set again on every `up`)."""
    conn = _superuser(cfg, values, "postgres")
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
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                f'{verb} ROLE "{READER_ROLE}" LOGIN PASSWORD %s',
                (values["warehouse_reader_password"],),
            )
            cur.execute(f'GRANT CONNECT ON DATABASE "warehouse" TO "{READER_ROLE}"')
    finally:
        conn.close()
    grant_reader(cfg, values)


def grant_reader(cfg: Config, values: dict[str, str]) -> None:
    """The Model reports page's role reads every table of the warehouse, those its owner
    makes later included (default privileges), and may write none. Run on every `up`, so
    a stack made before the role existed gets it on its tables too."""
    conn = _superuser(cfg, values, "warehouse")
    try:
        with conn.cursor() as cur:
            cur.execute(f'GRANT USAGE ON SCHEMA public TO "{READER_ROLE}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{READER_ROLE}"')
            cur.execute(
                'ALTER DEFAULT PRIVILEGES FOR ROLE "warehouse" IN SCHEMA public '
                f'GRANT SELECT ON TABLES TO "{READER_ROLE}"'
            )
    finally:
        conn.close()
