"""supervisord for the stack's Airflow components (deploy/stack/supervisord.conf, or
supervisord-celery.conf with the broker, the S3 server and the Celery workers): start it
in a session of its own, ask it what runs, count the restarts it made."""

from __future__ import annotations

import contextlib
import re
import subprocess

from .settings import COMPONENT_WRAPPER, MARKER, Config, StackError, _venv_bin, redis_server

STARTED = re.compile(r"supervisord started with pid (\d+)")
# supervisord's line for a program that exited while it was meant to run.
CRASHED = re.compile(r"exited: (\S+) \((.*); not expected\)")


def supervisor_env(cfg: Config, env: dict[str, str]) -> dict[str, str]:
    """supervisord's environment: the components' settings (each program inherits it), the
    stack's marker, and what supervisord.conf expands (%(ENV_STACK_*)s)."""
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
        # An integer for stopwaitsecs; component.py takes it as its own grace.
        "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": str(max(1, round(cfg.stop_timeout))),
    }


def start(cfg: Config, env: dict[str, str]) -> subprocess.Popen:
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
            env=supervisor_env(cfg, env),
            cwd=cfg.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def programs(cfg: Config) -> list[dict] | None:
    """supervisord's view of each program (name, statename, pid, start, spawnerr...) over
    its control socket, or None when it does not answer."""
    try:
        from xmlrpc.client import ServerProxy

        from supervisor.xmlrpc import SupervisorTransport
    except ImportError:
        return None
    transport = SupervisorTransport(None, None, f"unix://{cfg.supervisor_socket}")
    proxy = ServerProxy("http://127.0.0.1", transport=transport)
    with contextlib.suppress(Exception):  # connection refused, socket gone, a fault
        return proxy.supervisor.getAllProcessInfo()
    return None


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
