"""The Dockerfile, checked without a Docker engine: hadolint finds nothing, the image is
the Airflow the lock file pins, the dependencies it installs are exactly the lock's, the
layers are ordered for the cache, and the build context holds no secret."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from deploy_support import DOCKERFILE, IMAGE_REQUIREMENTS, REPO, tool

# Airflow's own distributions: the base image has them, the image must not change them.
AIRFLOW_DISTRIBUTIONS = ("apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk")
EXPORT_COMMAND = [
    "uv", "export", "--frozen", "--no-default-groups", "--no-emit-project",
    "--extra", "airflow",
    *(arg for name in AIRFLOW_DISTRIBUTIONS for arg in ("--no-emit-package", name)),
    "-o", "deploy/image-requirements.txt",
]  # fmt: skip


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def lock_packages() -> dict[str, str]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {normalize(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def requirement_pins() -> dict[str, str]:
    """name -> version of each requirement; each must carry at least one sha256 hash."""
    pins = {}
    text = re.sub(r"\\\n", " ", IMAGE_REQUIREMENTS.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = re.split(r"\s+--hash=", line)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h.strip()) for h in hashes), (
            f"no sha256 hash: {line[:120]!r}"
        )
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)(\s*;.*)?", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        pins[normalize(match[1])] = match[2]
    return pins


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "style", "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # An ignore must say why, on the comment line just above it.
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number and lines[number - 1].startswith("#"), f"unjustified: {line}"


def test_base_image_is_the_locked_airflow_on_the_project_python():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    airflow = lock_packages()["apache-airflow"]
    assert f"apache-airflow=={airflow}" in pyproject["project"]["optional-dependencies"]["airflow"]
    python = re.search(r">=(3\.\d+)", pyproject["project"]["requires-python"])[1]
    args = dict(a.split("=", 1) for kind, a in instructions() if kind == "ARG" and "=" in a)
    assert args["AIRFLOW_IMAGE"] == f"apache/airflow:{airflow}-python{python}"
    assert [a for kind, a in instructions() if kind == "FROM"] == [
        "${AIRFLOW_IMAGE} AS wheel",
        "${AIRFLOW_IMAGE}",
    ]


def test_requirements_pin_exactly_the_lock():
    pins, lock = requirement_pins(), lock_packages()
    assert pins, f"{IMAGE_REQUIREMENTS} is empty"
    wrong = {n: (v, lock.get(n)) for n, v in pins.items() if lock.get(n) != v}
    assert not wrong, f"pins differ from uv.lock (pin, lock): {wrong}; regenerate: {EXPORT_COMMAND}"
    for name in AIRFLOW_DISTRIBUTIONS:
        assert name not in pins, f"{name} comes from the base image, not the requirements"
    # Every direct dependency of the package and of its airflow extra is there.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    direct = [*pyproject["project"]["dependencies"],
              *pyproject["project"]["optional-dependencies"]["airflow"]]  # fmt: skip
    for requirement in direct:
        name = normalize(re.match(r"[A-Za-z0-9_.-]+", requirement)[0])
        assert name in pins or name in AIRFLOW_DISTRIBUTIONS, f"{name} is not installed"
    dev = {normalize(re.match(r"[A-Za-z0-9_.-]+", r)[0])
           for r in pyproject["dependency-groups"]["dev"]}  # fmt: skip
    assert not dev & set(pins), "dev tools do not belong in the image"


# The uv on PATH, else the one `make` bootstraps into .tools/ (a stock machine has none).
UV = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")


@pytest.mark.skipif(not Path(UV).is_file(), reason="no uv: run `make venv` first")
def test_requirements_are_the_current_export_of_the_lock(tmp_path):
    command = [UV, *EXPORT_COMMAND[1:-2], "--no-header", "-o", str(tmp_path / "export.txt")]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    committed = [
        line for line in IMAGE_REQUIREMENTS.read_text().splitlines() if not line.startswith("#  ")
    ]
    committed = [line for line in committed if not line.startswith("# This file was")]
    exported = (tmp_path / "export.txt").read_text().splitlines()
    assert committed == exported, f"stale: regenerate with `{' '.join(EXPORT_COMMAND)}`"


def test_install_keeps_the_image_airflow_and_uses_no_runtime_pip():
    runs = [a for kind, a in stages()[-1] if kind == "RUN"]
    install = next(r for r in runs if "/tmp/image-requirements.txt" in r)
    # Hash-checking mode, exactly the lock's closure (--no-deps): pip installs nothing the
    # lock did not hash; the step checks the Airflow version and runs pip check, so a pin
    # that needs another Airflow fails the build.
    assert "--require-hashes" in install and "--no-deps" in install
    assert 'm.version("apache-airflow")' in install and 'os.environ["AIRFLOW_VERSION"]' in install
    assert "pip check" in install
    assert "--no-cache-dir" in install
    wheel = next(r for r in runs if ".whl" in r)
    assert "--no-deps" in wheel and "flight_delays-" in wheel
    for path in (DOCKERFILE, REPO / "docker-compose.yaml", REPO / ".env.example"):
        assert "_PIP_ADDITIONAL_REQUIREMENTS" not in path.read_text(), path.name


def test_layers_go_from_rarely_to_often_changed():
    runtime = stages()[-1]

    def position(predicate, what):
        for index, instruction in enumerate(runtime):
            if predicate(instruction):
                return index
        raise AssertionError(f"no {what} in the runtime stage")

    requirements = position(lambda i: i[0] == "COPY" and "image-requirements" in i[1], "reqs")
    install = position(lambda i: i[0] == "RUN" and "image-requirements" in i[1], "install")
    wheel = position(lambda i: i[0] == "COPY" and "--from=wheel" in i[1], "wheel copy")
    dags = position(lambda i: i[0] == "COPY" and i[1].split()[-2] == "dags/", "dags copy")
    assert requirements < install < wheel < dags
    # The source never reaches the runtime stage: only the wheel built from it.
    assert not any(kind == "COPY" and "src/" in args for kind, args in runtime)


def test_runs_as_the_airflow_user():
    users = [a for kind, a in stages()[-1] if kind == "USER"]
    assert users and users[-1] == "50000:0"  # the image's airflow user, group 0
    assert not any(u.split(":")[0] in ("0", "root") for u in users)


def test_image_project_root_matches_compose():
    envs = [a for kind, a in stages()[-1] if kind == "ENV"]
    assert "FLIGHT_DELAYS_HOME=/opt/airflow" in envs
    wheel_name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert normalize(wheel_name).replace("-", "_") == "flight_delays"


def test_build_context_is_an_allow_list_without_secrets():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing, then allow what the image needs"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert not any(a.startswith((".env", ".venv", ".git", "data", "models")) for a in allowed)
    assert "**/.env" in patterns
    # Every file or folder the Dockerfile copies from the context is allowed and exists.
    for kind, args in instructions():
        if kind != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            source = source.rstrip("/")
            assert source in allowed, f".dockerignore leaves {source} out of the context"
            assert (REPO / source).exists(), source


def test_the_uv_bootstrap_and_the_build_backend_are_pinned():
    """`make` installs uv into .tools/ when none is on PATH, and the wheel is built with
    hatchling: both exactly pinned, so a new release changes nothing unseen."""
    makefile = (REPO / "Makefile").read_text()
    version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M)
    assert version and re.fullmatch(r"\d+\.\d+\.\d+", version[1]), "UV_VERSION not pinned"
    assert "pip install --quiet 'uv==$(UV_VERSION)'" in makefile
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9.]*", spec) for spec in requires), requires
