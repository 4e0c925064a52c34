"""Fixtures for the unit tests of the model steps (train, score, chart, scoring).

Synthetic feature tables with the split task's output contract: a few hundred flights
over a handful of days, deterministic for a given seed. Other steps may add fixtures
here; keep names specific.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flight_delays.base import schema
from flight_delays.store import artifacts, io
from flight_delays.store.config import load_settings
from flight_delays.store.db import open_engine

MODEL_STEP_DAY = date(2024, 3, 10)  # the processed day of the synthetic model-step runs
MODEL_STEP_HOLDOUT_DAYS = 3

FeatureFrameFactory = Callable[..., pd.DataFrame]


def make_feature_frame(
    n_rows: int = 300,
    first_day: date = date(2024, 3, 1),
    days: int = 7,
    seed: int = 0,
    carriers: tuple[str, ...] = ("AA", "B6", "DL", "UA"),
    origins: tuple[str, ...] = ("EWR", "JFK", "LGA"),
    dests: tuple[str, ...] = ("ATL", "BOS", "LAX", "ORD", "MIA"),
) -> pd.DataFrame:
    """A feature table as split writes it: identifiers, schema.FEATURES (the past-day
    statistics included), schema.TARGET.

    The delay depends on hour, precipitation and carrier, plus noise, so a model has
    something to learn. A few weather values are NaN, as in the real data.
    """
    rng = np.random.default_rng(seed)
    day_offsets = rng.integers(0, days, n_rows)
    local_date = pd.to_datetime([first_day + timedelta(days=int(k)) for k in day_offsets]).astype(
        "datetime64[ns]"
    )
    hour = rng.integers(5, 23, n_rows)
    minute = rng.choice([0, 15, 30, 45], n_rows)
    carrier = rng.choice(carriers, n_rows)
    precip = rng.exponential(0.02, n_rows)
    delay = (
        2.0 * (hour - 12)
        + 300.0 * precip
        + np.where(carrier == carriers[0], 15.0, 0.0)
        + rng.normal(0.0, 10.0, n_rows)
    )
    frame = pd.DataFrame(
        {
            schema.DAY: local_date,
            "carrier": pd.array(carrier, dtype="str"),
            "flight": rng.integers(1, 3000, n_rows),
            "origin": pd.array(rng.choice(origins, n_rows), dtype="str"),
            "dest": pd.array(rng.choice(dests, n_rows), dtype="str"),
            "sched_dep_time": hour * 100 + minute,
            schema.SCHED_HOUR: hour,
            "distance": rng.uniform(200, 2500, n_rows),
            "sched_block_minutes": rng.uniform(60, 360, n_rows),
            "temp": rng.normal(50, 15, n_rows),
            "dewp": rng.normal(35, 10, n_rows),
            "humid": rng.uniform(20, 100, n_rows),
            "wind_dir": rng.uniform(0, 360, n_rows),
            "wind_speed": rng.uniform(0, 25, n_rows),
            "wind_gust": rng.uniform(0, 35, n_rows),
            "precip": precip,
            "pressure": rng.normal(1015, 8, n_rows),
            "visib": rng.uniform(1, 10, n_rows),
            # the origin's weather around the hour and over the day
            "precip_around": precip * 3 + rng.exponential(0.02, n_rows),
            "visib_min_around": rng.uniform(0.5, 10, n_rows),
            "gust_max_around": rng.uniform(15, 40, n_rows),
            "day_precip": precip * 10 + rng.exponential(0.1, n_rows),
            "day_visib_min": rng.uniform(0, 10, n_rows),
            "day_wind_max": rng.uniform(5, 30, n_rows),
            "day_gust_max": rng.uniform(15, 50, n_rows),
            "origin_hour_departures": rng.integers(1, 40, n_rows),
            "origin_day_departures": rng.integers(200, 400, n_rows),
            "carrier_day_departures": rng.integers(50, 300, n_rows),
            # past-day statistics as split adds them (minutes; NaN where a group had
            # too few flights), and their age in days
            **{name: rng.normal(0.0, 10.0, n_rows) for name in schema.RECENT_HISTORY_GROUPS},
            **{name: rng.normal(0.0, 15.0, n_rows) for name in schema.HISTORY_GROUPS},
            schema.HISTORY_LAG: rng.integers(1, 8, n_rows),
            schema.TARGET: delay.round(),
        }
    )
    frame.loc[rng.random(n_rows) < 0.05, "wind_gust"] = np.nan
    frame.loc[rng.random(n_rows) < 0.02, "pressure"] = np.nan
    frame.loc[rng.random(n_rows) < 0.10, "past_flight_delay"] = np.nan
    return frame.sort_values([schema.DAY, "sched_dep_time"], ignore_index=True)


@pytest.fixture(scope="session")
def feature_frame_factory() -> FeatureFrameFactory:
    """:func:`make_feature_frame`, for tests that need a specific shape or seed."""
    return make_feature_frame


@pytest.fixture
def model_params_file(tmp_path: Path) -> Path:
    """A params file with one tiny booster (20 iterations, no day bagging) so tests fit
    in well under a second."""
    params = {
        "ingest": {"window_days": 10},
        "split": {"holdout_days": MODEL_STEP_HOLDOUT_DAYS},
        "train": {
            "max_iter": 20,
            "min_samples_leaf": 5,
            "max_leaf_nodes": 15,
            "bagging_models": 1,
        },
        "score": {"within_minutes": 15},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def split_artifacts(tmp_path: Path, model_params_file: Path) -> dict[str, object]:
    """train.parquet, holdout.parquet and the ingest manifest for MODEL_STEP_DAY under
    tmp_path, as the ingest and split tasks leave them. Holdout: the last 3 days, and it
    holds a destination ("SFO") and a carrier ("NK") that training never saw."""
    settings = load_settings(tmp_path, model_params_file)
    day = MODEL_STEP_DAY
    first = day - timedelta(days=9)
    train = make_feature_frame(400, first_day=first, days=7, seed=1)
    holdout = make_feature_frame(
        150,
        first_day=day - timedelta(days=MODEL_STEP_HOLDOUT_DAYS - 1),
        days=MODEL_STEP_HOLDOUT_DAYS,
        seed=2,
    )
    holdout.loc[:4, "dest"] = "SFO"
    holdout.loc[5:6, "carrier"] = "NK"
    processed = artifacts.PROCESSED.path(settings.paths.root, day)
    train_path = io.write_parquet(train, processed / "train.parquet")
    holdout_path = io.write_parquet(holdout, processed / "holdout.parquet")
    manifest = {
        "days": [
            {
                "day": (first + timedelta(days=k)).isoformat(),
                "flights_sha256": "0" * 64,
                "weather_sha256": "1" * 64,
            }
            for k in range(10)
        ]
    }
    manifest_path = artifacts.INTERIM.path(settings.paths.root, day) / "manifest.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest))
    counts = {  # featurize's counts beside the features, for the run report
        "days": 10,
        "rows": len(train) + len(holdout),
        "flights_in": len(train) + len(holdout) + 37,
        "duplicate_flights": 2,
        "excluded_no_arr_delay": 35,
        "missing_weather": 4,
        "weather_in": 720,
        "duplicate_weather": 3,
        "implausible_weather": 1,
        "quarantined_rows": 3,
        "failed_contract": 0,
    }
    io.write_json(counts, processed / "feature_counts.json")
    return {
        "day": day,
        "root": tmp_path,
        "params_file": model_params_file,
        "settings": settings,
        "train": train,
        "holdout": holdout,
        "train_path": train_path,
        "holdout_path": holdout_path,
        "manifest_path": manifest_path,
        "feature_counts": counts,
    }


@pytest.fixture
def engine(pg_url: str) -> Iterator[object]:
    """An engine on the throw-away PostgreSQL cluster of a module that defines ``pg_url``
    (tests/unit/pg_cluster.py), disposed after the test."""
    engine = open_engine(pg_url)
    try:
        yield engine
    finally:
        engine.dispose()
