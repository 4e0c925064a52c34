"""Typed, frozen settings loaded from the project's parameter file (include/params.yaml).

Where things live is decided by the artifact catalog (:mod:`flight_delays.store.artifacts`)
and nowhere else: :func:`project_root` (the one way the DAG, the plugin and the commands
find the root: the caller's, else FLIGHT_DELAYS_HOME, else the project of the caller's
file), :func:`project_paths` (that root and the artifact root: FLIGHT_DELAYS_STORAGE_URL,
a local folder or an fsspec URL, else the project root) and :class:`ProjectPaths`, whose
methods resolve the catalog's entries.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field, fields
from datetime import date, time
from pathlib import Path
from typing import Any

import yaml

from flight_delays.base import schema
from flight_delays.base.errors import PipelineDataError
from flight_delays.store import artifacts, storage
from flight_delays.store.artifacts import ENV_HOME as ENV_HOME  # re-exported: one definition
from flight_delays.store.artifacts import project_root as project_root
from flight_delays.store.storage import ENV_STORAGE_URL as ENV_STORAGE_URL  # re-exported
from flight_delays.store.storage import ArtifactPath

#: Run ids made outside Airflow (the step command, tests, notebooks) start with this:
#: there is no Airflow run to link them to.
LOCAL_RUN_PREFIX = "local__"


def new_run_id(day: date) -> str:
    """The run id of a run made outside a DAG run (the CLI, a test, a notebook): unique,
    so a second run of a day is a run of its own and never the first one's registry row:
    ``local__<day>__<random>``. The one way to make such an id."""
    return f"{LOCAL_RUN_PREFIX}{day.isoformat()}__{uuid.uuid4().hex[:12]}"


ENV_SOURCE_URL = "FLIGHT_DELAYS_SOURCE_URL"
PARAMS_RELATIVE = Path("include") / "params.yaml"


class ConfigError(PipelineDataError):
    """The parameter file is missing, malformed or holds an invalid value."""


@dataclass(frozen=True)
class SourceSettings:
    url: str | None = None


@dataclass(frozen=True)
class IngestSettings:
    window_days: int = 90
    # A fetched day is refused (not frozen) when more than this share of its rows breaks
    # the data contract (flight_delays.intake.contracts); below it, those rows are quarantined.
    max_quarantine_share: float = 0.02
    # A day with fewer flights than this share of the usual count for its weekday looks
    # partly loaded: it is not frozen, and the task is retried. 2013's smallest day
    # (Thanksgiving) has 64 % of its weekday's usual count.
    min_day_share: float = 0.5
    # Late data (docs/monitoring.md): when the processed day D has no rows yet in the
    # warehouse, or looks partly loaded, ingest waits (reschedule mode: no retry is used)
    # until this New York time on D+1 ("HH:MM" or "HH:MM:SS", quoted: YAML reads 3:30
    # as a number), looking again every wait_poke_seconds; then it fails with "late
    # data". A day whose wait is already over (a backfill of old days) fails at once.
    wait_until: str = "03:30"
    wait_poke_seconds: int = 600

    def __post_init__(self) -> None:
        for key in ("max_quarantine_share", "min_day_share"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"ingest.{key} must be in [0, 1], got {getattr(self, key)}")
        # Not checked against the nightly run's end (02:00 + its 2 h timeout): the
        # settings do not know the schedule, which a deployment may move
        # (docs/guide-schedule.md); docs/monitoring.md says to keep it before the end.
        clock_time("ingest.wait_until", self.wait_until)
        if self.wait_poke_seconds < 30:
            # Shorter pokes race Airflow 3.3's report of the previous one (ingest.MIN_POKE).
            raise ConfigError(
                f"ingest.wait_poke_seconds must be >= 30, got {self.wait_poke_seconds}"
            )

    @property
    def wait_until_time(self) -> time:
        return clock_time("ingest.wait_until", self.wait_until)


def clock_time(key: str, value: Any) -> time:
    """A time of day from ``"HH:MM"`` or ``"HH:MM:SS"``; a ConfigError naming ``key``."""
    try:
        return time.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(
            f'{key} must be a time of day, "HH:MM" or "HH:MM:SS" (quoted), got {value!r}'
        ) from None


@dataclass(frozen=True)
class AlertSettings:
    """Alerts (docs/monitoring.md). Where they go is set by the Airflow connections
    ``flight_delays_smtp`` and ``flight_delays_webhook``; these say to whom, how often,
    and the night's deadline."""

    # Mail recipients (comma-separated) and sender, when the SMTP connection exists.
    mail_to: str = "ml-platform@localhost"
    mail_from: str = "flight-delays@localhost"
    # Anti-flood: at most rate_limit_count alerts of one kind per DAG are sent in any
    # rate_limit_minutes; the rest are recorded (table alerts) and counted in the next
    # alert that is sent.
    rate_limit_count: int = 3
    rate_limit_minutes: int = 60

    def __post_init__(self) -> None:
        if self.rate_limit_count < 1 or self.rate_limit_minutes < 1:
            raise ConfigError(
                "alerts.rate_limit_count and alerts.rate_limit_minutes must be >= 1, got "
                f"{self.rate_limit_count} and {self.rate_limit_minutes}"
            )


