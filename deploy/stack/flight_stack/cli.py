"""The Airflow stack without Docker: `make up`, `make down`, `make stack-status`, `make logs`.

    python deploy/stack/stack.py up | down | status | logs | run CMD [ARG...]

`up` generates the secrets once, initdb's a private PostgreSQL cluster the first time,
starts supervisord (deploy/stack/supervisord.conf) in a session of its own, which runs
PostgreSQL (127.0.0.1 only, TCP only); creates the metastore database `airflow` and the
`warehouse` database and user, migrates the metastore, seeds the demo warehouse
(idempotent), checks meanwhile that the forkserver's preload list imports (preload.py),
then has supervisord start scheduler, dag-processor, api-server and
triggerer, and waits until /api/v2/monitor/health reports every component healthy.
supervisord restarts a program that dies, PostgreSQL included, as `restart: always` does
in docker-compose.yaml. A second `up` repairs the running stack: it starts what is not
running and restarts what stays unhealthy (repair.py); after a dead supervisord it stops
what that one left and starts the stack again.

With FLIGHT_DELAYS_STACK_EXECUTOR=celery (`make up EXECUTOR=celery`) the scheduler queues
the tasks in redis (the broker, redis-server from Debian) and two Celery workers run them;
the result backend is the metastore's database; the artifacts live in moto's S3 server
(FLIGHT_DELAYS_STORAGE_URL=s3://..., deploy/executor-celery.env), which every component
reaches through AWS_ENDPOINT_URL. The workers share nothing on this machine but those:
each has its own working, temporary and home folder under <state>/workers/ (see
deploy/stack/supervisord-celery.conf). `up` also waits for both workers to be ready.

`down` stops every process `up` started, every time: supervisord stops the scheduler
first, then the other components (SIGTERM, SIGKILL of the process group after the grace
period), PostgreSQL last (fast shutdown), then exits. Whatever is left (supervisord
killed, a task that escaped) is found by the marker FLIGHT_DELAYS_STACK=<state folder> in
its environment, by session and by descent, and gets SIGTERM then SIGKILL, PostgreSQL
last (fast shutdown, immediate if that fails). The data stays.

`run` executes a command with the stack's settings (metastore, connections, folders),
e.g. `deploy/stack/stack.py run airflow backfill create --dag-id flight_delays ...`.

Where the PostgreSQL data lives: `<state>/pg`, unless that folder is not trusted (a
folder someone else can write on the way, e.g. /tmp) or the `postgres` user (who owns the
cluster when this runs as root) cannot reach it, e.g. a clone under /root (mode 0700):
then a folder of its own for this state folder, /var/lib/flight-delays/<name>-<hash>/pg
(see postgres.py). `up` and `status` say
where.

Settings (environment variables, all optional):
  FLIGHT_DELAYS_STACK_DIR          state folder (default: <repo>/.stack)
  FLIGHT_DELAYS_STACK_ROOT         project root: include/params.yaml and the artifact
                                   folders (default: the repository)
  FLIGHT_DELAYS_STACK_API_PORT     web UI and REST API on 127.0.0.1 (default 8080)
  FLIGHT_DELAYS_STACK_PG_PORT      PostgreSQL on 127.0.0.1 (default 5433)
  FLIGHT_DELAYS_STACK_HEALTH_PORT  scheduler health check on 127.0.0.1 (default 8974)
  FLIGHT_DELAYS_STACK_SEED         1: seed the demo warehouse on `up` (default); 0: skip
  FLIGHT_DELAYS_STACK_UP_TIMEOUT   seconds to wait for a healthy API (default 180)
  FLIGHT_DELAYS_STACK_STOP_TIMEOUT seconds between SIGTERM and SIGKILL (default 20)
  FLIGHT_DELAYS_STACK_PG_BIN       PostgreSQL's bin folder (default: newest of
                                   /usr/lib/postgresql/*/bin, 15 preferred)
  FLIGHT_DELAYS_STACK_ENV_FILE     a KEY=value file of this machine's own settings, read
                                   after the tracked ones (e.g. AIRFLOW__CORE__PARALLELISM=8)
  FLIGHT_DELAYS_STACK_EXECUTOR     local (default) or celery
  FLIGHT_DELAYS_STACK_REDIS_PORT   celery: the broker (redis) on 127.0.0.1 (default 6380)
  FLIGHT_DELAYS_STACK_S3_PORT      celery: the S3 server (moto) on 127.0.0.1 (default 9100)

The modules of the package and what each does: flight_stack/__init__.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from . import preload, repair, supervisor
from .health import health, healthy, log_sizes, wait_healthy, wait_workers
from .postgres import Postgres, create_databases
from .procs import (
    _alive,
    memory_by_component,
    read_info,
    stack_pids,
    supervisor_pid,
    write_info,
)
from .settings import (
    ADMIN_USER,
    CELERY_PROGRAMS,
    COMPONENTS,
    PG_PROGRAM,
    WORKERS,
    Config,
    StackError,
    _locked,
    _port_free,
    _tail,
    _venv_bin,
    command_env,
    ensure_secrets,
    fresh_tmp_dir,
    hold_tmp_dir,
    prepare_workers,
    redis_server,
    say,
    write_redis_conf,
    write_settings,
)


# --- commands ----------------------------------------------------------------------------
def _run_logged(cfg: Config, name: str, args: list[str], env: dict[str, str]) -> None:
    log = cfg.logs / f"{name}.log"
    with log.open("a") as handle:
        handle.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run(
            args, env=env, cwd=cfg.root, stdout=handle, stderr=subprocess.STDOUT, timeout=1800
        )
    if result.returncode != 0:
        raise StackError(f"{' '.join(args[:3])} failed ({result.returncode}); {log}:\n{_tail(log)}")


def _print_where(cfg: Config, info: dict, pgdata: Path | None) -> None:
    url = info.get("api_url", cfg.api_url)
    passwords = info.get("passwords_file", str(cfg.passwords_file))
    data = pgdata or info.get("pgdata") or "(no cluster yet)"
    if info.get("executor", cfg.executor) == "celery":
        executor = (
            f"  executor: CeleryExecutor, workers {', '.join(WORKERS)}; broker: redis on "
            f"127.0.0.1:{info.get('redis_port', cfg.redis_port)}; results: the metastore\n"
        )
        artifacts = (
            f"  artifacts in {info.get('storage_url', '?')} (S3 server "
            f"{info.get('s3_endpoint', cfg.s3_endpoint)}, in memory: gone when it stops)\n"
        )
    else:
        executor = "  executor: LocalExecutor (in the scheduler)\n"
        root = info.get("root", cfg.root)
        artifacts = f"  artifacts under {root}/  (data/, models/, reports/)\n"
    print(
        f"\n  Airflow UI and REST API: {url}/\n"
        f"  login: user `{ADMIN_USER}`, password in {passwords}\n"
        f"  logs:  {info.get('logs', cfg.logs)}/  (make logs)\n"
        f"  PostgreSQL data: {data}\n"
        f"{executor}{artifacts}"
        f"  stop:  make down\n",
        flush=True,
    )


def _check_celery_tools(cfg: Config) -> None:
    """What the celery stack needs beyond the local one, each named with its fix."""
    redis_server()
    for module, what in (
        ("moto", "moto[server] (the S3 server)"),
        ("flask_cors", "moto[server] (the S3 server)"),
        ("airflow.providers.celery", "apache-airflow-providers-celery"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise StackError(f"{what} is not installed in the venv: run `make venv`")
    for port, name in ((cfg.redis_port, "REDIS"), (cfg.s3_port, "S3")):
        if not _port_free(port):
            raise StackError(
                f"port {port} on 127.0.0.1 is taken: choose another with "
                f"FLIGHT_DELAYS_STACK_{name}_PORT"
            )


def _up_running(cfg: Config, pid: int) -> int | None:
    """`up` with supervisord alive: repair the stack (start what is missing, restart what
    stays unhealthy) and say whether it is healthy; None when the running stack is of an
    older version (PostgreSQL outside supervisord), which `up` then starts again."""
    info = read_info(cfg)
    running = info.get("executor", "local")
    if running != cfg.executor:
        say(f"it runs the {running} executor, not {cfg.executor}: `make down` first")
    api = replace(cfg, api_port=info.get("api_port", cfg.api_port))
    names = {p["name"] for p in supervisor.programs(cfg) or [{"name": PG_PROGRAM}]}
    if PG_PROGRAM not in names:
        say(f"supervisord (pid {pid}) was started by an older version, with PostgreSQL "
            "outside it: starting the stack again")  # fmt: skip
        _stop_supervisor(cfg)
        return None
    report = repair.heal(api)
    if not healthy(report):
        why = f"supervisord (pid {pid}) has exited" if supervisor_pid(cfg) is None else ""
        say(
            f"running (supervisord pid {pid}) but NOT healthy after {cfg.up_timeout:.0f} s "
            f"{why}: {json.dumps(report)}; see `make stack-status` and {cfg.logs}/"
        )
        return 1
    say(f"already running (supervisord pid {pid}), healthy")
    _print_where(cfg, info, None)
    return 0


def _start_databases(cfg: Config, values: dict[str, str], env: dict[str, str]) -> None:
    """With PostgreSQL up: its databases and users, the metastore's migrations, the demo
    seed and the model registry's schema."""
    venv = _venv_bin()
    create_databases(cfg, values)
    say("migrating the metastore (airflow db migrate)")
    _run_logged(cfg, "migrate", [str(venv / "airflow"), "db", "migrate"], env)
    if cfg.seed:
        say("seeding the demo warehouse (idempotent; the first time takes a minute)")
        _run_logged(
            cfg, "seed", [str(venv / "python"), "-m", "flight_delays.intake.demo", "seed"], env
        )
    # The registry's schema is migrated here, once, not by the web server (the Model
    # reports page reads it read-only) nor by the first score task.
    say("migrating the model registry (python -m flight_delays.store.registry upgrade)")
    registry = [str(venv / "python"), "-m", "flight_delays.store.registry", "upgrade"]
    _run_logged(cfg, "registry", registry, env)


