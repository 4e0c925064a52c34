# flight-delay-pipeline on the official Airflow image. Build: `docker compose build`
# (docker-compose.yaml) or `docker build -t flight-delay-pipeline .`.
#
# Layers, from the least to the most often changed: the locked third-party dependencies
# (deploy/image-requirements.txt, exported from uv.lock), the flight_delays wheel, the
# init script, then the DAG, plugins and parameters. Editing src/ rebuilds the wheel and
# the small layers after it, never the dependency layer; editing a DAG, the last layer.
#
# The image's own Airflow is kept as it is: the requirements leave out apache-airflow,
# apache-airflow-core and apache-airflow-task-sdk. They are installed with
# --require-hashes (every file checked against uv.lock's hashes) and --no-deps: the export
# is the lock's whole closure, so pip installs exactly it and resolves nothing (pip's
# hash mode cannot take a dependency with an extra, such as celery[redis], unless it is
# pinned that way). The step then checks that apache-airflow is still ${AIRFLOW_VERSION}
# (set by the base image) and runs `pip check`: a pin that needs another Airflow fails the
# build instead of silently replacing it.
# tests/deploy/test_dockerfile.py checks the base tag and the pins against uv.lock.
#
# Behind a TLS-inspecting proxy (or wherever PyPI's certificate is signed by a CA of your
# own), hand the build that CA as the BuildKit secret `ca_bundle`; it is added to the
# image's CA bundle for the pip steps only (a file removed in the same step, so in no
# layer), and the secret itself is never stored:
#   DOCKER_BUILDKIT=1 docker build --secret id=ca_bundle,src=/path/to/ca.pem -t flight-delay-pipeline .
# Without the secret the build uses the image's own CA bundle. (RUN --mount needs BuildKit:
# Docker 23+ uses it by default; Docker 20.10 needs DOCKER_BUILDKIT=1.)

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# --- the flight_delays wheel, built apart so src/ never lands in the final image -------
FROM ${AIRFLOW_IMAGE} AS wheel
COPY --chown=airflow:0 pyproject.toml README.md /tmp/flight-delays/
COPY --chown=airflow:0 src/ /tmp/flight-delays/src/
# Dependencies come from the lock in the runtime stage: build the project alone.
RUN --mount=type=secret,id=ca_bundle,uid=50000 \
    if [ -s /run/secrets/ca_bundle ]; then \
        export PIP_CERT=/tmp/ca-bundle.pem \
        && cat /etc/ssl/certs/ca-certificates.crt /run/secrets/ca_bundle > "$PIP_CERT"; \
    fi \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels /tmp/flight-delays; status=$?; rm -f /tmp/ca-bundle.pem; exit $status

# --- runtime ------------------------------------------------------------------------------
FROM ${AIRFLOW_IMAGE}
# The image's `airflow` user (uid 50000, group 0), by number so that a runtime can tell
# it is not root (Kubernetes runAsNonRoot). docker-compose.yaml runs as AIRFLOW_UID:0.
USER 50000:0

COPY --chown=airflow:0 deploy/image-requirements.txt /tmp/image-requirements.txt
RUN --mount=type=secret,id=ca_bundle,uid=50000 \
    if [ -s /run/secrets/ca_bundle ]; then \
        export PIP_CERT=/tmp/ca-bundle.pem \
        && cat /etc/ssl/certs/ca-certificates.crt /run/secrets/ca_bundle > "$PIP_CERT"; \
    fi \
    && pip install --no-cache-dir --require-hashes --no-deps --requirement /tmp/image-requirements.txt \
    && python -c 'import importlib.metadata as m, os, sys; v = m.version("apache-airflow"); \
sys.exit(0 if v == os.environ["AIRFLOW_VERSION"] else f"apache-airflow {v} replaced the base")' \
    && pip check; \
    status=$?; rm -f /tmp/ca-bundle.pem; exit $status

# --no-deps: every dependency is already installed from the lock above.
COPY --from=wheel --chown=airflow:0 /tmp/wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/flight_delays-*.whl

# The project root inside the image is AIRFLOW_HOME (/opt/airflow): include/params.yaml
# and the artifact folders live beside dags/ and plugins/, as in a checkout. The artifact
# folders and auth/ (the simple auth manager's passwords file) are usually volumes; they
# exist here, group 0 and group-writable, so any AIRFLOW_UID (always in group 0) can
# write them when they are not. The folders come from the artifact catalog through
# airflow-init.sh, the same that airflow-init hands to AIRFLOW_UID at every start.
ENV FLIGHT_DELAYS_HOME=/opt/airflow
COPY --chown=airflow:0 deploy/airflow-init.sh /opt/airflow/deploy/airflow-init.sh
# The `_CMD` of the Airflow settings that docker-compose.yaml reads from secret files.
COPY --chown=airflow:0 --chmod=0755 deploy/read-secret.sh /opt/airflow/deploy/read-secret.sh
# airflow-init's check of the forkserver's preload list: `make up`'s own module, with the
# one module it needs (standard library only), where airflow-init.sh looks for it.
COPY --chown=airflow:0 deploy/stack/flight_stack/__init__.py deploy/stack/flight_stack/errors.py \
    deploy/stack/flight_stack/preload.py /opt/airflow/deploy/stack/flight_stack/
RUN bash /opt/airflow/deploy/airflow-init.sh --prepare-folders \
    && install -d -m 0775 /opt/airflow/auth

COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
