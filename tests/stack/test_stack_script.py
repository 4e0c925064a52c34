"""deploy/stack/stack.py without a live Airflow: `down` stops every process `up` started
(stand-ins that carry the stack's marker, ignore SIGTERM or start sessions of their own;
one of another stack must survive); flight_stack/component.py takes down what a crashed
component leaves; the PostgreSQL data folder is placed where the postgres user reaches it;
the settings `up` gives the components agree with deploy/airflow.env and
docker-compose.yaml, and FLIGHT_DELAYS_STACK_ENV_FILE's file is read last."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from flight_stack import component, handle, health, postgres, preload, procs, settings
from flight_stack.handle import PYTHON

from flight_delays.store.db import REQUIRE_CONN_ENV


def settings_values() -> dict[str, str]:
    """The generated secrets and passwords `up` writes, as throw-away values."""
    values = {key: "x" for key in ("fernet_key", "jwt_secret", "api_secret_key")}
    values.update(admin_password="pw", airflow_db_password="a", warehouse_password="w")
    values.update(warehouse_reader_password="r")
    return values


def stack_run(cfg: settings.Config, *command: str) -> subprocess.CompletedProcess:
    """`stack.py run COMMAND` on ``cfg``'s state, its output captured."""
    env = {**os.environ, "FLIGHT_DELAYS_STACK_DIR": str(cfg.state)}
    return subprocess.run(
        [PYTHON, str(handle.SCRIPT), "run", *command],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def cfg(tmp_path: Path):
    return replace(settings.Config.from_env(), state=tmp_path / "state")


def spawn(cfg, script: str, marker: str | None = None) -> subprocess.Popen:
    env = {**os.environ, settings.MARKER: marker or str(cfg.state)}
    return subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True)


def wait_until(predicate, timeout: float = 60) -> bool:
    """Poll ``predicate`` until it holds; the deadline is generous (a loaded machine), and
    the tests assert states and events, never how long they took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_then_sigkill_for_what_ignores_it(cfg):
    polite = spawn(cfg, "exec sleep 300")
    # A "scheduler" that ignores SIGTERM, with a worker in a session of its own: outside
    # the process group of every component, found by its marker only.
    stubborn = spawn(cfg, "trap '' TERM; setsid sh -c \"trap '' TERM; sleep 300\" & sleep 300")
    other = spawn(cfg, "exec sleep 300", marker=str(cfg.state) + "-other")
    try:
        assert wait_until(lambda: len(procs.stack_pids(cfg)) >= 4), procs.stack_pids(cfg)
        counts = procs.stop_processes(cfg, timeout=1.0)
        assert procs.stack_pids(cfg) == []
        assert counts["found"] >= 4 and counts["killed"] >= 2, counts
        assert polite.wait(timeout=60) == -signal.SIGTERM
        assert stubborn.wait(timeout=60) == -signal.SIGKILL
        assert other.poll() is None, "a process of another stack was stopped"
    finally:
        for proc in (polite, stubborn, other):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def short_cfg(cfg):
    """``cfg`` with a state folder as short as a private stack's (/tmp/fd-stack-*)."""
    state = Path(tempfile.mkdtemp(prefix="fd-t-"))
    try:
        yield replace(cfg, state=state)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_the_components_temporary_folder_is_the_state_folders_unless_too_deep(short_cfg):
    cfg = short_cfg
    values = settings_values()
    settings.write_settings(cfg, values)
    assert settings.read_env_files(cfg)["TMPDIR"] == str(cfg.state / "tmp")
    # Too deep for the forkserver's socket inside (107 bytes at most): the system's.
    room = settings.TMP_DIR_MAX - len(str(cfg.state / "x" / "tmp"))
    fits = replace(cfg, state=cfg.state / ("x" + "d" * room))
    assert len(str(fits.tmp_dir)) == settings.TMP_DIR_MAX
    deep = replace(cfg, state=cfg.state / ("x" + "d" * (room + 1)))
    assert deep.tmp_dir is None
    assert "TMPDIR" not in settings.generated_settings(deep, values)