def up(cfg: Config) -> int:
    started = time.monotonic()
    venv = _venv_bin()
    for tool in ("airflow", "supervisord"):
        if not (venv / tool).exists():
            raise StackError(f"{venv / tool} missing: run `make venv` first")
    with _locked(cfg):
        pid = supervisor_pid(cfg)
        if pid is not None:
            code = _up_running(cfg, pid)
            if code is not None:
                return code
        pg = Postgres(cfg)
        leftovers = stack_pids(cfg)
        if leftovers or (pg.initialised() and pg.running_port() is not None):
            # supervisord was killed (its programs run on, unsupervised), or PostgreSQL
            # runs outside it: stop all of it, so that one whole stack starts below.
            say(f"processes of a previous stack: {leftovers or 'PostgreSQL'}; stopping them")
            repair.stop_all(cfg, pg, cfg.stop_timeout)
        for port, name in ((cfg.api_port, "API"), (cfg.pg_port, "PG")):
            if not _port_free(port):
                raise StackError(
                    f"port {port} on 127.0.0.1 is taken: choose another with "
                    f"FLIGHT_DELAYS_STACK_{name}_PORT"
                )
        if cfg.celery:
            _check_celery_tools(cfg)
        for folder in (cfg.state, cfg.logs, cfg.logs / "airflow", cfg.airflow_home):
            folder.mkdir(parents=True, exist_ok=True)
        if not fresh_tmp_dir(cfg.tmp_dir):  # nothing of the stack runs now
            say(f"{cfg.tmp_dir} is in use by a `stack.py run` command: left as it is")
        values = ensure_secrets(cfg)
        if cfg.celery:
            write_redis_conf(cfg, values)
            prepare_workers(cfg)
        if not pg.initialised():
            pg.init(values["postgres_password"])
        pg._prepare()
        pg.configure()
        # Older versions linked the log of a relocated cluster here; supervisord writes it.
        if (cfg.logs / "postgres.log").is_symlink():
            (cfg.logs / "postgres.log").unlink()
        write_settings(cfg, values)
        env = command_env(cfg)

        extra = f", {', '.join(CELERY_PROGRAMS)}" if cfg.celery else ""
        say(f"starting PostgreSQL{extra} under supervisord (data in {pg.pgdata})")
        process = supervisor.start(cfg, env, pg)
        write_info(cfg, process.pid, pg.pgdata)
        preloading = preload.PreloadCheck()
        try:
            preloading = preload.start_check(env, str(venv / "python"), cfg.root)
            if not pg.wait_ready(120, lambda: process.poll() is None):
                raise StackError(
                    f"PostgreSQL did not accept connections; {cfg.logs}/postgres.log:\n"
                    f"{_tail(cfg.logs / 'postgres.log')}"
                )
            _start_databases(cfg, values, env)
            for warning in preloading.result():
                say(warning)
            say(f"starting {', '.join(cfg.database_programs)} under supervisord")
            launched = datetime.now().astimezone()
            worker_logs = log_sizes(cfg, WORKERS) if cfg.celery else {}
            supervisor.start_programs(cfg, cfg.database_programs)
            report = wait_healthy(cfg, lambda: process.poll() is None, launched)
            waiting: list[str] = []
            if healthy(report, since=launched) and cfg.celery:
                waiting = wait_workers(cfg, process, worker_logs, cfg.up_timeout)
        except BaseException:
            preloading.stop()
            say("stopping what was started")
            _stop_supervisor(cfg)
            repair.stop_all(cfg, pg, cfg.stop_timeout)
            raise
        if not healthy(report, since=launched) or waiting:
            if process.poll() is not None:
                why = f"supervisord exited ({process.returncode})"
            elif waiting:
                why = f"Celery workers not ready after {cfg.up_timeout:.0f} s: {waiting}"
            else:
                why = f"not healthy after {cfg.up_timeout:.0f} s: {json.dumps(report)}"
            logs = "\n".join(
                f"  {name}.log:\n{_tail(cfg.logs / f'{name}.log', 15)}"
                for name in ("supervisord", *cfg.programs)
            )
            say(f"the stack did not come up: {why}\n{logs}\nstopping what was started")
            _stop_supervisor(cfg)
            repair.stop_all(cfg, pg, cfg.stop_timeout)
            return 1
        write_info(cfg, process.pid, pg.pgdata)  # now with the components' session
    say(f"healthy after {time.monotonic() - started:.1f} s (supervisord pid {process.pid})")
    _print_where(cfg, read_info(cfg), pg.pgdata)
    return 0


