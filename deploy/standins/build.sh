#!/usr/bin/env bash
# Builds the stand-ins of the official images docker-compose.yaml names, for machines that
# cannot pull them (no public image registry): the Debian base (make-base.sh), then
# airflow, postgres, redis and moto from their Dockerfiles here. What each honours:
# docs/docker-compose.md, "Stand-ins". Docker's cache makes a second run take seconds.
#
#   deploy/standins/build.sh [airflow postgres redis moto]     default: all four
#
# CA bundle: CA_BUNDLE (default $SSL_CERT_FILE, when set) is handed to the pip steps as the
# BuildKit secret ca_bundle, never stored in an image. Prints the .env lines that select
# the stand-ins.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${STANDIN_PREFIX:-flight-delays-standin}
BASE=${STANDIN_BASE_IMAGE:-$PREFIX/debian:bookworm}
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-}}

declare -A TAGS=(
    [airflow]=$PREFIX/airflow:3.3.2-python3.11
    [postgres]=$PREFIX/postgres:15-bookworm
    [redis]=$PREFIX/redis:7.2-bookworm
    [moto]=$PREFIX/moto:5.2.5
)
declare -A VARIABLES=([airflow]=AIRFLOW_IMAGE [postgres]=POSTGRES_IMAGE [redis]=REDIS_IMAGE [moto]=MOTO_IMAGE)

# `RUN --mount` needs BuildKit. Docker 23+ builds with buildx; Debian's docker.io (20.10)
# has BuildKit built in, behind DOCKER_BUILDKIT=1, and a newer CLI without buildx refuses
# DOCKER_BUILDKIT=1: use Debian's own CLI then (DOCKER_CLI overrides).
docker_cli() {
    if [[ -n ${DOCKER_CLI:-} ]]; then
        echo "$DOCKER_CLI"
    elif docker buildx version >/dev/null 2>&1; then
        command -v docker
    elif [[ -x /usr/bin/docker ]]; then
        echo /usr/bin/docker
    else
        command -v docker
    fi
}
DOCKER=$(docker_cli)

"$HERE/make-base.sh" "$BASE" >&2
secret=()
if [[ -n $CA_BUNDLE ]]; then
    [[ -r $CA_BUNDLE ]] || {
        echo "build.sh: CA bundle $CA_BUNDLE is not readable" >&2
        exit 1
    }
    secret=(--secret "id=ca_bundle,src=$CA_BUNDLE")
fi
names=("$@")
((${#names[@]})) || names=(airflow postgres redis moto)
for name in "${names[@]}"; do
    [[ -n ${TAGS[$name]:-} ]] || {
        echo "build.sh: no stand-in named $name (airflow, postgres, redis, moto)" >&2
        exit 1
    }
    start=$SECONDS
    DOCKER_BUILDKIT=1 "$DOCKER" build --quiet "${secret[@]}" --build-arg "STANDIN_BASE=$BASE" \
        --tag "${TAGS[$name]}" "$HERE/$name" >/dev/null
    echo "build.sh: ${TAGS[$name]} ($((SECONDS - start)) s)" >&2
done
for name in "${names[@]}"; do
    echo "${VARIABLES[$name]}=${TAGS[$name]}"
done
