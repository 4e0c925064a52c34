"""The artifact catalog: every file and folder the pipeline reads or writes under the
artifact root, named once, with the task that produces it and its format.

The artifact root is the project root, or the URL in $FLIGHT_DELAYS_STORAGE_URL (any
fsspec file system, e.g. ``s3://bucket/prefix``: :mod:`flight_delays.store.storage`). An entry
marked ``local`` (the embedded SQLite warehouse: a database file cannot live in an object
store) stays under the local project root whatever the artifact root is.

Steps, the report, the summary, the CLI, the backtest, the Airflow plugin and the
notebook take names, paths and producers from here and nowhere else;
:class:`flight_delays.store.config.ProjectPaths` derives its methods from it, and
:class:`flight_delays.store.io.MissingArtifactError` names an entry's producer.

``python -m flight_delays.store.artifacts clean [--root R]`` deletes the per-run artifacts
the catalog marks as derived (``make clean-artifacts``): the source database, the raw
partitions, the quarantine, the superseded partitions and the model store stay.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from flight_delays.store import storage
from flight_delays.store.storage import ArtifactPath

logger = logging.getLogger(__name__)

#: The environment variable that names the project root.
ENV_HOME = "FLIGHT_DELAYS_HOME"

#: The formats an entry can have; ``folder`` is a directory of other artifacts.
FORMATS = ("parquet", "json", "skops", "png", "html", "sqlite", "csv", "markdown", "folder")
#: What fills a placeholder other than {day} and {run_id} (a hash, a version, a figure).
_WORD = r"[^/]+"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Artifact:
    """One artifact: ``template`` is a POSIX path under the project root with
    placeholders ``{day}`` (the processed day, ISO), ``{run_id}`` (a run id,
    percent-encoded when filled in) and others an entry names itself (``{sha256}``).
    ``derived``: an output that ``clean`` deletes (always true of a whole folder of one
    processed day, and of the day feature partitions, which the next run computes again;
    never of the inputs and the content-addressed store).
    ``local``: lives under the local project root, never in the artifact root's object
    store (:attr:`where`)."""

    name: str
    template: str
    producer: str
    format: str
    derived: bool
    description: str
    local: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"artifact {self.name}: unknown format {self.format!r}")
        if PurePosixPath(self.template).is_absolute() or ".." in self.template.split("/"):
            raise ValueError(f"artifact {self.name}: template must stay under the root")

    @property
    def where(self) -> str:
        """``project root`` for a local entry, else ``artifact root``."""
        return "project root" if self.local else "artifact root"

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.template))

    @property
    def filename(self) -> str:
        """The last part of the template (a file's name, for entries without placeholders
        in it)."""
        return PurePosixPath(self.template).name

    def relative(
        self, day: date | str | None = None, run_id: str | None = None, **fields: str
    ) -> str:
        """The template filled in, relative to the root (POSIX)."""
        values: dict[str, str] = dict(fields)
        if day is not None:
            values["day"] = day if isinstance(day, str) else day.isoformat()
        if run_id is not None:
            if not run_id:
                raise ValueError(f"a run id is needed to name {self.name}")
            # Airflow's own ids keep their letters, digits and ``_.~:+-``; anything else is
            # encoded, so no id can name another folder.
            values["run_id"] = quote(run_id, safe=":+")
        missing = [p for p in self.placeholders if p not in values]
        if missing:
            raise ValueError(f"artifact {self.name} needs {', '.join(missing)}")
        return self.template.format(**values)

    def path(
        self,
        root: str | ArtifactPath,
        day: date | str | None = None,
        run_id: str | None = None,
        **fields: str,
    ) -> ArtifactPath:
        """Where the entry lives under ``root`` (a local folder, a UPath or a URL) for
        ``day`` and ``run_id``. A ``local`` entry refuses a root in an object store."""
        relative = self.relative(day, run_id, **fields)
        base = storage.locate(root)
        if self.local and not storage.is_local(base):
            raise ValueError(
                f"artifact {self.name} lives under the local project root, not in {base}"
            )
        return base / relative

    @property
    def family(self) -> str:
        """The fixed folder every instance lives under: the template's parts before the
        first one with a placeholder (``data/processed`` for the features)."""
        parts = []
        for part in PurePosixPath(self.template).parts:
            if _PLACEHOLDER.search(part):
                break
            parts.append(part)
        return "/".join(parts)

    def pattern(self) -> re.Pattern[str]:
        """A regular expression matching the entry's filled-in relative paths."""
        parts = []
        for piece in re.split(r"(\{\w+\})", self.template):
            if piece == "{day}":
                parts.append(r"(?P<day>\d{4}-\d{2}-\d{2})")
            elif _PLACEHOLDER.fullmatch(piece):
                parts.append(_WORD)
            else:
                parts.append(re.escape(piece))
        return re.compile("".join(parts))

    def glob(self) -> str:
        """A glob over every filled-in instance of the entry (each placeholder: ``*``)."""
        return _PLACEHOLDER.sub("*", self.template)

    def instances(self, root: str | ArtifactPath) -> list[ArtifactPath]:
        """Every existing instance of the entry under ``root``, sorted. In an object store
        one recursive listing of the folder above the first placeholder (a glob would
        list each ``ds=`` folder apart: a request per day)."""
        root = storage.locate(root)
        if storage.is_local(root):
            return sorted(root.glob(self.glob()))
        if not self.placeholders:
            path = root / self.template
            return [path] if path.exists() else []
        static = self.template[: self.template.index("{")].rpartition("/")[0]
        pattern = self.pattern()
        names = storage.listing(root, static, folders=self.format == "folder")
        return [root / name for name in names if pattern.fullmatch(name)]

    def days(self, root: str | ArtifactPath) -> list[date]:
        """The processed days that have an instance of the entry under ``root``, sorted."""
        root = storage.locate(root)
        found = set()
        for path in self.instances(root):
            matched = self.pattern().fullmatch(storage.relative(path, root))
            if matched and "day" in matched.groupdict():
                try:
                    found.add(date.fromisoformat(matched["day"]))
                except ValueError:
                    continue  # a folder named like a day that is none
        return sorted(found)


