#!/usr/bin/env bash
# airflow-init: the one-shot setup service of docker-compose.yaml. Every other Airflow
# service waits for it to finish successfully, so nothing starts on a half-made setup.
#
#   1. refuses to start, naming every missing or malformed secret file at once;
#   2. writes the admin password into the simple auth manager's passwords file;
#   3. migrates the metastore (`airflow db migrate`);
#   4. seeds the demo warehouse (idempotent; FLIGHT_DELAYS_SEED_DEMO=false skips it),
#      migrates the model registry in it (`python -m flight_delays.store.registry upgrade`) and
#      stores the connection flight_delays_warehouse in the metastore;
#   5. creates every folder the pipeline writes (the artifact catalog's, see
#      artifact_folders below, and the log folder) and hands each, recursively, to
#      AIRFLOW_UID:0 (when root).
#   Meanwhile (steps 2 to 4) it imports the forkserver's preload list as the scheduler's
#   forkserver will, and stops, naming the module, when one would stop the forkserver
#   (check_preload below).
#
# Secrets: files in SECRETS_PATH (default /run/secrets, where compose mounts them;
# deploy/compose-secrets.py generates them in ./secrets): airflow_fernet_key,
# airflow_jwt_secret, airflow_api_secret_key, airflow_admin_password, airflow_db_password,
# warehouse_db_password. Airflow itself reads its own through the `_CMD` settings of
# docker-compose.yaml (deploy/read-secret.sh).
# Environment (docker-compose.yaml): WAREHOUSE_DB_URL (the warehouse, no password),
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE,
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS, FLIGHT_DELAYS_HOME, AIRFLOW_HOME, AIRFLOW_UID.
#
# `airflow-init.sh --check-only` runs step 1 alone (used by tests/deploy);
# `airflow-init.sh --prepare-folders` step 5 alone (used by the Dockerfile at build time).
set -euo pipefail

readonly PROG=airflow-init
# The Airflow connection of the warehouse (flight_delays.store.db.WAREHOUSE_CONN_ID).
readonly WAREHOUSE_CONN_ID=flight_delays_warehouse
# The same warehouse as the SELECT-only role the Model reports page reads with.
readonly READER_CONN_ID=flight_delays_warehouse_reader
ADMIN_USER=${AIRFLOW_ADMIN_USER:-admin}
PYTHON=${PYTHON:-python}
FERNET_HOWTO="python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"

log() { printf '%s: %s\n' "$PROG" "$*"; }

SECRETS_PATH=${SECRETS_PATH:-/run/secrets}
GENERATE="generate the missing files with: python3 deploy/compose-secrets.py"

declare -A DB_ROLES=(
    [airflow_db_password]="password of the Postgres role that owns the metastore database 'airflow'"
    [warehouse_db_password]="password of the Postgres role that owns the 'warehouse' database"
    [warehouse_reader_password]="password of the Postgres role that may only read the 'warehouse' database (the Model reports page)"
)

# A secret's value: its file, trailing newline dropped ($(<) strips it). Empty when the
# file is missing (check_secrets names it first).
secret() {
    local file=$SECRETS_PATH/$1
    [[ -r $file ]] && printf '%s' "$(<"$file")"
    return 0
}

