#!/usr/bin/env python3
"""The Airflow stack without Docker: `make up`, `make down`, `make stack-status`, `make logs`.

    python deploy/stack/stack.py up | down | status | logs | run CMD [ARG...]

`up` starts a private PostgreSQL cluster (initdb into the state folder, 127.0.0.1 only,
TCP only), creates the metastore database `airflow` and the `warehouse` database and
user, generates the secrets once, migrates the metastore, seeds the demo warehouse
(idempotent), then runs scheduler, dag-processor, api-server and triggerer under honcho
(deploy/stack/Procfile) in a session of their own, and waits until
/api/v2/monitor/health reports every component healthy. A second `up` finds the running
stack and only prints where it is.

`down` stops every process `up` started, every time. They are found by the marker
FLIGHT_DELAYS_STACK=<state folder> in their environment, by session (honcho starts each
component in one of its own) and by descent, so none escapes by re-parenting or by
hiding its environment behind setproctitle. The scheduler first (alone, not its
executor's workers), then SIGTERM to every process group of the stack, a grace period,
SIGKILL for what is left (the scheduler can hang on SIGTERM). Then PostgreSQL stops
(fast shutdown, immediate if that fails). The data stays.

`run` executes a command with the stack's settings (metastore, connections, folders),
e.g. `deploy/stack/stack.py run airflow backfill create --dag-id flight_delays ...`.

Settings (environment variables, all optional):
  FLIGHT_DELAYS_STACK_DIR          state folder (default: <repo>/.stack)
  FLIGHT_DELAYS_STACK_ROOT         project root: include/params.yaml and the artifact
                                   folders (default: the repository)
  FLIGHT_DELAYS_STACK_API_PORT     web UI and REST API on 127.0.0.1 (default 8080)
  FLIGHT_DELAYS_STACK_PG_PORT      PostgreSQL on 127.0.0.1 (default 5433)
  FLIGHT_DELAYS_STACK_HEALTH_PORT  scheduler health check on 127.0.0.1 (default 8974)
  FLIGHT_DELAYS_STACK_SEED         1: seed the demo warehouse on `up` (default); 0: skip
  FLIGHT_DELAYS_STACK_UP_TIMEOUT   seconds to wait for a healthy API (default 180)
  FLIGHT_DELAYS_STACK_STOP_TIMEOUT seconds between SIGTERM and SIGKILL (default 20)
  FLIGHT_DELAYS_STACK_PG_BIN       PostgreSQL's bin folder (default: newest of
                                   /usr/lib/postgresql/*/bin, 15 preferred)

Standard library only, except honcho and psycopg2 (from the venv) for `up`: `down`
works with any Python 3.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROCFILE = HERE / "Procfile"
SHARED_ENV = REPO / "deploy" / "airflow.env"
STACK_ENV = HERE / "settings.env"
MARKER = "FLIGHT_DELAYS_STACK"
COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer")
# The Airflow connection the DAG reads the warehouse URL from (dags/flight_delays.py).
WAREHOUSE_CONN_ENV = "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE"
PG_USER = "postgres"  # initdb refuses to run as root: the cluster belongs to this user
ADMIN_USER = "admin"


# honcho's own CLI, with its grace period between SIGTERM and SIGKILL (KILL_WAIT, 5 s,
# counted from the first component that exits) set to FLIGHT_DELAYS_STACK_STOP_TIMEOUT:
# one grace period for the whole stack, whoever escalates.
HONCHO_MAIN = (
    "import sys, honcho.manager, honcho.command; "
    "honcho.manager.KILL_WAIT = float(sys.argv.pop(1)); "
    "sys.argv[0] = 'honcho'; sys.exit(honcho.command.main())"
)


class StackError(RuntimeError):
    """Something the operator has to fix; the message says what."""


# --- configuration ---------------------------------------------------------------------
def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name} must be a port number, got {port}")
    return port


def _pg_bin() -> Path:
    chosen = os.environ.get("FLIGHT_DELAYS_STACK_PG_BIN")
    if chosen:
        return Path(chosen)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (p.parts[-3] != "15", -int(p.parts[-3]) if p.parts[-3].isdigit() else 0),
    )
    if found:
        return found[0].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise StackError(
        "PostgreSQL server binaries not found (initdb): `apt-get install -y postgresql` "
        "or set FLIGHT_DELAYS_STACK_PG_BIN"
    )


@dataclass(frozen=True)
class Config:
    state: Path
    root: Path
    api_port: int
    pg_port: int
    health_port: int
    seed: bool
    up_timeout: float
    stop_timeout: float

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            state=Path(env.get("FLIGHT_DELAYS_STACK_DIR") or REPO / ".stack").resolve(),
            root=Path(env.get("FLIGHT_DELAYS_STACK_ROOT") or REPO).resolve(),
            api_port=_port("FLIGHT_DELAYS_STACK_API_PORT", 8080),
            pg_port=_port("FLIGHT_DELAYS_STACK_PG_PORT", 5433),
            health_port=_port("FLIGHT_DELAYS_STACK_HEALTH_PORT", 8974),
            seed=env.get("FLIGHT_DELAYS_STACK_SEED", "1") not in ("0", "false", "no", ""),
            up_timeout=float(env.get("FLIGHT_DELAYS_STACK_UP_TIMEOUT", "180")),
            stop_timeout=float(env.get("FLIGHT_DELAYS_STACK_STOP_TIMEOUT", "20")),
        )

    # where things live in the state folder
    @property
    def pgdata(self) -> Path:
        return self.state / "pg"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def airflow_home(self) -> Path:
        return self.state / "airflow"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def generated_env(self) -> Path:
        return self.state / "generated.env"

    @property
    def passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    @property
    def info_file(self) -> Path:
        return self.state / "stack.json"

    @property
    def pid_file(self) -> Path:
        return self.state / "honcho.pid"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def _venv_bin() -> Path:
    # The interpreter running this script is the project's venv (make calls .venv/bin/python).
    return Path(sys.executable).parent


# --- small helpers -----------------------------------------------------------------------
def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (no readable window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(cfg: Config) -> Iterator[None]:
    """One `up`/`down` at a time per state folder."""
    cfg.state.mkdir(parents=True, exist_ok=True)
    with open(cfg.state / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another `up`/`down` of this stack is running; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no {path})"
    return "\n".join(f"    {line}" for line in text[-lines:])


# --- processes ----------------------------------------------------------------------------
def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _marked(data: bytes, value: str) -> bool:
    needle = f"{MARKER}={value}\0".encode()
    return data.startswith(needle) or b"\0" + needle in data


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time in clock ticks) of a live, non-zombie process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def stack_pids(cfg: Config) -> list[int]:
    """Every live process started by this stack's `up`.

    They carry the marker in their environment, but a process that sets its title
    (setproctitle: the api-server, LocalExecutor workers) overwrites the memory that
    /proc/<pid>/environ shows. So also: every process in the session of a marked process
    or in a session recorded by `up` (honcho starts each component in its own), and every
    descendant of those."""
    me, own_session = os.getpid(), os.getsid(0)
    table = {int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := _stat(int(e)))}
    found = {p for p in table if p != me and _marked(_environ(p), str(cfg.state))}
    live_sessions = {table[p][1] for p in found}
    info = _read_info(cfg)
    recorded = set(info.get("sessions", [])) - live_sessions
    since = info.get("since_ticks", 0)
    for pid, (_, session, started) in table.items():
        if session in (own_session, 0) or pid == me:
            continue
        if session in live_sessions or (session in recorded and started >= since):
            found.add(pid)
    grew = True
    while grew:  # descendants, e.g. a worker that started a session of its own
        children = {p for p, (ppid, _, _) in table.items() if ppid in found and p != me}
        grew = not children <= found
        found |= children
    return sorted(found)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def honcho_pid(cfg: Config) -> int | None:
    """The running supervisor of this stack, or None (a stale pid file is ignored)."""
    try:
        pid = int(cfg.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid) and _marked(_environ(pid), str(cfg.state)):
        return pid
    return None


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    """``sig`` to the process group of each pid (never our own group), and to the pid."""
    own = os.getpgrp()
    groups = {g for g in (_pgid(p) for p in pids) if g not in (None, 0, 1, own)}
    for group in sorted(groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], cfg: Config | None, timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` (and, with ``cfg``, every stack process) to
    exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if _alive(p)}
        if cfg is not None:
            left |= set(stack_pids(cfg))
        if not left or time.monotonic() >= deadline:
            return sorted(left)
        time.sleep(0.2)


def _session_of(pid: int, name: str) -> bool:
    stat = _stat(pid)
    return stat is not None and _component_of(_cmdline(stat[1])) == name


def _stop_scheduler_first(pids: list[int]) -> list[int]:
    """SIGTERM the scheduler process itself and the process groups of the tasks it runs,
    not its LocalExecutor workers. Returns the processes of its session.

    The workers share the scheduler's process group and wait on one multiprocessing queue:
    a worker killed while it holds the queue's lock leaves the others blocked, and the
    scheduler waits for them forever ("waiting for running tasks to finish"). Signalled
    alone, the scheduler tells each worker to stop through that queue; the tasks, told to
    stop, report their end through the execution API while the api-server still runs."""
    members = [p for p in pids if _session_of(p, "scheduler")]
    if not members:
        return []
    leader = _stat(members[0])[1] if _stat(members[0]) else None
    if leader is None:
        return members
    with contextlib.suppress(ProcessLookupError):
        os.kill(leader, signal.SIGTERM)
    tasks = {g for g in (_pgid(p) for p in members) if g not in (None, leader)}
    for group in tasks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    return members


def stop_processes(cfg: Config, timeout: float) -> dict[str, int]:
    """Stop every stack process; returns counts: found, killed (needed SIGKILL).

    1. The scheduler first (see _stop_scheduler_first), while the api-server still runs.
    2. SIGTERM to every process group of the stack (honcho forwards it too).
    Each phase waits up to ``timeout`` s, then SIGKILLs what is left, and sweeps until
    nothing of the stack is alive."""
    pids = stack_pids(cfg)
    if not pids:
        return {"found": 0, "killed": 0}
    found, killed = set(pids), 0
    scheduler = _stop_scheduler_first(pids)
    for phase in ("scheduler", "everything"):
        if phase == "scheduler":
            if not scheduler:
                continue
            members, everything = scheduler, None
        else:
            members, everything = stack_pids(cfg), cfg
            if not members:
                break
            found |= set(members)
            _signal_all(members, signal.SIGTERM)
        left = _wait_gone(members, everything, timeout)
        for _ in range(50):  # new children may appear while a group dies: sweep
            if not left:
                break
            found |= set(left)
            killed += len(left)
            say(f"still running {timeout:.0f} s after SIGTERM: {left}: SIGKILL")
            _signal_all(left, signal.SIGKILL)
            left = _wait_gone(left, everything, 0.5)
        else:
            raise StackError(f"processes survive SIGKILL: {left}")
    return {"found": len(found), "killed": killed}


# --- PostgreSQL ---------------------------------------------------------------------------
class Postgres:
    """A private PostgreSQL cluster in <state>/pg, owned by the `postgres` user when we
    run as root (initdb refuses root), listening on 127.0.0.1 only, no Unix socket."""

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

    def _own(self, path: Path) -> None:
        if self.as_root:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    @property
    def log(self) -> Path:
        return self.cfg.logs / "postgres.log"

    def initialised(self) -> bool:
        return (self.cfg.pgdata / "PG_VERSION").is_file()

    def init(self, superuser_password: str) -> None:
        pgdata = self.cfg.pgdata
        pgdata.mkdir(parents=True, exist_ok=True)
        pgdata.chmod(0o700)
        self._own(pgdata)
        if self.as_root:
            # The postgres user must reach the folder: the state folder stays listable
            # by its owner only, but traversable (its secrets are 0600 files).
            mode = self.cfg.state.stat().st_mode
            if not mode & 0o001:
                self.cfg.state.chmod(mode | 0o711)
            probe = self._run("test", "-w", pgdata, check=False)
            if probe.returncode != 0:
                raise StackError(
                    f"the {PG_USER} user cannot write {pgdata}: every folder above it must "
                    "be traversable by others (chmod o+x), or set FLIGHT_DELAYS_STACK_DIR "
                    "to a folder that is"
                )
        pwfile = self.cfg.state / ".pg-pwfile"  # initdb wants an empty data folder
        _write_private(pwfile, superuser_password + "\n")
        self._own(pwfile)
        try:
            say(f"initdb {pgdata}")
            self._run(
                self.bin / "initdb",
                "-D",
                pgdata,
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
        conf = self.cfg.pgdata / "postgresql.conf"
        include = "include_if_exists = 'stack.conf'"
        if include not in conf.read_text():
            with conf.open("a") as handle:
                handle.write(f"\n# flight-delay-pipeline stack (stack.py)\n{include}\n")
        stack_conf = self.cfg.pgdata / "stack.conf"
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
        status = self._run(self.bin / "pg_ctl", "-D", self.cfg.pgdata, "status", check=False)
        if status.returncode != 0:
            return None
        try:
            lines = (self.cfg.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

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
        self.configure()
        self.cfg.logs.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._own(self.log)
        say(f"starting PostgreSQL on 127.0.0.1:{self.cfg.pg_port}")
        result = self._run(
            self.bin / "pg_ctl",
            "-D",
            self.cfg.pgdata,
            "-l",
            self.log,
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not start; {self.log}:\n{_tail(self.log)}")

    def stop(self) -> bool:
        """Stop the cluster if it runs; True if it was running."""
        if not self.initialised() or self.running_port() is None:
            return False
        pgdata = self.cfg.pgdata
        for mode in ("fast", "immediate"):
            result = self._run(
                self.bin / "pg_ctl", "-D", pgdata, "-m", mode, "-w", "-t", "30", "stop", check=False
            )
            if result.returncode == 0:
                return True
            say(f"pg_ctl stop -m {mode} failed: {result.stderr.strip()}")
        # Last resort: the postmaster's pid from its lock file.
        with contextlib.suppress(OSError, ValueError, IndexError, ProcessLookupError):
            pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        return True

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.cfg.pgdata / "postmaster.pid").read_text().splitlines()[0])
            if _alive(pid):
                return pid
        return None


# --- secrets and settings ----------------------------------------------------------------
def ensure_secrets(cfg: Config) -> dict[str, str]:
    """The stack's secrets, generated on the first `up` and kept (0600) in the state folder."""
    if cfg.secrets_file.is_file():
        return json.loads(cfg.secrets_file.read_text())
    values = {
        # Fernet: 32 random bytes, url-safe base64 (what Fernet.generate_key returns).
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        # Shared by every component: workers fail with "Signature verification failed"
        # when the api-server and the scheduler sign with different secrets.
        "jwt_secret": secrets.token_hex(32),
        "api_secret_key": secrets.token_hex(32),
        "admin_password": secrets.token_urlsafe(12).replace("-", "x").replace("_", "y"),
        "postgres_password": secrets.token_hex(16),
        "airflow_db_password": secrets.token_hex(16),
        "warehouse_password": secrets.token_hex(16),
    }
    _write_private(cfg.secrets_file, json.dumps(values, indent=2) + "\n")
    say(f"generated secrets in {cfg.secrets_file} (mode 0600)")
    return values


