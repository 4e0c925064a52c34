"""Settings of the stack without Docker: where its state lives, its ports, its secrets and
the environment every component gets (deploy/airflow.env + deploy/executor-<executor>.env
+ deploy/stack/settings.env + <state>/generated.env + the file FLIGHT_DELAYS_STACK_ENV_FILE
names). Also the error type and the message helper every module of the package uses.
Standard library only: `make down` runs with any Python 3."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError

PACKAGE = Path(__file__).resolve().parent
HERE = PACKAGE.parent  # deploy/stack: the entry script stack.py and the tracked settings
REPO = HERE.parents[1]
SUPERVISOR_CONF = HERE / "supervisord.conf"
# The celery stack: supervisord.conf plus redis, the S3 server and two Celery workers.
CELERY_SUPERVISOR_CONF = HERE / "supervisord-celery.conf"
COMPONENT_WRAPPER = PACKAGE / "component.py"  # run by supervisord for each component
SHARED_ENV = REPO / "deploy" / "airflow.env"
# The executors the stack runs, each with the settings file docker-compose reads for it
# too (deploy/executor-<name>.env: FLIGHT_DELAYS_EXECUTOR in .env).
EXECUTORS = ("local", "celery")
STACK_ENV = HERE / "settings.env"
MARKER = "FLIGHT_DELAYS_STACK"
COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer")
# The celery stack's other programs (supervisord-celery.conf): the broker, the object
# store, and two Celery workers that share nothing on this machine but those two, the
# metastore and the warehouse (each has its own home, temporary and working folder).
WORKERS = ("worker-1", "worker-2")
CELERY_PROGRAMS = ("redis", "s3", *WORKERS)
# The Airflow connection the DAG reads the warehouse URL from (dags/flight_delays_pipeline.py).
WAREHOUSE_CONN_ENV = "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE"
# The same warehouse as a role that may only read it: the Model reports page's connection
# (plugins/model_reports.py, READER_CONN_ID).
READER_CONN_ENV = "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE_READER"
READER_ROLE = "warehouse_reader"
# supervisord's program for the stack's PostgreSQL (supervisord.conf).
PG_PROGRAM = "postgres"
PG_USER = "postgres"  # initdb refuses to run as root: the cluster belongs to this user
ADMIN_USER = "admin"
# A Unix socket path holds at most 107 bytes, and multiprocessing's forkserver puts one in
# the temporary folder: /pymp-XXXXXXXX/listener-XXXXXXXX, 32 more.
TMP_DIR_MAX = 107 - 32


# --- configuration ---------------------------------------------------------------------
def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name} must be a port number, got {port}")
    return port


def _host(env: Mapping[str, str], name: str, default: str) -> str:
    host = (env.get(name) or default).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", host):
        raise StackError(f"{name} must be a host name or address, got {host!r}")
    return host


def _executor(env: Mapping[str, str]) -> str:
    executor = (env.get("FLIGHT_DELAYS_STACK_EXECUTOR") or "local").strip().lower()
    if executor not in EXECUTORS:
        raise StackError(
            f"FLIGHT_DELAYS_STACK_EXECUTOR must be one of {', '.join(EXECUTORS)} "
            f"(make up EXECUTOR=...), got {executor!r}"
        )
    return executor


def redis_server() -> Path:
    """redis-server, the celery stack's broker (Debian's package)."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise StackError(
            "redis-server not found (the Celery broker): `apt-get install -y redis-server`"
        )
    return Path(found)


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
    executor: str = "local"
    redis_port: int = 6380
    s3_port: int = 9100
    # Where the components send Airflow's StatsD metrics (UDP; [metrics] statsd_on is in
    # deploy/airflow.env): a statsd_exporter or any StatsD server on this machine.
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    # An operator's own settings file, read last: overrides for this machine without
    # editing the tracked files (the live tests cap the retry delay with it).
    local_env: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """The settings from ``env`` (default: this process's environment)."""
        env = os.environ if env is None else env
        return cls(
            state=Path(env.get("FLIGHT_DELAYS_STACK_DIR") or REPO / ".stack").resolve(),
            root=Path(env.get("FLIGHT_DELAYS_STACK_ROOT") or REPO).resolve(),
            api_port=_port(env, "FLIGHT_DELAYS_STACK_API_PORT", 8080),
            pg_port=_port(env, "FLIGHT_DELAYS_STACK_PG_PORT", 5433),
            health_port=_port(env, "FLIGHT_DELAYS_STACK_HEALTH_PORT", 8974),
            seed=env.get("FLIGHT_DELAYS_STACK_SEED", "1") not in ("0", "false", "no", ""),
            up_timeout=float(env.get("FLIGHT_DELAYS_STACK_UP_TIMEOUT", "180")),
            stop_timeout=float(env.get("FLIGHT_DELAYS_STACK_STOP_TIMEOUT", "20")),
            executor=_executor(env),
            redis_port=_port(env, "FLIGHT_DELAYS_STACK_REDIS_PORT", 6380),
            s3_port=_port(env, "FLIGHT_DELAYS_STACK_S3_PORT", 9100),
            statsd_host=_host(env, "FLIGHT_DELAYS_STACK_STATSD_HOST", "127.0.0.1"),
            statsd_port=_port(env, "FLIGHT_DELAYS_STACK_STATSD_PORT", 8125),
            local_env=Path(env["FLIGHT_DELAYS_STACK_ENV_FILE"]).resolve()
            if env.get("FLIGHT_DELAYS_STACK_ENV_FILE")
            else None,
        )

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def executor_env(self) -> Path:
        """The executor's settings file, shared with docker-compose."""
        return REPO / "deploy" / f"executor-{self.executor}.env"

    @property
    def supervisor_conf(self) -> Path:
        return CELERY_SUPERVISOR_CONF if self.celery else SUPERVISOR_CONF

    @property
    def programs(self) -> tuple[str, ...]:
        """The programs supervisord runs for this executor."""
        return (PG_PROGRAM, *COMPONENTS, *(CELERY_PROGRAMS if self.celery else ()))

    @property
    def database_programs(self) -> tuple[str, ...]:
        """The programs that need the migrated metastore: supervisord does not start them
        itself (autostart = false), `up` does once the migrations ran."""
        return (*COMPONENTS, *(WORKERS if self.celery else ()))

    # where things live in the state folder
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
        """Written by supervisord itself (pidfile in supervisord.conf)."""
        return self.state / "supervisord.pid"

    @property
    def supervisor_socket(self) -> Path:
        """supervisord's control socket. A Unix socket path holds at most 107 bytes: a
        deep state folder gets a short one in the temporary folder, named after it."""
        inside = self.state / "supervisor.sock"
        if len(str(inside).encode()) < 100:
            return inside
        digest = hashlib.sha256(str(self.state).encode()).hexdigest()[:16]
        return Path("/tmp") / f"flight-delays-supervisor-{digest}.sock"

    @property
    def tmp_dir(self) -> Path | None:
        """The components' temporary folder (TMPDIR), in the state folder, which `up`
        empties while nothing of the stack runs: what a killed process left goes with it,
        and never piles up in /tmp (the scheduler's forkserver folder, pymp-*, was left
        there by every stack). `down` leaves it: a one-off `stack.py run` command, which
        `down` does not stop, may still use it, and `up` leaves it while one does
        (:func:`hold_tmp_dir`). None when the state folder is so deep
        that the forkserver's socket inside would not fit: the system's folder then. (The
        Celery workers' own folders, deeper, hold no socket: no forkserver there.)"""
        inside = self.state / "tmp"
        return inside if len(str(inside).encode()) <= TMP_DIR_MAX else None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def redis_conf(self) -> Path:
        """redis-server's configuration: it holds the broker's password (mode 0600)."""
        return self.state / "redis" / "redis.conf"

    def worker_dir(self, worker: str) -> Path:
        """A Celery worker's own folder: its working directory, its project home
        (FLIGHT_DELAYS_HOME: include/ linked to the project's, anything written locally
        stays here), its temporary folder and its Airflow home. No other worker reads it."""
        return self.state / "workers" / worker


