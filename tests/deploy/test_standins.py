"""The stand-ins of the official images (deploy/standins/), checked without an engine:
linters pass, the compose file keeps the official images as defaults and selects each
stand-in through one variable, and the CA bundle reaches pip steps only as a secret.
tests/compose builds and runs them."""

from __future__ import annotations

import re
import subprocess

import pytest
from deploy_support import COMPOSE_FILE, DOCKERFILE, REPO, tool

STANDINS = REPO / "deploy" / "standins"
# The official image each stand-in replaces, and the .env variable that selects it.
OFFICIAL = {
    "airflow": ("AIRFLOW_IMAGE", "apache/airflow:3.3.2-python3.11"),
    "postgres": ("POSTGRES_IMAGE", "postgres:15-bookworm"),
    "redis": ("REDIS_IMAGE", "redis:7.2-bookworm"),
    "moto": ("MOTO_IMAGE", "motoserver/moto:5.2.5"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_hadolint_passes_each_standin(name):
    dockerfile = STANDINS / name / "Dockerfile"
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "style", "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_passes_the_standin_scripts():
    scripts = sorted(STANDINS.glob("*.sh")) + sorted(STANDINS.glob("*/entrypoint.sh"))
    assert len(scripts) >= 4, scripts
    result = subprocess.run(
        [tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_defaults_to_the_official_images_and_a_variable_selects_each_standin():
    text = COMPOSE_FILE.read_text()
    build = (STANDINS / "build.sh").read_text()
    for name, (variable, official) in OFFICIAL.items():
        assert f"${{{variable}:-{official}}}" in text, f"{variable} with default {official}"
        assert f"[{name}]={variable}" in build, f"build.sh prints no {variable} line"
        tag = official.split("/")[-1]
        assert f"[{name}]=$PREFIX/{tag}" in build, f"build.sh tags {name} as {tag}"
    # The project image's base comes through the same variable as a build argument.
    assert "AIRFLOW_IMAGE: ${AIRFLOW_IMAGE:-apache/airflow:3.3.2-python3.11}" in text


@pytest.mark.parametrize(
    "dockerfile", [DOCKERFILE, *sorted(STANDINS.glob("*/Dockerfile"))], ids=lambda p: p.parent.name
)
def test_pip_steps_take_the_ca_bundle_as_a_secret_and_remove_it(dockerfile):
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    # pip steps that reach an index (the project's own wheel is installed offline).
    runs = [
        line
        for line in text.splitlines()
        if line.startswith("RUN") and "pip " in line and "--no-deps /tmp/wheels/" not in line
    ]
    if dockerfile.parent.name in ("redis", "postgres"):
        assert not runs
        return
    assert runs, f"{dockerfile}: no pip step"
    for line in runs:
        assert "--mount=type=secret,id=ca_bundle" in line, line
        if "ca-bundle.pem" in line:  # the combined bundle is gone before the layer is made
            assert line.rstrip().endswith("rm -f /tmp/ca-bundle.pem; exit $status"), line
    # Never copied into the image.
    copies = [line for line in text.splitlines() if line.startswith(("COPY", "ADD"))]
    assert not [line for line in copies if re.search(r"\.pem|\.crt|ca.bundle", line)], copies
