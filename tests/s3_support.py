"""An S3 server for tests: moto's server mode (``moto[server]``) started in-process on a
free port, and the environment that points s3fs (through botocore) at it with fake
credentials. Used by tests/unit/test_storage_s3.py and the plugin's S3 test."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's S3 server in a thread; yield its endpoint URL; stop it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def point_s3_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, tmp_path: object) -> None:
    """The environment of a worker whose S3 is ``endpoint``: fake credentials, no profile
    or instance metadata, and no file system built for another endpoint before."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", f"{tmp_path}/no-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", f"{tmp_path}/no-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # fsspec caches file systems by their options, not by the environment they read.
    s3fs.S3FileSystem.clear_instance_cache()


def new_bucket() -> str:
    """Create a bucket with a fresh name (in the server the environment points at)."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(use_listings_cache=False).mkdir(name)
    return name