def _stop_supervisor(cfg: Config) -> bool:
    """SIGTERM to supervisord: it stops the scheduler first, then the other components,
    each with SIGKILL of its process group after the grace period, PostgreSQL last (fast
    shutdown), then exits. Returns
    True if it was running; waits up to one grace period per component, plus a margin."""
    pid = supervisor_pid(cfg)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    celery = read_info(cfg).get("executor") == "celery"
    programs = 1 + len(COMPONENTS) + (len(CELERY_PROGRAMS) if celery else 0)  # 1: postgres
    deadline = time.monotonic() + programs * (cfg.stop_timeout + 2) + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


def down(cfg: Config) -> int:
    if not cfg.state.exists():
        say(f"no stack in {cfg.state}: nothing to stop")
        return 0
    with _locked(cfg):
        started = time.monotonic()
        pg = None
        try:
            pg = Postgres(cfg)
        except StackError as exc:  # e.g. a cluster refused where it lies: never touched
            say(f"({exc})")
        postmaster = pg.postmaster_pid() if pg is not None else None
        if _stop_supervisor(cfg):
            say(f"supervisord stopped the programs ({time.monotonic() - started:.1f} s)")
        crashes = supervisor.restarts(cfg)
        if crashes:
            said = ", ".join(f"{name} {len(why)}x" for name, why in sorted(crashes.items()))
            say(f"supervisord had restarted: {said} (see {cfg.logs}/supervisord.log)")
        # The backstop: whatever supervisord did not stop (it was killed, a process escaped).
        counts = repair.stop_all(cfg, pg, cfg.stop_timeout + 5)
        if counts["found"]:
            how = f", {counts['killed']} needed SIGKILL" if counts["killed"] else ""
            say(f"stopped {counts['found']} processes left running{how}")
        say("PostgreSQL stopped" if postmaster is not None else "PostgreSQL was not running")
        cfg.pid_file.unlink(missing_ok=True)
        where = f"{cfg.state}" + (f" and {pg.pgdata}" if pg is not None and pg.relocated else "")
        say(f"down in {time.monotonic() - started:.1f} s; data kept in {where}")
    return 0