def _a(
    name: str,
    template: str,
    producer: str,
    fmt: str,
    derived: bool,
    description: str,
    local: bool = False,
) -> Artifact:
    return Artifact(name, template, producer, fmt, derived, description, local)


#: The catalog: one row per artifact, in the order the pipeline makes them.
CATALOG: tuple[Artifact, ...] = (
    _a("source", "data/source", "seed", "folder", False,
       "the embedded warehouse's folder (locked while a first run migrates the registry)",
       local=True),
    _a("source_db", "data/source/flights.sqlite", "seed", "sqlite", False,
       "embedded demo warehouse (python -m flight_delays.intake.demo seed)", local=True),
    _a("raw", "data/raw", "ingest", "folder", False,
       "the raw partitions (synced to disk after a partition is renamed into it)"),
    _a("raw_partition", "data/raw/ds={day}", "ingest", "folder", False,
       "one frozen, write-once day of the warehouse"),
    _a("raw_commit", "data/raw/ds={day}/_committed.json", "ingest", "json", False,
       "written last: the partition is complete (its files' SHA-256 and rows)"),
    _a("raw_flights", "data/raw/ds={day}/flights.parquet", "ingest", "parquet", False,
       "the day's flights that passed the data contract"),
    _a("raw_weather", "data/raw/ds={day}/weather.parquet", "ingest", "parquet", False,
       "the day's weather rows that passed the data contract"),
    _a("superseded", "data/raw/superseded/ds={day}", "ingest", "folder", False,
       "earlier partitions of a re-fetched day, v1/, v2/, ... unchanged"),
    _a("quarantine", "data/interim/quarantine/ds={day}", "ingest", "folder", False,
       "the day's rows that broke the data contract"),
    _a("quarantine_flights", "data/interim/quarantine/ds={day}/flights.parquet", "ingest",
       "parquet", False, "quarantined flights with their reasons"),
    _a("quarantine_weather", "data/interim/quarantine/ds={day}/weather.parquet", "ingest",
       "parquet", False, "quarantined weather rows with their reasons"),
    _a("quarantine_summary", "data/interim/quarantine/ds={day}/summary.json", "ingest",
       "json", False, "quarantined rows per check"),
    _a("interim", "data/interim/ds={day}", "ingest", "folder", True,
       "the run's interim folder"),
    _a("manifest", "data/interim/ds={day}/manifest.json", "ingest", "json", True,
       "the window's partitions: rows, SHA-256, quarantined rows"),
    _a("day_features_dir", "data/features/ds={day}", "featurize", "folder", True,
       "one flight day's features, made once, reused by every run whose window holds it"),
    _a("day_features", "data/features/ds={day}/features.parquet", "featurize", "parquet",
       True, "the day's feature rows; its footer holds the raw files' SHA-256 and the "
       "code's fingerprint it was made from, and the day's counts"),
    _a("processed", "data/processed/ds={day}", "featurize", "folder", True,
       "the run's feature tables"),
    _a("features", "data/processed/ds={day}/features.parquet", "featurize", "parquet", True,
       "one feature table over the window"),
    _a("feature_counts", "data/processed/ds={day}/feature_counts.json", "featurize", "json",
       True, "what featurize dropped, masked and averaged"),
    _a("train_table", "data/processed/ds={day}/train.parquet", "split", "parquet", True,
       "training rows with the past-day statistics"),
    _a("holdout_table", "data/processed/ds={day}/holdout.parquet", "split", "parquet", True,
       "holdout rows with the past-day statistics"),
    _a("model_day", "models/ds={day}", "train", "folder", True,
       "the day's models: one run=<run id>/ folder per run"),
    _a("run_model_dir", "models/ds={day}/run={run_id}", "train", "folder", True,
       "one run's model folder"),
    _a("run_model", "models/ds={day}/run={run_id}/model.skops", "train", "skops", True,
       "the challenger the run trained"),
    _a("run_model_card", "models/ds={day}/run={run_id}/model_card.json", "train", "json",
       True, "the run's model card"),
    _a("day_model_card", "models/ds={day}/model_card.json", "score", "json", True,
       "the card of the model the day's metrics describe"),
    _a("model_store", "models/registry", "score", "folder", False,
       "promoted models, content-addressed, written once"),
    _a("stored_model", "models/registry/{sha256}.skops", "score", "skops", False,
       "one promoted model"),
    _a("output", "data/output/ds={day}", "score", "folder", True, "the run's results"),
    _a("predictions", "data/output/ds={day}/predictions.parquet", "score", "parquet", True,
       "predictions for the holdout"),
    _a("metrics", "data/output/ds={day}/metrics.json", "score", "json", True,
       "the recorded run's metrics and decision"),
    _a("served_predictions_day", "data/output/predictions/ds={day}", "predict", "folder",
       True, "the predictions served for one flight day (flight_delays_predict)"),
    _a("served_predictions", "data/output/predictions/ds={day}/predictions.parquet",
       "predict", "parquet", True,
       "every flight scheduled for the day, with the champion's predicted arrival delay"),
    _a("reports", "reports", "chart", "folder", False,
       "every run's report and figures (the Airflow plugin serves this folder)"),
    _a("figures", "reports/figures/ds={day}", "chart", "folder", True, "the run's charts"),
    _a("figure_predicted_vs_actual", "reports/figures/ds={day}/predicted_vs_actual.png",
       "chart", "png", True, "predicted against actual delay"),
    _a("figure_residuals", "reports/figures/ds={day}/residuals.png", "chart", "png", True,
       "residuals"),
    _a("figure_mae_by_hour", "reports/figures/ds={day}/mae_by_hour.png", "chart", "png",
       True, "MAE by scheduled hour"),
    _a("figure_calibration", "reports/figures/ds={day}/calibration.png", "chart", "png",
       True, "calibration"),
    _a("figure_metric_history", "reports/figures/ds={day}/metric_history.png", "chart",
       "png", True, "MAE of every recorded run"),
    _a("figure_drift", "reports/figures/ds={day}/drift.png", "chart", "png", True,
       "input drift: PSI of each feature against the thresholds"),
    _a("report_dir", "reports/ds={day}", "chart", "folder", True, "the run's report"),
    _a("report", "reports/ds={day}/index.html", "chart", "html", True,
       "the run's report page"),
    _a("backtest_dir", "reports/backtest", "backtest", "folder", False,
       "the backtest's results (python -m flight_delays.backtest)"),
    _a("backtest_table", "reports/backtest/backtest.csv", "backtest", "csv", False,
       "one row per replayed run"),
    _a("backtest_markdown", "reports/backtest/backtest.md", "backtest", "markdown", False,
       "the backtest table for docs/benchmarks.md"),
    _a("backtest_chart", "reports/backtest/backtest_mae.png", "backtest", "png", False,
       "MAE of every replayed run"),
)  # fmt: skip

