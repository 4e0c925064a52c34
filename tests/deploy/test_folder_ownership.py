"""File ownership in the compose stack, emulated without Docker.

The containers run as AIRFLOW_UID, group 0 (docker-compose.yaml `user:`), on folders
bind-mounted from the host: the checkout's folders keep their host owner, and a mount
source that does not exist is created by Docker as root. airflow-init (as root) must hand
every folder the pipeline writes to AIRFLOW_UID, or a task fails with PermissionError the
first time it creates its `ds=D` folder there (reports/ds=D/index.html did, on Linux).

Here a temporary tree stands for /opt/airflow with the compose file's own bind mounts,
owned as on a host; airflow-init.sh's ownership step runs on it as root with the
environment compose gives the airflow-init container; then every artifact path of the
pipeline is written as uid 50000 (or the AIRFLOW_UID in use), gid 0, no other groups,
the way the tasks write it (flight_delays.store.io.atomic_write, twice, as a retry would).
Needs root (chown, setuid), as airflow-init does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path, PurePosixPath

import pytest
from deploy_support import INIT_SCRIPT, REPO, TEST_ENV, resolved_compose

from flight_delays.store import artifacts, io

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown and setuid need root")

CONTAINER_HOME = PurePosixPath("/opt/airflow")  # AIRFLOW_HOME and FLIGHT_DELAYS_HOME
IMAGE_UID = 50000  # the image's airflow user, .env.example's AIRFLOW_UID
HOST_UID = 1000  # a Linux user who cloned the project
DAY = date(2013, 3, 15)
RUN_ID = "scheduled__2013-03-16T07:00:00+00:00"
# Written by Airflow, not named by the artifact catalog.
EXTRA = (
    "logs/dag_id=flight_delays/run_id=scheduled__2013-03-16T07:00:00+00:00/task_id=chart/"
    "attempt=1.log",
    "logs/dag_processor/2013-03-16/dags-folder/flight_delays_pipeline.py.log",
)


def artifact_paths(home: Path) -> list[Path]:
    """Every file the pipeline writes for DAY: one per entry of the artifact catalog (so
    an entry added there is covered here; a folder gets a file inside it), plus EXTRA."""
    fields = {"day": DAY, "run_id": RUN_ID, "sha256": "0" * 64}
    found = []
    for entry in artifacts.CATALOG:
        path = entry.path(home, **{k: v for k, v in fields.items() if k in entry.placeholders})
        assert isinstance(path, Path), f"artifact {entry.name} is not a local path"
        found.append(path / "artifact" if entry.format == "folder" else path)
    return found + [home / extra for extra in EXTRA]


def init_folders() -> list[str]:
    """The artifact folders airflow-init.sh creates and hands over, relative to the project
    root (its log folder, the last line, left out)."""
    env = {
        "PATH": os.environ["PATH"], "PYTHON": sys.executable,
        "FLIGHT_DELAYS_HOME": "/project", "AIRFLOW_HOME": "/airflow-home",
    }  # fmt: skip
    result = subprocess.run(
        ["bash", "-c", f'source "{INIT_SCRIPT}" && artifact_folders'],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    *folders, logs = result.stdout.splitlines()
    assert logs == "/airflow-home/logs"
    return [PurePosixPath(f).relative_to("/project").as_posix() for f in folders]


def python_for(uid: int) -> dict[str, str]:
    """PYTHON (and PYTHONPATH) for airflow-init.sh run as ``uid``: this venv's interpreter
    when ``uid`` can run it, else the system's with the package's sources on the path
    (the venv's python can sit under /root; flight_delays.store.artifacts needs only the
    standard library), as the image's python has the package installed."""
    for python in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if python is None:
            continue
        try:
            ran = subprocess.run(
                [python, "-c", "import flight_delays.store.artifacts"],
                env={"PYTHONPATH": str(REPO / "src")}, user=uid, group=0, extra_groups=[],
                capture_output=True, timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if ran.returncode == 0:
            return {"PYTHON": python, "PYTHONPATH": str(REPO / "src")}
    pytest.fail(f"no python that uid {uid} can run imports flight_delays.store.artifacts")


@pytest.fixture(scope="module")
def init_container() -> dict:
    """The airflow-init service as compose resolves it (environment, mounts)."""
    base = Path(tempfile.mkdtemp(prefix="flight-delays-compose-"))
    try:
        return resolved_compose(base)["services"]["airflow-init"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def home() -> Iterator[Path]:
    """/opt/airflow of the emulated container. Not under pytest's tmp folder: as root
    that is private to root, and uid 50000 must reach this one."""
    base = Path(tempfile.mkdtemp(prefix="flight-delays-owner-"))
    base.chmod(0o755)
    try:
        yield base / "opt-airflow"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bind_mounts(service: dict) -> dict[Path, Path]:
    """Host source -> path in the container, of the service's bind mounts of this repo."""
    return {
        Path(v["source"]): Path(v["target"])
        for v in service["volumes"]
        if v["type"] == "bind" and Path(v["source"]).is_relative_to(REPO)
    }


def make_tree(home: Path, init_container: dict, owner: int, from_checkout: bool) -> None:
    """The container's view of its bind mounts. from_checkout: each mount source is the
    checkout's folder (with the subfolders git gives it), owned by ``owner``; otherwise
    Docker made each missing source, empty, as ``owner``."""
    home.mkdir(mode=0o755)
    for source, target in bind_mounts(init_container).items():
        inside = home / target.relative_to(CONTAINER_HOME)
        folders = [source]
        if from_checkout and source.is_dir():
            folders += [p for p in sorted(source.rglob("*")) if p.is_dir()]
        for folder in folders:
            made = inside / folder.relative_to(source)
            made.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chown(made, owner, owner)


def container_env(home: Path, init_container: dict, uid: str | None) -> dict[str, str]:
    """airflow-init's environment from compose, /opt/airflow moved to ``home``."""
    env = {"PATH": os.environ["PATH"], "AIRFLOW_HOME": str(home)}  # AIRFLOW_HOME: the image's
    env["PYTHON"] = sys.executable  # the image's python, with the package installed
    for key, value in init_container["environment"].items():
        value = str(value)
        if value.startswith(str(CONTAINER_HOME)):
            value = str(home) + value[len(str(CONTAINER_HOME)) :]
        env[key] = value
    if uid is None:
        env.pop("AIRFLOW_UID", None)
    else:
        env["AIRFLOW_UID"] = uid
    return env


def prepare_folders(env: dict[str, str], script: Path = INIT_SCRIPT) -> None:
    """Step 5 of airflow-init.sh alone (the script sourced, its main not run), as root."""
    result = subprocess.run(
        ["bash", "-c", f'source "{script}" && prepare_folders'],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def write_as(uid: int, paths: list[Path]) -> dict[str, str]:
    """Write every path as uid, gid 0, no supplementary groups, with the steps' own
    atomic write, twice (a retry): {path: "ok" | the error}. A forked child drops root and
    writes (an exec'd interpreter might not be readable by uid: the venv's python can sit
    under /root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(0)
            os.setuid(uid)
            result = {}
            for path in paths:
                try:
                    for attempt in (1, 2):
                        io.atomic_write(path, lambda tmp, n=attempt: tmp.write_text(f"attempt {n}"))
                    result[str(path)] = "ok"
                except OSError as exc:
                    result[str(path)] = f"{type(exc).__name__}: {exc}"
            with os.fdopen(write_end, "w") as stream:
                json.dump(result, stream)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        text = stream.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text, "the writer did not finish"
    return json.loads(text)


def assert_all_written(home: Path, uid: int) -> None:
    paths = artifact_paths(home)
    outcome = write_as(uid, paths)
    failed = {p: e for p, e in outcome.items() if e != "ok"}
    assert not failed, json.dumps(failed, indent=2)
    for path in paths:
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, 0), path
        assert path.read_text() == "attempt 2", path


@pytest.mark.parametrize(
    ("owner", "from_checkout"),
    [(HOST_UID, True), (0, False)],
    ids=["checkout-of-uid-1000", "mount-sources-made-by-docker-as-root"],
)
@pytest.mark.parametrize("airflow_uid", [str(IMAGE_UID), None], ids=["uid-50000", "uid-unset"])
def test_tasks_write_every_artifact_as_the_default_uid(
    home, init_container, owner, from_checkout, airflow_uid
):
    make_tree(home, init_container, owner, from_checkout)
    prepare_folders(container_env(home, init_container, airflow_uid))
    assert_all_written(home, IMAGE_UID)


def test_tasks_write_as_the_host_uid_over_files_an_earlier_uid_left(home, init_container):
    """The user ran the stack at 50000, then set AIRFLOW_UID=$(id -u): the next tasks
    replace the old run's files (the same day rerun) and add new ones."""
    make_tree(home, init_container, HOST_UID, from_checkout=True)
    prepare_folders(container_env(home, init_container, str(IMAGE_UID)))
    assert_all_written(home, IMAGE_UID)
    for path in home.rglob("*"):  # what a 0755/0644 umask leaves: owner-writable only
        path.chmod(0o755 if path.is_dir() else 0o644)
    prepare_folders(container_env(home, init_container, str(HOST_UID)))
    assert_all_written(home, HOST_UID)


def test_without_the_ownership_step_the_tasks_cannot_write(home, init_container):
    """The emulation is able to fail: on the bare checkout, uid 50000 is refused."""
    make_tree(home, init_container, HOST_UID, from_checkout=True)
    outcome = write_as(IMAGE_UID, artifact_paths(home))
    assert outcome and all("PermissionError" in e for e in outcome.values()), outcome


def test_image_build_makes_every_folder_group_writable(home):
    """The Dockerfile runs `airflow-init.sh --prepare-folders` as 50000:0 in the image's
    AIRFLOW_HOME (airflow:0, with logs/): then any uid of group 0 can write each folder
    with no volume mounted (AIRFLOW_UID other than 50000, or an arbitrary uid)."""
    (home / "logs").mkdir(parents=True)
    for path in (home, home / "logs"):
        os.chown(path, IMAGE_UID, 0)
        path.chmod(0o775)
    env = {
        "PATH": os.environ["PATH"], "FLIGHT_DELAYS_HOME": str(home), "AIRFLOW_HOME": str(home),
        **python_for(IMAGE_UID),
    }  # fmt: skip
    script = home / "deploy" / INIT_SCRIPT.name  # as the image has it, readable by 50000
    script.parent.mkdir()
    shutil.copy(INIT_SCRIPT, script)
    result = subprocess.run(
        ["bash", str(script), "--prepare-folders"],
        env=env, user=IMAGE_UID, group=0, extra_groups=[], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for folder in [*init_folders(), "logs"]:
        info = (home / folder).stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (IMAGE_UID, 0, 0o775), folder
    assert_all_written(home, 4321)


def test_every_artifact_path_lies_in_a_folder_airflow_init_hands_over():
    folders = init_folders()
    assert folders, "airflow-init.sh lists no artifact folders"
    root = Path("/project")
    for path in artifact_paths(root):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("logs/"):
            continue  # the log folder, handed over beside the artifact folders
        assert any(relative.startswith(f"{f}/") for f in folders), f"{relative}: not handed over"
    # Each is inside a folder that compose bind-mounts from the checkout.
    base = Path(tempfile.mkdtemp(prefix="flight-delays-compose-"))
    try:
        service = resolved_compose(base, TEST_ENV)["services"]["airflow-scheduler"]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mounted = {t.relative_to(CONTAINER_HOME).as_posix() for t in bind_mounts(service).values()}
    for folder in folders:
        assert folder.split("/")[0] in mounted, f"{folder} is not on a bind mount"