@dataclass(frozen=True)
class SplitSettings:
    holdout_days: int = 7
    # Days of arrival delays before a row's history cutoff that the past-day statistics
    # summarise (flight_delays.model.history): the recent delay level, and group differences.
    recent_days: int = 7
    history_days: int = 28


@dataclass(frozen=True)
class TrainSettings:
    loss: str = "absolute_error"
    learning_rate: float = 0.05
    max_iter: int = 150
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 2000
    l2_regularization: float = 1.0
    # Share of the features each split may choose from (1.0: all of them).
    max_features: float = 0.5
    random_state: int = 42
    # Day bagging (flight_delays.train.DayBaggedRegressor): the prediction is the mean of
    # bagging_models boosters, each fitted on a random bagging_day_fraction of the
    # training days (whole days). 1 model: a single booster on every day.
    bagging_models: int = 2
    bagging_day_fraction: float = 0.8
    # The most training rows: past it the oldest days are left out, whole days, so the
    # fit's memory stays bounded however many flights a day the warehouse holds (None:
    # no bound). A 365-day window of the real data holds about 320k.
    max_rows: int | None = 1_000_000

    def __post_init__(self) -> None:
        if self.max_rows is not None and (
            isinstance(self.max_rows, bool)
            or not isinstance(self.max_rows, int)
            or self.max_rows < 1
        ):
            raise ConfigError(
                f"train.max_rows must be a whole number >= 1 or null, got {self.max_rows!r}"
            )
        if self.bagging_models < 1:
            raise ConfigError(f"train.bagging_models must be >= 1, got {self.bagging_models}")
        if not 0 < self.bagging_day_fraction <= 1:
            raise ConfigError(
                f"train.bagging_day_fraction must be in (0, 1], got {self.bagging_day_fraction}"
            )
        if not 0 < self.max_features <= 1:
            raise ConfigError(f"train.max_features must be in (0, 1], got {self.max_features}")

    def hyperparameters(self) -> dict[str, Any]:
        """The keyword arguments for HistGradientBoostingRegressor (each booster)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _BAGGING}

    @property
    def bagged(self) -> bool:
        """Whether the model is a day-bagged mean of several boosters."""
        return self.bagging_models > 1

    def bagging(self) -> dict[str, Any]:
        """The day-bagging settings: ``n_models`` and ``day_fraction``."""
        return {"n_models": self.bagging_models, "day_fraction": self.bagging_day_fraction}


# The settings that are not the booster's own (hyperparameters() leaves them out).
_BAGGING = ("bagging_models", "bagging_day_fraction", "max_rows")


@dataclass(frozen=True)
class ScoreSettings:
    within_minutes: float = 15.0
    # A challenger replaces the champion only if its holdout MAE is lower by at least
    # this fraction of the champion's MAE (0.01 = 1 %).
    promotion_margin: float = 0.0
    # Rule 5 (flight_delays.model.promotion.served_step_down): the champion model steps down
    # when its served MAE was worse than the baseline's on the same flights by at least
    # served_margin (a fraction of the baseline's MAE) on served_bad_days of its last
    # served_days served days.
    served_margin: float = 0.08
    served_bad_days: int = 1
    served_days: int = 1
    # A served day scored on fewer flights is not judged (a schedule only partly loaded
    # when the predictions were made). 2013's fewest is 291 (the blizzard of 2013-02-09).
    served_min_flights: int = 100

    def __post_init__(self) -> None:
        if not self.within_minutes >= 0:
            raise ConfigError(f"score.within_minutes must be >= 0, got {self.within_minutes}")
        if not 0 <= self.promotion_margin < 1:
            raise ConfigError(
                f"score.promotion_margin must be in [0, 1), got {self.promotion_margin}"
            )
        if not 0 <= self.served_margin < 10:
            raise ConfigError(f"score.served_margin must be in [0, 10), got {self.served_margin}")
        if self.served_days < 1:
            raise ConfigError(f"score.served_days must be >= 1, got {self.served_days}")
        if self.served_min_flights < 1:
            raise ConfigError(
                f"score.served_min_flights must be >= 1, got {self.served_min_flights}"
            )
        if not 1 <= self.served_bad_days <= self.served_days:
            raise ConfigError(
                f"score.served_bad_days must be in [1, score.served_days = {self.served_days}],"
                f" got {self.served_bad_days}"
            )


#: The features drift is judged on by default: those that describe the flight itself,
#: one value per flight (airline, airports, scheduled hour, distance, scheduled
#: duration). The others (the origin's weather, the day's departure counts, the past-day
#: delay statistics) hold a few values per day, one draw of the day's weather or delays:
#: against a 90-day window a normal day's PSI is 0.2 to 10 for them (docs/monitoring.md,
#: "Input drift"), so they are measured and shown, never alerted on.
DRIFT_WATCHED = ("carrier", "origin", "dest", schema.SCHED_HOUR, "distance", "sched_block_minutes")


@dataclass(frozen=True)
class DriftSettings:
    """Input drift (flight_delays.monitor.drift): PSI of each feature, the processed day's flights
    against the training window's. PSI is unitless."""

    # A day (or window) with fewer flights is not measured: the reason is reported and
    # nothing is flagged (sampling noise alone is about (buckets - 1) / rows).
    min_rows: int = 300
    # A watched feature at or above warn is listed as warned; at or above alert, flagged.
    warn: float = 0.1
    alert: float = 0.25
    # Buckets of a numeric feature: the window's quantiles (10: deciles).
    bins: int = 10
    # Categories with a smaller share of the window's rows join the other/unseen bucket.
    min_category_share: float = 0.01
    # The share given to a bucket that is empty on one side (the log would be infinite).
    epsilon: float = 0.0001
    watch: tuple[str, ...] = DRIFT_WATCHED

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ConfigError(f"drift.min_rows must be >= 1, got {self.min_rows}")
        if not 0 < self.warn <= self.alert:
            raise ConfigError(
                f"drift thresholds must satisfy 0 < warn <= alert, got warn {self.warn}, "
                f"alert {self.alert}"
            )
        if self.bins < 2:
            raise ConfigError(f"drift.bins must be >= 2, got {self.bins}")
        if not 0 <= self.min_category_share < 1:
            raise ConfigError(
                f"drift.min_category_share must be in [0, 1), got {self.min_category_share}"
            )
        if not 0 < self.epsilon < 0.01:
            raise ConfigError(f"drift.epsilon must be in (0, 0.01), got {self.epsilon}")
        unknown = sorted(set(self.watch) - set(schema.FEATURES))
        if unknown:
            raise ConfigError(
                f"drift.watch names unknown feature(s): {', '.join(unknown)} "
                f"(known: {', '.join(schema.FEATURES)})"
            )