def _venv_bin() -> Path:
    """The bin folder of the project's environment: the checkout's .venv when it holds
    airflow (`make venv`), whatever interpreter runs this script: run by its shebang's
    python3 (`deploy/stack/stack.py run airflow ...`), or with another project's venv
    active, it looked for airflow beside that python ("No such file or directory:
    b'/bin/airflow'"). Else the running interpreter's own (an environment made another
    way)."""
    checkout = REPO / ".venv" / "bin"
    return checkout if (checkout / "airflow").exists() else Path(sys.executable).parent


# --- small helpers -----------------------------------------------------------------------
def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` with ``mode`` (0600) from the start, never through a
    link: the text goes to a new, randomly named file created with O_EXCL|O_NOFOLLOW (a
    file or symlink planted there makes the open fail, it is never followed), is
    fsynced, and the file is renamed over ``path``. The rename replaces a symlink planted
    at ``path`` itself; it never writes to what the link points to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself survives a crash only once the folder is on disk.
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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


# --- secrets and settings ----------------------------------------------------------------
def ensure_secrets(cfg: Config) -> dict[str, str]:
    """The stack's secrets, generated on the first `up` and kept (0600) in the state folder."""
    kept = json.loads(cfg.secrets_file.read_text()) if cfg.secrets_file.is_file() else {}
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
        # The Model reports page's role on the warehouse: SELECT only.
        "warehouse_reader_password": secrets.token_hex(16),
        # The celery stack's broker and object store (moto takes any key; a real store
        # would check them).
        "redis_password": secrets.token_hex(16),
        "s3_access_key": "stack" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_hex(20),
    }
    if kept.keys() >= values.keys():
        return kept
    # Kept values win: a secret added by a newer version is generated, none is replaced.
    values.update(kept)
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
        "AIRFLOW__METRICS__STATSD_HOST": cfg.statsd_host,
        "AIRFLOW__METRICS__STATSD_PORT": str(cfg.statsd_port),
        WAREHOUSE_CONN_ENV: warehouse,
        READER_CONN_ENV: _pg_url(
            READER_ROLE, values["warehouse_reader_password"], cfg.pg_port, "warehouse"
        ),
        # Steps that fall back to the package default (the seed CLI, the model registry)
        # reach the same warehouse as the connection.
        "FLIGHT_DELAYS_SOURCE_URL": warehouse,
        "FLIGHT_DELAYS_HOME": str(cfg.root),
        "STACK_LOG_DIR": str(cfg.logs),
        **({"TMPDIR": str(cfg.tmp_dir)} if cfg.tmp_dir is not None else {}),
        **(celery_settings(cfg, values) if cfg.celery else {}),
    }


def celery_settings(cfg: Config, values: dict[str, str]) -> dict[str, str]:
    """The celery stack's per-stack settings: the broker (this stack's redis, with its
    password), the result backend (the metastore's database, as Airflow advises) and the
    S3 server every component reaches the artifact root through
    (FLIGHT_DELAYS_STORAGE_URL, in deploy/executor-celery.env)."""
    metastore = ("airflow", values["airflow_db_password"], cfg.pg_port, "airflow")
    return {
        "AIRFLOW__CELERY__BROKER_URL": (
            f"redis://:{values['redis_password']}@127.0.0.1:{cfg.redis_port}/0"
        ),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + _pg_url(*metastore),
        "AWS_ENDPOINT_URL": cfg.s3_endpoint,
        "AWS_ACCESS_KEY_ID": values["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": values["s3_secret_key"],
        # Only this endpoint: never the instance metadata service of a cloud machine.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def write_redis_conf(cfg: Config, values: dict[str, str]) -> None:
    """redis-server's settings, rewritten on every `up` (the port may change): loopback
    only, the broker's password, no snapshot or append-only file (a queued task lost with
    a restart is queued again by the scheduler: [scheduler] task_queued_timeout)."""
    folder = cfg.redis_conf.parent
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by deploy/stack/stack.py on every `make up`. Holds the broker's password.",
        "bind 127.0.0.1",
        f"port {cfg.redis_port}",
        "protected-mode yes",
        f"requirepass {values['redis_password']}",
        "daemonize no",
        'save ""',
        "appendonly no",
        f"dir {folder}",
        'logfile ""',
    ]
    _write_private(cfg.redis_conf, "\n".join(lines) + "\n")


def _tmp_lock(folder: Path) -> int:
    """A descriptor of ``folder``'s lock file, beside it (emptying the folder keeps it).
    Raises StackError naming the folder or the file that cannot be made or opened (a
    folder in the lock file's place, say), rather than a traceback from `up` or `run`."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StackError(f"cannot make the state folder {folder.parent}: {exc}") from exc
    lock = folder.with_name(f"{folder.name}.lock")
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StackError(
            f"cannot open the lock file of the stack's temporary folder, {lock}: "
            f"{exc.strerror or exc}; remove or fix it, then try again"
        ) from exc


def hold_tmp_dir(folder: Path) -> int:
    """For a `stack.py run` command: ``folder`` (:attr:`Config.tmp_dir`) made if missing,
    private, under a shared lock whose descriptor the command inherits (it survives the
    exec; returned), so :func:`fresh_tmp_dir` leaves the folder alone while the command
    and what it forks without closing descriptors run. Waits while `up` empties it.
    Raises StackError naming the folder when it cannot be made (a file in its place)."""
    fd = _tmp_lock(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        os.close(fd)
        raise StackError(
            f"cannot make or lock the stack's temporary folder {folder}: "
            f"{exc.strerror or exc}; "
            "`make up` replaces a file or a link in its place"
        ) from exc
    os.set_inheritable(fd, True)
    return fd


def fresh_tmp_dir(folder: Path | None) -> bool:
    """Empty ``folder`` (a temporary folder of the stack's, :attr:`Config.tmp_dir`; None:
    nothing to do), made again, private: only while nothing of the stack runs. A symbolic
    link or a file in its place is removed, never followed. Raises StackError naming what
    could not be removed (a file another user left, say), rather than hand the stack a
    folder of unknown content. False, the folder left as it is (made if missing), while
    a `stack.py run` command holds it (:func:`hold_tmp_dir`): its files are in use."""
    if folder is None:
        return True
    fd = _tmp_lock(folder)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            folder.mkdir(mode=0o700, exist_ok=True)
            return False
        _empty(folder)
        folder.mkdir(mode=0o700)
        return True
    finally:
        os.close(fd)  # and the lock with it


def _empty(folder: Path) -> None:
    """Remove ``folder`` (a link or a file in its place: unlinked, never followed)."""
    failed: list[str] = []

    def note(_function: object, path: str, exc: BaseException) -> None:
        failed.append(f"{path}: {exc.strerror if isinstance(exc, OSError) else exc}")

    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    elif folder.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(folder, onexc=note)
        else:  # onerror is deprecated from 3.12 on
            shutil.rmtree(folder, onerror=lambda f, p, info: note(f, p, info[1]))
    if failed:
        raise StackError(
            f"cannot empty the stack's temporary folder {folder}: {failed[0]}"
            + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
            + "; remove it by hand (it holds only temporary files), then start again"
        )


def prepare_workers(cfg: Config) -> None:
    """Each Celery worker's own folders (:meth:`Config.worker_dir`): home/include links to
    the project's include/ (the parameters: code and configuration, as dags/ is); the
    artifact folders are never made here, they live in the object store."""
    for worker in WORKERS:
        folder = cfg.worker_dir(worker)
        for sub in ("home", "airflow"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        fresh_tmp_dir(folder / "tmp")  # its TMPDIR
        link = folder / "home" / "include"
        target = cfg.root / "include"
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)


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
    # A link there is never read nor kept: the file is written anew in its place.
    link = cfg.passwords_file.is_symlink()
    if cfg.passwords_file.is_file() and not link:
        with contextlib.suppress(ValueError):
            current = json.loads(cfg.passwords_file.read_text() or "{}")
    if link or current.get(ADMIN_USER) != values["admin_password"]:
        current[ADMIN_USER] = values["admin_password"]
        _write_private(cfg.passwords_file, json.dumps(current) + "\n")
    cfg.passwords_file.chmod(0o600)


def env_files(cfg: Config) -> list[Path]:
    """The settings files every component gets, in the order later ones override:
    deploy/airflow.env, deploy/executor-<executor>.env (both shared with docker-compose),
    deploy/stack/settings.env, <state>/generated.env, and the file
    FLIGHT_DELAYS_STACK_ENV_FILE names, if any."""
    local = [cfg.local_env] if cfg.local_env is not None else []
    return [SHARED_ENV, cfg.executor_env, STACK_ENV, cfg.generated_env, *local]


ENV_LINE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>[^\s\"'`$\\]*)")


