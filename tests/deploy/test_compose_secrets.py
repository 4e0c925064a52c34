"""The compose stack's secrets are files (issue 20): deploy/compose-secrets.py writes them,
docker-compose.yaml hands each to the services that use it, and no secret value is in any
service's environment as `docker compose config` resolves it. Also the two readers of
the files that run outside Airflow: deploy/read-secret.sh (the `_CMD` of Airflow's
settings) and redis's password, handed to redis-server on stdin."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deploy_support import (
    COMPOSE_FILE,
    IMAGE_SERVICES,
    INIT_SCRIPT,
    READ_SECRET,
    REPO,
    RUN_SECRETS,
    SECRETS,
    SECRETS_SCRIPT,
    TEST_ENV,
    compose_binary,
    resolved_compose,
    tool,
)

ALL_PROFILES = ("celery", "s3", "metrics")
CELERY_ENV = {"FLIGHT_DELAYS_EXECUTOR": "celery", "AWS_ENDPOINT_URL": "http://s3:5000"}
# Who gets which secret, and why (docs/docker-compose.md, "Secrets"): the Airflow
# components the metastore's password and the three secrets they share; the broker's
# password where Celery runs; the S3 keys where artifacts are read or written.
CELERY_USERS = {"airflow-scheduler", "airflow-worker-1", "airflow-worker-2", "flower"}
CORE = {"airflow_db_password", "airflow_fernet_key", "airflow_jwt_secret", "airflow_api_secret_key"}
EXPECTED = {
    "postgres": {"postgres_password", "airflow_db_password", "warehouse_db_password"},
    "redis": {"redis_password"},
    "airflow-init": CORE | {"warehouse_db_password", "airflow_admin_password"},
    "airflow-apiserver": CORE | {"aws_credentials"},
    "airflow-scheduler": CORE | {"redis_password", "aws_credentials"},
    "airflow-dag-processor": CORE,
    "airflow-triggerer": CORE,
    "airflow-worker-1": CORE | {"redis_password", "aws_credentials"},
    "airflow-worker-2": CORE | {"redis_password", "aws_credentials"},
    "flower": {"airflow_db_password", "redis_password", "flower_basic_auth"},
    "s3": set(),
    "s3-init": set(),
    "statsd-exporter": set(),
}


def generate(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SECRETS_SCRIPT), str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def project_with_secrets(root: Path) -> Path:
    """A project folder as a user has it: the compose files, deploy/'s env files, and the
    secrets deploy/compose-secrets.py generated in ./secrets."""
    shutil.copy2(COMPOSE_FILE, root / "docker-compose.yaml")
    (root / "deploy").mkdir()
    for file in (REPO / "deploy").glob("*.env"):
        shutil.copy2(file, root / "deploy" / file.name)
    shutil.copy2(REPO / "deploy" / "compose.ports.yaml", root / "deploy" / "compose.ports.yaml")
    result = generate(root / "secrets")
    assert result.returncode == 0, result.stderr
    return root


def config_of(root: Path, env: dict[str, str]) -> dict:
    """`docker compose config` of the project at ``root``, every profile on, with the
    ports override, as JSON."""
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command = [compose_binary(), "--project-directory", str(root),
               "-f", str(root / "docker-compose.yaml"),
               "-f", str(root / "deploy" / "compose.ports.yaml"),
               *(f"--profile={p}" for p in ALL_PROFILES), "config", "--format", "json"]  # fmt: skip
    env_vars = {"PATH": os.environ["PATH"], "HOME": str(root)}
    result = subprocess.run(command, capture_output=True, text=True, env=env_vars, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def secret_values(folder: Path) -> dict[str, str]:
    """Every secret value of the folder: each file's content, and each key of the S3
    credentials file on its own."""
    values = {}
    for path in folder.iterdir():
        text = path.read_text().strip()
        values[path.name] = text
        if path.name == "aws_credentials":
            for line in text.splitlines():
                if "=" in line:
                    key, value = line.split("=", 1)
                    values[f"{path.name}:{key.strip()}"] = value.strip()
    return values


def leaks(config: dict, values: dict[str, str]) -> list[str]:
    """(service, place, secret) for each secret value found in a service's environment,
    command, entrypoint or healthcheck."""
    found = []
    for name, service in config["services"].items():
        places = {f"environment {k}": str(v) for k, v in (service.get("environment") or {}).items()}
        for key in ("command", "entrypoint", "healthcheck"):
            places[key] = json.dumps(service.get(key))
        for place, text in places.items():
            found += [f"{name}: {place}: {secret}" for secret, v in values.items() if v in text]
    return found


# --- no secret in any environment --------------------------------------------------------
def test_no_secret_value_is_in_any_service_environment(tmp_path):
    root = project_with_secrets(tmp_path)
    values = secret_values(root / "secrets")
    assert len(values) == len(SECRETS) + 2  # the S3 file's two keys on their own too
    config = config_of(root, {**TEST_ENV, **CELERY_ENV})
    assert set(config["services"]) == set(EXPECTED)  # every service, every profile
    assert leaks(config, values) == []
    # Nor anywhere else in what compose resolved (labels, build args, ...).
    text = json.dumps(config)
    assert [k for k, v in values.items() if v in text] == []
    # Each secret is read from the generated file.
    for name in SECRETS:
        assert config["secrets"][name]["file"] == str(root / "secrets" / name)


def test_the_leak_check_finds_a_secret_put_in_an_environment(tmp_path):
    """The check above can fail: a secret value put into an environment variable (here
    through .env, the old way) is found, with the service and the variable."""
    root = project_with_secrets(tmp_path)
    values = secret_values(root / "secrets")
    env = {**TEST_ENV, **CELERY_ENV, "AWS_ENDPOINT_URL": values["redis_password"]}
    found = leaks(config_of(root, env), values)
    assert "airflow-scheduler: environment AWS_ENDPOINT_URL: redis_password" in found


def test_each_service_gets_only_the_secrets_it_uses(tmp_path):
    config = resolved_compose(tmp_path, {**TEST_ENV, **CELERY_ENV}, ALL_PROFILES)
    got = {
        name: {s["source"] for s in service.get("secrets", [])}
        for name, service in config["services"].items()
    }
    assert got == EXPECTED
    # Mounted where the `_CMD`s and the _FILE variables look: /run/secrets/<name>.
    for name, service in config["services"].items():
        for secret in service.get("secrets", []):
            assert secret["target"] == f"{RUN_SECRETS}/{secret['source']}", name
    assert set(config["secrets"]) == set(SECRETS)  # every generated secret is used
    for name, body in config["secrets"].items():
        assert body["file"] == str(REPO / "secrets" / name), name


def test_every_airflow_service_reads_what_its_settings_name(tmp_path):
    """A `_CMD` reads a secret file: the service must mount it, or Airflow fails there."""
    config = resolved_compose(tmp_path, {**TEST_ENV, **CELERY_ENV}, ALL_PROFILES)
    for name in IMAGE_SERVICES:
        service = config["services"][name]
        mounted = {s["source"] for s in service.get("secrets", [])}
        for key, value in service["environment"].items():
            if key.endswith("_CMD") and str(value).startswith("/opt/airflow/deploy/read-secret.sh"):
                secret = str(value).split()[1]
                # One environment for every Airflow service: Celery's URLs are read only
                # where Celery runs; elsewhere Airflow runs them only to mask their
                # values in logs, and skips one that fails. (A `_CMD` read at every
                # start, as fernet_key's, must find its file: flower has neither.)
                optional = key.startswith("AIRFLOW__CELERY__") and name not in CELERY_USERS
                assert secret in mounted or optional, f"{name}: {key} reads {secret}"


# --- the generator -------------------------------------------------------------------------
def test_the_generator_writes_private_files_and_keeps_existing_ones(tmp_path):
    folder = tmp_path / "secrets"
    first = generate(folder)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted(SECRETS)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # nobody else gets in
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # the containers' users read
    before = {p.name: p.read_text() for p in folder.iterdir()}
    (folder / "airflow_admin_password").unlink()
    (folder / "redis_password").write_text("mine-0123456789\n")
    second = generate(folder)
    assert second.returncode == 0, second.stderr
    after = {p.name: p.read_text() for p in folder.iterdir()}
    assert after["redis_password"] == "mine-0123456789\n"  # a value of one's own is kept
    assert after["airflow_admin_password"] != before["airflow_admin_password"]  # regenerated
    changed = ("redis_password", "airflow_admin_password")
    assert {k: v for k, v in after.items() if k not in changed} == {
        k: v for k, v in before.items() if k not in changed
    }
    assert "airflow_admin_password: generated" in second.stdout
    # What it generates passes airflow-init's checks (formats, lengths).
    check = subprocess.run(
        ["bash", str(INIT_SCRIPT), "--check-only"],
        env={"PATH": os.environ["PATH"], "SECRETS_PATH": str(folder),
             "WAREHOUSE_DB_URL": "postgresql://warehouse@postgres:5432/warehouse"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_the_generator_refuses_an_empty_file_a_symlink_and_bad_arguments(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "airflow_jwt_secret").write_text("\n")
    result = generate(folder)
    assert result.returncode == 1
    assert f"{folder / 'airflow_jwt_secret'} is empty" in result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "linked").symlink_to(elsewhere)
    result = generate(tmp_path / "linked")
    assert result.returncode == 1 and "is not a plain folder" in result.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    usage = subprocess.run([sys.executable, str(SECRETS_SCRIPT), "a", "b"], capture_output=True,
                           text=True, timeout=30)  # fmt: skip
    assert usage.returncode == 2 and "usage:" in usage.stderr


# --- deploy/read-secret.sh --------------------------------------------------------------------
def read_secret(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(READ_SECRET), *args],
        env={"PATH": os.environ["PATH"], "SECRETS_PATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_read_secret_prints_the_value_or_a_url_around_it(tmp_path):
    (tmp_path / "airflow_db_password").write_text("pw-0123\n")
    assert read_secret(tmp_path, "airflow_db_password").stdout == "pw-0123"  # no newline
    url = read_secret(tmp_path, "airflow_db_password", "postgresql://airflow:%s@postgres/airflow")
    assert url.stdout == "postgresql://airflow:pw-0123@postgres/airflow"


@pytest.mark.parametrize(
    ("name", "content", "code", "message"),
    [
        ("redis_password", None, 1, "redis_password is missing or unreadable"),
        ("redis_password", "\n", 1, "redis_password is empty"),
        ("../etc/passwd", None, 2, "is not a secret name"),
    ],
)
def test_read_secret_fails_naming_the_file(tmp_path, name, content, code, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    result = read_secret(tmp_path, name)
    assert result.returncode == code and result.stdout == ""
    assert message in result.stderr


def test_read_secret_passes_shellcheck():
    result = subprocess.run([tool("shellcheck"), str(READ_SECRET)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout


# --- redis's password -------------------------------------------------------------------------
def redis_ping(port: int, password: str | None) -> str:
    env = {"PATH": os.environ["PATH"], **({"REDISCLI_AUTH": password} if password else {})}
    result = subprocess.run(["redis-cli", "-p", str(port), "ping"], env=env,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    return result.stdout.strip()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_redis_runs_the_compose_command_with_a_password_off_its_command_line(tmp_path):
    """The compose file's redis command, run here on Debian's redis-server (the stand-in's
    package), its secret file and data folder moved to tmp_path: a client without the
    password, or with a wrong one, is refused; the password is on no command line."""
    config = resolved_compose(tmp_path, {**TEST_ENV, **CELERY_ENV}, ("celery",))
    redis = config["services"]["redis"]
    assert redis["user"] == "redis" and redis["command"][:2] == ["bash", "-c"]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis_password").write_text("redis-pw-0123\n")
    (tmp_path / "data").mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # `compose config` prints a `$` of the container's shell escaped as `$$`.
    script = (
        redis["command"][2]
        .replace("$$", "$")
        .replace(f"{RUN_SECRETS}/", f"{tmp_path}/secrets/")
        .replace("--dir /data", f"--dir {tmp_path}/data --port {port} --bind 127.0.0.1")
    )
    server = subprocess.Popen(
        ["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while redis_ping(port, "redis-pw-0123") != "PONG":
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
            time.sleep(0.2)
        assert redis_ping(port, None).startswith("NOAUTH")
        assert redis_ping(port, "wrong").startswith("NOAUTH")  # the AUTH itself failed
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert b"redis-pw-0123" not in cmdline  # bash exec'd redis-server: same pid
        assert b"redis-server" in cmdline
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The healthcheck asks for PONG: redis-cli's NOAUTH reply exits 0 too.
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "REDISCLI_AUTH=" in test[1] and "grep -qx PONG" in test[1]
