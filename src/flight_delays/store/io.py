"""File helpers every step wrapper uses: the formats (Parquet, JSON, bytes) read and
written atomically, content hashes, and a clear error when an upstream artifact is
missing.

Atomic means: a retried or killed task never leaves a half-written artifact behind. On
a local disk the file is written under a temporary name in the destination folder,
flushed and renamed over the final name; in an object store it is uploaded in one PUT,
which makes the object appear whole or not at all (:func:`flight_delays.store.storage.atomic_path`).
Paths are :class:`pathlib.Path` or, for an artifact root in an object store,
:class:`upath.UPath` (:mod:`flight_delays.store.storage`).
"""

from __future__ import annotations

import hashlib
import io as _bytes_io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from flight_delays.store import storage
from flight_delays.store.artifacts import Artifact
from flight_delays.store.storage import ArtifactPath

#: The fix a missing artifact's error names: run the producing step for the same day,
#: in-process and without Airflow (flight_delays.cli). ``make task T=<task> DAY=<day>``
#: runs the same through Airflow (README, "Develop a task alone").
DEV_COMMAND = "python -m flight_delays run {task} --day {day}"


def _day(path: ArtifactPath) -> str:
    """The processed day in the ``ds=YYYY-MM-DD`` part of ``path``, else a placeholder."""
    for part in reversed(path.parts):
        if part.startswith("ds="):
            try:
                return date.fromisoformat(part[3:].rstrip("/")).isoformat()
            except ValueError:
                break
    return "<YYYY-MM-DD>"


class MissingArtifactError(FileNotFoundError):
    """An upstream step's output is not there: names the file and the task that makes it
    (the producer of its catalog entry, :mod:`flight_delays.store.artifacts`)."""

    def __init__(self, path: str | ArtifactPath, artifact: Artifact) -> None:
        self.path = storage.locate(path)
        self.artifact = artifact
        self.task = task = artifact.producer
        command = DEV_COMMAND.format(task=task, day=_day(self.path))
        super().__init__(
            f"missing artifact {self.path}: it is written by the '{task}' task; "
            f"run it first, e.g. `{command}`"
        )


def require(path: str | ArtifactPath, artifact: Artifact) -> ArtifactPath:
    """Return ``path`` (an instance of ``artifact``) if it exists, else raise
    MissingArtifactError naming the artifact's producer."""
    path = storage.locate(path)
    if not path.exists():
        raise MissingArtifactError(path, artifact)
    return path


@contextmanager
def atomic_path(final: str | ArtifactPath, exclusive: bool = False) -> Iterator[Path]:
    """Yield a local temporary path; ``final`` becomes its content if the block succeeds
    (:func:`flight_delays.store.storage.atomic_path`)."""
    with storage.atomic_path(storage.locate(final), exclusive) as tmp:
        yield tmp


def atomic_write(final: str | ArtifactPath, write: Callable[[Path], Any]) -> ArtifactPath:
    """Call ``write(tmp_path)`` and move the result to ``final`` atomically."""
    final = storage.locate(final)
    with atomic_path(final) as tmp:
        write(tmp)
    return final


def write_bytes(data: bytes, final: str | ArtifactPath, exclusive: bool = False) -> ArtifactPath:
    """Write ``data`` to ``final`` atomically (``exclusive``: never replace a file)."""
    final = storage.locate(final)
    with atomic_path(final, exclusive) as tmp:
        tmp.write_bytes(data)
    return final


#: Rows converted to Arrow and written at a time: pyarrow's own largest row group, so the
#: file holds the row groups, and the bytes, that ``frame.to_parquet(index=False)`` writes.
WRITE_ROWS = 1024 * 1024


def write_parquet(frame: pd.DataFrame, final: str | ArtifactPath) -> ArtifactPath:
    """Write ``frame`` (without its index) as Parquet, atomically. Converted to Arrow a row
    group at a time: a whole-frame conversion held a second copy of the frame (a 365-day
    train table at ten times the flights: 900 MiB more at the split step's peak)."""
    schema = pyarrow.Schema.from_pandas(frame, preserve_index=False)

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
            for start in range(0, max(len(frame), 1), WRITE_ROWS):
                part = frame.iloc[start : start + WRITE_ROWS]
                writer.write_table(
                    pyarrow.Table.from_pandas(part, schema=schema, preserve_index=False)
                )

    return atomic_write(final, write)


def json_bytes(payload: Any) -> bytes:
    """How every JSON artifact is written: indented, keys sorted, a final newline."""
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(payload: Any, final: str | ArtifactPath) -> ArtifactPath:
    return write_bytes(json_bytes(payload), final)