def _pg_url(user: str, password: str, port: int, database: str, driver: str = "") -> str:
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    return f"{scheme}://{user}:{password}@127.0.0.1:{port}/{database}"


def warehouse_url(cfg: Config, values: dict[str, str]) -> str:
    return _pg_url("warehouse", values["warehouse_password"], cfg.pg_port, "warehouse")


def generated_settings(cfg: Config, values: dict[str, str]) -> dict[str, str]:
    """The per-stack settings: folders, ports, URLs and secrets."""
    warehouse = warehouse_url(cfg, values)
    return {
        "AIRFLOW_HOME": str(cfg.airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _pg_url(
            "airflow", values["airflow_db_password"], cfg.pg_port, "airflow", "psycopg2"
        ),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__FERNET_KEY": values["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": values["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": values["api_secret_key"],
        "AIRFLOW__API__PORT": str(cfg.api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.api_url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.passwords_file),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cfg.logs / "airflow"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
            cfg.logs / "airflow" / "dag_processor"
        ),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(cfg.health_port),
        WAREHOUSE_CONN_ENV: warehouse,
        # Steps that fall back to the package default (the seed CLI, the model registry)
        # reach the same warehouse as the connection.
        "FLIGHT_DELAYS_SOURCE_URL": warehouse,
        "FLIGHT_DELAYS_HOME": str(cfg.root),
        "STACK_LOG_DIR": str(cfg.logs),
    }