@dataclass(frozen=True)
class RegistrySettings:
    # SQLAlchemy URL of the model registry; null means the warehouse (source_url).
    url: str | None = None


@dataclass(frozen=True)
class ProjectPaths:
    """The two roots of a project: ``root``, the artifact root (a local folder, or a
    :class:`upath.UPath` in an object store), and ``home``, the local project root, which
    holds the entries the catalog marks ``local`` (default: ``root``, which must then be
    local). An artifact is addressed one way only, through the catalog:
    ``artifacts.METRICS.path(settings.paths.root, day)``."""

    root: ArtifactPath
    home: Path | None = None  # None: the root (a local one); set in __post_init__

    def __post_init__(self) -> None:
        root = storage.locate(self.root)
        object.__setattr__(self, "root", root)
        if self.home is None:
            if not storage.is_local(root):
                raise ValueError(
                    f"an artifact root in an object store ({root}) needs the local project "
                    "root as home"
                )
            object.__setattr__(self, "home", root)

    @property
    def source_db(self) -> Path:
        """The embedded warehouse: a ``local`` entry, under ``home`` whatever the root."""
        return artifacts.SOURCE_DB.path(self.home)  # type: ignore[return-value]


@dataclass(frozen=True)
class Settings:
    paths: ProjectPaths
    source: SourceSettings = field(default_factory=SourceSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @property
    def registry_url(self) -> str:
        """The registry URL: params file, else the warehouse."""
        return self.registry.url or self.source_url

    @property
    def source_url(self) -> str:
        """The warehouse URL: params file, else FLIGHT_DELAYS_SOURCE_URL, else embedded SQLite."""
        if self.source.url:
            return self.source.url
        if os.environ.get(ENV_SOURCE_URL):
            return os.environ[ENV_SOURCE_URL]
        return f"sqlite:///{self.paths.source_db}"

    def __post_init__(self) -> None:
        if self.ingest.window_days < 2:
            raise ConfigError(f"ingest.window_days must be >= 2, got {self.ingest.window_days}")
        if not 0 <= self.score.promotion_margin < 1:
            raise ConfigError(
                f"score.promotion_margin must be in [0, 1), got {self.score.promotion_margin}"
            )
        if not 1 <= self.split.holdout_days < self.ingest.window_days:
            raise ConfigError(
                "split.holdout_days must be >= 1 and smaller than ingest.window_days "
                f"({self.ingest.window_days}), got {self.split.holdout_days}"
            )
        for key in ("recent_days", "history_days"):
            if getattr(self.split, key) < 1:
                raise ConfigError(f"split.{key} must be >= 1, got {getattr(self.split, key)}")


_SECTIONS = {
    "source": SourceSettings,
    "ingest": IngestSettings,
    "split": SplitSettings,
    "train": TrainSettings,
    "score": ScoreSettings,
    "registry": RegistrySettings,
    "drift": DriftSettings,
    "alerts": AlertSettings,
}


#: Keys an older parameter file may still hold, and why each went.
REMOVED = {
    "alerts.nightly_deadline": (
        "alerts.nightly_deadline was never read: the deadline is the prediction DAG's "
        "05:00 schedule (docs/guide-schedule.md); delete the key"
    ),
}


def _section(name: str, raw: Any, cls: type) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"section '{name}' must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        why = "".join(f"; {REMOVED[f'{name}.{k}']}" for k in unknown if f"{name}.{k}" in REMOVED)
        raise ConfigError(f"section '{name}' has unknown keys: {', '.join(unknown)}{why}")
    values = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}.{key} must be a list of names, got {value!r}")
            values[key] = tuple(value)
            continue
        if default is not None and value is not None and not isinstance(value, type(default)):
            # YAML reads 15 as int where a float is expected: accept ints for floats only.
            if not (isinstance(default, float) and isinstance(value, int)):
                hint = ' (quote a time of day: "03:30")' if isinstance(default, str) else ""
                raise ConfigError(
                    f"{name}.{key} must be {type(default).__name__}, got {value!r}{hint}"
                )
            value = float(value)
        values[key] = value
    return cls(**values)


def project_paths(root: str | Path | None = None, anchor: str | Path | None = None) -> ProjectPaths:
    """The project root (:func:`project_root` of ``root`` and ``anchor``) and its artifact
    root ($FLIGHT_DELAYS_STORAGE_URL, else the project root)."""
    home = project_root(root, anchor)
    return ProjectPaths(storage.storage_root(home), home)


def load_settings(
    root: str | Path | None = None, params_file: str | Path | None = None
) -> Settings:
    """Read the parameter file (default: <root>/include/params.yaml) into Settings. The
    artifact root comes from $FLIGHT_DELAYS_STORAGE_URL (:func:`project_paths`)."""
    paths = project_paths(root)
    path = Path(params_file) if params_file is not None else paths.home / PARAMS_RELATIVE
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"parameter file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of sections")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"parameter file {path} has unknown sections: {', '.join(unknown)}")
    sections = {name: _section(name, raw.get(name), cls) for name, cls in _SECTIONS.items()}
    return Settings(paths=paths, **sections)