def parse_env(text: str, source: str = "<env>") -> dict[str, str]:
    """KEY=value lines; blank lines and `#` comments skipped.

    The files are also docker-compose `env_file`s: a strict subset that every reader
    (Compose, dotenv, shells) takes the same way. No quotes, spaces, `$` or backslashes
    in values: such a line is an error here rather than a value that differs between the
    two stacks."""
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = ENV_LINE.fullmatch(line)
        if match is None:
            raise StackError(
                f"{source}:{number}: expected KEY=value without quotes, spaces, $ or "
                f"backslashes: {line!r}"
            )
        values[match["key"]] = match["value"]
    return values


def read_env_files(cfg: Config) -> dict[str, str]:
    """:func:`env_files` merged, later files winning: exactly what the components get."""
    if cfg.local_env is not None and not cfg.local_env.is_file():
        raise StackError(f"FLIGHT_DELAYS_STACK_ENV_FILE names {cfg.local_env}, which is not a file")
    merged: dict[str, str] = {}
    for path in env_files(cfg):
        merged.update(parse_env(path.read_text(), str(path)))
    return merged


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
    without the marker (so `down` leaves a developer's own commands alone), and the
    control socket, so `stack.py run supervisorctl -c deploy/stack/supervisord.conf ...`
    reaches the stack's supervisord (docs/guide-backups.md stops and starts the scheduler
    that way)."""
    return {
        **clean_environ(),
        **read_env_files(cfg),
        "STACK_SUPERVISOR_SOCKET": str(cfg.supervisor_socket),
    }
