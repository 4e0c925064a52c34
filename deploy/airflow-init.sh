#!/usr/bin/env bash
# airflow-init: the one-shot setup service of docker-compose.yaml. Every other Airflow
# service waits for it to finish successfully, so nothing starts on a half-made setup.
#
#   1. refuses to start, naming every missing or malformed secret at once;
#   2. writes the admin password into the simple auth manager's passwords file;
#   3. migrates the metastore (`airflow db migrate`);
#   4. seeds the demo warehouse (idempotent; FLIGHT_DELAYS_SEED_DEMO=false skips it);
#   5. creates the artifact and log folders and hands them to AIRFLOW_UID:0 (when root).
#
# Environment (set by docker-compose.yaml from .env; see .env.example):
#   AIRFLOW__CORE__FERNET_KEY, AIRFLOW__API_AUTH__JWT_SECRET, AIRFLOW_ADMIN_PASSWORD,
#   AIRFLOW_DB_PASSWORD, WAREHOUSE_DB_PASSWORD, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN and
#   AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE (built from those two),
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE,
#   AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS, FLIGHT_DELAYS_HOME, AIRFLOW_HOME, AIRFLOW_UID.
#
# `airflow-init.sh --check-only` runs step 1 alone (used by tests/deploy).
set -euo pipefail

readonly PROG=airflow-init
ADMIN_USER=${AIRFLOW_ADMIN_USER:-admin}
PYTHON=${PYTHON:-python}
FERNET_HOWTO="python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"

log() { printf '%s: %s\n' "$PROG" "$*"; }

declare -A DB_ROLES=(
    [AIRFLOW_DB_PASSWORD]="password of the Postgres role that owns the metastore database 'airflow'"
    [WAREHOUSE_DB_PASSWORD]="password of the Postgres role that owns the 'warehouse' database"
)