def write_settings(cfg: Config, values: dict[str, str]) -> None:
    settings = generated_settings(cfg, values)
    lines = [
        "# Generated by deploy/stack/stack.py on every `make up`: folders, ports and secrets",
        "# of this stack. Holds passwords: mode 0600, never commit.",
        *(f"{key}={value}" for key, value in settings.items()),
    ]
    _write_private(cfg.generated_env, "\n".join(lines) + "\n")
    cfg.airflow_home.mkdir(parents=True, exist_ok=True)
    current = {}
    if cfg.passwords_file.is_file():
        with contextlib.suppress(ValueError):
            current = json.loads(cfg.passwords_file.read_text() or "{}")
    if current.get(ADMIN_USER) != values["admin_password"]:
        current[ADMIN_USER] = values["admin_password"]
        _write_private(cfg.passwords_file, json.dumps(current) + "\n")
    cfg.passwords_file.chmod(0o600)


def env_files(cfg: Config) -> list[Path]:
    """The settings files every component gets, in the order later ones override:
    deploy/airflow.env, deploy/stack/settings.env, <state>/generated.env."""
    return [SHARED_ENV, STACK_ENV, cfg.generated_env]


def read_env_files(cfg: Config) -> dict[str, str]:
    """:func:`env_files` merged with honcho's own parser: exactly what the components
    get."""
    from honcho.environ import parse

    return parse("\n".join(path.read_text() for path in env_files(cfg)))


