"""The processes of a stack, found in /proc: by the marker FLIGHT_DELAYS_STACK=<state
folder> in their environment, by session (supervisord starts the stack in one of its own)
and by descent. Stopping them with escalation to SIGKILL; their memory per component.
Standard library only: `make down` runs with any Python 3."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path

from .settings import COMPONENTS, MARKER, Config, StackError, read_env_files, say


def read_info(cfg: Config) -> dict:
    """stack.json, written by `up`: ports, folders, the supervisor's session."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(cfg.info_file.read_text())
    return {}


def write_info(cfg: Config, pid: int, pgdata: Path) -> None:
    """stack.json: where this stack is, and (once it is up) the session of supervisord and
    its components with supervisord's start time, so that `down` finds them even without
    a marker."""
    stat = _stat(pid)
    info = {
        "pid": pid,
        "state": str(cfg.state),
        "root": str(cfg.root),
        "pgdata": str(pgdata),
        "api_url": cfg.api_url,
        "api_port": cfg.api_port,
        "pg_port": cfg.pg_port,
        "health_port": cfg.health_port,
        "executor": cfg.executor,
        "logs": str(cfg.logs),
        "passwords_file": str(cfg.passwords_file),
        "supervisor_socket": str(cfg.supervisor_socket),
        "started_at": read_info(cfg).get("started_at")
        if read_info(cfg).get("pid") == pid
        else datetime.now().astimezone().isoformat(timespec="seconds"),
        "since_ticks": stat[2] if stat else 0,
        "sessions": sorted({st[1] for p in stack_pids(cfg) if (st := _stat(p))}),
    }
    if cfg.celery:
        info.update(
            redis_port=cfg.redis_port,
            s3_port=cfg.s3_port,
            s3_endpoint=cfg.s3_endpoint,
            storage_url=read_env_files(cfg).get("FLIGHT_DELAYS_STORAGE_URL"),
        )
    cfg.info_file.write_text(json.dumps(info, indent=2) + "\n")


# --- processes ----------------------------------------------------------------------------
def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _marked(data: bytes, value: str) -> bool:
    needle = f"{MARKER}={value}\0".encode()
    return data.startswith(needle) or b"\0" + needle in data


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command (index 0: the state, field 3 of
    stat(5)); the command is cut at its last ')' since it may hold spaces and ')'. Empty
    once the process has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time in clock ticks) of a live, non-zombie process."""
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def stack_pids(cfg: Config) -> list[int]:
    """Every live process started by this stack's `up`.

    They carry the marker in their environment, but a process that sets its title
    (setproctitle: the api-server, LocalExecutor workers) overwrites the memory that
    /proc/<pid>/environ shows. So also: every process in the session of a marked process
    or in a session recorded by `up` (supervisord and every component run in one of their
    own), and every descendant of those."""
    me, own_session = os.getpid(), os.getsid(0)
    table = {int(e): st for e in os.listdir("/proc") if e.isdigit() and (st := _stat(int(e)))}
    found = {p for p in table if p != me and _marked(_environ(p), str(cfg.state))}
    live_sessions = {table[p][1] for p in found}
    info = read_info(cfg)
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


def _pss_kib(pid: int) -> int:
    """Proportional set size: the process's resident pages, each shared page divided by
    the number of processes sharing it, so that PSS adds up across processes where RSS
    counts a shared page (a forked worker's libraries, PostgreSQL's shared buffers) once
    per process. 0 when the kernel has no smaps_rollup or the process has gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def supervisor_pid(cfg: Config) -> int | None:
    """The running supervisord of this stack, or None (a stale pid file, or one naming a
    reused pid, is ignored: the process must carry this stack's marker)."""
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