def status(cfg: Config) -> int:
    info = read_info(cfg)
    pgdata = None
    postmaster = None
    with contextlib.suppress(StackError):
        pg = Postgres(cfg)
        pgdata = pg.pgdata if pg.initialised() else None
        postmaster = pg.postmaster_pid()
    pid = supervisor_pid(cfg)
    if pid is None:
        say(f"not running (state folder {cfg.state}; PostgreSQL data {pgdata or 'none yet'})")
        leftovers = stack_pids(cfg)
        if leftovers:
            say(f"but processes of it are left: {leftovers}: `make down`")
        return 3
    api = replace(cfg, api_port=info.get("api_port", cfg.api_port))
    report = health(api)
    say(f"running: supervisord pid {pid}, since {info.get('started_at', '?')}")
    say(f"health: {'healthy' if healthy(report) else 'NOT healthy'}")
    for name, part in (report or {}).items():
        print(f"    {name:14} {part.get('status')}")
    crashes = supervisor.restarts(cfg)
    programs = supervisor.programs(cfg)
    say("supervisord: state of each component (restarts after an unexpected exit)")
    for program in programs or []:
        name = program["name"]
        why = crashes.get(name, [])
        last = f"; last: {why[-1]}" if why else ""
        state, text = program["statename"], program["description"]
        print(f"    {name:14} {state:9} {text}  restarts: {len(why)}{last}")
    if programs is None:
        print(f"    (supervisord does not answer on {cfg.supervisor_socket})")
    say(
        "resident memory (RSS, MiB): main process / with all its processes"
        " [PSS: shared pages counted once]"
    )
    memory = memory_by_component(cfg, postmaster)
    for name, mem in sorted(memory.items()):
        print(
            f"    {name:14} {mem['main_kib'] / 1024:7.0f} / {mem['group_kib'] / 1024:7.0f}"
            f"   ({mem['processes']} processes)  [PSS {mem['group_pss_kib'] / 1024:.0f}]"
        )
    total = sum(mem["group_pss_kib"] for mem in memory.values()) / 1024
    print(f"    {'in total':14} PSS {total:.0f} MiB")
    _print_where(cfg, info, pgdata)
    running = programs is not None and all(p["statename"] == "RUNNING" for p in programs)
    return 0 if healthy(report) and running else 1


