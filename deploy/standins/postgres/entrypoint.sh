#!/bin/bash
# Entrypoint of the postgres stand-in (written for this project; see its Dockerfile for
# the interface it honours). `postgres [args]` runs the server; anything else runs as is.
set -euo pipefail

if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi

if [[ $(id -u) == 0 ]]; then
    # Root only to own the data folder, then the same script again as postgres.
    install -d -o postgres -g postgres -m 0700 "$PGDATA"
    chown -R postgres:postgres "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

# The official image's POSTGRES_PASSWORD_FILE: the password read from that file (read
# here, as the postgres user, as the official entrypoint reads it); exclusive with
# POSTGRES_PASSWORD.
if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
    if [[ -n ${POSTGRES_PASSWORD:-} ]]; then
        echo "postgres stand-in: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set (they are exclusive)" >&2
        exit 1
    fi
    POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
    unset POSTGRES_PASSWORD_FILE
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
        echo "postgres stand-in: POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is not set: refusing to initialise $PGDATA" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"

    # The init scripts run against a server no other container can reach yet.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    export PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD
    if [[ $POSTGRES_DB != postgres ]]; then
        psql --no-psqlrc -v ON_ERROR_STOP=1 --dbname=postgres \
            --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    shopt -s nullglob
    for file in /docker-entrypoint-initdb.d/*; do
        case "$file" in
            *.sh)
                echo "postgres stand-in: running $file"
                if [[ -x $file ]]; then "$file"; else
                    # shellcheck disable=SC1090
                    . "$file"
                fi
                ;;
            *.sql)
                echo "postgres stand-in: running $file"
                psql --no-psqlrc -v ON_ERROR_STOP=1 --dbname="$POSTGRES_DB" -f "$file"
                ;;
            *) echo "postgres stand-in: ignoring $file" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres stand-in: cluster initialised (UTF8, C.UTF-8)"
fi

shift
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