@dataclass
class Pinned:
    """An upstream artifact opened once (:func:`pin`): its SHA-256 and a source that
    gives the bytes that were hashed to every read, whatever replaces the file meanwhile.
    The readers below take it in place of a path. :meth:`close` lets the bytes go (the
    hash stays)."""

    path: ArtifactPath
    sha256: str
    _handle: pyarrow.NativeFile | _bytes_io.BytesIO | None

    def source(self) -> pyarrow.NativeFile | _bytes_io.BytesIO:
        """The pinned bytes, from their start."""
        if self._handle is None:
            raise ValueError(f"{self.path} was pinned and closed: pin it again to read it")
        self._handle.seek(0)
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def pin(path: str | ArtifactPath, artifact: Artifact) -> Pinned:
    """Open an upstream artifact for reads that must see the bytes its hash names (a
    model card names what the model was fitted on). On a local disk the open file (an
    Arrow ``OSFile``) is kept: a writer replaces a file by a rename, never in place, so
    the handle keeps the old bytes, and the hash is read through it in chunks, without
    holding the file in memory. In an object store the object is fetched once and kept
    in memory (a read of the whole table fetches it whole anyway) until
    :meth:`Pinned.close`."""
    path = storage.locate(path)
    digest = hashlib.sha256()
    handle: pyarrow.NativeFile | _bytes_io.BytesIO
    if storage.is_local(path):
        try:
            # Arrow's own file: its readers then read natively, not through Python calls.
            handle = pyarrow.OSFile(str(path))
        except FileNotFoundError:
            raise MissingArtifactError(path, artifact) from None
        try:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        except BaseException:
            handle.close()
            raise
    else:
        data = require(path, artifact).read_bytes()
        digest.update(data)
        handle = _bytes_io.BytesIO(data)
    return Pinned(path, digest.hexdigest(), handle)


def read_bytes(path: str | ArtifactPath | Pinned, artifact: Artifact) -> bytes:
    """The bytes of an upstream artifact, read once; a missing file names its producer."""
    if isinstance(path, Pinned):
        return path.source().read()
    return require(path, artifact).read_bytes()


def read_parquet(
    path: str | ArtifactPath | Pinned,
    artifact: Artifact,
    columns: list[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> pd.DataFrame:
    """Read an upstream Parquet artifact; a missing file names the task that makes it.
    ``columns`` and ``filters`` (Arrow's row filters, e.g. ``[("day", ">=", first)]``)
    read a part of it: the rows left out are never made into the frame. Its numeric
    columns may be read-only (see below): copy before writing into them. A
    :class:`Pinned` artifact is read from its pinned bytes."""
    part = {"columns": columns, "filters": filters}
    # Arrow's buffers are released column by column as the frame is built, so the read
    # does not hold the file's table and the frame whole at once (score at 10x and 365
    # days: 2.2 -> 1.8 GB; without split_blocks 2.2 GB). The price: a numeric column
    # without nulls keeps Arrow's memory and is read-only. Nothing here writes into a
    # frame it read; code that does must copy first (``frame = frame.copy()``).
    lean = {"self_destruct": True, "split_blocks": True}
    if isinstance(path, Pinned):
        frame = pd.read_parquet(path.source(), **part, to_pandas_kwargs=lean)
    elif storage.is_local(path := require(path, artifact)):
        frame = pd.read_parquet(path, **part, to_pandas_kwargs=lean)
    else:
        # One GET of the whole object instead of the reader's many small ranged reads.
        source = _bytes_io.BytesIO(path.read_bytes())
        frame = pd.read_parquet(source, **part, to_pandas_kwargs=lean)
    _one_chunk_strings(frame)
    # Arrow's memory pool keeps the pages it decoded for reuse once the frame is built:
    # ~150 MB stayed resident after a 365-day train table was read, through the whole
    # fit (docs/benchmarks.md, "The 365-day window: memory of the train step").
    pyarrow.default_memory_pool().release_unused()
    return frame


def parquet_rows(path: str | ArtifactPath | Pinned, artifact: Artifact) -> int:
    """The rows of an upstream Parquet artifact, from its footer alone: a few small reads,
    in an object store too (ranged GETs), where reading a column fetches the object."""
    if isinstance(path, Pinned):
        return pq.read_metadata(path.source()).num_rows
    with require(path, artifact).open("rb") as source:
        return pq.read_metadata(source).num_rows


def _one_chunk_strings(frame: pd.DataFrame) -> None:
    """Make each Arrow-backed text column of ``frame`` one contiguous array, in place. A
    file read gives a chunk per row group, and grouping by a column of many chunks is
    slower: the past-day statistics of a 10x, 365-day train table (4 row groups) took
    21 s against 15 s on one chunk. Only the text columns: a few bytes a row."""
    for name, column in frame.items():
        values = column.array
        if not isinstance(values, pd.arrays.ArrowStringArray):
            continue
        # The Arrow protocol's public door to the chunks (no copy for an Arrow array).
        chunks = values.__arrow_array__()
        if chunks.num_chunks > 1:
            joined = type(values)(chunks.combine_chunks(), dtype=values.dtype)
            frame[name] = pd.Series(joined, index=frame.index, name=name, copy=False)


def read_json(path: str | ArtifactPath | Pinned, artifact: Artifact) -> Any:
    return json.loads(read_bytes(path, artifact))


def sha256(path: str | ArtifactPath) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with storage.locate(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
