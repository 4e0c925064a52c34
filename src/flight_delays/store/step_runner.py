"""The step runner: everything a step does around its pure core, written once.

A step module declares one :class:`Step`: the catalog entries it reads, requires and
writes, a ``load`` hook for inputs that are not one file of the day (the registry's
history, the window's partitions, the champion; it gets the run and the files read), its
pure ``core``, and a ``record`` hook for what it writes beside the files (the
registry). ``Step.run`` (each step's ``run``, what the DAG's tasks, ``make step`` and
``make task`` call) then:

1. resolves the settings (include/params.yaml under the project root), the processed
   day, the run id and the warehouse URLs (an argument, e.g. from Airflow's connection,
   wins over params.yaml: docs/guide-own-warehouse.md);
2. reads the ``reads`` entries for the day and checks that the ``requires`` entries
   exist (a missing file raises :class:`flight_delays.store.io.MissingArtifactError`
   naming the task that writes it), before any work; then calls ``load``;
3. calls ``core(day, params, **inputs)``, which sees frames, dicts and settings, never a
   path, and returns a :class:`Result`;
4. writes the result's outputs atomically where the catalog puts them (a frame or an
   Arrow table as Parquet, a dict as JSON, bytes (a model, a PNG) and text as they are);
5. calls ``record`` with the written locations and their SHA-256 (a card also names
   its inputs' SHA-256, taken from the bytes the step read: :class:`Step`);
6. logs the step's one summary line (the core's text, the seconds, the outputs) and
   returns the XCom dict: each output's location
   (a string, an ``s3://`` URL under an object-store root) and the core's summary.

Two kinds of writes do not go through the runner. The partition caches that a ``load``
hook fills as it reads (ingest's write-once raw partitions and quarantine, the day
feature partitions of featurize and predict) are written by the layers that own them,
atomically too. And the score step is the one exception for a step's outputs, written
down in :mod:`flight_delays.score`: it reads, decides and records inside one registry
transaction that it retries, so its load hook is that transaction and writes the
day's predictions, metrics and model card itself.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flight_delays.base.dates import parse_day
from flight_delays.store import io, registry
from flight_delays.store.artifacts import Artifact
from flight_delays.store.config import Settings, load_settings, new_run_id
from flight_delays.store.storage import ArtifactPath


@dataclass
class Result:
    """What a core returns: ``outputs`` by the step's ``writes`` names (an output left
    out is not written; a group is a dict by member name), ``summary`` (plain values: the
    XCom dict and the log line's figures) and ``line``, the summary line's text after
    ``"<step> <day>: "``."""

    outputs: dict[str, Any]
    summary: dict[str, Any]
    line: str


@dataclass(frozen=True)
class Written:
    """An output the runner wrote: its location and the SHA-256 of its bytes (None for a
    Parquet file, whose bytes nothing checks)."""

    path: ArtifactPath
    sha256: str | None


@dataclass
class StepRun:
    """One run of a step, as the runner resolved it; what ``load`` and ``record`` get.
    ``options`` holds the step's own arguments (ingest's ``refetch`` and ``now``)."""

    day: date
    settings: Settings
    run_id: str | None
    registry_url: str
    source_url: str
    options: dict[str, Any] = field(default_factory=dict)
    #: Where each ``reads`` and ``requires`` entry is, for the ``load`` hook: the
    #: location, or for a step that writes a card the artifact pinned
    #: (:class:`flight_delays.store.io.Pinned`), which the readers of
    #: :mod:`flight_delays.store.io` take in place of a path.
    sources: dict[str, Any] = field(default_factory=dict)
    _engine: Any = None

    @property
    def root(self) -> ArtifactPath:
        """The artifact root (for the hooks; a core never sees it)."""
        return self.settings.paths.root

    def registry(self) -> Any:
        """The registry's engine, connected (and migrated) once, disposed by the runner."""
        if self._engine is None:
            self._engine = registry.connect(self.registry_url)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


