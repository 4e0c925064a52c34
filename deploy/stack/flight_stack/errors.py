"""The stack's one error type, in a module of its own: docker-compose's image carries
preload.py with it alone (airflow-init's check of the preload list), not the stack."""

from __future__ import annotations


class StackError(RuntimeError):
    """Something the operator has to fix; the message says what."""
