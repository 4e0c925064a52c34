"""The errors a retry cannot fix.

Every exception below names what is wrong with the data, the settings or a file, and
running the same task again with the same inputs gives the same error. The DAG maps
:class:`PipelineDataError` to Airflow's fail-fast exception so that such a failure is
reported at once instead of after the task's retries; src/ itself stays free of Airflow.
Transient faults (a database that refuses connections, a full disk) are not
subclasses: they keep their own types and are retried.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class PipelineDataError(ValueError):
    """Bad input data, settings or artifacts: retrying cannot help; a person must act."""


def failing_fast(fail: type[Exception]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that re-raises :class:`PipelineDataError` from the wrapped step as
    ``fail`` (the DAGs pass Airflow's ``AirflowFailException``: the task fails at once,
    without its retries), with the error's type and message. Every other error keeps
    its type, so it is retried."""

    def decorate(step: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(step)  # PythonOperator reads the step's signature through this
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return step(*args, **kwargs)
            except PipelineDataError as exc:
                raise fail(f"{type(exc).__name__}: {exc}") from exc

        return run

    return decorate