Params = Callable[[Settings], Any]
Core = Callable[..., Result]
Load = Callable[[StepRun, dict[str, Any]], dict[str, Any]]
Record = Callable[[StepRun, dict[str, Any], Result], dict[str, Any]]


def _no_params(_settings: Settings) -> None:
    return None


@dataclass(frozen=True)
class Step:
    """A step's declaration (see the module's docstring). ``writes`` values are catalog
    entries, or a dict of them (a group: the XCom holds a list of their locations).
    ``requires``: entries that must exist and are named in the card, but that the runner
    does not hand to the core (a ``load`` hook may read them, through ``run.sources``;
    for a step with a card, the runner reads each once to hash it, see below).
    ``card``: the name of a JSON output (a model card) that the runner completes with
    the run id, each ``reads`` and ``requires`` entry's location and SHA-256 under
    ``"inputs"``, and each output written before it under its own name (the outputs are
    written in the order of ``writes``). The inputs of such a step are pinned when the
    run starts (:func:`flight_delays.store.io.pin`): hashed as they are opened, and read
    from the bytes hashed, so the card names what the step read even if an input is
    replaced meanwhile (a re-split), and no input is fetched again for its hash. In an
    object store that read is the one GET of the object, kept in memory until the
    ``load`` hook returns.
    ``run_id``: the step names its outputs or its registry rows by the run id (a new
    local one, :func:`flight_delays.store.config.new_run_id`, when none is given).
    ``options``: the step's own keyword arguments (ingest's ``refetch`` and ``now``);
    any other is refused, so a misspelt one cannot be dropped without a word."""

    name: str
    core: Core
    reads: Mapping[str, Artifact] = field(default_factory=dict)
    requires: Mapping[str, Artifact] = field(default_factory=dict)
    writes: Mapping[str, Artifact | Mapping[str, Artifact]] = field(default_factory=dict)
    params: Params = _no_params
    load: Load | None = None
    record: Record | None = None
    card: str | None = None
    run_id: bool = False
    options: tuple[str, ...] = ()

    def run(
        self,
        day: str | date,
        root: str | Path | None = None,
        params_file: str | Path | None = None,
        *,
        registry_url: str | None = None,
        source_url: str | None = None,
        run_id: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Run the step for ``day`` (module docstring); return its XCom dict."""
        started = time.perf_counter()
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(
                f"step {self.name} takes no option {', '.join(unknown)} "
                f"(its options: {', '.join(self.options) or 'none'})"
            )
        run = resolve(day, root, params_file, registry_url, source_url, run_id, self.run_id)
        run.options = options
        # Every location of the run, named once by the catalog.
        where = {
            name: _paths(entry, run)
            for name, entry in {**self.reads, **self.requires, **self.writes}.items()
        }
        pinned: dict[str, io.Pinned] = {}
        try:
            inputs_of = {**self.reads, **self.requires}
            if self.card is not None:
                # The card names the bytes the step read: each input is hashed as it is
                # opened, and every read of it sees those bytes (io.pin).
                for name, entry in inputs_of.items():
                    pinned[name] = io.pin(where[name], entry)
            else:
                for name, entry in self.requires.items():
                    io.require(where[name], entry)
            run.sources = {name: pinned.get(name, where[name]) for name in inputs_of}
            inputs = {name: read(entry, run.sources[name]) for name, entry in self.reads.items()}
            if self.load is not None:
                inputs.update(self.load(run, inputs))
            # What was pinned is let go before the work: only the hashes are kept.
            for source in pinned.values():
                source.close()
            result = self.core(run.day, self.params(run.settings), **inputs)
            unknown = _undeclared(result.outputs, self.writes)
            if unknown:
                raise ValueError(
                    f"step {self.name} returned outputs it does not declare: {unknown}"
                )
            written: dict[str, Any] = {}
            for name in self.writes:
                if name not in result.outputs:
                    continue
                value = result.outputs[name]
                if name == self.card:
                    value = self._completed_card(value, run, pinned, written)
                written[name] = write(value, where[name])
            returned = {name: _locations(w) for name, w in written.items()} | result.summary
            if self.record is not None:
                returned |= self.record(run, written, result)
        finally:
            for source in pinned.values():
                source.close()
            run.close()
        logging.getLogger(f"flight_delays.{self.name}").info(
            "%s %s: %s in %.1f s%s",
            self.name,
            run.day,
            result.line,
            time.perf_counter() - started,
            " -> " + ", ".join(f"{name} {_shown(w)}" for name, w in written.items())
            if written
            else "",
        )
        return returned

    def _completed_card(
        self,
        card: dict[str, Any],
        run: StepRun,
        pinned: dict[str, io.Pinned],
        written: dict[str, Any],
    ) -> dict[str, Any]:
        inputs = {
            name: {"path": str(source.path), "sha256": source.sha256}
            for name, source in pinned.items()
        }
        outputs = {
            name: {"path": str(w.path), "sha256": w.sha256}
            for name, w in written.items()
            if isinstance(w, Written)
        }
        return {**card, "run_id": run.run_id, "inputs": inputs, **outputs}


def resolve(
    day: str | date,
    root: str | Path | None,
    params_file: str | Path | None,
    registry_url: str | None = None,
    source_url: str | None = None,
    run_id: str | None = None,
    names_run: bool = False,
) -> StepRun:
    """The settings, day, run id and warehouse URLs of one run (an argument wins over
    params.yaml)."""
    settings = load_settings(root, params_file)
    processed = parse_day(day)
    return StepRun(
        day=processed,
        settings=settings,
        run_id=(run_id or new_run_id(processed)) if names_run else run_id,
        registry_url=registry_url or settings.registry_url,
        source_url=source_url or settings.source_url,
    )


def _undeclared(outputs: dict[str, Any], writes: Mapping[str, Any]) -> list[str]:
    """The outputs (and members of a group, ``group/member``) that ``writes`` lacks."""
    found = []
    for name, value in outputs.items():
        if name not in writes:
            found.append(name)
        elif isinstance(writes[name], Mapping):
            found += [f"{name}/{m}" for m in value if m not in writes[name]]
    return sorted(found)


def _paths(entry: Artifact | Mapping[str, Artifact], run: StepRun) -> Any:
    """Where ``entry`` (or each member of a group) lives for the run."""
    if isinstance(entry, Mapping):
        return {name: _paths(member, run) for name, member in entry.items()}
    return entry.path(run.root, run.day, run.run_id)


def read(entry: Artifact, path: ArtifactPath | io.Pinned) -> Any:
    """``entry`` at ``path`` as a frame (Parquet), a dict (JSON) or bytes."""
    if entry.format == "parquet":
        return io.read_parquet(path, entry)
    if entry.format == "json":
        return io.read_json(path, entry)
    return io.read_bytes(path, entry)


def write(value: Any, path: ArtifactPath | Mapping[str, ArtifactPath]) -> Any:
    """Write ``value`` atomically at ``path``; a group (a dict of paths) writes each
    member and returns the list of them."""
    if isinstance(path, Mapping):
        return [write(member, path[name]) for name, member in value.items()]
    if isinstance(value, pd.DataFrame):
        return Written(io.write_parquet(value, path), None)
    if isinstance(value, pa.Table):
        # What DataFrame.to_parquet(index=False) writes for the table's frame: the same bytes.
        return Written(
            io.atomic_write(path, lambda tmp: pq.write_table(value, tmp, compression="snappy")),
            None,
        )
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, bytes):
        value = io.json_bytes(value)
    # The hash is taken from the bytes written, not read back from the file.
    return Written(io.write_bytes(value, path), hashlib.sha256(value).hexdigest())


def _shown(written: Written | list[Written]) -> str:
    """An output's location for the log line; a group's folder."""
    if isinstance(written, list):
        return f"{posixpath.dirname(str(written[0].path))}/" if written else "(none)"
    return str(written.path)


def _locations(written: Written | list[Written]) -> str | list[str]:
    if isinstance(written, list):
        return [str(w.path) for w in written]
    return str(written.path)
