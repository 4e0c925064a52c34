"""A handle on one no-Docker stack from another process: its script (deploy/stack/stack.py
with the stack's FLIGHT_DELAYS_STACK_* settings), the airflow CLI against its metastore,
its warehouse connection, the admin's login and the REST API (:mod:`.rest`); and a
private stack of its own (:func:`private_stack`). The live tests and the benchmarks
drive their private stacks through it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from . import postgres, procs, settings
from .rest import DAG_ID, RestApi

SCRIPT = Path(__file__).resolve().parents[1] / "stack.py"
PYTHON = sys.executable


@dataclass(frozen=True)
class Stopped:
    """What `down` did at the end of :func:`private_stack`."""

    result: subprocess.CompletedProcess[str]
    seconds: float
    left: list[int]  # the stack's processes that survived it
    data_kept: bool  # PostgreSQL's data is still there, as `down` must leave it


@dataclass
class Stack(RestApi):
    root: Path
    state: Path
    env: dict[str, str]
    api_url: str
    _token: str | None = None
    up_seconds: float | None = None  # `up`, to a healthy API (private_stack)
    stopped: Stopped | None = None  # `down` (private_stack, once it is down)

    def script(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """deploy/stack/stack.py with this stack's FLIGHT_DELAYS_STACK_* settings."""
        result = subprocess.run(
            [PYTHON, str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"stack.py {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-8000:]}\n--- stderr\n{result.stderr[-8000:]}"
            )
        return result

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The airflow CLI with this stack's settings (its PostgreSQL metastore)."""
        return self.script("run", "airflow", *args, check=check)

    @property
    def warehouse_url(self) -> str:
        """The warehouse connection the components get (parsed as the stack parses it)."""
        generated = settings.parse_env((self.state / "generated.env").read_text())
        return generated[settings.WAREHOUSE_CONN_ENV]

    @property
    def admin_password(self) -> str:
        passwords = self.state / "airflow" / "simple_auth_manager_passwords.json"
        return json.loads(passwords.read_text())[settings.ADMIN_USER]

    def credentials(self) -> tuple[str, str]:
        return settings.ADMIN_USER, self.admin_password

    def failure_detail(self, run_id: str, dag_id: str, broken: list[dict]) -> str:
        return "\n".join(self.task_error(run_id, t, dag_id) for t in broken)

    def task_error(self, run_id: str, task: dict, dag_id: str = DAG_ID) -> str:
        """The error events of a task's log (JSON lines), for a failure message."""
        log = (
            self.state / "logs" / "airflow" / f"dag_id={dag_id}" / f"run_id={run_id}"
            / f"task_id={task['task_id']}" / f"attempt={max(task['try_number'], 1)}.log"
        )  # fmt: skip
        lines = []
        try:
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("level") == "error":
                        details = [
                            f"{d.get('exc_type')}: {d.get('exc_value')}"
                            for d in event.get("error_detail") or []
                        ]
                        lines.append(f"  {event.get('event')} {' '.join(details)}")
        except OSError:
            return f"{task['task_id']}: no log at {log}"
        return f"{task['task_id']} ({log}):\n" + "\n".join(lines[-5:])


def leftovers(state: Path) -> list[int]:
    """Processes of the stack whose state folder is ``state`` that are still running."""
    return procs.stack_pids(replace(settings.Config.from_env(), state=state))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def private_stack(
    root: Path,
    local_settings: str = "",
    prefix: str = "fd-stack-",
    up_timeout: float = 600,
    **extra: str,
) -> Iterator[Stack]:
    """A stack of its own, up, for ``root`` (a project root with its include/params.yaml):
    its state in a fresh folder under /tmp (the postgres user must reach it; as root its
    PostgreSQL data goes to a trusted folder of its own all the same, postgres.py), free
    ports, no demo seed, and ``local_settings`` (KEY=value lines) in its local settings
    file, read after the tracked ones; ``extra``: more FLIGHT_DELAYS_STACK_* settings;
    ``up_timeout``: seconds `up` may take.

    Always `down` at the end; the stack's ``stopped`` then says how that went. The state
    folder and the data are removed only when `down` succeeded and nothing survived it:
    else they stay, to look into."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    local = state / "local-settings.env"
    local.write_text(local_settings)
    api_port = free_port()
    env = {
        **os.environ,
        "FLIGHT_DELAYS_STACK_DIR": str(state),
        "FLIGHT_DELAYS_STACK_ROOT": str(root),
        "FLIGHT_DELAYS_STACK_API_PORT": str(api_port),
        "FLIGHT_DELAYS_STACK_PG_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_HEALTH_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_SEED": "0",
        "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": "20",
        "FLIGHT_DELAYS_STACK_ENV_FILE": str(local),
        **extra,
    }
    stack = Stack(root=root, state=state, env=env, api_url=f"http://127.0.0.1:{api_port}")
    failed: BaseException | None = None
    try:
        started = time.monotonic()
        stack.script("up", timeout=up_timeout)
        stack.up_seconds = time.monotonic() - started
        yield stack
    except BaseException as exc:
        failed = exc
        raise
    finally:
        started = time.monotonic()
        down = stack.script("down", check=False, timeout=300)
        left = leftovers(state)
        pg = postgres.Postgres(settings.Config.from_env(env))
        stack.stopped = Stopped(down, time.monotonic() - started, left, pg.initialised())
        if failed is not None and (down.returncode != 0 or left):
            # A failed `up` leaves the caller no stack to check `stopped` on, and a
            # failure in the block would hide it: the error says how `down` went.
            failed.add_note(
                f"and `down` after it exited {down.returncode} with processes left {left}; "
                f"the state stays in {state}:\n{down.stdout}{down.stderr}"
            )
        if down.returncode == 0 and not left:
            shutil.rmtree(state, ignore_errors=True)
            if pg.relocated:
                shutil.rmtree(pg.pgdata.parent, ignore_errors=True)