# Step 1. Every secret is checked before anything is touched, and all problems are
# reported together: a first `docker compose up` should need one round of fixes.
check_secrets() {
    local problems=() value

    value=${AIRFLOW__CORE__FERNET_KEY:-}
    if [[ -z $value ]]; then
        problems+=("AIRFLOW_FERNET_KEY is missing (AIRFLOW__CORE__FERNET_KEY: the Fernet key that encrypts connection passwords and variables in the metastore). Generate one: $FERNET_HOWTO")
    elif [[ ! $value =~ ^[A-Za-z0-9_-]{43}=(,[A-Za-z0-9_-]{43}=)*$ ]]; then
        problems+=("AIRFLOW_FERNET_KEY is not a Fernet key (44 characters of URL-safe base64 ending in '=', or several separated by commas while rotating). Generate one: $FERNET_HOWTO")
    fi

    value=${AIRFLOW__API_AUTH__JWT_SECRET:-}
    if [[ -z $value ]]; then
        problems+=("AIRFLOW_JWT_SECRET is missing (AIRFLOW__API_AUTH__JWT_SECRET: signs the tokens of the UI, the REST API and the task workers; every component must share it). Generate one: openssl rand -hex 32")
    elif ((${#value} < 32)); then
        problems+=("AIRFLOW_JWT_SECRET is too short (${#value} characters, at least 32). Generate one: openssl rand -hex 32")
    fi

    value=${AIRFLOW_ADMIN_PASSWORD:-}
    if [[ -z $value ]]; then
        problems+=("AIRFLOW_ADMIN_PASSWORD is missing (the password of the web UI user '${ADMIN_USER}'). Choose one, e.g.: openssl rand -base64 18")
    elif ((${#value} < 8)); then
        problems+=("AIRFLOW_ADMIN_PASSWORD is too short (${#value} characters, at least 8)")
    fi

    # The database passwords also reach Airflow inside URIs, where anything but
    # unreserved characters would need percent-encoding.
    local name
    for name in AIRFLOW_DB_PASSWORD WAREHOUSE_DB_PASSWORD; do
        value=${!name:-}
        if [[ -z $value ]]; then
            problems+=("$name is missing (the ${DB_ROLES[$name]}). Generate one: openssl rand -hex 24")
        elif [[ ! $value =~ ^[A-Za-z0-9._~-]+$ ]]; then
            problems+=("$name holds characters that would need percent-encoding in a database URI: use letters, digits and . _ ~ - only, e.g. openssl rand -hex 24")
        fi
    done
    for name in AIRFLOW__DATABASE__SQL_ALCHEMY_CONN AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE; do
        if [[ -z ${!name:-} ]]; then
            problems+=("$name is not set (docker-compose.yaml builds it from the database passwords)")
        fi
    done

    if ((${#problems[@]})); then
        {
            echo "$PROG: refusing to start: ${#problems[@]} problem(s) with the secrets."
            echo "Set them in .env beside docker-compose.yaml (see .env.example), then run 'docker compose up' again:"
            printf '  - %s\n' "${problems[@]}"
        } >&2
        return 1
    fi
    log "secrets present: Fernet key, JWT secret, admin password, metastore and warehouse passwords"
}

warn_uid() {
    if [[ -z ${AIRFLOW_UID:-} ]]; then
        log "WARNING: AIRFLOW_UID is not set: containers run as uid 50000 and the files they"
        log "write in ./data, ./models, ./reports and ./logs will not belong to you."
        log "On Linux: echo \"AIRFLOW_UID=\$(id -u)\" >> .env"
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
    ADMIN_USER=$ADMIN_USER "$PYTHON" - "$file" <<'PY'
import json, os, sys, tempfile
path = sys.argv[1]
try:
    with open(path) as stream:
        passwords = json.loads(stream.read().strip() or "{}")
except FileNotFoundError:
    passwords = {}
passwords[os.environ["ADMIN_USER"]] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".passwords-")
with os.fdopen(fd, "w") as stream:
    stream.write(json.dumps(passwords) + "\n")
os.chmod(tmp, 0o600)
os.replace(tmp, path)
PY
    if [[ $(id -u) == 0 ]]; then
        chown "${AIRFLOW_UID:-50000}:0" "$file"
    fi
    log "password of web UI user '${ADMIN_USER}' written to $file"
}

# Step 3.
migrate() {
    log "migrating the metastore"
    airflow db migrate
}

# Step 4.
seed_warehouse() {
    if [[ ${FLIGHT_DELAYS_SEED_DEMO:-true} != true ]]; then
        log "FLIGHT_DELAYS_SEED_DEMO=${FLIGHT_DELAYS_SEED_DEMO}: demo warehouse not seeded"
        return
    fi
    # The same URI the DAG reads through the flight_delays_warehouse connection.
    log "seeding the demo warehouse (idempotent: cycles already loaded are skipped)"
    "$PYTHON" -m flight_delays.source seed --url "$AIRFLOW_CONN_FLIGHT_DELAYS_WAREHOUSE"
}

# Step 5. Folders the containers write, given to AIRFLOW_UID:0 (group 0 is every
# container user's group). Source folders (dags, plugins, include) are left alone.
prepare_folders() {
    local home=${FLIGHT_DELAYS_HOME:?FLIGHT_DELAYS_HOME is not set}
    local auth_dir
    auth_dir=$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set}")
    local folders=(
        "$home/data/source" "$home/data/raw" "$home/data/interim" "$home/data/processed"
        "$home/data/output" "$home/models" "$home/reports/figures"
        "${AIRFLOW_HOME:-/opt/airflow}/logs"
    )
    mkdir -p "${folders[@]}" "$auth_dir"
    if [[ $(id -u) == 0 ]]; then
        local owner="${AIRFLOW_UID:-50000}:0"
        log "handing ${folders[*]} and $auth_dir to $owner"
        chown -R "$owner" "${folders[@]}" "$auth_dir"
        chmod -R g+rwX "${folders[@]}"  # the passwords file stays 0600
    fi
}

main() {
    check_secrets
    if [[ ${1:-} == --check-only ]]; then
        return 0
    fi
    warn_uid
    write_admin_password
    migrate
    seed_warehouse
    # Last, so that nothing the steps above wrote as root is left behind root-owned.
    prepare_folders
    log "done: the web UI login is '${ADMIN_USER}' with AIRFLOW_ADMIN_PASSWORD from .env"
}

# Sourcing the script (tests) defines the functions without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