def test_up_empties_the_temporary_folder(short_cfg):
    folder = short_cfg.tmp_dir
    (folder / "pymp-left").mkdir(parents=True)  # a killed scheduler's forkserver folder
    (folder / "pymp-left" / "listener").write_text("")
    settings.fresh_tmp_dir(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert folder.stat().st_mode & 0o777 == 0o700
    settings.fresh_tmp_dir(None)  # no folder of its own: nothing to do


def test_up_replaces_a_link_in_place_of_the_temporary_folder_without_following_it(
    short_cfg, tmp_path
):
    folder = short_cfg.tmp_dir
    folder.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not the stack's")
    folder.symlink_to(elsewhere)
    settings.fresh_tmp_dir(folder)
    assert folder.is_dir() and not folder.is_symlink() and list(folder.iterdir()) == []
    assert (elsewhere / "keep").read_text() == "not the stack's"
    folder.rmdir()
    folder.write_text("a file")  # a file in its place
    settings.fresh_tmp_dir(folder)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700


def test_up_names_what_it_cannot_remove_from_the_temporary_folder(short_cfg, monkeypatch):
    # A file that cannot be removed (another user's, in a folder of ours): the error
    # names it, and no folder is made over what is left. Simulated so root sees it too.
    folder = short_cfg.tmp_dir
    (folder / "pymp-left").mkdir(parents=True)
    (folder / "pymp-left" / "listener").write_text("")
    unlink = os.unlink

    def refuse(path, *args, **kwargs):
        if os.fspath(path).endswith("listener"):
            raise PermissionError(13, "Permission denied")
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(settings.StackError, match=r"cannot empty .*listener: Permission denied"):
        settings.fresh_tmp_dir(folder)
    assert (folder / "pymp-left" / "listener").exists()
    monkeypatch.setattr(os, "unlink", unlink)
    settings.fresh_tmp_dir(folder)
    assert list(folder.iterdir()) == []


def test_a_one_off_command_gets_the_stacks_temporary_folder_made_if_missing(short_cfg):
    # `stack.py run` when the folder is gone (removed by hand, or a state of before it):
    # the command's TMPDIR exists, private, instead of tools failing on a missing folder.
    settings.write_settings(short_cfg, settings_values())
    assert not short_cfg.tmp_dir.exists()
    script = 'test -d "$TMPDIR" && mktemp -p "$TMPDIR" >/dev/null && echo "$TMPDIR"'
    run = stack_run(short_cfg, "sh", "-c", script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == str(short_cfg.tmp_dir)
    assert short_cfg.tmp_dir.stat().st_mode & 0o777 == 0o700


def test_up_leaves_the_temporary_folder_alone_while_a_one_off_command_uses_it(short_cfg):
    # `make up` (say, repairing a killed stack) while `stack.py run` runs a step: the
    # step's files in TMPDIR (an S3 upload's staging folder) must survive; a later `up`,
    # with the command gone, empties the folder as before.
    values = settings_values()
    settings.write_settings(short_cfg, values)
    folder = short_cfg.tmp_dir
    env = {**os.environ, "FLIGHT_DELAYS_STACK_DIR": str(short_cfg.state)}
    script = 'mkdir "$TMPDIR/staging" && exec sleep 60'  # the lock goes through exec too
    command = subprocess.Popen([PYTHON, str(handle.SCRIPT), "run", "sh", "-c", script], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (folder / "staging").is_dir():
            assert command.poll() is None and time.monotonic() < deadline, "run did not start"
            time.sleep(0.05)
        assert settings.fresh_tmp_dir(folder) is False
        assert (folder / "staging").is_dir()
    finally:
        command.kill()
        command.wait(timeout=30)
    assert settings.fresh_tmp_dir(folder) is True
    assert list(folder.iterdir()) == []


def test_a_held_temporary_folder_is_not_emptied_until_released(short_cfg):
    folder = short_cfg.tmp_dir
    fd = settings.hold_tmp_dir(folder)  # made, private, held
    assert folder.stat().st_mode & 0o777 == 0o700
    (folder / "in-use").write_text("")
    try:
        assert settings.fresh_tmp_dir(folder) is False
        assert (folder / "in-use").exists()
    finally:
        os.close(fd)
    assert settings.fresh_tmp_dir(folder) is True
    assert list(folder.iterdir()) == []


def test_a_lock_file_that_cannot_be_opened_is_named_not_a_traceback(short_cfg):
    # A folder where the lock file goes (an error that root meets too): `up` and `run`
    # stop with the file's name and the reason.
    settings.write_settings(short_cfg, settings_values())
    lock = short_cfg.tmp_dir.with_name(f"{short_cfg.tmp_dir.name}.lock")
    lock.mkdir()
    for call in (settings.hold_tmp_dir, settings.fresh_tmp_dir):
        with pytest.raises(settings.StackError, match=re.escape(str(lock))):
            call(short_cfg.tmp_dir)
    run = stack_run(short_cfg, "true")
    said = run.stdout + run.stderr
    assert run.returncode != 0
    assert str(lock) in said and "Is a directory" in said
    assert "Traceback" not in said


def test_a_command_that_does_not_exist_is_named_not_a_traceback(short_cfg):
    settings.write_settings(short_cfg, settings_values())
    run = stack_run(short_cfg, "no-such-command-here")
    said = run.stdout + run.stderr
    assert run.returncode == 1
    assert "no-such-command-here: no such command" in said and "Traceback" not in said
    assert "make venv" in said  # where the project's commands come from


def test_run_by_the_scripts_shebang_finds_the_projects_commands(short_cfg):
    # `deploy/stack/stack.py run airflow ...` as the docs write it: the shebang's python3
    # is not the venv, and airflow was looked for on the system's PATH only ("No such file
    # or directory: b'/bin/airflow'"). The interpreter the venv was made from stands in.
    settings.write_settings(short_cfg, settings_values())
    system_python = next(
        p for p in (Path(sys.base_prefix) / "bin" / n for n in ("python3", "python")) if p.exists()
    )
    env = {**os.environ, "FLIGHT_DELAYS_STACK_DIR": str(short_cfg.state)}
    env["PATH"] = "/usr/bin:/bin"  # no venv on it, as in a new shell
    found = subprocess.run(
        [str(system_python), str(handle.SCRIPT), "run", "sh", "-c", "command -v airflow"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    assert found.stdout.strip() == str(settings.REPO / ".venv" / "bin" / "airflow")


def test_a_command_whose_interpreter_is_gone_is_named_as_such(short_cfg, tmp_path):
    # A stale venv's script (its python removed by an upgrade): found, but not runnable;
    # not "no such command", and no traceback.
    settings.write_settings(short_cfg, settings_values())
    script = tmp_path / "stale-tool"
    script.write_text("#!/nonexistent/venv/bin/python\n")
    script.chmod(0o755)
    run = stack_run(short_cfg, str(script))
    said = run.stdout + run.stderr
    assert run.returncode == 1 and f"{script}: cannot run it" in said, said
    assert "Traceback" not in said


def test_a_file_in_place_of_the_temporary_folder_stops_run_with_its_name(short_cfg):
    # `run` makes a missing folder but removes nothing (`up` replaces such a file): a file
    # in its place is named, and the lock is released for `up` to take.
    short_cfg.tmp_dir.parent.mkdir(parents=True, exist_ok=True)
    short_cfg.tmp_dir.write_text("not a folder")
    with pytest.raises(settings.StackError, match=re.escape(str(short_cfg.tmp_dir))):
        settings.hold_tmp_dir(short_cfg.tmp_dir)
    assert settings.fresh_tmp_dir(short_cfg.tmp_dir) is True  # not held: replaced
    assert short_cfg.tmp_dir.is_dir()


def test_nothing_to_stop_is_fine_and_a_stale_pid_file_is_not_trusted(cfg):
    cfg.state.mkdir(parents=True)
    assert procs.stop_processes(cfg, timeout=1.0) == {"found": 0, "killed": 0}
    # A pid file naming a live process that is not ours (pid reuse): not the stack.
    cfg.pid_file.write_text(f"{os.getpid()}\n")
    assert procs.supervisor_pid(cfg) is None


def test_settings_load_the_shared_airflow_env_and_stay_on_loopback(cfg):
    values = settings_values()
    settings.write_settings(cfg, values)
    env = settings.read_env_files(cfg)
    shared = settings.parse_env(settings.SHARED_ENV.read_text())
    for key, value in shared.items():
        assert env[key] == value, f"{key}: the stack must keep deploy/airflow.env's value"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://127.0.0.1:")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "x"  # one secret for every component
    assert env["AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE"].startswith("postgresql://warehouse:w@")
    assert env[REQUIRE_CONN_ENV] == "true"  # a failed lookup of it is retried, not fallen back from
    reader = env["AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE_READER"]
    assert reader.startswith("postgresql://warehouse_reader:r@") and reader.endswith("/warehouse")
    assert "/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["FLIGHT_DELAYS_HOME"] == str(cfg.root)
    for name in ("generated.env", "airflow/simple_auth_manager_passwords.json"):
        assert (cfg.state / name).stat().st_mode & 0o777 == 0o600


def test_processes_without_the_marker_in_a_stack_session_are_found(cfg):
    # setproctitle overwrites what /proc/<pid>/environ shows (api-server, workers): a
    # child of a marked process whose environment lacks the marker is still the stack's.
    parent = spawn(cfg, "env -u FLIGHT_DELAYS_STACK sleep 300 & exec sleep 300")
    try:
        assert wait_until(lambda: len(procs.stack_pids(cfg)) >= 2)
        children = [p for p in procs.stack_pids(cfg) if p != parent.pid]
        assert children and all(settings.MARKER.encode() not in procs._environ(p) for p in children)
        procs.stop_processes(cfg, timeout=2.0)
        assert procs.stack_pids(cfg) == []
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def _compose_value(value: str) -> str:
    """`${VAR:-default}` -> default; other values unchanged."""
    if value.startswith("${") and ":-" in value:
        return value.split(":-", 1)[1].rstrip("}")
    return value


def test_settings_agree_with_the_compose_stack(cfg):
    values = settings_values()
    settings.write_settings(cfg, values)
    ours = settings.read_env_files(cfg)
    compose = yaml.safe_load((settings.REPO / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]
    assert "deploy/airflow.env" in common["env_file"]  # both stacks load the shared file
    # ... and the executor's file (LocalExecutor unless asked: FLIGHT_DELAYS_EXECUTOR).
    assert "deploy/executor-${FLIGHT_DELAYS_EXECUTOR:-local}.env" in common["env_file"]
    assert ours["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    theirs = {k: _compose_value(str(v)) for k, v in common["environment"].items()}
    for key in (
        "AIRFLOW__CORE__AUTH_MANAGER",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    ):
        assert ours[key] == theirs[key], key
    for key in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        assert Path(ours[key]).name == Path(theirs[key]).name, key
    # The same connection id (the DAG's flight_delays_warehouse), to a `warehouse`
    # database and user apart from the metastore. Compose keeps it in the metastore
    # (airflow-init stores it, from WAREHOUSE_DB_URL and the password's secret file); the
    # stack gives it in the environment.
    init = (settings.REPO / "deploy" / "airflow-init.sh").read_text()
    conn_id = re.search(r"^readonly WAREHOUSE_CONN_ID=(\w+)$", init, re.M)[1]
    assert f"AIRFLOW_CONN_{conn_id.upper()}" == settings.WAREHOUSE_CONN_ENV
    compose_url = compose["services"]["airflow-init"]["environment"]["WAREHOUSE_DB_URL"]
    for url in (ours[settings.WAREHOUSE_CONN_ENV], compose_url):
        parsed = urlsplit(url)
        assert (parsed.scheme, parsed.username, parsed.path) == (
            "postgresql", "warehouse", "/warehouse"
        ), url  # fmt: skip
    # The Model reports page's SELECT-only connection: the same id, role and database.
    reader_id = re.search(r"^readonly READER_CONN_ID=(\w+)$", init, re.M)[1]
    assert f"AIRFLOW_CONN_{reader_id.upper()}" == settings.READER_CONN_ENV
    compose_reader = compose["services"]["airflow-init"]["environment"]["WAREHOUSE_READER_DB_URL"]
    for url in (ours[settings.READER_CONN_ENV], compose_reader):
        parsed = urlsplit(url)
        assert (parsed.username, parsed.path) == (settings.READER_ROLE, "/warehouse"), url
    for env in (ours, theirs):
        # Given as a value, or (compose: secrets from files) as the template of its
        # `_CMD`, which prints it with the password in place of %s.
        metastore = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or env.get(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", ""
        )
        assert metastore.endswith("/airflow"), metastore
        # Task workers reach the api-server's execution API (the port is the stack's).
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")


def test_celery_settings_broker_results_storage_and_a_folder_per_worker(tmp_path):
    cfg = replace(
        settings.Config.from_env({"FLIGHT_DELAYS_STACK_EXECUTOR": "Celery"}),
        state=tmp_path / "state",
        root=tmp_path / "root",
    )
    assert cfg.celery and cfg.supervisor_conf == settings.CELERY_SUPERVISOR_CONF
    assert cfg.programs[-len(settings.CELERY_PROGRAMS) :] == settings.CELERY_PROGRAMS
    values = settings.ensure_secrets(cfg)
    settings.write_settings(cfg, values)
    env = settings.read_env_files(cfg)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    password = values["redis_password"]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{password}@127.0.0.1:{cfg.redis_port}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env[
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    ].replace("postgresql+psycopg2://", "postgresql://")
    assert env["FLIGHT_DELAYS_STORAGE_URL"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{cfg.s3_port}"
    settings.write_redis_conf(cfg, values)
    assert f"requirepass {password}" in cfg.redis_conf.read_text()
    assert cfg.redis_conf.stat().st_mode & 0o777 == 0o600
    (cfg.root / "include").mkdir(parents=True)
    settings.prepare_workers(cfg)
    settings.prepare_workers(cfg)  # again, as every `up` does
    homes = {cfg.worker_dir(w) / "home" for w in settings.WORKERS}
    assert len(homes) == 2
    for home in homes:
        assert (home / "include").resolve() == (cfg.root / "include").resolve()
    # A secrets file from before the celery stack gets the new secrets, keeps the old.
    old = {k: v for k, v in values.items() if not k.startswith(("redis", "s3"))}
    cfg.secrets_file.write_text(json.dumps(old))
    again = settings.ensure_secrets(cfg)
    assert {k: again[k] for k in old} == old and again["redis_password"]
    with pytest.raises(settings.StackError, match="FLIGHT_DELAYS_STACK_EXECUTOR must be one of"):
        settings.Config.from_env({"FLIGHT_DELAYS_STACK_EXECUTOR": "kubernetes"})


def test_the_stack_names_its_celery_programs_by_their_command_line():
    assert procs._component_of("python component.py airflow celery worker --celery-hostname "
                               "worker-2 --skip-serve-logs") == "worker-2"  # fmt: skip
    assert procs._component_of("[celeryd: celery@worker-1:MainProcess] -active-") == "worker-1"
    assert procs._component_of("/usr/bin/redis-server 127.0.0.1:6380") == "redis"
    assert procs._component_of("python flight_stack/component.py python s3server.py") == "s3"
    assert procs._component_of("airflow scheduler") == "scheduler"


BURNER = """
import os, subprocess, sys, time

def burn(seconds):  # CPU time, however loaded the machine is
    while time.process_time() < seconds:
        pass

burn(0.3)
if len(sys.argv) > 1:  # the parent: a child that burns more, waited for
    subprocess.run([sys.executable, __file__], check=True)
    print("done", flush=True)
    sys.stdin.read()
burn(0.6)
"""


def test_cpu_ticks_tells_a_process_own_time_from_its_reaped_childrens(tmp_path):
    # The CPU accounting of the benchmark harness: a LocalExecutor worker's task processes
    # are children it has waited for, so their time is in its "reaped" part, not its own.
    script = tmp_path / "burner.py"
    script.write_text(BURNER)
    parent = subprocess.Popen(
        [sys.executable, str(script), "parent"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout.readline() == "done\n"
        own, reaped = procs.cpu_ticks(parent.pid)
        hz = os.sysconf("SC_CLK_TCK")
        assert 0.25 * hz <= own < 0.6 * hz, (own, reaped, hz)  # its own 0.3 s, imports
        assert reaped >= 0.55 * hz, (own, reaped, hz)  # the child's 0.6 s
    finally:
        parent.communicate("", timeout=30)
    # Gone (and reaped by this test): nothing to count, not an error.
    assert procs.cpu_ticks(parent.pid) == (0, 0)


FAKE_SCHEDULER = """
import os, signal, subprocess, sys, time
out, role = sys.argv[1], sys.argv[2]  # the main one: `fake.py OUT main airflow scheduler`

def record(signum, frame):
    with open(os.path.join(out, role), "w") as f:
        f.write(str(signum))

if role == "task":  # a task process: a process group of its own, as Airflow's
    os.setpgid(0, 0)
signal.signal(signal.SIGTERM, record)
if role == "main":  # a LocalExecutor worker (the scheduler's group) and a task
    for child in ("worker", "task"):
        subprocess.Popen([sys.executable, __file__, out, child])
open(os.path.join(out, "ready-" + role), "w").close()
time.sleep(300)
"""


def test_the_scheduler_is_stopped_alone_not_its_executor_workers(cfg, tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_SCHEDULER)
    out = tmp_path / "signals"
    out.mkdir()
    # Named like the real one, so that its session is recognised as the scheduler's.
    fake = subprocess.Popen(
        [sys.executable, str(script), str(out), "main", "airflow scheduler"],
        env={**os.environ, settings.MARKER: str(cfg.state)},
        start_new_session=True,
    )
    try:
        ready = ("ready-main", "ready-worker", "ready-task")
        assert wait_until(lambda: all((out / name).exists() for name in ready))
        procs._stop_scheduler_first(procs.stack_pids(cfg))
        assert wait_until(lambda: (out / "main").exists() and (out / "task").exists())
        time.sleep(0.3)
        assert not (out / "worker").exists(), "a LocalExecutor worker got SIGTERM directly"
    finally:
        procs.stop_processes(cfg, timeout=1.0)
        fake.wait(timeout=60)
    assert procs.stack_pids(cfg) == []


# --- settings files ----------------------------------------------------------------------
def test_env_files_read_the_same_as_a_dotenv_reader_and_odd_lines_are_refused(tmp_path):
    from dotenv import dotenv_values  # what docker-compose-like readers do with env_file

    executors = [settings.Config.from_env({"FLIGHT_DELAYS_STACK_EXECUTOR": name}).executor_env
                 for name in settings.EXECUTORS]  # fmt: skip
    for path in (settings.SHARED_ENV, settings.STACK_ENV, *executors):
        assert settings.parse_env(path.read_text()) == dotenv_values(path), path
    bad = tmp_path / "bad.env"
    for line in ('A="quoted"', "A=two words", "A=$HOME", "not a setting"):
        bad.write_text(f"# comment\nOK=1\n{line}\n")
        with pytest.raises(settings.StackError, match=r"bad\.env:3: expected KEY=value"):
            settings.parse_env(bad.read_text(), str(bad))


def test_the_file_flight_delays_stack_env_file_names_is_read_last(cfg, tmp_path):
    values = settings_values()
    local = tmp_path / "machine.env"
    # A tracked setting (deploy/airflow.env) and a generated one, overridden here.
    local.write_text("# this machine\nAIRFLOW__CORE__PARALLELISM=3\nSTACK_LOG_DIR=/elsewhere\n")
    env = {"FLIGHT_DELAYS_STACK_DIR": str(cfg.state), "FLIGHT_DELAYS_STACK_ENV_FILE": str(local)}
    ours = settings.Config.from_env(env)
    assert ours.local_env == local.resolve()
    assert settings.env_files(ours) == [
        settings.SHARED_ENV,
        settings.REPO / "deploy" / "executor-local.env",
        settings.STACK_ENV,
        ours.generated_env,
        local.resolve(),
    ]
    settings.write_settings(ours, values)
    tracked = settings.read_env_files(replace(ours, local_env=None))
    assert tracked["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert tracked["STACK_LOG_DIR"] == str(ours.logs)
    merged = settings.read_env_files(ours)
    assert merged["AIRFLOW__CORE__PARALLELISM"] == "3" and merged["STACK_LOG_DIR"] == "/elsewhere"
    assert merged == {**tracked, "AIRFLOW__CORE__PARALLELISM": "3", "STACK_LOG_DIR": "/elsewhere"}
    # One-off commands (`stack.py run`, the migrations) get it too.
    assert settings.command_env(ours)["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert settings.Config.from_env({"FLIGHT_DELAYS_STACK_ENV_FILE": ""}).local_env is None
    # A file that is not there, or a line the other readers would take differently, is
    # refused with its name.
    with pytest.raises(
        settings.StackError, match=r"FLIGHT_DELAYS_STACK_ENV_FILE names .*nope\.env"
    ):
        settings.read_env_files(replace(ours, local_env=tmp_path / "nope.env"))
    local.write_text("AIRFLOW__CORE__PARALLELISM=3 # eight cores\n")
    with pytest.raises(settings.StackError, match=r"machine\.env:1: expected KEY=value"):
        settings.read_env_files(ours)


def test_the_package_needs_only_the_standard_library_and_down_runs_without_the_venv(tmp_path):
    # -S: no site-packages at all, as a Python 3 without the project's venv.
    modules = ("cli", "component", "health", "postgres", "procs", "repair", "settings",
               "supervisor", "worker_host", "s3server")  # fmt: skip
    probe = "import sys; sys.path.insert(0, sys.argv[1]); " + "; ".join(
        f"import flight_stack.{name}" for name in modules
    )
    here = str(settings.HERE)
    imported = subprocess.run([sys.executable, "-S", "-c", probe, here], capture_output=True)
    assert imported.returncode == 0, imported.stderr.decode()
    env = {"PATH": os.environ["PATH"], "FLIGHT_DELAYS_STACK_DIR": str(tmp_path / "none")}
    down = subprocess.run(
        [sys.executable, "-S", str(settings.HERE / "stack.py"), "down"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert down.returncode == 0 and "nothing to stop" in down.stdout, down.stdout + down.stderr


# --- flight_stack/component.py: what a component leaves behind ----------------------------------
WRAPPER = settings.COMPONENT_WRAPPER

FAKE_COMPONENT = """
import os, signal, subprocess, sys, time
out, role = sys.argv[1], sys.argv[2]

def record(signum, frame):
    with open(os.path.join(out, role), "w") as f:
        f.write(repr(time.monotonic()))
    if role == "main":  # the scheduler exits once told (its workers are still running)
        sys.exit(0)

if role == "task":  # a task process: a process group of its own, as Airflow's
    os.setpgid(0, 0)
signal.signal(signal.SIGTERM, record)
if role == "main":  # a LocalExecutor worker (same group) and a task (own group)
    for child in ("worker", "task"):
        subprocess.Popen([sys.executable, __file__, out, child])
open(os.path.join(out, "ready-" + role), "w").close()
time.sleep(300)
"""


def _wrapped(cfg, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "fake.py"
    script.write_text(FAKE_COMPONENT)
    out = tmp_path / "signals"
    out.mkdir()
    env = {**os.environ, settings.MARKER: str(cfg.state), "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": "2"}
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), sys.executable, str(script), str(out), "main"],
        env=env,
        start_new_session=True,  # as supervisord: a process group of its own
    )
    ready = ("ready-main", "ready-worker", "ready-task")
    assert wait_until(lambda: all((out / name).exists() for name in ready)), "no fake component"
    return wrapper, out


def test_a_crashed_component_takes_its_orphans_along_and_exits_as_killed(cfg, tmp_path):
    wrapper, out = _wrapped(cfg, tmp_path)
    try:
        main = next(p for p in procs.stack_pids(cfg) if procs._stat(p)[0] == wrapper.pid)
        assert len(procs.stack_pids(cfg)) == 4  # wrapper, main, worker, task
        os.kill(main, signal.SIGKILL)  # the scheduler crashes: its worker and task remain
        assert wrapper.wait(timeout=60) == 128 + signal.SIGKILL  # supervisord sees a crash
        assert wait_until(lambda: procs.stack_pids(cfg) == []), procs.stack_pids(cfg)
        # SIGKILL at once, as a container that dies: no process ran its SIGTERM handler.
        assert not (out / "worker").exists() and not (out / "task").exists()
    finally:
        procs.stop_processes(cfg, timeout=1.0)
        if wrapper.poll() is None:
            wrapper.kill()


def test_a_stop_reaches_the_main_process_and_the_tasks_before_the_workers(cfg, tmp_path):
    wrapper, out = _wrapped(cfg, tmp_path)
    try:
        wrapper.send_signal(signal.SIGTERM)  # supervisord's stopsignal
        assert wrapper.wait(timeout=60) == 0  # the main process's own exit status
        assert (out / "main").exists() and (out / "task").exists()
        # The worker got SIGTERM only after the main process had exited (the wrapper's
        # clean-up), never together with it: see _stop_scheduler_first.
        worker_at = float((out / "worker").read_text())
        assert worker_at >= float((out / "main").read_text())
        assert wait_until(lambda: procs.stack_pids(cfg) == []), procs.stack_pids(cfg)
    finally:
        procs.stop_processes(cfg, timeout=1.0)
        if wrapper.poll() is None:
            wrapper.kill()


FAKE_TRIGGERER = """
import os, signal, subprocess, sys, time
out, role, waits = sys.argv[1], sys.argv[2], sys.argv[3] == "waits"

def record(signum, frame):
    with open(os.path.join(out, f"{role}-{signal.Signals(signum).name}"), "w") as f:
        f.write(repr(time.monotonic()))
    sys.exit(0)

for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, record)
if role == "main":  # the triggerer and its trigger runner (one process group)
    runner = subprocess.Popen([sys.executable, __file__, out, "runner", sys.argv[3]])
    open(os.path.join(out, "ready-main"), "w").close()
    while waits or runner.poll() is None:  # exits once its runner is gone, unless it waits
        time.sleep(0.05)
    sys.exit(0)
open(os.path.join(out, "ready-runner"), "w").close()
time.sleep(300)
"""


@pytest.mark.parametrize("main_waits", [False, True])
def test_a_stop_told_to_the_children_first_reaches_the_main_process_only_if_needed(
    cfg, tmp_path, main_waits
):
    # The triggerer: its runner gets SIGINT first and the triggerer, which exits once the
    # runner is gone, no signal at all; one that stays gets SIGTERM after the grace.
    script = tmp_path / "triggerer.py"
    script.write_text(FAKE_TRIGGERER)
    out = tmp_path / "signals"
    out.mkdir()
    env = {**os.environ, settings.MARKER: str(cfg.state), "STACK_STOP_CHILDREN_FIRST": "1"}
    argv = [sys.executable, str(script), str(out), "main", "waits" if main_waits else "exits"]
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), *argv], env=env, start_new_session=True
    )
    try:
        ready = [out / "ready-main", out / "ready-runner"]
        assert wait_until(lambda: all(r.exists() for r in ready)), "no fake triggerer"
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=60) == 0
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith("ready")) == (
            ["main-SIGTERM", "runner-SIGINT"] if main_waits else ["runner-SIGINT"]
        )
        if main_waits:  # the main process's SIGTERM came after the grace, not with SIGINT
            late = float((out / "main-SIGTERM").read_text())
            late -= float((out / "runner-SIGINT").read_text())
            assert late >= component.CHILDREN_FIRST_GRACE - 0.5
    finally:
        procs.stop_processes(cfg, timeout=1.0)
        if wrapper.poll() is None:
            wrapper.kill()


def test_the_wrapper_without_a_command_says_how_to_use_it():
    result = subprocess.run([sys.executable, str(WRAPPER)], capture_output=True, text=True)
    assert result.returncode == 2 and "flight_stack/component.py COMMAND" in result.stderr


def test_the_wrapper_starts_the_component_only_once_its_ready_check_succeeds(cfg, tmp_path):
    """The Airflow components wait so for the metastore (pg_isready) instead of dying in
    a loop until supervisord gives up on them."""
    ready, started = tmp_path / "database-up", tmp_path / "started"
    env = {**os.environ, settings.MARKER: str(cfg.state), "STACK_READY_CHECK": f"test -e {ready}"}
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), "sh", "-c", f"touch {started}; exec sleep 300"],
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = wrapper.stderr.readline()  # said once it has checked, and waits
        assert "waiting until `test -e" in line, line
        assert not started.exists() and wrapper.poll() is None
        ready.touch()
        assert wait_until(started.exists), "the component did not start once ready"
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        procs.stop_processes(cfg, timeout=1.0)
        if wrapper.poll() is None:
            wrapper.kill()


def test_a_wrapper_told_to_stop_while_it_waits_starts_nothing(cfg, tmp_path):
    started = tmp_path / "started"
    env = {**os.environ, settings.MARKER: str(cfg.state), "STACK_READY_CHECK": "false"}
    wrapper = subprocess.Popen(
        [sys.executable, str(WRAPPER), "touch", str(started)],
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "waiting until `false` succeeds" in wrapper.stderr.readline()
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=60) == 0
    assert "asked to stop while waiting" in wrapper.stderr.read()
    assert not started.exists()


def test_the_wrapper_gives_postgres_a_minimal_environment_and_refuses_an_unknown_user(tmp_path):
    out = tmp_path / "env.json"
    dump = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    env = {**os.environ, "STACK_MINIMAL_ENV": "1", "AIRFLOW__CORE__FERNET_KEY": "secret"}
    env[settings.MARKER] = "/some/state"
    done = subprocess.run([sys.executable, str(WRAPPER), sys.executable, "-c", dump], env=env)
    assert done.returncode == 0
    seen = json.loads(out.read_text())
    assert "AIRFLOW__CORE__FERNET_KEY" not in seen and seen[settings.MARKER] == "/some/state"
    assert seen["LC_ALL"] == "C.UTF-8" and seen["PATH"] == os.environ["PATH"]
    env = {**os.environ, "STACK_RUN_AS": "no-such-user-here"}
    refused = subprocess.run(
        [sys.executable, str(WRAPPER), "true"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert "STACK_RUN_AS names 'no-such-user-here', which is no user here" in refused.stderr


def test_stop_processes_can_spare_postgres_for_its_own_shutdown(cfg):
    """`down` and `up` after a dead supervisord stop the Airflow components first and
    PostgreSQL last, by its fast shutdown: the processes spared, with their children."""
    spared = spawn(cfg, "sleep 300 & exec sleep 300")
    other = spawn(cfg, "exec sleep 300")
    try:
        assert wait_until(lambda: len(procs.stack_pids(cfg)) >= 3)
        family = [spared.pid, *procs.descendants(spared.pid)]
        assert len(family) == 2
        counts = procs.stop_processes(cfg, timeout=5.0, spare={spared.pid})
        assert counts["found"] == 1 and other.wait(timeout=60) == -signal.SIGTERM
        assert all(procs._alive(p) for p in family)
        assert procs.stop_processes(cfg, timeout=5.0)["found"] == 2
        assert procs.stack_pids(cfg) == []
    finally:
        for proc in (spared, other):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_programs_behind_an_unhealthy_report():
    healthy = {"status": "healthy"}
    report = {name: healthy for name in health.PARTS}
    assert health.unhealthy_programs(report) == []
    report["dag_processor"] = {"status": "unhealthy"}
    report["metadatabase"] = {"status": "unhealthy"}
    assert health.unhealthy_programs(report) == ["postgres", "dag-processor"]
    assert health.unhealthy_programs(None) == ["api-server"]  # it did not answer


# --- where the PostgreSQL data lives -----------------------------------------------------
def test_the_data_folder_is_the_state_folder_when_reachable_else_a_stable_one(tmp_path):
    state = tmp_path / "clone" / ".stack"
    bases = [tmp_path / "var-lib", tmp_path / "var-lib-2"]
    name = postgres.relocated_name(state)
    assert name.startswith("clone-") and name == postgres.relocated_name(state)
    assert name != postgres.relocated_name(tmp_path / "other" / "clone" / ".stack")

    def choose(reachable, why_not=lambda p: None):
        # The order of the choice; what is trusted is tested on real folders below.
        return postgres.choose_data_folder(state, reachable, bases, why_not, legacy=[])

    assert choose(lambda p: True) == state / "pg"
    outside = choose(lambda p: not p.is_relative_to(state))
    assert outside == bases[0] / name / "pg"
    assert choose(lambda p: p.is_relative_to(bases[1])) == bases[1] / name / "pg"
    # An untrusted state folder is passed over even when its owner can reach it.
    in_state = lambda p: "writable by everyone" if p.is_relative_to(state) else None  # noqa: E731
    assert choose(lambda p: True, in_state) == outside
    # An existing cluster is used wherever it is, even once the state folder is reachable.
    outside.mkdir(parents=True)
    (outside / "PG_VERSION").write_text("15\n")
    assert choose(lambda p: True) == outside
    with pytest.raises(settings.StackError, match="no trusted folder that the cluster's owner"):
        postgres.choose_data_folder(
            tmp_path / "x" / ".stack", lambda p: False, bases, lambda p: None, legacy=[]
        )


def trusted_folder() -> Path:
    """A new folder whose whole chain only root (or this user) can write: under /var/lib
    as root, else under the home folder. Never /tmp: that is world-writable."""
    base = Path("/var/lib") if os.geteuid() == 0 else Path.home()
    folder = Path(tempfile.mkdtemp(prefix="fd-trusted-", dir=base))
    folder.chmod(0o755)
    assert postgres.untrusted(folder) is None, postgres.untrusted(folder)
    return folder


def test_a_folder_is_trusted_only_when_no_one_else_can_write_its_chain(tmp_path):
    # pytest's tmp_path lies under /tmp: sticky, but writable by everyone.
    assert postgres.untrusted(tmp_path) == "/tmp is writable by everyone (mode 1777)"
    assert postgres.untrusted(Path("/usr/lib")) is None
    trusted = trusted_folder()
    try:
        assert postgres.untrusted(trusted / "not" / "there" / "yet") is None  # created by us
        shared = trusted / "shared"
        shared.mkdir()
        shared.chmod(0o775)
        assert postgres.untrusted(shared / "pg") == f"{shared} is writable by its group (mode 775)"
        (trusted / "link").symlink_to(trusted)
        assert (
            postgres.untrusted(trusted / "link" / "pg") == f"{trusted / 'link'} is a symbolic link"
        )
        if os.geteuid() == 0:
            theirs = trusted / "theirs"
            theirs.mkdir(mode=0o755)
            os.chown(theirs, 12345, 12345)
            assert postgres.untrusted(theirs) == (
                f"{theirs} belongs to uid 12345, not to root or uid 0"
            )
            # The data folder itself may belong to the cluster's owner, not its parents.
            assert postgres.untrusted(theirs, own=[12345]) is None
            assert postgres.untrusted(theirs / "pg", own=[12345]) is not None
    finally:
        shutil.rmtree(trusted, ignore_errors=True)


def test_a_cluster_planted_in_a_world_writable_tree_is_refused_with_a_clear_message(tmp_path):
    """The review's case: as root, a state folder the postgres user reaches, and a
    cluster planted at the old fallback, /var/tmp/flight-delays/<name>-<hash>/pg."""
    trusted = trusted_folder()
    try:
        state = trusted / "clone" / ".stack"
        var_tmp = tmp_path / "var-tmp" / "flight-delays"  # under /tmp: world-writable
        planted = var_tmp / postgres.relocated_name(state) / "pg"
        planted.mkdir(parents=True)
        (planted / "PG_VERSION").write_text("15\n")
        with pytest.raises(settings.StackError) as refused:
            postgres.choose_data_folder(state, lambda p: True, [trusted / "lib"], legacy=[var_tmp])
        message = str(refused.value)
        assert f"refusing the PostgreSQL cluster in {planted}" in message
        assert "/tmp is writable by everyone" in message and "delete it" in message
        # A planted cluster in the state folder of a world-writable tree: refused too.
        exposed = tmp_path / "clone" / ".stack"
        (exposed / "pg").mkdir(parents=True)
        (exposed / "pg" / "PG_VERSION").write_text("15\n")
        with pytest.raises(settings.StackError, match=r"refusing .* /tmp is writable"):
            postgres.choose_data_folder(exposed, lambda p: True, [trusted / "lib"], legacy=[])
        # Once this stack's own cluster exists where it is trusted, it is the one used.
        own = trusted / "clone" / ".stack" / "pg"
        own.mkdir(parents=True)
        (own / "PG_VERSION").write_text("15\n")
        chosen = postgres.choose_data_folder(state, lambda p: True, [trusted], legacy=[var_tmp])
        assert chosen == own
    finally:
        shutil.rmtree(trusted, ignore_errors=True)


def test_private_files_never_follow_a_planted_symlink(cfg, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    target = cfg.state / "secrets.json"
    target.parent.mkdir(parents=True)
    target.symlink_to(victim)
    # The temporary name of older versions too: a link there is never opened.
    (cfg.state / ".secrets.json.tmp").symlink_to(victim)
    settings._write_private(target, "secret\n")
    assert victim.read_text() == "untouched\n"
    assert not target.is_symlink() and target.read_text() == "secret\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in cfg.state.iterdir()) == [".secrets.json.tmp", "secrets.json"]
    # write_settings: a link planted where the login's password goes is replaced too.
    values = settings_values()
    cfg.passwords_file.parent.mkdir(parents=True)
    cfg.passwords_file.symlink_to(victim)
    settings.write_settings(cfg, values)
    assert victim.read_text() == "untouched\n"
    assert not cfg.passwords_file.is_symlink()
    assert json.loads(cfg.passwords_file.read_text()) == {"admin": "pw"}
    # A folder where the file goes is an error that names it, never a write through it.
    (cfg.state / "taken").mkdir()
    with pytest.raises(IsADirectoryError):
        settings._write_private(cfg.state / "taken", "x")


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root hands the cluster to the postgres user"
)


@needs_root
def test_a_checkout_under_a_private_folder_gets_data_the_postgres_user_can_write(
    tmp_path, monkeypatch
):
    private = tmp_path / "root-home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    base = trusted_folder()  # reachable by everyone, writable by root only
    monkeypatch.setattr(postgres, "ROOT_DATA_BASES", (base / "lib",))
    cfg = replace(settings.Config.from_env(), state=private / "clone" / ".stack")
    try:
        first = postgres.Postgres(cfg)
        assert first.relocated and first.pgdata.is_relative_to(base / "lib")
        first._prepare()
        as_postgres = first._run("test", "-w", first.pgdata, check=False)
        assert as_postgres.returncode == 0, "the postgres user cannot write its data folder"
        assert (first.pgdata.parent / "STACK_DIR").read_text().startswith(str(cfg.state))
        (first.pgdata / "PG_VERSION").write_text("15\n")
        assert postgres.Postgres(cfg).pgdata == first.pgdata  # stable across calls
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_root
@pytest.mark.stack
def test_make_up_from_a_checkout_under_a_private_folder_keeps_its_data_across_down(tmp_path):
    """The issue-8 case for real: a clone under a 0700 home (as /root), no
    FLIGHT_DELAYS_STACK_DIR set by hand beyond the clone's own `.stack`: `up` puts the
    cluster where the postgres user reaches it, says where, and up/down/up keeps it."""
    import psycopg2
    from stack_helpers import PYTHON, SCRIPT, free_port

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    clone = home / "flight-delay-pipeline"
    (clone / "include").mkdir(parents=True)
    # A checkout's parameters: `up` migrates the model registry they point to.
    shutil.copy(settings.REPO / "include" / "params.yaml", clone / "include" / "params.yaml")
    state = clone / ".stack"
    env = {
        **os.environ,
        "FLIGHT_DELAYS_STACK_DIR": str(state),
        "FLIGHT_DELAYS_STACK_ROOT": str(clone),
        "FLIGHT_DELAYS_STACK_API_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_PG_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_HEALTH_PORT": str(free_port()),
        "FLIGHT_DELAYS_STACK_SEED": "0",
        "FLIGHT_DELAYS_STACK_STOP_TIMEOUT": "10",
    }
    cfg = settings.Config.from_env(env)

    def script(*args: str) -> str:
        result = subprocess.run(
            [PYTHON, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=500
        )
        assert result.returncode in (0, 3), result.stdout + result.stderr
        return result.stdout

    pgdata = None
    try:
        first = script("up")
        pgdata = postgres.Postgres(cfg).pgdata
        assert not pgdata.is_relative_to(home) and pgdata.parent.name.startswith(
            "flight-delay-pipeline-"
        )
        assert f"PostgreSQL data: {pgdata}" in first and f"data in {pgdata}" in first
        assert f"PostgreSQL data: {pgdata}" in script("status")
        secrets = json.loads((state / "secrets.json").read_text())

        def warehouse():
            return psycopg2.connect(
                host="127.0.0.1",
                port=cfg.pg_port,
                user="warehouse",
                password=secrets["warehouse_password"],
                dbname="warehouse",
            )

        with warehouse() as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('before down')")
        assert f"data kept in {state} and {pgdata}" in script("down")
        assert procs.stack_pids(cfg) == [] and postgres.Postgres(cfg).postmaster_pid() is None
        again = script("up")
        assert f"PostgreSQL data: {pgdata}" in again and "initdb" not in again
        with warehouse() as conn, conn.cursor() as cur:
            cur.execute("SELECT note FROM kept")
            assert cur.fetchall() == [("before down",)]
    finally:
        script("down")
        assert procs.stack_pids(cfg) == []
        if pgdata is not None and pgdata.parent != state:
            shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs smaps_rollup")
def test_pss_of_a_process_is_its_share_of_what_it_maps():
    # A child that writes 64 MiB of its own (private pages, all resident): its PSS
    # counts them in full, and is never more than its RSS (the interpreter's shared
    # pages count in part). A zeroed bytearray is not enough: calloc'ed pages that were
    # never written need not be resident (CI measured a PSS of 63 MiB for one).
    written = "import sys; b = b'x' * (64 << 20); print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", written], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"  # every page written by now
        pss, rss = procs._pss_kib(child.pid), procs._rss_kib(child.pid)
        assert 64 * 1024 <= pss <= rss
    finally:
        child.communicate("")
    assert procs._pss_kib(child.pid) == 0  # gone: 0, no error


def test_statsd_goes_to_the_configured_host_and_port(cfg, tmp_path):
    """Airflow's StatsD metrics: on from deploy/airflow.env; 127.0.0.1:8125 unless
    FLIGHT_DELAYS_STACK_STATSD_HOST/_PORT say otherwise (the live tests' listener)."""
    values = settings_values()
    settings.write_settings(cfg, values)
    env = settings.read_env_files(cfg)
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__METRICS__STATSD_PORT"] == "8125"
    chosen = settings.Config.from_env(
        {
            "FLIGHT_DELAYS_STACK_STATSD_HOST": "stats.local",
            "FLIGHT_DELAYS_STACK_STATSD_PORT": "9125",
        }
    )
    chosen = replace(chosen, state=tmp_path / "other")
    settings.write_settings(chosen, values)
    env = settings.read_env_files(chosen)
    assert env["AIRFLOW__METRICS__STATSD_HOST"] == "stats.local"
    assert env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"
    for bad in (
        {"FLIGHT_DELAYS_STACK_STATSD_PORT": "x"},
        {"FLIGHT_DELAYS_STACK_STATSD_HOST": "a b"},
    ):
        with pytest.raises(settings.StackError, match="FLIGHT_DELAYS_STACK_STATSD"):
            settings.Config.from_env(bad)


# --- up's check of the forkserver's preload list --------------------------------------------
FORKSERVER = {"AIRFLOW__CORE__MP_START_METHOD": "forkserver"}


def shipped_env(home: Path) -> dict[str, str]:
    """The settings the stack's components get from the shipped files, in a clean
    environment with ``home`` as AIRFLOW_HOME."""
    env = {**settings.clean_environ(), "AIRFLOW_HOME": str(home)}
    for shared in (settings.SHARED_ENV, settings.Config.from_env().executor_env):
        env.update(settings.parse_env(shared.read_text(), str(shared)))
    return env


def test_the_shipped_preload_list_imports_every_module(tmp_path):
    # A library upgrade that renames a module would only cost the tasks time (the
    # forkserver skips an ImportError); this says which one, before the stack's timings do.
    cfg = settings.Config.from_env()
    env = shipped_env(tmp_path)
    ((modules, components),) = preload.preload_lists(env).items()
    assert len(modules) >= 10 and components == ["scheduler", "triggerer", "dag_processor"]
    assert preload.start_check(env, PYTHON, cfg.root).result() == []


# A worker forked from a forkserver with the shipped list, as the LocalExecutor's are.
_FORKSERVER_CHILD = """
import gc, multiprocessing, sys

def heap(queue):
    queue.put((gc.get_freeze_count(), len(gc.get_objects()), "pandas" in sys.modules))

if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(sys.argv[1].split(","))
    queue = context.Queue()
    worker = context.Process(target=heap, args=(queue,))
    worker.start()
    print(*queue.get(timeout=240))
    worker.join()
"""


def test_a_worker_from_the_forkserver_starts_with_the_preloaded_heap_frozen(tmp_path):
    # A full collection in a task walks every object it does not find frozen: with the
    # libraries preloaded, 400,000 of them (0.25 s a time). frozen_heap must come last:
    # what the forkserver imports after it would not be frozen.
    ((modules, _components),) = preload.preload_lists(shipped_env(tmp_path)).items()
    assert modules[-1] == "flight_delays.base.frozen_heap"
    script = tmp_path / "child.py"
    script.write_text(_FORKSERVER_CHILD)
    out = subprocess.run(
        [PYTHON, str(script), ",".join(modules)],
        capture_output=True, text=True, timeout=300, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    frozen, tracked, preloaded = out.split()
    assert preloaded == "True"  # the child's libraries came from the forkserver
    # Nearly all of the child's objects are frozen; it tracks only what it made since.
    assert int(frozen) > 200_000 and int(tracked) < int(frozen) / 10


def test_a_preload_module_that_breaks_is_named_before_airflow_starts(tmp_path):
    # In the folder the components run in, which is on the forkserver's import path.
    (tmp_path / "needs_a_display.py").write_text(
        "def connect():\n    raise RuntimeError('no display\\n:0')\n\nconnect()\n"
    )
    env = {**os.environ, **FORKSERVER}
    env["AIRFLOW__CORE__MP_FORKSERVER_PRELOAD"] = "json, no_such_module_here ,needs_a_display,csv"
    with pytest.raises(settings.StackError) as raised:
        preload.start_check(env, PYTHON, tmp_path).result()
    message = str(raised.value)
    assert "importing needs_a_display (RuntimeError: no display :0) fails" in message
    assert "forkserver" in message and "scheduler, triggerer, dag_processor" in message
    assert "in connect" in message  # the traceback's tail: where the import broke

    # An ImportError is skipped by the forkserver too: a warning, not an error.
    env["AIRFLOW__CORE__MP_FORKSERVER_PRELOAD"] = "json,no_such_module_here"
    (warning,) = preload.start_check(env, PYTHON, tmp_path).result()
    assert "no_such_module_here did not import" in warning and "skips it" in warning


def test_the_preload_lists_are_resolved_as_airflow_resolves_them():
    core = {"AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": "json,csv"}
    # No start method, or not forkserver: no forkserver, nothing preloaded.
    assert preload.preload_lists(core) == {}
    assert preload.preload_lists({**core, "AIRFLOW__CORE__MP_START_METHOD": "fork"}) == {}
    # A component's own section wins over [core], for the method and for the list.
    env = {
        **core,
        **FORKSERVER,
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "json,decimal",
        "AIRFLOW__TRIGGERER__MP_START_METHOD": "spawn",
    }
    assert preload.preload_lists(env) == {
        ("json", "decimal"): ["scheduler"],
        ("json", "csv"): ["dag_processor"],
    }
    # A check that cannot run says so, and leaves nothing running.
    with pytest.raises(FileNotFoundError):
        preload.start_check(env, "/nonexistent/python")
    check = preload.start_check(env, PYTHON)
    processes = [process for _components, process in check.running]
    check.stop()
    assert len(processes) == 2 and all(p.returncode is not None for p in processes)


def test_a_failed_up_whose_down_fails_too_says_both(monkeypatch, tmp_path):
    # The caller of a failed `up` gets no stack to check `stopped` on: the error says how
    # `down` went, and the state folder stays to look into.
    def script(self, *args, check=True, timeout=600):
        if args[0] == "up":
            raise AssertionError("stack.py up exited 1")
        return subprocess.CompletedProcess(args, 1, "cannot stop the scheduler\n", "")

    monkeypatch.setattr(handle.Stack, "script", script)
    monkeypatch.setattr(handle, "leftovers", lambda state: [4242])
    stack = handle.private_stack(tmp_path, prefix="fd-t-")
    with pytest.raises(AssertionError, match="up exited 1") as raised, stack:
        pass
    note = "\n".join(raised.value.__notes__)
    assert "`down` after it exited 1 with processes left [4242]" in note
    assert "cannot stop the scheduler" in note
    state = Path(note.split("the state stays in ")[1].split(":")[0])
    assert state.is_dir()
    shutil.rmtree(state)
