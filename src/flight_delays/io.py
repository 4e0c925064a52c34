"""File helpers every step wrapper uses: atomic writes, content hashes, and a clear
error when an upstream artifact is missing.

Atomic means: write to a temporary name in the destination folder, flush it to disk,
then rename it over the final name. A rename within one file system is atomic, so a
retried or killed task never leaves a half-written artifact behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from flight_delays.artifacts import Artifact

#: The fix a missing artifact's error names: run the producing step for the same day,
#: in-process and without Airflow (flight_delays.cli). ``make task T=<task> DAY=<day>``
#: runs the same through Airflow (README, "Develop a task alone").
DEV_COMMAND = "python -m flight_delays run {task} --day {day}"


def _day(path: Path) -> str:
    """The processed day in the ``ds=YYYY-MM-DD`` part of ``path``, else a placeholder."""
    for part in reversed(path.parts):
        if part.startswith("ds="):
            try:
                return date.fromisoformat(part[3:]).isoformat()
            except ValueError:
                break
    return "<YYYY-MM-DD>"


class MissingArtifactError(FileNotFoundError):
    """An upstream step's output is not there: names the file and the task that makes it
    (the producer of its catalog entry, :mod:`flight_delays.artifacts`)."""

    def __init__(self, path: Path, artifact: Artifact) -> None:
        self.path = Path(path)
        self.artifact = artifact
        self.task = task = artifact.producer
        command = DEV_COMMAND.format(task=task, day=_day(self.path))
        super().__init__(
            f"missing artifact {self.path}: it is written by the '{task}' task; "
            f"run it first, e.g. `{command}`"
        )


def require(path: str | Path, artifact: Artifact) -> Path:
    """Return ``path`` (an instance of ``artifact``) if it exists, else raise
    MissingArtifactError naming the artifact's producer."""
    path = Path(path)
    if not path.exists():
        raise MissingArtifactError(path, artifact)
    return path


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; artifacts are shared with other users (web UI, containers).
    tmp.chmod(0o644)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(final: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``final`` atomically."""
    with atomic_path(final) as tmp:
        write(tmp)
    return Path(final)


def write_parquet(frame: pd.DataFrame, final: str | Path) -> Path:
    return atomic_write(final, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(payload: Any, final: str | Path) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write(final, lambda tmp: tmp.write_text(text))


def read_parquet(path: str | Path, artifact: Artifact) -> pd.DataFrame:
    """Read an upstream Parquet artifact; a missing file names the task that makes it."""
    return pd.read_parquet(require(path, artifact))


def read_json(path: str | Path, artifact: Artifact) -> Any:
    return json.loads(require(path, artifact).read_text())


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
