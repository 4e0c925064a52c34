"""supervisord for the stack's PostgreSQL and Airflow components
(deploy/stack/supervisord.conf, or supervisord-celery.conf with the broker, the S3 server
and the Celery workers): start it in a session of its own, ask it what runs, start or
restart programs through its control socket, count the restarts it made."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .settings import (
    COMPONENT_WRAPPER,
    MARKER,
    PG_USER,
    Config,
    StackError,
    _venv_bin,
    redis_server,
)

if TYPE_CHECKING:
    from .postgres import Postgres

# supervisord's states of a program that runs or is about to.
UP_STATES = ("RUNNING", "STARTING")

STARTED = re.compile(r"supervisord started with pid (\d+)")
# supervisord's line for a program that exited while it was meant to run.
CRASHED = re.compile(r"exited: (\S+) \((.*); not expected\)")


def supervisor_env(cfg: Config, env: dict[str, str], pg: Postgres) -> dict[str, str]:
    """supervisord's environment: the components' settings (each program inherits it), the
    stack's marker, and what supervisord.conf expands (%(ENV_STACK_*)s): among them the
    PostgreSQL program's binaries, data folder and user, and the ready check the Airflow
    components wait on."""
    celery = (
        {
            "STACK_REDIS_SERVER": str(redis_server()),
            "STACK_REDIS_CONF": str(cfg.redis_conf),
            "STACK_S3_PORT": str(cfg.s3_port),
        }
        if cfg.celery
        else {}
    )
    return {
        **env,
        **celery,
        MARKER: str(cfg.state),
        "STACK_STATE_DIR": str(cfg.state),
        "STACK_LOG_DIR": str(cfg.logs),
        "STACK_SUPERVISOR_SOCKET": str(cfg.supervisor_socket),
        "STACK_PYTHON": str(_venv_bin() / "python"),
        "STACK_PG_BIN": str(pg.bin),
        "STACK_PGDATA": str(pg.pgdata),
        "STACK_PG_USER": PG_USER if pg.as_root else "",
        "STACK_PG_READY": shlex.join(pg.ready_command()),
        # An integer for stopwaitsecs; component.py takes it as its own grace.
        "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": str(max(1, round(cfg.stop_timeout))),
    }


def start(cfg: Config, env: dict[str, str], pg: Postgres) -> subprocess.Popen:
    """supervisord in the foreground of a new session (setsid: no signal of the calling
    shell reaches the stack); its early errors go to supervisord.log too."""
    supervisord = _venv_bin() / "supervisord"
    if not supervisord.exists():
        raise StackError(f"{supervisord} missing: run `make venv` first")
    if not COMPONENT_WRAPPER.is_file():
        raise StackError(f"{COMPONENT_WRAPPER} missing")
    cfg.supervisor_socket.unlink(missing_ok=True)  # left by a supervisord that was killed
    with (cfg.logs / "supervisord.log").open("a") as log:
        return subprocess.Popen(
            [str(supervisord), "--nodaemon", "--configuration", str(cfg.supervisor_conf)],
            env=supervisor_env(cfg, env, pg),
            cwd=cfg.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _proxy(cfg: Config):
    from xmlrpc.client import ServerProxy

    from supervisor.xmlrpc import SupervisorTransport  # from the venv: `down` needs none

    transport = SupervisorTransport(None, None, f"unix://{cfg.supervisor_socket}")
    return ServerProxy("http://127.0.0.1", transport=transport)


def programs(cfg: Config) -> list[dict] | None:
    """supervisord's view of each program (name, group, statename, pid, start, spawnerr...)
    over its control socket, or None when it does not answer."""
    try:
        proxy = _proxy(cfg)
    except ImportError:
        return None
    with contextlib.suppress(Exception):  # connection refused, socket gone, a fault
        return proxy.supervisor.getAllProcessInfo()
    return None


def _full_names(cfg: Config, names: Iterable[str]) -> dict[str, str]:
    """name -> `group:name` (supervisord's own name for a program of a group), for the
    programs of ``names`` that supervisord runs."""
    wanted = set(names)
    found = programs(cfg)
    if found is None:
        raise StackError(f"supervisord does not answer on {cfg.supervisor_socket}")
    return {p["name"]: f"{p['group']}:{p['name']}" for p in found if p["name"] in wanted}


def start_programs(cfg: Config, names: Iterable[str]) -> list[str]:
    """Start each program of ``names`` that is not running or starting (stopped, exited,
    given up: FATAL, or waiting to retry: BACKOFF); returns the ones started."""
    from xmlrpc.client import Fault

    states = {p["name"]: p["statename"] for p in programs(cfg) or []}
    started = []
    proxy = _proxy(cfg)
    for name, full in _full_names(cfg, names).items():
        if states.get(name) in UP_STATES:
            continue
        try:
            proxy.supervisor.startProcess(full, False)
        except Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise StackError(f"supervisord cannot start {name}: {fault.faultString}") from None
        started.append(name)
    return started


def restart_programs(cfg: Config, names: Iterable[str]) -> list[str]:
    """Stop (SIGTERM, SIGKILL after the grace) and start again each program of ``names``."""
    from xmlrpc.client import Fault

    proxy = _proxy(cfg)
    done = []
    for name, full in _full_names(cfg, names).items():
        with contextlib.suppress(Fault):  # NOT_RUNNING: nothing to stop
            proxy.supervisor.stopProcess(full, True)
        try:
            proxy.supervisor.startProcess(full, False)
        except Fault as fault:
            raise StackError(f"supervisord cannot start {name}: {fault.faultString}") from None
        done.append(name)
    return done


def wait_started(cfg: Config, names: Iterable[str], timeout: float) -> dict[str, str]:
    """Wait until none of ``names`` is STARTING any more (supervisord counts a program as
    started once it ran ``startsecs``): a heartbeat can reach the metastore before that,
    and `up` must not call a program healthy that may still exit. Returns the states."""
    import time

    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        states = {p["name"]: p["statename"] for p in programs(cfg) or [] if p["name"] in wanted}
        if "STARTING" not in states.values() or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def restarts(cfg: Config) -> dict[str, list[str]]:
    """The unexpected exits of each program since supervisord last started (each one was
    followed by a restart, autorestart), from supervisord.log: name -> reasons."""
    log = cfg.logs / "supervisord.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    since = max((i for i, line in enumerate(lines) if STARTED.search(line)), default=0)
    found: dict[str, list[str]] = {}
    for line in lines[since:]:
        if match := CRASHED.search(line):
            found.setdefault(match[1], []).append(match[2])
    return found