BY_NAME: dict[str, Artifact] = {entry.name: entry for entry in CATALOG}
if len(BY_NAME) != len(CATALOG):  # pragma: no cover - caught by the import in any test
    raise RuntimeError("artifact names must be unique")

SOURCE = BY_NAME["source"]
SOURCE_DB = BY_NAME["source_db"]
RAW = BY_NAME["raw"]
RAW_PARTITION = BY_NAME["raw_partition"]
RAW_COMMIT = BY_NAME["raw_commit"]
RAW_FLIGHTS = BY_NAME["raw_flights"]
RAW_WEATHER = BY_NAME["raw_weather"]
SUPERSEDED = BY_NAME["superseded"]
QUARANTINE = BY_NAME["quarantine"]
QUARANTINE_FLIGHTS = BY_NAME["quarantine_flights"]
QUARANTINE_WEATHER = BY_NAME["quarantine_weather"]
QUARANTINE_SUMMARY = BY_NAME["quarantine_summary"]
INTERIM = BY_NAME["interim"]
MANIFEST = BY_NAME["manifest"]
DAY_FEATURES_DIR = BY_NAME["day_features_dir"]
DAY_FEATURES = BY_NAME["day_features"]
PROCESSED = BY_NAME["processed"]
FEATURES = BY_NAME["features"]
FEATURE_COUNTS = BY_NAME["feature_counts"]
TRAIN_TABLE = BY_NAME["train_table"]
HOLDOUT_TABLE = BY_NAME["holdout_table"]
MODEL_DAY = BY_NAME["model_day"]
RUN_MODEL_DIR = BY_NAME["run_model_dir"]
RUN_MODEL = BY_NAME["run_model"]
RUN_MODEL_CARD = BY_NAME["run_model_card"]
DAY_MODEL_CARD = BY_NAME["day_model_card"]
MODEL_STORE = BY_NAME["model_store"]
STORED_MODEL = BY_NAME["stored_model"]
OUTPUT = BY_NAME["output"]
PREDICTIONS = BY_NAME["predictions"]
METRICS = BY_NAME["metrics"]
SERVED_PREDICTIONS_DAY = BY_NAME["served_predictions_day"]
SERVED_PREDICTIONS = BY_NAME["served_predictions"]
REPORTS = BY_NAME["reports"]
FIGURES = BY_NAME["figures"]
REPORT_DIR = BY_NAME["report_dir"]
REPORT = BY_NAME["report"]
BACKTEST_DIR = BY_NAME["backtest_dir"]
BACKTEST_TABLE = BY_NAME["backtest_table"]
BACKTEST_MARKDOWN = BY_NAME["backtest_markdown"]
BACKTEST_CHART = BY_NAME["backtest_chart"]
#: The chart task's figures by the chart's own key, in the report's order.
FIGURE_ENTRIES: dict[str, Artifact] = {
    entry.name.removeprefix("figure_"): entry
    for entry in CATALOG
    if entry.name.startswith("figure_")
}