def _wait_gone(
    pids: list[int], everything: Callable[[], list[int]] | None, timeout: float
) -> list[int]:
    """Wait up to ``timeout`` s for ``pids`` (and, with ``everything``, every process it
    returns) to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if _alive(p)}
        if everything is not None:
            left |= set(everything())
        if not left or time.monotonic() >= deadline:
            return sorted(left)
        time.sleep(0.2)


def _children_table() -> dict[int, list[int]]:
    table: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))):
            table.setdefault(stat[0], []).append(int(entry))
    return table


def descendants(pid: int, table: dict[int, list[int]] | None = None) -> list[int]:
    """Every live descendant of ``pid`` (not ``pid`` itself)."""
    table = _children_table() if table is None else table
    found: list[int] = []
    frontier = [pid]
    while frontier:
        frontier = [c for p in frontier for c in table.get(p, []) if c not in found]
        found.extend(frontier)
    return sorted(found)


def _stop_scheduler_first(pids: list[int]) -> list[int]:
    """SIGTERM the scheduler's main process and the process groups of the tasks it runs,
    not its LocalExecutor workers. Returns the scheduler's processes (its process group
    leader, component.py under supervisord, and every descendant).

    The workers share the scheduler's process group and wait on one multiprocessing queue:
    a worker killed while it holds the queue's lock leaves the others blocked, and the
    scheduler waits for them forever ("waiting for running tasks to finish"). Signalled
    alone, the scheduler tells each worker to stop through that queue; the tasks, told to
    stop, report their end through the execution API while the api-server still runs.
    (component.py does the same with the SIGTERM it gets from supervisord; this is for
    `down` when supervisord is gone.)"""
    leaders = [p for p in pids if _pgid(p) == p and _component_of(_cmdline(p)) == "scheduler"]
    if not leaders:
        return []
    table = _children_table()
    members = sorted({m for leader in leaders for m in (leader, *descendants(leader, table))})
    for leader in leaders:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leader, signal.SIGTERM)
    tasks = {g for g in (_pgid(p) for p in members) if g not in (None, *leaders)}
    for group in tasks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    return members


def stop_processes(cfg: Config, timeout: float, spare: Collection[int] = ()) -> dict[str, int]:
    """Stop every stack process; returns counts: found, killed (needed SIGKILL).

    1. The scheduler first (see _stop_scheduler_first), while the api-server still runs.
    2. SIGTERM to every process group of the stack (supervisord stops its programs too).
    Each phase waits up to ``timeout`` s, then SIGKILLs what is left, and sweeps until
    nothing of the stack is alive. ``spare``: processes left running with their
    descendants (PostgreSQL, which its own fast shutdown stops after the others)."""

    def ours() -> list[int]:
        pids = stack_pids(cfg)
        if not spare:
            return pids
        table = _children_table()
        kept = {*spare, *(d for pid in spare for d in descendants(pid, table))}
        return [p for p in pids if p not in kept]

    pids = ours()
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
            members, everything = ours(), ours
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


# A Celery worker of the celery stack, by its command line or by the title Celery gives
# its processes ("[celeryd: celery@worker-1:MainProcess] ...").
_WORKER = re.compile(r"(?:--celery-hostname |celery@)(?P<name>[\w.-]+?)(?=[\s:\]]|$)")


def _component_of(cmdline: str) -> str | None:
    """The program of the stack whose command line ``cmdline`` is: an Airflow component,
    a Celery worker (by its name), ``redis`` or ``s3``; None for anything else."""
    for name in COMPONENTS:
        if f"airflow {name}" in cmdline.replace("_", "-"):
            return name
    if "celery worker" in cmdline or "celeryd" in cmdline:
        match = _WORKER.search(cmdline)
        return match["name"] if match else "celery-worker"
    if "redis-server" in cmdline:
        return "redis"
    if "s3server.py" in cmdline:
        return "s3"
    return None


def processes_by_component(
    cfg: Config, postmaster: int | None = None
) -> dict[str, tuple[int, list[int]]]:
    """Each component's (main process, all of its processes): the component's wrapper,
    LocalExecutor workers, Celery's pool processes, the task processes they fork,
    api-server workers, parsing processes; also supervisord and PostgreSQL
    (``postmaster`` and its backends)."""
    table = _children_table()
    out: dict[str, tuple[int, list[int]]] = {}
    for pid in stack_pids(cfg):
        line = _cmdline(pid)
        if "supervisord" in line and _pgid(pid) == pid:
            out["supervisord"] = (pid, [pid])
            continue
        name = _component_of(line)
        if name is None or _pgid(pid) != pid:  # the wrapper leads its component's group
            continue
        # The component's own process: the wrapper's child running it.
        main = next((c for c in table.get(pid, []) if _component_of(_cmdline(c))), pid)
        out[name] = (main, [pid, *descendants(pid, table)])
    if postmaster is not None:
        out["postgres"] = (postmaster, [postmaster, *table.get(postmaster, [])])
    return out


def memory_by_component(cfg: Config, postmaster: int | None = None) -> dict[str, dict[str, int]]:
    """Resident memory in KiB of each component (processes_by_component): its main
    process (``main_kib``, RSS) and all of its processes: ``group_kib`` (RSS summed) and
    ``group_pss_kib`` (PSS summed, shared pages counted once over the whole stack)."""
    return {
        name: {
            "processes": len(members),
            "main_kib": _rss_kib(main),
            "group_kib": sum(_rss_kib(p) for p in members),
            "group_pss_kib": sum(_pss_kib(p) for p in members),
        }
        for name, (main, members) in processes_by_component(cfg, postmaster).items()
    }


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own, reaped) CPU time of ``pid`` in clock ticks: its own user and system time,
    and that of its children it has waited for (a LocalExecutor worker's task processes,
    PostgreSQL's ended backends); (0, 0) once it has gone."""
    fields = _stat_fields(pid)
    if not fields:
        return 0, 0
    # utime is field 14 of stat(5), index 11 after the command.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return utime + stime, cutime + cstime
