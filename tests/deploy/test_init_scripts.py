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
from deploy_support import INIT_SCRIPT, POSTGRES_INIT, TEST_ENV, resolved_compose, tool

# What the six secrets look like inside the airflow-init container when .env is filled.
GOOD = {
    "AIRFLOW__CORE__FERNET_KEY": TEST_ENV["AIRFLOW_FERNET_KEY"],
    "AIRFLOW__API_AUTH__JWT_SECRET": TEST_ENV["AIRFLOW_JWT_SECRET"],
    "AIRFLOW__API__SECRET_KEY": TEST_ENV["AIRFLOW_API_SECRET_KEY"],
    "AIRFLOW_ADMIN_PASSWORD": TEST_ENV["AIRFLOW_ADMIN_PASSWORD"],
    "AIRFLOW_DB_PASSWORD": TEST_ENV["AIRFLOW_DB_PASSWORD"],
    "WAREHOUSE_DB_PASSWORD": TEST_ENV["WAREHOUSE_DB_PASSWORD"],
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow:x@postgres/airflow",
    "AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE": "postgresql://warehouse:x@postgres/warehouse",
}
# The .env variable each container setting comes from (what the message must name).
NAMED = {
    "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD": "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_DB_PASSWORD": "AIRFLOW_DB_PASSWORD",
    "WAREHOUSE_DB_PASSWORD": "WAREHOUSE_DB_PASSWORD",
}


def check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """airflow-init.sh --check-only with exactly ``env``."""
    return subprocess.run(
        ["bash", str(INIT_SCRIPT), "--check-only"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


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
    result = check({})
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert ".env.example" in result.stderr
    for name in NAMED.values():
        assert f"{name} is missing" in result.stderr, name


@pytest.mark.parametrize("setting", sorted(NAMED))
def test_each_missing_secret_is_named(setting):
    for env in ({k: v for k, v in GOOD.items() if k != setting}, {**GOOD, setting: ""}):
        result = check(env)
        assert result.returncode == 1
        problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
        assert problems == [problems[0]] and f"{NAMED[setting]} is missing" in problems[0]


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("AIRFLOW__CORE__FERNET_KEY", "not-a-key", "AIRFLOW_FERNET_KEY is not a Fernet key"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "short", "AIRFLOW_JWT_SECRET is too short"),
        ("AIRFLOW__API__SECRET_KEY", "x" * 31, "AIRFLOW_API_SECRET_KEY is too short"),
        ("AIRFLOW_UID", "$(id -u)", "AIRFLOW_UID is not a number"),
        ("AIRFLOW_ADMIN_PASSWORD", "admin", "AIRFLOW_ADMIN_PASSWORD is too short"),
        ("AIRFLOW_DB_PASSWORD", "p@ss/word", "AIRFLOW_DB_PASSWORD holds characters"),
        ("WAREHOUSE_DB_PASSWORD", "a b", "WAREHOUSE_DB_PASSWORD holds characters"),
    ],
)
def test_malformed_secrets_are_refused(setting, value, expected):
    result = check({**GOOD, setting: value})
    assert result.returncode == 1
    assert expected in result.stderr


def test_two_fernet_keys_while_rotating_are_accepted():
    key = TEST_ENV["AIRFLOW_FERNET_KEY"]
    assert check({**GOOD, "AIRFLOW__CORE__FERNET_KEY": f"{key},{key}"}).returncode == 0


def test_the_environment_compose_gives_airflow_init_passes(tmp_path):
    env = resolved_compose(tmp_path)["services"]["airflow-init"]["environment"]
    result = check({k: str(v) for k, v in env.items() if v is not None})
    assert result.returncode == 0, result.stderr


def run_function(name: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One function of airflow-init.sh, the script sourced (its main does not run)."""
    return subprocess.run(
        ["bash", "-c", f'source "{INIT_SCRIPT}" && {name}'],
        env={"PATH": os.environ["PATH"], "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


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
    from flight_delays import artifacts

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
        "AIRFLOW_ADMIN_PASSWORD": "new-admin-password",
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
        "AIRFLOW_ADMIN_PASSWORD": TEST_ENV["AIRFLOW_ADMIN_PASSWORD"],
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
    assert read == {"admin": TEST_ENV["AIRFLOW_ADMIN_PASSWORD"]}
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


def test_postgres_init_creates_two_separate_databases(cluster):
    pg, port, base, run = cluster["bin"], cluster["port"], cluster["base"], cluster["run"]
    env = {
        "PATH": f"{pg}:{os.environ['PATH']}",
        "PGHOST": str(base),
        "PGPORT": str(port),
        "POSTGRES_USER": "postgres",
        "AIRFLOW_DB_PASSWORD": TEST_ENV["AIRFLOW_DB_PASSWORD"],
        "WAREHOUSE_DB_PASSWORD": TEST_ENV["WAREHOUSE_DB_PASSWORD"],
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

    airflow_pw, warehouse_pw = TEST_ENV["AIRFLOW_DB_PASSWORD"], TEST_ENV["WAREHOUSE_DB_PASSWORD"]
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
    result = run_function("check_warehouse_encoding", {"AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE": url})
    if refused:
        assert result.returncode != 0
        assert f"'{database}' is encoded SQL_ASCII, not UTF8" in result.stderr, result.stderr
    else:
        assert result.returncode == 0, result.stderr
