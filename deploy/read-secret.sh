#!/bin/sh
# Prints one secret of the docker-compose stack, read from its file: the `_CMD` of an
# Airflow setting (docker-compose.yaml), so that no secret value is ever an environment
# variable of a container (docker inspect) or of the tasks it runs.
#
#   read-secret.sh NAME [FORMAT]
#
# NAME is a file of the secrets folder, /run/secrets in the containers (compose's
# `secrets:`; SECRETS_PATH overrides it, for the tests). FORMAT, a printf format with one
# %s, builds a value around it (a database URL). The file's trailing newline is dropped
# ($(cat) strips it): an editor's newline must not end up in a key or a URL.
# Exits non-zero, naming the file, when it is missing or empty: Airflow then fails with
# that message instead of connecting with an empty password.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: read-secret.sh NAME [PRINTF-FORMAT]" >&2
    exit 2
fi
case $1 in
    */* | .*)
        echo "read-secret.sh: '$1' is not a secret name (no path, no leading dot)" >&2
        exit 2
        ;;
esac
file=${SECRETS_PATH:-/run/secrets}/$1
if [ ! -r "$file" ]; then
    echo "read-secret.sh: secret file $file is missing or unreadable (docker-compose.yaml gives each service only the secrets it uses; deploy/compose-secrets.py generates them)" >&2
    exit 1
fi
value=$(cat "$file")
if [ -z "$value" ]; then
    echo "read-secret.sh: secret file $file is empty" >&2
    exit 1
fi
# shellcheck disable=SC2059 # the format is the caller's, by design
printf "${2:-%s}" "$value"
