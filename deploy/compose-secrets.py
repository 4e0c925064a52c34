#!/usr/bin/env python3
"""Generates the secret files of docker-compose.yaml (docs/docker-compose.md, "Secrets").

    python3 deploy/compose-secrets.py [FOLDER]      default: ./secrets (git-ignored)

Each secret is one file in FOLDER, which docker-compose.yaml hands to the services that
use it (`secrets:`, mounted at /run/secrets/<name>): no secret is an environment value.
A file that exists is kept, so running it again only adds what is missing, and a value of
your own (a password, your bucket's keys in aws_credentials) is never replaced. The
folder is made private (0700): the files in it are 0644 because Compose bind-mounts them
with their host owner and mode, and each container reads them as its own user (postgres,
redis, AIRFLOW_UID), none of which is the host user. Standard library only: any python3.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path


def _hex(nbytes: int) -> Callable[[], str]:
    # Hex: safe inside database and broker URLs with no percent-encoding.
    return lambda: secrets.token_hex(nbytes)


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _aws_credentials() -> str:
    # For the s3 profile's moto server, which takes any keys. For a bucket of your own,
    # put its keys here (botocore's shared-credentials format).
    return (
        "[default]\n"
        f"aws_access_key_id = {secrets.token_hex(10).upper()}\n"
        f"aws_secret_access_key = {secrets.token_urlsafe(30)}\n"
    )


#: name -> (generator, what it is). The names are those of docker-compose.yaml's secrets.
SECRETS: dict[str, tuple[Callable[[], str], str]] = {
    "postgres_password": (_hex(24), "PostgreSQL superuser 'postgres' (first start only)"),
    "airflow_db_password": (_hex(24), "role 'airflow', owner of the metastore"),
    "warehouse_db_password": (_hex(24), "role 'warehouse', owner of the warehouse"),
    "airflow_fernet_key": (_fernet_key, "[core] fernet_key: keep it, it encrypts the metastore"),
    "airflow_jwt_secret": (_hex(32), "[api_auth] jwt_secret, shared by every component"),
    "airflow_api_secret_key": (_hex(32), "[api] secret_key, shared by every component"),
    "airflow_admin_password": (lambda: secrets.token_urlsafe(18), "web UI user 'admin'"),
    "redis_password": (_hex(24), "the Celery broker (profile celery)"),
    "flower_basic_auth": (lambda: f"admin:{secrets.token_hex(16)}", "flower's login user:password"),
    "aws_credentials": (_aws_credentials, "S3 keys of the artifact bucket (celery, s3)"),
}


class SecretsError(Exception):
    pass


def private_folder(folder: Path) -> None:
    """Create ``folder`` 0700, or make an existing one of ours 0700. A symlink or a folder
    of another user is refused: the secrets would land where someone else controls."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SecretsError(f"{folder} is not a plain folder (a symlink or a file): refusing")
    if info.st_uid != os.geteuid():
        raise SecretsError(f"{folder} belongs to uid {info.st_uid}, not to you: refusing")
    os.chmod(folder, 0o700)


def ensure(folder: Path) -> list[str]:
    """Write every missing secret file of ``folder``; returns the names written. An empty
    existing file is an error (it would be an empty password), naming the file."""
    private_folder(folder)
    written = []
    for name, (make, _what) in SECRETS.items():
        path = folder / name
        if path.is_symlink():
            raise SecretsError(f"{path} is a symlink: refusing")
        if path.exists():
            if not path.read_text().strip():
                raise SecretsError(f"{path} is empty: delete it to generate one, or fill it in")
            continue
        # O_EXCL|O_NOFOLLOW: never through a file or link that appeared meanwhile.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as stream:
            stream.write(make().rstrip("\n") + "\n")
        os.chmod(path, 0o644)  # whatever the umask: the containers' users read it
        written.append(name)
    return written


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python3 deploy/compose-secrets.py [FOLDER]", file=sys.stderr)
        return 2
    folder = Path(argv[0] if argv else "secrets")
    try:
        written = ensure(folder)
    except (SecretsError, OSError) as exc:
        print(f"compose-secrets: {exc}", file=sys.stderr)
        return 1
    for name in SECRETS:
        state = "generated" if name in written else "kept"
        print(f"compose-secrets: {folder / name}: {state} ({SECRETS[name][1]})")
    print(f"compose-secrets: web UI login: admin / the password in {folder}/airflow_admin_password")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