def clean_environ() -> dict[str, str]:
    """The caller's environment without Airflow or project settings (a developer's shell
    or the Makefile's exports must not change the stack), venv first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "FLIGHT_DELAYS_", "_AIRFLOW"))
    }
    env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return env


def command_env(cfg: Config) -> dict[str, str]:
    """Environment for one-off commands (migrate, seed, `run`): the components' settings,
    without the marker (so `down` leaves a developer's own commands alone)."""
    return {**clean_environ(), **read_env_files(cfg)}


# --- health ------------------------------------------------------------------------------
def health(cfg: Config, timeout: float = 3) -> dict | None:
    try:
        with urllib.request.urlopen(f"{cfg.api_url}/api/v2/monitor/health", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _heartbeat(component: dict) -> datetime | None:
    for key, value in component.items():
        if key.endswith("heartbeat") and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return None


def healthy(report: dict | None, since: datetime | None = None) -> bool:
    """Every component healthy, and (``since``) its heartbeat newer than ``since``: after a
    restart the metastore still holds the heartbeats of the previous processes."""
    if not report:
        return False
    for name in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        part = report.get(name) or {}
        if part.get("status") != "healthy":
            return False
        if since is not None and name != "metadatabase":
            beat = _heartbeat(part)
            if beat is None or beat < since:
                return False
    return True


# --- commands ----------------------------------------------------------------------------
def _run_logged(cfg: Config, name: str, args: list[str], env: dict[str, str]) -> None:
    log = cfg.logs / f"{name}.log"
    with log.open("a") as handle:
        handle.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(
            args, env=env, cwd=cfg.root, stdout=handle, stderr=subprocess.STDOUT, timeout=1800
        )
    if result.returncode != 0:
        raise StackError(f"{' '.join(args[:3])} failed ({result.returncode}); {log}:\n{_tail(log)}")


def create_databases(cfg: Config, values: dict[str, str]) -> None:
    import psycopg2

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


def _write_info(cfg: Config, pid: int) -> None:
    """stack.json: where this stack is, and (once it is up) the sessions of its components
    with the supervisor's start time, so that `down` finds them even without a marker."""
    stat = _stat(pid)
    info = {
        "pid": pid,
        "state": str(cfg.state),
        "root": str(cfg.root),
        "api_url": cfg.api_url,
        "api_port": cfg.api_port,
        "pg_port": cfg.pg_port,
        "health_port": cfg.health_port,
        "logs": str(cfg.logs),
        "passwords_file": str(cfg.passwords_file),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "since_ticks": stat[2] if stat else 0,
        "sessions": sorted({st[1] for p in stack_pids(cfg) if (st := _stat(p))}),
    }
    cfg.info_file.write_text(json.dumps(info, indent=2) + "\n")


def _read_info(cfg: Config) -> dict:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(cfg.info_file.read_text())
    return {}


def _print_where(cfg: Config, info: dict | None = None) -> None:
    info = info or _read_info(cfg)
    url = info.get("api_url", cfg.api_url)
    passwords = info.get("passwords_file", str(cfg.passwords_file))
    print(
        f"\n  Airflow UI and REST API: {url}/\n"
        f"  login: user `{ADMIN_USER}`, password in {passwords}\n"
        f"  logs:  {info.get('logs', cfg.logs)}/  (make logs)\n"
        f"  artifacts under {info.get('root', cfg.root)}/  (data/, models/, reports/)\n"
        f"  stop:  make down\n",
        flush=True,
    )


def up(cfg: Config) -> int:
    started = time.monotonic()
    venv = _venv_bin()
    for tool in ("airflow", "honcho"):
        if not (venv / tool).exists():
            raise StackError(f"{venv / tool} missing: run `make venv` first")
    with _locked(cfg):
        pid = honcho_pid(cfg)
        if pid is not None:
            info = _read_info(cfg)
            report = health(replace(cfg, api_port=info.get("api_port", cfg.api_port)))
            state = "healthy" if healthy(report) else "running, not (yet) healthy"
            say(f"already running (honcho pid {pid}, {state}): nothing to do")
            _print_where(cfg, info)
            return 0
        leftovers = stack_pids(cfg)
        if leftovers:
            say(f"stale processes of a previous stack: {leftovers}; stopping them")
            stop_processes(cfg, cfg.stop_timeout)
        if not _port_free(cfg.api_port):
            raise StackError(
                f"port {cfg.api_port} on 127.0.0.1 is taken: choose another with "
                "FLIGHT_DELAYS_STACK_API_PORT"
            )
        for folder in (cfg.state, cfg.logs, cfg.logs / "airflow", cfg.airflow_home):
            folder.mkdir(parents=True, exist_ok=True)
        values = ensure_secrets(cfg)
        pg = Postgres(cfg)
        if not pg.initialised():
            pg.init(values["postgres_password"])
        pg.start()
        create_databases(cfg, values)
        write_settings(cfg, values)
        env = command_env(cfg)

        say("migrating the metastore (airflow db migrate)")
        _run_logged(cfg, "migrate", [str(venv / "airflow"), "db", "migrate"], env)
        if cfg.seed:
            say("seeding the demo warehouse (idempotent; the first time takes a minute)")
            _run_logged(
                cfg,
                "seed",
                [str(venv / "python"), "-m", "flight_delays.source", "seed"],
                env,
            )

        say("starting scheduler, dag-processor, api-server and triggerer under honcho")
        honcho_env = {**env, MARKER: str(cfg.state)}
        settings_files = ",".join(str(p) for p in env_files(cfg))
        log = (cfg.logs / "honcho.log").open("a")
        process = subprocess.Popen(
            [
                str(venv / "python"),
                "-c",
                HONCHO_MAIN,
                str(cfg.stop_timeout),
                "start",
                "--no-colour",
                "-f",
                str(PROCFILE),
                "-e",
                settings_files,
                "-d",
                str(cfg.root),
            ],
            env=honcho_env,
            cwd=cfg.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: no signal of this shell reaches the stack
        )
        log.close()
        cfg.pid_file.write_text(f"{process.pid}\n")
        _write_info(cfg, process.pid)
        launched = datetime.now().astimezone()

        deadline = time.monotonic() + cfg.up_timeout
        report = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            report = health(cfg)
            if healthy(report, since=launched):
                break
            time.sleep(1)
        if not healthy(report, since=launched):
            why = (
                f"honcho exited ({process.returncode})"
                if process.poll() is not None
                else f"not healthy after {cfg.up_timeout:.0f} s: {json.dumps(report)}"
            )
            logs = "\n".join(
                f"  {name}.log:\n{_tail(cfg.logs / f'{name}.log', 15)}"
                for name in ("honcho", *COMPONENTS)
            )
            say(f"the stack did not come up: {why}\n{logs}\nstopping what was started")
            stop_processes(cfg, cfg.stop_timeout)
            pg.stop()
            return 1
    _write_info(cfg, process.pid)  # now with the components' sessions
    elapsed = time.monotonic() - started
    say(f"healthy after {elapsed:.1f} s (honcho pid {process.pid})")
    _print_where(cfg)
    return 0


def down(cfg: Config) -> int:
    if not cfg.state.exists():
        say(f"no stack in {cfg.state}: nothing to stop")
        return 0
    with _locked(cfg):
        started = time.monotonic()
        # honcho escalates after the same grace period; this is the backstop.
        counts = stop_processes(cfg, cfg.stop_timeout + 5)
        if counts["found"]:
            how = f", {counts['killed']} needed SIGKILL" if counts["killed"] else ""
            say(f"stopped {counts['found']} Airflow processes{how}")
        else:
            say("no Airflow process of this stack was running")
        try:
            stopped = Postgres(cfg).stop()
        except StackError as exc:
            if (cfg.pgdata / "PG_VERSION").exists():
                raise
            say(f"({exc})")
            stopped = False
        say("PostgreSQL stopped" if stopped else "PostgreSQL was not running")
        cfg.pid_file.unlink(missing_ok=True)
        say(f"down in {time.monotonic() - started:.1f} s; data kept in {cfg.state}")
    return 0


def _component_of(cmdline: str) -> str | None:
    for name in COMPONENTS:
        if f"airflow {name}" in cmdline.replace("_", "-"):
            return name
    return None


def memory_by_component(cfg: Config) -> dict[str, dict[str, int]]:
    """RSS in KiB of each component: its main process and its whole session (honcho
    starts each component in a session of its own; LocalExecutor workers, the task
    processes they fork, api-server workers and parsing processes stay in it)."""
    sessions: dict[int, list[int]] = {}
    for pid in stack_pids(cfg):
        stat = _stat(pid)
        if stat is not None:
            sessions.setdefault(stat[1], []).append(pid)
    out = {}
    for leader, members in sessions.items():
        line = _cmdline(leader)
        name = _component_of(line) or ("honcho" if "honcho" in line else None)
        if name is None:
            continue
        out[name] = {
            "processes": len(members),
            "main_kib": _rss_kib(leader),
            "group_kib": sum(_rss_kib(p) for p in members),
        }
    with contextlib.suppress(StackError):
        postmaster = Postgres(cfg).postmaster_pid()
        if postmaster is not None:
            children = [
                int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == postmaster
            ]
            out["postgres"] = {
                "processes": 1 + len(children),
                "main_kib": _rss_kib(postmaster),
                "group_kib": _rss_kib(postmaster) + sum(_rss_kib(c) for c in children),
            }
    return out


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def status(cfg: Config) -> int:
    info = _read_info(cfg)
    pid = honcho_pid(cfg)
    if pid is None:
        say(f"not running (state folder {cfg.state})")
        leftovers = stack_pids(cfg)
        if leftovers:
            say(f"but processes of it are left: {leftovers}: `make down`")
        return 3
    api = replace(cfg, api_port=info.get("api_port", cfg.api_port))
    report = health(api)
    say(f"running: honcho pid {pid}, since {info.get('started_at', '?')}")
    say(f"health: {'healthy' if healthy(report) else 'NOT healthy'}")
    for name, part in (report or {}).items():
        print(f"    {name:14} {part.get('status')}")
    say("resident memory (RSS, MiB): main process / with all its processes")
    for name, mem in sorted(memory_by_component(cfg).items()):
        print(
            f"    {name:14} {mem['main_kib'] / 1024:7.0f} / {mem['group_kib'] / 1024:7.0f}"
            f"   ({mem['processes']} processes)"
        )
    _print_where(cfg, info)
    return 0 if healthy(report) else 1


def logs(cfg: Config) -> int:
    files = sorted(str(p) for p in cfg.logs.glob("*.log"))
    if not files:
        say(f"no logs in {cfg.logs}")
        return 1
    os.execvp("tail", ["tail", "-n", "20", "-F", *files])
    return 0  # not reached


def run(cfg: Config, argv: list[str]) -> int:
    if not argv:
        raise StackError("usage: stack.py run COMMAND [ARG...]")
    if not cfg.generated_env.is_file():
        raise StackError(f"no stack in {cfg.state}: `make up` first")
    env = command_env(cfg)
    os.chdir(cfg.root)
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("up", "down", "status", "logs", "run")
    if not argv or argv[0] not in commands:
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    try:
        cfg = Config.from_env()
        command, rest = argv[0], argv[1:]
        if command == "run":
            return run(cfg, rest[1:] if rest[:1] == ["--"] else rest)
        return {"up": up, "down": down, "status": status, "logs": logs}[command](cfg)
    except (StackError, ValueError) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
