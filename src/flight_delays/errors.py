"""The errors a retry cannot fix.

Every exception below names what is wrong with the data, the settings or a file, and
running the same task again with the same inputs gives the same error. The DAG maps
:class:`PipelineDataError` to Airflow's fail-fast exception so that such a failure is
reported at once instead of after the task's retries; src/ itself stays free of Airflow.
Transient faults (a database that refuses connections, a full disk) are not
subclasses: they keep their own types and are retried.
"""

from __future__ import annotations


class PipelineDataError(ValueError):
    """Bad input data, settings or artifacts: retrying cannot help; a person must act."""
