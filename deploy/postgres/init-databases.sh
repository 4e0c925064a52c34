#!/usr/bin/env bash
# Creates the two databases of the docker-compose stack, each owned by its own login role:
#   airflow    the Airflow metastore        role AIRFLOW_DB_USER   (default airflow)
#   warehouse  the flights source (demo)    role WAREHOUSE_DB_USER (default warehouse)
# Neither role is a superuser or can reach the other's database; the superuser
# (POSTGRES_USER, password POSTGRES_PASSWORD) is used by nothing but this script.
#
# The postgres image runs this once, from /docker-entrypoint-initdb.d/, when its data
# volume is empty. Passwords changed in .env later do not reach an existing volume: change
# them with ALTER ROLE, or drop the volume (docker compose down -v: it deletes the data).
set -euo pipefail

AIRFLOW_DB_USER=${AIRFLOW_DB_USER:-airflow}
WAREHOUSE_DB_USER=${WAREHOUSE_DB_USER:-warehouse}
AIRFLOW_DB_NAME=${AIRFLOW_DB_NAME:-airflow}
WAREHOUSE_DB_NAME=${WAREHOUSE_DB_NAME:-warehouse}

# Each password comes from NAME, or from the file NAME_FILE names (docker-compose.yaml
# mounts the secrets as files), as the postgres image does with POSTGRES_PASSWORD_FILE;
# both at once is refused, as it does.
from_file() {
    local name=$1 file_name="${1}_FILE"
    local file=${!file_name:-}
    if [[ -n ${!name:-} && -n $file ]]; then
        echo "init-databases: both $name and $file_name are set: choose one" >&2
        exit 1
    fi
    if [[ -n $file ]]; then
        if [[ ! -r $file ]]; then
            echo "init-databases: $file_name names $file, which is missing or unreadable" >&2
            exit 1
        fi
        printf -v "$name" '%s' "$(<"$file")"
    fi
}
from_file AIRFLOW_DB_PASSWORD
from_file WAREHOUSE_DB_PASSWORD

missing=()
[[ -n ${AIRFLOW_DB_PASSWORD:-} ]] || missing+=("AIRFLOW_DB_PASSWORD (role $AIRFLOW_DB_USER, metastore database $AIRFLOW_DB_NAME)")
[[ -n ${WAREHOUSE_DB_PASSWORD:-} ]] || missing+=("WAREHOUSE_DB_PASSWORD (role $WAREHOUSE_DB_USER, database $WAREHOUSE_DB_NAME)")
if ((${#missing[@]})); then
    echo "init-databases: refusing to create roles without passwords; set (or their _FILE):" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

# psql variables (:"name" quotes an identifier, :'name' a literal) keep the names and
# passwords out of the SQL text: no quoting bugs, no injection.
psql --no-psqlrc -v ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set=airflow_user="$AIRFLOW_DB_USER" --set=airflow_password="$AIRFLOW_DB_PASSWORD" \
    --set=airflow_db="$AIRFLOW_DB_NAME" \
    --set=warehouse_user="$WAREHOUSE_DB_USER" --set=warehouse_password="$WAREHOUSE_DB_PASSWORD" \
    --set=warehouse_db="$WAREHOUSE_DB_NAME" <<'SQL'
CREATE ROLE :"airflow_user" LOGIN PASSWORD :'airflow_password';
CREATE DATABASE :"airflow_db" OWNER :"airflow_user";
REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;

CREATE ROLE :"warehouse_user" LOGIN PASSWORD :'warehouse_password';
CREATE DATABASE :"warehouse_db" OWNER :"warehouse_user";
REVOKE ALL ON DATABASE :"warehouse_db" FROM PUBLIC;
SQL

echo "init-databases: created database $AIRFLOW_DB_NAME (owner $AIRFLOW_DB_USER) and $WAREHOUSE_DB_NAME (owner $WAREHOUSE_DB_USER)"
