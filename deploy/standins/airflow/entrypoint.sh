#!/bin/bash
# Entrypoint of the Airflow stand-in (written for this project; its Dockerfile lists the
# interface it honours). Runs the command as given when its first word is `airflow`,
# `bash` or `python`, else as an airflow sub-command. Nothing else: no database wait, no
# admin user (airflow-init does what the project needs).
set -euo pipefail

# Any uid with gid 0 (compose runs AIRFLOW_UID:0): Airflow asks for the user's name
# (getpass), so a uid the image does not know gets an entry, home /home/airflow, as the
# official image does for arbitrary users. /etc/passwd is group 0 and group-writable.
if ! whoami >/dev/null 2>&1 && [[ -w /etc/passwd ]]; then
    echo "default:x:$(id -u):0:default user:/home/airflow:/sbin/nologin" >>/etc/passwd
fi

case "${1:-}" in
    airflow | bash | python | python3) exec "$@" ;;
    *) exec airflow "$@" ;;
esac