def project_root(root: str | Path | None = None, anchor: str | Path | None = None) -> Path:
    """The project root, found one way everywhere: the explicit ``root``, else
    $FLIGHT_DELAYS_HOME, else the project ``anchor`` lies in (a file of the project's
    dags/ or plugins/ folder: the folder above it; the DAG and the Airflow plugin pass
    their own file), else the current directory."""
    if root is not None:
        chosen = Path(root)
    elif os.environ.get(ENV_HOME):
        chosen = Path(os.environ[ENV_HOME])
    elif anchor is not None:
        chosen = Path(anchor).resolve().parents[1]
    else:
        chosen = Path.cwd()
    return chosen.resolve()


def resolve(
    entry: Artifact | str,
    root: str | ArtifactPath,
    day: date | str | None = None,
    run_id: str | None = None,
    **fields: str,
) -> ArtifactPath:
    """The path of ``entry`` (an :class:`Artifact` or its name) under ``root``."""
    artifact = BY_NAME[entry] if isinstance(entry, str) else entry
    return artifact.path(root, day, run_id, **fields)


def asset_uri(entry: Artifact, home: str | Path, storage_url: str | None = None) -> str:
    """The URI naming ``entry``'s family of instances (its :attr:`Artifact.family` folder)
    under the artifact root, for lineage: the DAGs declare their Airflow Assets with it.
    The root is ``storage_url``, else $FLIGHT_DELAYS_STORAGE_URL, else ``home`` (the
    project root), as :func:`flight_delays.store.storage.storage_root` decides; read as text,
    so parsing a DAG loads no file-system driver. A local root becomes a ``file://`` URI
    (under ``home`` when relative), a URL root is kept."""
    url = storage_url if storage_url is not None else os.environ.get(storage.ENV_STORAGE_URL)
    text = (url or "").rstrip("/") or str(home)
    if "://" in text and not text.startswith("file://"):
        base = text
    else:
        local = Path(text.removeprefix("file://"))
        base = (Path(home) / local).resolve().as_uri()
    return f"{base}/{entry.family}" if entry.family else base


