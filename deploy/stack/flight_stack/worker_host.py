"""The name a Celery worker of the stack gives its task instances: Airflow's
``[core] hostname_callable`` in the workers' environment (supervisord-celery.conf).

Airflow records the host that ran each task instance (``hostname`` in the REST API and
the UI) from this callable, by default the machine's name. The stack's two workers share
one machine, so each says its own name, the one it has in Celery (``--celery-hostname``):
STACK_WORKER_NAME. Elsewhere (no such variable) it is the machine's name, as Airflow's
default. Standard library only: the task processes import it from deploy/stack
(PYTHONPATH).
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """STACK_WORKER_NAME, else the fully qualified name of this machine."""
    return os.environ.get("STACK_WORKER_NAME") or socket.getfqdn()
