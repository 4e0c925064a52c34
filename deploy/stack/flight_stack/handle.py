"""A handle on one no-Docker stack from another process: its script (deploy/stack/stack.py
with the stack's FLIGHT_DELAYS_STACK_* settings), the airflow CLI against its metastore,
its warehouse connection, the admin's login and the REST API (:mod:`.rest`). The live
tests and the benchmarks drive their private stacks through it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from . import procs, settings
from .rest import DAG_ID, RestApi

SCRIPT = Path(__file__).resolve().parents[1] / "stack.py"
PYTHON = sys.executable


@dataclass
class Stack(RestApi):
    root: Path
    state: Path
    env: dict[str, str]
    api_url: str
    _token: str | None = None

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
