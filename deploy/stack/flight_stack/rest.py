"""The REST API v2 of a running deployment, either stack: log in (a JWT from /auth/token),
call, list a run's tasks, wait for a run. One client for the live tests of both stacks
and the benchmarks. The stack's own commands do not use it (they stay standard library
only); httpx comes from the project's venv."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

DAG_ID = "flight_delays"


def run_path(run_id: str, dag_id: str = DAG_ID) -> str:
    """REST path of a DAG run (run ids hold ':' and '+')."""
    return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


class RestApi:
    """A deployment's REST API, mixed into a stack's handle. The handle provides
    ``api_url`` (http://host:port), ``credentials()`` (a user and password of the auth
    manager) and a ``_token`` attribute (None until the first call); it may override
    :meth:`failure_detail` to add what it knows of a failed run (task logs)."""

    api_url: str
    _token: str | None
    #: A call that meets no api-server (restarting after a crash test) is retried this long.
    retry_connection_for: float = 0.0
    poll_seconds: float = 2.0
    run_timeout: float = 300.0

    def credentials(self) -> tuple[str, str]:
        raise NotImplementedError

    def token(self) -> str:
        if self._token is None:
            username, password = self.credentials()
            response = httpx.post(
                f"{self.api_url}/auth/token",
                json={"username": username, "password": password},
                timeout=30,
            )
            assert response.status_code == 201, f"login refused: {response.text}"
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to /api/v2``path`` with the user's JWT."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(
            method, f"{self.api_url}/api/v2{path}", headers=headers, timeout=60, **kwargs
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """A call that must succeed; its JSON (None when the answer is empty)."""
        deadline = time.monotonic() + self.retry_connection_for
        while True:
            try:
                response = self.api(method, path, **kwargs)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def wait_for_backfills(self, dag_id: str = DAG_ID, timeout: float = 120.0) -> None:
        """Until every backfill of ``dag_id`` is marked complete. Airflow refuses a new
        backfill while one is not (AlreadyRunningBackfill), and the scheduler marks one
        complete only on a periodic check (every 30 s) after its last run ended."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.ok("GET", "/backfills", params={"dag_id": dag_id, "limit": 100})
            running = [b["id"] for b in found["backfills"] if not b.get("completed_at")]
            if not running:
                return
            assert time.monotonic() < deadline, (
                f"backfill(s) {running} of {dag_id} not complete after {timeout:.0f} s"
            )
            time.sleep(self.poll_seconds)

    def backfill_runs(
        self, logical_days: list[str], dag_id: str = DAG_ID, timeout: float = 120.0
    ) -> list[dict]:
        """The backfill runs of ``dag_id`` on ``logical_days`` (YYYY-MM-DD), once the
        scheduler has made them all or ``timeout`` s have passed (then those it made)."""
        deadline = time.monotonic() + timeout
        # Filtered by the server to the days' span (a page holds at most 100 runs), then
        # to the days themselves.
        span = {"logical_date_gte": f"{min(logical_days)}T00:00:00Z",
                "logical_date_lte": f"{max(logical_days)}T23:59:59Z"}  # fmt: skip
        while True:
            query = {"run_type": "backfill", "limit": 100, **span}
            runs = self.ok("GET", f"/dags/{dag_id}/dagRuns", params=query)["dag_runs"]
            runs = [r for r in runs if r["logical_date"][:10] in logical_days]
            if len(runs) >= len(logical_days) or time.monotonic() > deadline:
                return runs
            time.sleep(self.poll_seconds)

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 120.0) -> None:
        """Until the dag-processor has parsed ``dag_id`` (it does shortly after it starts);
        TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while self.api("GET", f"/dags/{dag_id}").status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} was not parsed within {timeout:.0f} s")
            time.sleep(min(self.poll_seconds, 1.0))

    def tasks(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        return self.ok("GET", f"{run_path(run_id, dag_id)}/taskInstances")["task_instances"]

    def wait_for_run(
        self,
        run_id: str,
        timeout: float | None = None,
        dag_id: str = DAG_ID,
        retries_ok: bool = False,
    ) -> dict:
        """Poll a run until it ends; it must succeed. A failed task, or (unless
        ``retries_ok``) one waiting for a retry, fails at once, naming the task and what
        :meth:`failure_detail` adds; so does a run still going after ``timeout`` s
        (default ``run_timeout``)."""
        timeout = self.run_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        bad = ("failed",) if retries_ok else ("failed", "up_for_retry")
        while True:
            run = self.ok("GET", run_path(run_id, dag_id))
            tasks = self.tasks(run_id, dag_id)
            broken = [t for t in tasks if t["state"] in bad]
            if run["state"] in ("success", "failed") or broken or time.monotonic() > deadline:
                break
            time.sleep(self.poll_seconds)
        if run["state"] != "success":
            # Fail the run, so that its retries do not hold one of the DAG's active-run
            # slots for minutes and queue the next tests' runs.
            self.api("PATCH", run_path(run_id, dag_id), json={"state": "failed"})
            states = {t["task_id"]: (t["state"], t["try_number"]) for t in tasks}
            raise AssertionError(
                f"run {run_id} of {dag_id} is {run['state']!r} (waited up to {timeout:.0f} s): "
                f"{states}\n{self.failure_detail(run_id, dag_id, broken)}"
            )
        return run

    def failure_detail(self, run_id: str, dag_id: str, broken: list[dict]) -> str:
        """What the handle can tell of a failed run's ``broken`` tasks (their logs)."""
        return ""
