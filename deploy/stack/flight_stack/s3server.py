#!/usr/bin/env python3
"""The celery stack's object store: moto's S3 server on 127.0.0.1, with the bucket of
FLIGHT_DELAYS_STORAGE_URL created as soon as it listens.

    flight_stack/s3server.py      (supervisord-celery.conf runs it, through component.py)

moto keeps every object in this process's memory: the bucket is empty after each start,
so it is created here, every time, rather than once by `up` (supervisord restarts a server
that died, and the tasks find the bucket again). The artifacts of the runs made before a
restart are gone with it (docs/scaling.md says what follows and how to keep them).
Settings: STACK_S3_PORT (the port) and FLIGHT_DELAYS_STORAGE_URL (the bucket), from
supervisord's environment. Runs with the venv's Python (it imports moto); the stack's
other modules do not import it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import urllib.request
from urllib.parse import urlsplit


def bucket_of(url: str) -> str:
    """The bucket of an ``s3://bucket/prefix`` URL; an error naming the setting otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise SystemExit(
            f"FLIGHT_DELAYS_STORAGE_URL={url!r}: the celery stack's S3 server needs "
            "s3://bucket/prefix (deploy/executor-celery.env)"
        )
    return parts.netloc


def main() -> int:
    port = int(os.environ["STACK_S3_PORT"])
    bucket = bucket_of(os.environ.get("FLIGHT_DELAYS_STORAGE_URL", ""))
    from moto.server import ThreadedMotoServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # An unsigned PUT is enough for moto: it checks no credentials. In us-east-1 creating
    # a bucket one already owns is a success, so this is idempotent.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        logging.info("S3 server on 127.0.0.1:%d, bucket %s (%d)", port, bucket, response.status)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    logging.info("stopping the S3 server")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
