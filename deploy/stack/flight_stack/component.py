#!/usr/bin/env python3
"""Run one Airflow component under supervisord and take down everything it started.

    flight_stack/component.py COMMAND [ARG...]     (deploy/stack/supervisord.conf runs it)

supervisord restarts a component that dies (`autorestart`, as `restart: always` in
docker-compose.yaml), but it knows only the process it started. A SIGKILLed scheduler
leaves its LocalExecutor workers and their task processes behind as orphans, which
supervisord never sees. In a container they would die with it; here this wrapper does it:

- it is a child subreaper (``PR_SET_CHILD_SUBREAPER``): every process the component
  starts stays a descendant of the wrapper, even after its own parent died;
- SIGTERM, SIGINT, SIGHUP and SIGQUIT go to the component's main process only, and SIGTERM
  also to the process groups of its tasks. Signalling the LocalExecutor workers directly
  can kill one while it holds their queue's lock, and the scheduler then waits for them
  forever ("waiting for running tasks to finish"); told alone, the scheduler stops its
  workers itself, and the tasks, told to stop, report their end while the api-server runs;
- when the main process exits, whatever remains of its descendants goes: at once with
  SIGKILL after a crash (as a container that dies takes its processes along; a task left
  running would only be reset by the next scheduler), with SIGTERM and then SIGKILL after
  ``FLIGHT_DELAYS_STACK_STOP_TIMEOUT`` s when it was asked to stop;
- it exits with the main process's status (128 + signal when killed by one), so that
  supervisord sees the crash and restarts the component.

Linux only (it reads /proc), standard library only. Run by path, as a script: it imports
nothing from the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def log(message: str) -> None:
    # stderr goes to the component's log (redirect_stderr in supervisord.conf).
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} [flight_stack/component {os.getpid()}] {message}", file=sys.stderr, flush=True)


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def parents() -> dict[int, int]:
    """pid -> parent pid of every live, non-zombie process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            table[int(entry)] = int(fields[1])
    return table


def descendants(root: int) -> list[int]:
    table = parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in table.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)


def reap() -> None:
    """Collect exited children (orphans are re-parented to us) so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def signal_each(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def task_groups(main: int) -> set[int]:
    """Process groups among the component's descendants other than its own: the tasks
    (Airflow's task supervisor starts each task process in a group of its own)."""
    own = {os.getpgrp()}
    groups = set()
    for pid in descendants(main):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    return groups - own - {0, 1}


def clean_up(stopping: bool, grace: float) -> None:
    """End every descendant left after the main process exited."""
    me = os.getpid()
    left = descendants(me)
    if not left:
        return
    if stopping:
        log(f"SIGTERM to {len(left)} processes left by the component")
        signal_each(left, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            reap()
            left = descendants(me)
        if left:
            log(f"still running {grace:.0f} s after SIGTERM: {left}: SIGKILL")
    else:
        log(f"SIGKILL to {len(left)} orphaned processes of the component: {left}")
    for _ in range(100):  # a process may fork while its siblings die: sweep until empty
        if not left:
            return
        signal_each(left, signal.SIGKILL)
        time.sleep(0.1)
        reap()
        left = descendants(me)
    log(f"processes survive SIGKILL: {left}")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    grace = float(os.environ.get("FLIGHT_DELAYS_STACK_STOP_TIMEOUT", "20"))
    become_subreaper()
    child = subprocess.Popen(argv)
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)
        if signum == signal.SIGTERM:
            for group in task_groups(child.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGTERM)

    for sig in FORWARDED:
        signal.signal(sig, forward)

    while True:  # wait for the main process, reaping orphans handed to us meanwhile
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while the child runs; be safe
            status = 0
            break
        if pid == child.pid:
            break
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait on it
    code = child.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    why = "as asked" if stopping else "unexpectedly: supervisord restarts it"
    log(f"{' '.join(argv[:2])} (pid {child.pid}) ended {why}: {how}")
    clean_up(stopping, grace)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
