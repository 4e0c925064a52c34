"""The live compose stack of tests/compose: the images built once (stand-ins and the
project image), then one stack per module, with a generated .env and secret files under
its own project name, and `docker compose down -v` at the end whatever happened."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from compose_support import (
    TIMINGS,
    Compose,
    build_images,
    docker_cli,
    engine_reason,
    generated_env,
    make_secrets,
    project_copy,
    run,
)


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("docker compose: measured")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker CLI, with an engine answering. No engine is a failure, not a skip: CI
    (.ci/run) starts one; elsewhere start dockerd, or leave tests/compose out with
    `pytest --ignore=tests/compose` knowingly."""
    cli = docker_cli()
    reason = engine_reason(cli)
    if reason:
        pytest.fail(f"the compose tests need a Docker engine: {reason}")
    return cli


@pytest.fixture(scope="session")
def images(docker: str) -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.fail("the compose tests build the Debian base with debootstrap: run them as root")
    return build_images(docker)


@pytest.fixture(scope="module")
def compose(request, docker: str, images: dict[str, str]) -> Iterator[Compose]:
    """A project copy with a generated .env, not yet up (the module brings it up), under
    a project name of its own, on free host ports of 127.0.0.1. A module's EXTRA_ENV (e.g.
    the celery profile) is added to the .env. A module whose VIA_MAKE is true gets the
    whole checkout (`make compose-up` builds from it) and no secret files yet: it makes
    them as the docs say; the others get the files of deploy/compose-secrets.py here."""
    root = Path(tempfile.mkdtemp(prefix="fd-compose-"))
    extra = getattr(request.module, "EXTRA_ENV", {})
    via_make = getattr(request.module, "VIA_MAKE", False)
    project = f"fdcompose{os.getpid()}{request.module.__name__.rsplit('_', 1)[-1]}"
    ports = {name: free_port() for name in ("AIRFLOW_API_PORT", "POSTGRES_PORT", "S3_PORT")}
    stack = Compose(
        root=project_copy(root, whole=via_make),
        project=project,
        env={**generated_env(images, project, ports), **extra},
        docker=docker,
        api_url=f"http://127.0.0.1:{ports['AIRFLOW_API_PORT']}",
    )
    stack.write_env()
    if not via_make:
        make_secrets(stack.root)
    try:
        yield stack
    finally:
        started = time.monotonic()
        stack("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        TIMINGS[f"{project}: docker compose down -v (fixture)"] = (
            f"{time.monotonic() - started:.1f} s"
        )
        # The containers wrote as AIRFLOW_UID: the test runs as root and can remove it.
        run(["rm", "-rf", str(root)], check=False)