def logs(cfg: Config) -> int:
    files = sorted(str(p) for p in cfg.logs.glob("*.log"))
    if not files:
        say(f"no logs in {cfg.logs}")
        return 1
    os.execvp("tail", ["tail", "-n", "20", "-F", *files])
    return 0  # not reached


def run(cfg: Config, argv: list[str]) -> int:
    if not argv:
        raise StackError("usage: stack.py run COMMAND [ARG...]")
    if not cfg.generated_env.is_file():
        raise StackError(f"no stack in {cfg.state}: `make up` first")
    env = command_env(cfg)
    if cfg.tmp_dir is not None:  # its TMPDIR (a state of an older version has none yet)
        hold_tmp_dir(cfg.tmp_dir)  # the command inherits the lock: `up` leaves it alone
    os.chdir(cfg.root)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        if shutil.which(argv[0], path=env["PATH"]) is None:
            raise StackError(
                f"{argv[0]}: no such command on the stack's PATH ({_venv_bin()} first; the "
                "project's environment is .venv/bin, which `make venv` makes)"
            ) from None
        # Found but not runnable: not executable, or its interpreter gone (a stale venv).
        raise StackError(f"{argv[0]}: cannot run it: {exc}") from None
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("up", "down", "status", "logs", "run")
    if not argv or argv[0] not in commands:
        print(__doc__.split("\n\n", 2)[1], file=sys.stderr)
        return 2
    try:
        cfg = Config.from_env()
        command, rest = argv[0], argv[1:]
        if command == "run":
            return run(cfg, rest[1:] if rest[:1] == ["--"] else rest)
        return {"up": up, "down": down, "status": status, "logs": logs}[command](cfg)
    except (StackError, ValueError, OSError) as exc:  # OSError: a file named, not a traceback
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
