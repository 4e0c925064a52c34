"""A partly dead stack, repaired by `up`: with supervisord alive, start the programs that
do not run and restart the ones the health report calls unhealthy; with supervisord
dead (SIGKILL, OOM), stop what it left behind, PostgreSQL last, so that `up` starts one
whole stack again and never a second scheduler beside an orphaned one.

`up` never says "nothing to do" while the health endpoint reports something unhealthy:
it either makes the stack healthy or exits 1 naming what is not."""

from __future__ import annotations

from datetime import UTC, datetime

from . import supervisor
from .health import health, healthy, unhealthy_programs, wait_healthy
from .postgres import Postgres
from .procs import _stat, stack_pids, stop_processes, supervisor_pid
from .settings import PG_PROGRAM, Config, StackError, say


def stop_all(cfg: Config, pg: Postgres | None, timeout: float) -> dict[str, int]:
    """Stop every process of the stack when supervisord is gone: the Airflow components
    first (the scheduler before the others), then PostgreSQL with its fast shutdown
    (SIGINT: its data is consistent at once, no crash recovery next time), then whatever
    is left (the PostgreSQL wrapper). Returns the counts of :func:`stop_processes`."""
    postmaster = pg.postmaster_pid() if pg is not None else None
    spare: set[int] = set()
    if postmaster is not None:
        spare.add(postmaster)
        parent = (_stat(postmaster) or (0, 0, 0))[0]
        if parent in stack_pids(cfg):  # its flight_stack/component.py wrapper
            spare.add(parent)
    counts = stop_processes(cfg, timeout, spare=spare)
    if pg is not None and pg.stop():
        say("PostgreSQL stopped (fast shutdown)")
    rest = stop_processes(cfg, timeout)
    return {key: counts[key] + rest[key] for key in counts}


def _alive(cfg: Config) -> bool:
    return supervisor_pid(cfg) is not None


def heal(cfg: Config) -> dict | None:
    """supervisord runs: start what it does not run, wait for the health report, restart
    the programs that stay unhealthy (once), and wait again. Returns the last report
    (healthy or not); the caller says which."""
    running = supervisor.programs(cfg)
    if running is None:
        raise StackError(
            f"supervisord (pid {supervisor_pid(cfg)}) does not answer on "
            f"{cfg.supervisor_socket}: `make down`, then `make up`"
        )
    states = {p["name"]: p["statename"] for p in running}
    # PostgreSQL first: the others wait for it (their ready check) and need it to start.
    order = [PG_PROGRAM, *(n for n in cfg.programs if n != PG_PROGRAM)]
    stopped = [n for n in order if n in states and states[n] not in supervisor.UP_STATES]
    # A program started now is healthy only by its own heartbeat: the metastore still
    # holds the last one of the process that stopped, fresh for a while.
    since = None
    if stopped:
        said = ", ".join(f"{n} ({states[n]})" for n in stopped)
        say(f"not running: {said}: starting them")
        since = datetime.now(UTC)
        supervisor.start_programs(cfg, stopped)
        supervisor.wait_started(cfg, stopped, cfg.up_timeout)
    report = health(cfg)
    if healthy(report, since=since):
        return report
    say(f"waiting up to {cfg.up_timeout:.0f} s for every component to report healthy")
    report = wait_healthy(cfg, lambda: _alive(cfg), since=since)
    if healthy(report, since=since) or not _alive(cfg):
        return report
    sick = unhealthy_programs(report)
    say(f"still unhealthy: {', '.join(sick)}: restarting them")
    since = datetime.now(UTC)
    supervisor.restart_programs(cfg, sick)
    supervisor.wait_started(cfg, sick, cfg.up_timeout)
    return wait_healthy(cfg, lambda: _alive(cfg), since=since)