def written_by(task: str) -> str:
    """The files ``task`` writes, as the DAGs' docs list them: each entry's template in
    backquotes, ``{day}`` shown as ``D`` and ``{run_id}`` as ``R``."""
    shown = [
        entry.template.replace("{day}", "D").replace("{run_id}", "R")
        for entry in CATALOG
        if entry.producer == task and entry.format != "folder"
    ]
    return ", ".join(f"`{template}`" for template in shown)


#: Lineage: the artifacts the DAGs declare as Airflow Assets, by asset name. Each Asset
#: is the family of one artifact (every processed day's instance lives under its URI,
#: :func:`asset_uri`); ``flight_delays_champion`` gets an event only when the champion
#: changes, and the prediction DAG is scheduled on it.
ASSETS: dict[str, Artifact] = {
    "flight_delays_features": FEATURES,
    "flight_delays_model": RUN_MODEL,
    "flight_delays_metrics": METRICS,
    "flight_delays_report": REPORT,
    "flight_delays_champion": MODEL_STORE,
    "flight_delays_predictions": SERVED_PREDICTIONS,
}


def _leaf_folders() -> tuple[Artifact, ...]:
    """Folder entries the catalog names nothing inside: whatever lies in them is theirs
    (the superseded copies)."""
    return tuple(
        entry
        for entry in CATALOG
        if entry.format == "folder"
        and not any(other.template.startswith(entry.template + "/") for other in CATALOG)
    )