# Step 1. Every secret is checked before anything is touched, and all problems are
# reported together: a first `docker compose up` should need one round of fixes.
check_secrets() {
    local problems=() value name

    # Missing or empty: one message per file, with what it is for.
    declare -A what=(
        [airflow_fernet_key]="the Fernet key that encrypts connection passwords and variables in the metastore ([core] fernet_key)"
        [airflow_jwt_secret]="signs the tokens of the UI, the REST API and the task workers; every component must share it ([api_auth] jwt_secret)"
        [airflow_api_secret_key]="signs the api-server's sessions and the requests for the logs of running tasks; every component must share it, or those logs answer 403 Forbidden ([api] secret_key)"
        [airflow_admin_password]="the password of the web UI user '${ADMIN_USER}'"
        [airflow_db_password]=${DB_ROLES[airflow_db_password]}
        [warehouse_db_password]=${DB_ROLES[warehouse_db_password]}
        [warehouse_reader_password]=${DB_ROLES[warehouse_reader_password]}
    )
    for name in airflow_fernet_key airflow_jwt_secret airflow_api_secret_key \
        airflow_admin_password airflow_db_password warehouse_db_password \
        warehouse_reader_password; do
        if [[ ! -r $SECRETS_PATH/$name ]]; then
            problems+=("secret file $name is missing from $SECRETS_PATH (${what[$name]}): $GENERATE")
        elif [[ -z $(secret "$name") ]]; then
            problems+=("secret file $name is empty (${what[$name]}): delete it, then $GENERATE")
        fi
    done

    value=$(secret airflow_fernet_key)
    if [[ -n $value && ! $value =~ ^[A-Za-z0-9_-]{43}=(,[A-Za-z0-9_-]{43}=)*$ ]]; then
        problems+=("secret airflow_fernet_key is not a Fernet key (44 characters of URL-safe base64 ending in '=', or several separated by commas while rotating). Generate one: $FERNET_HOWTO")
    fi
    for name in airflow_jwt_secret airflow_api_secret_key; do
        value=$(secret "$name")
        if [[ -n $value ]] && ((${#value} < 32)); then
            problems+=("secret $name is too short (${#value} characters, at least 32). Generate one: openssl rand -hex 32")
        fi
    done
    value=$(secret airflow_admin_password)
    if [[ -n $value ]] && ((${#value} < 8)); then
        problems+=("secret airflow_admin_password is too short (${#value} characters, at least 8)")
    fi
    # The database passwords also reach Airflow inside URIs, where anything but
    # unreserved characters would need percent-encoding.
    for name in airflow_db_password warehouse_db_password warehouse_reader_password; do
        value=$(secret "$name")
        if [[ -n $value && ! $value =~ ^[A-Za-z0-9._~-]+$ ]]; then
            problems+=("secret $name holds characters that would need percent-encoding in a database URI: use letters, digits and . _ ~ - only, e.g. openssl rand -hex 24")
        fi
    done
    if [[ -z ${WAREHOUSE_DB_URL:-} ]]; then
        problems+=("WAREHOUSE_DB_URL is not set (docker-compose.yaml sets it: the warehouse without its password)")
    fi
    if [[ -z ${WAREHOUSE_READER_DB_URL:-} ]]; then
        problems+=("WAREHOUSE_READER_DB_URL is not set (docker-compose.yaml sets it: the warehouse as its SELECT-only role, without the password)")
    fi
    # Not a secret, but chown and every container's `user:` need a number.
    if [[ ! ${AIRFLOW_UID:-50000} =~ ^[0-9]+$ ]]; then
        problems+=("AIRFLOW_UID is not a number ('${AIRFLOW_UID}'): on Linux, echo \"AIRFLOW_UID=\$(id -u)\" >> .env; elsewhere 50000")
    fi

    if ((${#problems[@]})); then
        {
            echo "$PROG: refusing to start: ${#problems[@]} problem(s) with the secrets and settings."
            echo "Secrets are files in ./secrets beside docker-compose.yaml (docs/docker-compose.md, \"Secrets\"); other settings are in .env (see .env.example). Fix them, then run 'docker compose up' again:"
            printf '  - %s\n' "${problems[@]}"
        } >&2
        return 1
    fi
    log "secrets present: Fernet key, JWT secret, API secret key, admin password, metastore, warehouse and warehouse reader passwords"
}

# The warehouse's URL with its password, for this script's own commands only: it is
# handed to them in their environment (FLIGHT_DELAYS_SOURCE_URL), never on a command line.
warehouse_url() {
    with_password "$WAREHOUSE_DB_URL" warehouse_db_password
}

# A URL with the password of a secret file added: with_password URL SECRET.
with_password() {
    URL=$1 WAREHOUSE_PASSWORD=$(secret "$2") "$PYTHON" -c '
import os
from sqlalchemy.engine import make_url
url = make_url(os.environ["URL"]).set(password=os.environ["WAREHOUSE_PASSWORD"])
print(url.render_as_string(hide_password=False))'
}

# The uid every container runs as (docker-compose.yaml: user AIRFLOW_UID:0, default 50000).
owner_uid() { printf '%s' "${AIRFLOW_UID:-50000}"; }

# Files the containers write belong to AIRFLOW_UID. When that is not the uid that owns the
# checkout (the bind-mounted dags/), its owner cannot edit or delete them without sudo:
# say how to fix it. Nothing breaks either way, since step 5 hands every folder over.
warn_uid() {
    local uid checkout owner
    uid=$(owner_uid)
    checkout=${AIRFLOW__CORE__DAGS_FOLDER:-${FLIGHT_DELAYS_HOME:-/opt/airflow}/dags}
    owner=$(stat -c %u "$checkout" 2>/dev/null) || return 0
    # root can edit anything; Docker Desktop (macOS, Windows) maps ownership by itself.
    if [[ $owner != 0 && $owner != "$uid" ]]; then
        log "WARNING: the containers run as uid $uid, but the checkout belongs to uid $owner:"
        log "files written in ./data, ./models, ./reports and ./logs will belong to uid $uid."
        log "On Linux: echo \"AIRFLOW_UID=\$(id -u)\" >> .env, then docker compose up again."
    fi
}

# Step 2. The simple auth manager reads passwords from a JSON file {user: password} and
# generates (and prints) one for each configured user it does not find there. Writing the
# admin's password from the secret keeps the login under our control; other users' entries
# are kept. The file is rewritten on every start, so changing the secret takes effect.
write_admin_password() {
    local file=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set}
    mkdir -p "$(dirname "$file")"
    case ",${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-}," in
        *",${ADMIN_USER}:admin,"*) ;;
        *) log "WARNING: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS does not list ${ADMIN_USER}:admin" ;;
    esac
    ADMIN_USER=$ADMIN_USER ADMIN_PASSWORD=$(secret airflow_admin_password) "$PYTHON" - "$file" <<'PY'
import json, os, sys, tempfile
path = sys.argv[1]
try:
    with open(path) as stream:
        passwords = json.loads(stream.read().strip() or "{}")
except FileNotFoundError:
    passwords = {}
passwords[os.environ["ADMIN_USER"]] = os.environ["ADMIN_PASSWORD"]
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".passwords-")
with os.fdopen(fd, "w") as stream:
    stream.write(json.dumps(passwords) + "\n")
os.chmod(tmp, 0o600)
os.replace(tmp, path)
PY
    if [[ $(id -u) == 0 ]]; then
        # The api-server (AIRFLOW_UID) reads the file; no other container mounts the volume.
        chown "$(owner_uid):0" "$(dirname "$file")" "$file"
    fi
    log "password of web UI user '${ADMIN_USER}' written to $file"
}

# Beside steps 2 to 4. The LocalExecutor's workers come from a forkserver that imports
# the modules of [core] mp_forkserver_preload (deploy/executor-local.env) first. It skips
# one that raises ImportError without a word, and any other error stops it, so that no
# task can start. So each list is imported here as the forkserver will, in a fresh
# interpreter with the components' environment: a module that breaks stops airflow-init,
# naming it; one that does not import is a warning. The check is `make up`'s
# (deploy/stack/flight_stack/preload.py, standard library only; the image holds it).
PRELOAD_CHECK_PATH=${PRELOAD_CHECK_PATH:-$(dirname "${BASH_SOURCE[0]}")/stack}
check_preload() {
    "$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1])
from flight_stack.preload import main
sys.exit(main())' "$PRELOAD_CHECK_PATH"
}

# Step 3.
migrate() {
    log "migrating the metastore"
    airflow db migrate
}

# Before step 4. The warehouse must be a UTF-8 database: on a SQL_ASCII one (what initdb
# makes in an image without locales) psycopg returns text as bytes, and the seed and the
# DAG fail far from the cause ("cannot use a string pattern on a bytes-like object").
# Refuse at once, naming the encoding.
check_warehouse_encoding() {
    "$PYTHON" - <<'PY'
import os
import sys

import psycopg
from sqlalchemy.engine import make_url

# psycopg itself: SQLAlchemy's first connect already fails on such a database.
url = make_url(os.environ["FLIGHT_DELAYS_SOURCE_URL"])
if url.get_backend_name() != "postgresql":
    sys.exit(0)
conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
with psycopg.connect(conninfo) as conn:
    found, database = conn.execute("SELECT current_setting('server_encoding'), current_database()").fetchone()
found = found.decode() if isinstance(found, bytes) else str(found)
database = database.decode() if isinstance(database, bytes) else str(database)
if found.upper().replace("-", "") != "UTF8":
    sys.exit(
        f"airflow-init: the warehouse database {database!r} is encoded {found}, not UTF8: "
        "text would reach Python as bytes. Recreate it as UTF-8 (CREATE DATABASE ... "
        "ENCODING 'UTF8' TEMPLATE template0), or initialise the server with "
        "initdb --encoding=UTF8 --locale=C.UTF-8 (the official postgres image's default)."
    )
PY
}

# Step 4. The commands below find the warehouse in FLIGHT_DELAYS_SOURCE_URL (the
# package's default source when params.yaml names none), set by main() for them only.
seed_warehouse() {
    if [[ ${FLIGHT_DELAYS_SEED_DEMO:-true} != true ]]; then
        log "FLIGHT_DELAYS_SEED_DEMO=${FLIGHT_DELAYS_SEED_DEMO}: demo warehouse not seeded"
        return
    fi
    log "seeding the demo warehouse (idempotent: cycles already loaded are skipped)"
    "$PYTHON" -m flight_delays.intake.demo seed
}

# The model registry's schema, in the warehouse: migrated here, once, not by the web server
# (the Model reports page reads it read-only) nor by the first score task.
migrate_registry() {
    log "migrating the model registry"
    "$PYTHON" -m flight_delays.store.registry upgrade
}

# The connection the DAG and the Model reports page read the warehouse through, stored in
# the metastore (its password encrypted with the Fernet key) and replaced on every start,
# so that a new warehouse password takes effect. The components read it from there, the
# tasks through the execution API: none of them needs the warehouse's secret file.
store_connection() {
    log "storing the connections ${WAREHOUSE_CONN_ID} and ${READER_CONN_ID} in the metastore"
    READER_URL=$(with_password "$WAREHOUSE_READER_DB_URL" warehouse_reader_password) \
        "$PYTHON" - "$WAREHOUSE_CONN_ID" "$READER_CONN_ID" <<'PY'
import os
import sys

from airflow.models.connection import Connection
from airflow.utils.session import create_session
from sqlalchemy import delete

urls = {sys.argv[1]: os.environ["FLIGHT_DELAYS_SOURCE_URL"], sys.argv[2]: os.environ["READER_URL"]}
with create_session() as session:
    for conn_id, uri in urls.items():
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.add(Connection(conn_id=conn_id, uri=uri))
PY
}

# Step 5. Every folder the containers write is created and handed, with all it holds, to
# AIRFLOW_UID:0, group-writable (group 0 is every container user's group). A bind-mounted
# folder keeps its host owner otherwise: the checkout's user, or root when Docker created
# the mount source. Source folders (dags, plugins, include) are left alone. Without root
# (the image build), the folders are only created, group-writable.
#
# The folders come from the artifact catalog, the one place that names every artifact
# (`python -m flight_delays.store.artifacts folders`: where its entries live whatever the day,
# with their parents, so a task can create its ds=D folder in each), plus the log folder.
# tests/deploy checks that every artifact path lies inside one of them.
artifact_folders() {
    local home=${FLIGHT_DELAYS_HOME:?FLIGHT_DELAYS_HOME is not set} listed folder
    if ! listed=$("$PYTHON" -m flight_delays.store.artifacts folders) || [[ -z $listed ]]; then
        log "cannot list the artifact folders: '$PYTHON -m flight_delays.store.artifacts folders' failed or printed nothing" >&2
        return 1
    fi
    while IFS= read -r folder; do
        printf '%s\n' "$home/$folder"
    done <<<"$listed"
    printf '%s\n' "${AIRFLOW__LOGGING__BASE_LOG_FOLDER:-${AIRFLOW_HOME:-/opt/airflow}/logs}"
}

prepare_folders() {
    local folders listing
    # Not `mapfile < <(...)`: a failure inside a process substitution would go unnoticed.
    listing=$(artifact_folders)
    mapfile -t folders <<<"$listing"
    mkdir -p "${folders[@]}"
    if [[ $(id -u) == 0 ]]; then
        local owner
        owner="$(owner_uid):0"
        log "handing ${folders[*]} to $owner"
        chown -R "$owner" "${folders[@]}"
        chmod -R g+rwX "${folders[@]}"
    else
        chmod g+rwX "${folders[@]}"
    fi
}

main() {
    if [[ ${1:-} == --prepare-folders ]]; then
        prepare_folders
        return 0
    fi
    check_secrets
    if [[ ${1:-} == --check-only ]]; then
        return 0
    fi
    warn_uid
    # The preload check runs beside steps 2 to 4. If one of them fails, the script stops
    # waiting for it and removes its log (in the container, the check ends with bash).
    PRELOAD_LOG=$(mktemp)
    check_preload >"$PRELOAD_LOG" 2>&1 &
    PRELOAD_PID=$!
    trap 'kill "$PRELOAD_PID" 2>/dev/null || true; rm -f "$PRELOAD_LOG"' EXIT
    write_admin_password
    migrate
    FLIGHT_DELAYS_SOURCE_URL=$(warehouse_url)
    export FLIGHT_DELAYS_SOURCE_URL
    check_warehouse_encoding
    seed_warehouse
    migrate_registry
    store_connection
    unset FLIGHT_DELAYS_SOURCE_URL
    log "waiting for the check of the forkserver's preload list"
    if ! wait "$PRELOAD_PID"; then
        sed "s/^/$PROG: /" "$PRELOAD_LOG" >&2
        return 1
    fi
    sed "s/^/$PROG: /" "$PRELOAD_LOG"
    # Last, so that nothing the steps above wrote as root is left behind root-owned.
    prepare_folders
    log "done: the web UI login is '${ADMIN_USER}' with the password of the secret file airflow_admin_password"
}

# Sourcing the script (tests) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
