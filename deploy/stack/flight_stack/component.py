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
  supervisord sees the crash and restarts the component;
- ``STACK_READY_CHECK`` (a command line): before it starts the component, it runs that
  command every second until it succeeds. The Airflow components wait so for the
  metastore (pg_isready): while PostgreSQL is down or recovering they wait, instead of
  dying at once in a loop until supervisord gives up on them (FATAL);
- ``STACK_RUN_AS`` (a user name; as root): the component runs as that user, its groups
  only (PostgreSQL refuses root); the wrapper stays root, to take down what it leaves;
- ``STACK_MINIMAL_ENV=1``: the component gets PATH, HOME, the locale and the stack's
  marker only, none of the stack's secrets (PostgreSQL needs none of them).
- ``STACK_STOP_CHILDREN_FIRST=1`` (the triggerer): SIGTERM becomes SIGINT to the main
  process's children, and the main process, which exits as soon as it sees them gone,
  gets SIGTERM only if it still runs ``CHILDREN_FIRST_GRACE`` s later. Told first, the
  triggerer stops its trigger runner with SIGINT and then waits for the exit in a select
  on the runner's sockets, which the runner closes before it exits: the wait runs to its
  10 s escalation delay, every stop (Airflow 3.3's ``WatchedSubprocess.kill``). Told in
  this order, it stops in well under a second.

Linux only (it reads /proc), standard library only. Run by path, as a script: it imports
nothing from the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36
MARKER = "FLIGHT_DELAYS_STACK"  # settings.MARKER (this script imports nothing)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: Seconds the main process has to exit by itself once its children were told to stop
#: (``STACK_STOP_CHILDREN_FIRST``), before it gets the SIGTERM.
CHILDREN_FIRST_GRACE = 5


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


def child_options(environ: dict[str, str]) -> dict:
    """Popen's keyword arguments for the component: its user (STACK_RUN_AS) and its
    environment (STACK_MINIMAL_ENV); see the module's docstring."""
    options: dict = {}
    home = environ.get("HOME", "/")
    user = environ.get("STACK_RUN_AS", "").strip()
    if user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise SystemExit(f"STACK_RUN_AS names {user!r}, which is no user here") from None
        if entry.pw_uid != os.geteuid():
            options.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        home = entry.pw_dir
    if environ.get("STACK_MINIMAL_ENV") == "1":
        keep = {key: environ[key] for key in ("PATH", MARKER) if key in environ}
        options["env"] = {**keep, "HOME": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    return options


def wait_ready(command: list[str], stopping: Callable[[], bool]) -> bool:
    """Run ``command`` every second until it exits 0 (True) or ``stopping()`` (False)."""
    said = 0.0
    while not stopping():
        try:
            done = subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            done = False
            if not said:
                log(f"ready check {command[0]} cannot run: {exc}")
        if done:
            if said:
                log("ready: starting the component")
            return True
        if time.monotonic() - said >= 60:  # once a minute, not every second
            log(f"waiting until `{shlex.join(command)}` succeeds (the metastore is down?)")
            said = time.monotonic()
        time.sleep(1)
    return False


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    grace = float(os.environ.get("FLIGHT_DELAYS_STACK_STOP_TIMEOUT", "20"))
    options = child_options(dict(os.environ))
    become_subreaper()
    child: subprocess.Popen | None = None
    stopping = False

    children_first = os.environ.get("STACK_STOP_CHILDREN_FIRST") == "1"

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping, children_first
        stopping = True
        if child is None:
            return  # still waiting for the ready check: nothing started yet
        if signum == signal.SIGTERM and children_first:
            children_first = False  # once: a second SIGTERM goes to the main process
            kids = [pid for pid, ppid in parents().items() if ppid == child.pid]
            if kids:
                log(f"stop: SIGINT to the children {kids} first, then the main process")
                signal_each(kids, signal.SIGINT)
                signal.signal(signal.SIGALRM, forward)
                signal.alarm(CHILDREN_FIRST_GRACE)  # its SIGTERM, if it is still there
                return
        if signum == signal.SIGALRM:
            signum = signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)
        if signum == signal.SIGTERM:
            for group in task_groups(child.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGTERM)

    for sig in FORWARDED:
        signal.signal(sig, forward)

    check = os.environ.get("STACK_READY_CHECK", "").strip()
    if check and not wait_ready(shlex.split(check), lambda: stopping):
        log("asked to stop while waiting for the ready check")
        return 0
    child = subprocess.Popen(argv, **options)

    while True:  # wait for the main process, reaping orphans handed to us meanwhile
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while the child runs; be safe
            status = 0
            break
        if pid == child.pid:
            break
    signal.alarm(0)  # a SIGTERM still due to the main process (children first) is moot
    child.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait on it
    code = child.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    why = "as asked" if stopping else "unexpectedly: supervisord restarts it"
    log(f"{' '.join(argv[:2])} (pid {child.pid}) ended {why}: {how}")
    clean_up(stopping, grace)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