#: Atomic writes go through a hidden temporary name beside the final one:
#: ``.<name>.<random>.tmp`` (flight_delays.store.io.atomic_path, raw_partitions.write_partition).
_TMP = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+\.tmp$")


def match(relative: str | PurePosixPath) -> Artifact | None:
    """The entry a path relative to the root belongs to (a temporary name of an atomic
    write counts as its final name), else None."""
    parts = []
    for part in PurePosixPath(relative).parts:
        tmp = _TMP.match(part)
        parts.append(tmp.group(1) if tmp else part)
    text = "/".join(parts)
    for entry in CATALOG:
        if entry.pattern().fullmatch(text):
            return entry
    for entry in _leaf_folders():
        if re.match(entry.pattern().pattern + "/", text):
            return entry
    return None


def derived_paths(root: str | ArtifactPath) -> Iterator[ArtifactPath]:
    """Every existing instance of a derived entry that no other derived entry holds."""
    root = storage.locate(root)
    derived = [entry for entry in CATALOG if entry.derived]
    outermost = [
        entry
        for entry in derived
        if not any(entry.template.startswith(other.template + "/") for other in derived)
    ]
    for entry in outermost:
        yield from entry.instances(root)


def clean(root: str | ArtifactPath) -> list[ArtifactPath]:
    """Delete the derived per-run artifacts under ``root`` (the artifact root, local or
    in an object store); return what was deleted."""
    removed = []
    for path in derived_paths(root):
        storage.remove(path)
        removed.append(path)
        logger.info("deleted %s", path)
    return removed


def markdown_table() -> str:
    """The catalog as a markdown table (docs/architecture.md holds a copy; a test keeps
    the two equal)."""
    rows = [
        "| name | path | under | producer | format | clean deletes |",
        "|---|---|---|---|---|---|",
    ]
    for entry in CATALOG:
        rows.append(
            f"| {entry.name} | `{entry.template}` | {entry.where} | {entry.producer} | "
            f"{entry.format} | {'yes' if entry.derived else 'no'} |"
        )
    return "\n".join(rows) + "\n"


def folders() -> tuple[str, ...]:
    """The folders the catalog's entries live in whatever the day or run, relative to the
    root (POSIX), sorted (a parent before what it holds): each entry's template up to its
    first placeholder (a file's own name left out), and every folder above. The
    deployment creates them and hands them to the tasks' user (deploy/airflow-init.sh):
    a task must be able to create its ``ds=D`` folder in each."""
    found = set()
    for entry in CATALOG:
        fixed: list[str] = []
        for part in PurePosixPath(entry.template).parts:
            if _PLACEHOLDER.search(part):
                break
            fixed.append(part)
        else:
            if entry.format != "folder":
                fixed.pop()
        found.update("/".join(fixed[:k]) for k in range(1, len(fixed) + 1))
    return tuple(sorted(found))


def main(argv: Sequence[str] | None = None) -> int:
    """``clean``: delete the derived artifacts; ``table``: print the catalog (markdown);
    ``folders``: print :func:`folders`, one per line."""
    parser = argparse.ArgumentParser(prog="python -m flight_delays.store.artifacts")
    commands = parser.add_subparsers(dest="command", required=True)
    clean_cmd = commands.add_parser(
        "clean",
        help="delete the derived per-run artifacts under the artifact root "
        f"(${storage.ENV_STORAGE_URL}, default: the project root)",
    )
    clean_cmd.add_argument("--root", help="project root (default: $FLIGHT_DELAYS_HOME or cwd)")
    commands.add_parser("table", help="print the catalog as a markdown table")
    commands.add_parser(
        "folders", help="print the folders every run writes in, relative to the root"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "table":
        sys.stdout.write(markdown_table())
        return 0
    if args.command == "folders":
        sys.stdout.write("".join(f"{folder}\n" for folder in folders()))
        return 0
    removed = clean(storage.storage_root(project_root(args.root)))
    logger.info("clean: deleted %d artifact(s)", len(removed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
