"""The scripts the compose stack runs: deploy/airflow-init.sh (secret checks, the admin
password file) and deploy/postgres/init-databases.sh (on a private PostgreSQL cluster
when the server binaries are installed). Both pass shellcheck."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from deploy_support import (
    INIT_SCRIPT,
    POSTGRES_INIT,
    TEST_SECRETS,
    resolved_compose,
    tool,
    write_secrets,
)

# airflow-init's six secret files (TEST_SECRETS' values), and what each is for.
INIT_SECRETS = (
    "airflow_fernet_key",
    "airflow_jwt_secret",
    "airflow_api_secret_key",
    "airflow_admin_password",
    "airflow_db_password",
    "warehouse_db_password",
    "warehouse_reader_password",
)
GOOD = {name: TEST_SECRETS[name] for name in INIT_SECRETS}
WAREHOUSE_DB_URL = "postgresql://warehouse@postgres:5432/warehouse"
READER_DB_URL = "postgresql://warehouse_reader@postgres:5432/warehouse"
URLS = {"WAREHOUSE_DB_URL": WAREHOUSE_DB_URL, "WAREHOUSE_READER_DB_URL": READER_DB_URL}


def check(
    secrets: dict[str, str | None], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """airflow-init.sh --check-only with exactly ``secrets`` as its secret files (a value
    None: no file) and ``env`` (default: the warehouse URL compose sets)."""
    folder = Path(tempfile.mkdtemp(prefix="init-secrets-"))
    write_secrets(folder, {k: v for k, v in secrets.items() if v is not None})
    for name, value in secrets.items():
        if value == "":
            (folder / name).write_text("\n")  # an editor's empty file
    try:
        return subprocess.run(
            ["bash", str(INIT_SCRIPT), "--check-only"],
            env={"PATH": os.environ["PATH"], "SECRETS_PATH": str(folder),
                 **(URLS if env is None else env)},
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder)


def test_scripts_pass_shellcheck():
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(INIT_SCRIPT), str(POSTGRES_INIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_all_secrets_present_passes():
    result = check(GOOD)
    assert result.returncode == 0, result.stderr
    assert "secrets present" in result.stdout


def test_nothing_set_names_every_missing_secret_at_once():
    result = check({}, env={})
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "deploy/compose-secrets.py" in result.stderr  # says how to make them
    for name in INIT_SECRETS:
        assert f"secret file {name} is missing" in result.stderr, name
    assert "WAREHOUSE_DB_URL is not set" in result.stderr
    assert "WAREHOUSE_READER_DB_URL is not set" in result.stderr


@pytest.mark.parametrize("secret", INIT_SECRETS)
def test_each_missing_or_empty_secret_file_is_named(secret):
    for secrets, state in (
        ({**GOOD, secret: None}, "is missing"),
        ({**GOOD, secret: ""}, "is empty"),
    ):
        result = check(secrets)
        assert result.returncode == 1
        problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
        assert problems == [problems[0]] and f"secret file {secret} {state}" in problems[0]


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("airflow_fernet_key", "not-a-key", "airflow_fernet_key is not a Fernet key"),
        ("airflow_jwt_secret", "short", "airflow_jwt_secret is too short"),
        ("airflow_api_secret_key", "x" * 31, "airflow_api_secret_key is too short"),
        ("airflow_admin_password", "admin", "airflow_admin_password is too short"),
        ("airflow_db_password", "p@ss/word", "airflow_db_password holds characters"),
        ("warehouse_db_password", "a b", "warehouse_db_password holds characters"),
    ],
)
def test_malformed_secrets_are_refused(setting, value, expected):
    result = check({**GOOD, setting: value})
    assert result.returncode == 1
    assert expected in result.stderr


def test_a_uid_that_is_not_a_number_is_refused():
    result = check(GOOD, env={**URLS, "AIRFLOW_UID": "$(id -u)"})
    assert result.returncode == 1
    assert "AIRFLOW_UID is not a number" in result.stderr


def test_two_fernet_keys_while_rotating_are_accepted():
    key = TEST_SECRETS["airflow_fernet_key"]
    assert check({**GOOD, "airflow_fernet_key": f"{key},{key}"}).returncode == 0


def test_what_compose_gives_airflow_init_passes(tmp_path):
    """Its environment as compose resolves it, and a secret file for each secret compose
    mounts in it (all six: none missing from its `secrets:`)."""
    init = resolved_compose(tmp_path)["services"]["airflow-init"]
    mounted = {s["source"] for s in init["secrets"]}
    assert mounted == set(INIT_SECRETS)
    env = {k: str(v) for k, v in init["environment"].items() if v is not None}
    result = check({k: v for k, v in GOOD.items() if k in mounted}, env=env)
    assert result.returncode == 0, result.stderr


def run_function(
    name: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """One function of airflow-init.sh, the script sourced (its main does not run)."""
    return subprocess.run(
        ["bash", "-c", f'source "{INIT_SCRIPT}" && {name}'],
        env={"PATH": os.environ["PATH"], "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_airflow_init_stops_naming_a_preload_module_that_would_stop_the_forkserver(tmp_path):
    # docker-compose's forkserver skips a module that does not import without a word,
    # and stops on any other error, so that no task can start: airflow-init says which.
    (tmp_path / "needs_a_display.py").write_text("raise RuntimeError('no display :0')\n")
    forkserver = {"AIRFLOW__CORE__MP_START_METHOD": "forkserver"}

    def check(modules: str) -> subprocess.CompletedProcess:
        env = {**forkserver, "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": modules}
        return run_function("check_preload", env, cwd=tmp_path)

    broken = check("json,needs_a_display,csv")
    assert broken.returncode == 1, broken
    assert (
        "preload: the forkserver preload list of the scheduler, triggerer, dag_processor: "
        "importing needs_a_display (RuntimeError: no display :0) fails" in broken.stderr
    )
    missing = check("json,no_such_module_here")
    assert missing.returncode == 0, missing
    assert "preload: WARNING: " in missing.stdout
    assert "no_such_module_here did not import" in missing.stdout
    assert "preload: 1 did not import" in missing.stdout
    fine = check("json,csv")
    assert fine.returncode == 0, fine
    assert fine.stdout.splitlines() == [
        "preload: the list of the scheduler, triggerer, dag_processor: 2 modules",
        "preload: all import",
    ]
    none = run_function("check_preload", {}, cwd=tmp_path)
    assert none.returncode == 0 and "nothing to check" in none.stdout, none


# Every step of main but the preload check, as no-ops: what main does around the check.
_MAIN_STEPS_STUBBED = (
    "for step in check_secrets warn_uid write_admin_password migrate check_warehouse_encoding "
    "seed_warehouse migrate_registry store_connection prepare_folders; do "
    'eval "$step() { echo ran $step; }"; done; warehouse_url() { echo sqlite://; }; '
)


@pytest.mark.parametrize("fails", ["the check", "a step beside it"])
def test_airflow_init_waits_for_the_preload_check_and_leaves_nothing_behind(tmp_path, fails):
    # The check runs in the background beside steps 2 to 4. A module that breaks stops
    # init before the folders and "done", naming it; a step that fails meanwhile stops
    # init too. Either way no log file of the check is left behind.
    (tmp_path / "needs_a_display.py").write_text("raise RuntimeError('no display :0')\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    stubs = _MAIN_STEPS_STUBBED
    if fails == "a step beside it":
        stubs += "migrate_registry() { echo registry down >&2; return 7; }; "
    modules = "json,needs_a_display" if fails == "the check" else "json,csv"
    env = {
        "AIRFLOW__CORE__MP_START_METHOD": "forkserver",
        "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": modules,
        "TMPDIR": str(scratch),
    }
    result = run_function(stubs + "main", env, cwd=tmp_path)
    assert result.returncode != 0, result
    assert "ran prepare_folders" not in result.stdout and "done:" not in result.stdout
    if fails == "the check":
        assert "ran store_connection" in result.stdout  # the steps beside it all ran
        assert "airflow-init: preload: " in result.stderr
        assert "importing needs_a_display (RuntimeError: no display :0) fails" in result.stderr
    else:
        assert result.returncode == 7 and "registry down" in result.stderr
    assert list(scratch.iterdir()) == []


def test_airflow_init_logs_the_preload_check_and_goes_on(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        "AIRFLOW__CORE__MP_START_METHOD": "forkserver",
        "AIRFLOW__CORE__MP_FORKSERVER_PRELOAD": "json,csv",
        "TMPDIR": str(scratch),
    }
    result = run_function(_MAIN_STEPS_STUBBED + "main", env, cwd=tmp_path)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    check = lines.index("airflow-init: preload: all import")
    assert lines.index("ran store_connection") < check < lines.index("ran prepare_folders")
    assert lines[-1].startswith("airflow-init: done:")
    assert list(scratch.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_uid_warning_when_the_checkout_belongs_to_another_user(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    os.chown(dags, 1000, 1000)  # the checkout of a Linux user who left AIRFLOW_UID at 50000
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    for uid in ("50000", None):  # set to the image's user, or not set at all: the same
        out = run_function("warn_uid", {**env, **({"AIRFLOW_UID": uid} if uid else {})}).stdout
        assert "run as uid 50000, but the checkout belongs to uid 1000" in out
        assert 'echo "AIRFLOW_UID=$(id -u)" >> .env' in out
    assert run_function("warn_uid", {**env, "AIRFLOW_UID": "1000"}).stdout == ""
    os.chown(dags, 0, 0)  # a root checkout: root can edit whatever the containers write
    assert run_function("warn_uid", {**env, "AIRFLOW_UID": "50000"}).stdout == ""


def test_airflow_init_hands_over_the_catalogs_folders():
    from flight_delays.store import artifacts

    home, logs = "/project", "/project/logs-elsewhere"
    result = run_function(
        "artifact_folders",
        {"FLIGHT_DELAYS_HOME": home, "AIRFLOW__LOGGING__BASE_LOG_FOLDER": logs},
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()
    assert listed == [f"{home}/{folder}" for folder in artifacts.folders()] + [logs]
    # Every entry of the catalog, filled in, is one of those folders or lies inside one.
    for entry in artifacts.CATALOG:
        fields = {p: "x" for p in entry.placeholders if p not in ("day", "run_id")}
        path = f"{home}/{entry.relative('2013-03-15', 'manual__1', **fields)}"
        assert any(path == f or path.startswith(f"{f}/") for f in listed), entry.name


def test_airflow_init_stops_when_it_cannot_list_the_folders(tmp_path):
    result = run_function(
        "prepare_folders", {"FLIGHT_DELAYS_HOME": str(tmp_path), "PYTHON": "false"}
    )
    assert result.returncode != 0
    assert "cannot list the artifact folders" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_admin_password_file_keeps_other_users(tmp_path):
    passwords = tmp_path / "auth" / "passwords.json"
    passwords.parent.mkdir()
    passwords.write_text(json.dumps({"viewer": "generated-by-airflow", "admin": "old"}))
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "SECRETS_PATH": str(
            write_secrets(tmp_path / "secrets", {"airflow_admin_password": "new-admin-password"})
        ),
        "AIRFLOW_UID": str(os.getuid()),
    }
    result = run_function("write_admin_password", env)
    assert result.returncode == 0, result.stderr
    assert json.loads(passwords.read_text()) == {
        "viewer": "generated-by-airflow",
        "admin": "new-admin-password",
    }
    assert passwords.stat().st_mode & 0o777 == 0o600
    assert "WARNING" not in result.stdout
    assert [p.name for p in passwords.parent.iterdir()] == ["passwords.json"]  # no temp file


def test_airflow_reads_the_admin_password_that_init_wrote(tmp_path):
    """The installed Airflow's simple auth manager reads the file airflow-init writes."""
    passwords = tmp_path / "passwords.json"
    env = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "SECRETS_PATH": str(write_secrets(tmp_path / "secrets")),
        "AIRFLOW_UID": str(os.getuid()),
    }
    assert run_function("write_admin_password", env).returncode == 0
    code = (
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import "
        "SimpleAuthManager as M; import json; "
        "print(json.dumps([M.get_generated_password_file(), M.get_passwords(), "
        "[u.username + ':' + u.role for u in M.get_users()]]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path, read, users = json.loads(result.stdout.splitlines()[-1])
    assert path == str(passwords)
    assert read == {"admin": TEST_SECRETS["airflow_admin_password"]}
    assert users == ["admin:admin"]


# --- deploy/postgres/init-databases.sh on a real server -------------------------------------
def postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(candidate) / b).exists() for b in ("initdb", "pg_ctl", "psql")):
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A throw-away PostgreSQL cluster, created and run like the postgres image does:
    superuser `postgres`, password logins over TCP, init script on a socket-only server."""
    pg = postgres_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries are not installed")
    # Not under pytest's tmp folder: as root that is private to root, and the server
    # runs as `postgres` (initdb refuses root).
    base = Path(tempfile.mkdtemp(prefix="flight-delays-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def run(*command, check=True):
        result = subprocess.run(
            [*as_user, *map(str, command)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 or not check, f"{command}: {result.stderr}"
        return result

    run(
        pg / "initdb", "-D", data, "-U", "postgres", "--auth-local=trust",
        "--auth-host=scram-sha-256", "-E", "UTF8",
    )  # fmt: skip
    start = [pg / "pg_ctl", "-D", data, "-l", base / "log", "-w"]
    run(*start, "-o", f"-k {base} -c listen_addresses='' -p {port}", "start")
    try:
        yield {"bin": pg, "base": base, "port": port, "run": run, "start": start}
    finally:
        run(pg / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_init_refuses_missing_passwords(cluster):
    env = {"PATH": f"{cluster['bin']}:{os.environ['PATH']}", "PGHOST": str(cluster["base"]),
           "PGPORT": str(cluster["port"])}  # fmt: skip
    result = cluster["run"]("env", *(f"{k}={v}" for k, v in env.items()), "bash",
                            str(POSTGRES_INIT), check=False)  # fmt: skip
    assert result.returncode == 1
    assert "AIRFLOW_DB_PASSWORD" in result.stderr and "WAREHOUSE_DB_PASSWORD" in result.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"AIRFLOW_DB_PASSWORD_FILE": "/nonexistent/airflow_db_password"},
         "AIRFLOW_DB_PASSWORD_FILE names /nonexistent/airflow_db_password, which is missing"),
        ({"AIRFLOW_DB_PASSWORD": "x", "AIRFLOW_DB_PASSWORD_FILE": "/etc/hostname"},
         "both AIRFLOW_DB_PASSWORD and AIRFLOW_DB_PASSWORD_FILE are set"),
    ],
)  # fmt: skip
def test_postgres_init_refuses_a_bad_password_file(cluster, extra, expected):
    env = {"PATH": f"{cluster['bin']}:{os.environ['PATH']}", "PGHOST": str(cluster["base"]),
           "PGPORT": str(cluster["port"]), "WAREHOUSE_DB_PASSWORD": "w", **extra}  # fmt: skip
    result = cluster["run"]("env", *(f"{k}={v}" for k, v in env.items()), "bash",
                            str(POSTGRES_INIT), check=False)  # fmt: skip
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr


def test_postgres_init_creates_two_separate_databases(cluster):
    pg, port, base, run = cluster["bin"], cluster["port"], cluster["base"], cluster["run"]
    # In the cluster's folder, which the postgres user reaches and the fixture removes.
    secrets = base / "secrets"
    secrets.mkdir()
    write_secrets(secrets)
    secrets.chmod(0o755)
    env = {
        "PATH": f"{pg}:{os.environ['PATH']}",
        "PGHOST": str(base),
        "PGPORT": str(port),
        "POSTGRES_USER": "postgres",
        # As compose passes them: files (0644, as deploy/compose-secrets.py writes them).
        "AIRFLOW_DB_PASSWORD_FILE": str(secrets / "airflow_db_password"),
        "WAREHOUSE_DB_PASSWORD_FILE": str(secrets / "warehouse_db_password"),
        "WAREHOUSE_READER_DB_PASSWORD_FILE": str(secrets / "warehouse_reader_password"),
    }
    result = run("env", *(f"{k}={v}" for k, v in env.items()), "bash", str(POSTGRES_INIT))
    assert "created database airflow" in result.stdout
    # Restart listening on TCP, as the image does after its init scripts.
    run(*cluster["start"], "-o", f"-k {base} -c listen_addresses=127.0.0.1 -p {port}", "restart")

    def psql(user: str, database: str, password: str, sql: str):
        return subprocess.run(
            [pg / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    airflow_pw = TEST_SECRETS["airflow_db_password"]
    warehouse_pw = TEST_SECRETS["warehouse_db_password"]
    for user, database, password in (
        ("airflow", "airflow", airflow_pw),
        ("warehouse", "warehouse", warehouse_pw),
    ):
        # Each role owns its database: it can create the tables (migrate, seed) there.
        result = psql(user, database, password, "CREATE TABLE t (x int); DROP TABLE t;")
        assert result.returncode == 0, result.stderr
    owners = psql("airflow", "airflow", airflow_pw, "SELECT rolsuper FROM pg_roles "
                  "WHERE rolname IN ('airflow', 'warehouse')")  # fmt: skip
    assert owners.stdout.split() == ["f", "f"]  # neither is a superuser
    # Neither reaches the other's database, and a wrong password is refused.
    assert psql("warehouse", "airflow", warehouse_pw, "SELECT 1").returncode != 0
    assert psql("airflow", "warehouse", airflow_pw, "SELECT 1").returncode != 0
    assert psql("airflow", "airflow", "wrong", "SELECT 1").returncode != 0
    # The Model reports page's role reads what the owner makes later, and writes nothing.
    reader_pw = TEST_SECRETS["warehouse_reader_password"]
    made = psql("warehouse", "warehouse", warehouse_pw, "CREATE TABLE runs (x int); "
                "INSERT INTO runs VALUES (1)")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (
        psql("warehouse_reader", "warehouse", reader_pw, "SELECT x FROM runs").stdout.strip() == "1"
    )
    for sql in ("INSERT INTO runs VALUES (2)", "DELETE FROM runs", "CREATE TABLE t (x int)",
                "DROP TABLE runs"):  # fmt: skip
        denied = psql("warehouse_reader", "warehouse", reader_pw, sql)
        assert denied.returncode != 0 and (
            "permission denied" in denied.stderr or "must be owner" in denied.stderr
        ), (sql, denied.stderr)
    assert psql("warehouse_reader", "airflow", reader_pw, "SELECT 1").returncode != 0


@pytest.mark.parametrize(("encoding", "refused"), [("SQL_ASCII", True), ("UTF8", False)])
def test_a_warehouse_that_is_not_utf8_is_refused_naming_its_encoding(cluster, encoding, refused):
    """A SQL_ASCII warehouse made psycopg return bytes and the seed fail with a TypeError
    far from the cause (the first live compose try): airflow-init refuses it at once."""
    pg, base, port, run = cluster["bin"], cluster["base"], cluster["port"], cluster["run"]
    database = f"wh_{encoding.lower()}"
    run(pg / "psql", "-h", base, "-p", port, "-U", "postgres", "-d", "postgres", "-c",
        f"CREATE DATABASE {database} ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0")  # fmt: skip
    url = f"postgresql://postgres@/{database}?host={base}&port={port}"
    result = run_function("check_warehouse_encoding", {"FLIGHT_DELAYS_SOURCE_URL": url})
    if refused:
        assert result.returncode != 0
        assert f"'{database}' is encoded SQL_ASCII, not UTF8" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
