"""flight_delays.registry: migrations, champion pointer, and promotion under concurrency."""

from __future__ import annotations

import multiprocessing
import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect

from flight_delays import registry
from flight_delays.promotion import decide


def url_in(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.sqlite'}"


def run_row(day: date, mae: float, **extra) -> dict:
    row = {
        "processed_day": day,
        "run_id": f"run-{day}",
        "window_start": day - timedelta(days=13),
        "window_end": day,
        "holdout_start": day - timedelta(days=2),
        "holdout_end": day,
        "holdout_rows": 100,
        "model_path": f"/models/ds={day}/model.skops",
        "model_sha256": f"{day.toordinal():064x}",
        "challenger_mae": mae,
        "champion_mae": 20.0,
        "baseline_mae": 20.0,
        "champion_kind": "baseline",
        "champion_day": None,
        "metrics_json": "{}",
        "decision": "promoted",
        "reason": "test",
    }
    return {**row, **extra}


def test_migration_creates_the_declared_schema_and_is_idempotent(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    assert registry.current_revision(engine) == registry.head_revision()
    registry.upgrade(engine)  # second time: nothing to do
    inspector = inspect(engine)
    for table in (registry.MODEL_RUNS, registry.CHAMPION):
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == set(table.c.keys()), table.name
    champion = registry.current_champion(engine)
    assert champion.kind == "baseline" and champion.version == 0


def test_promotion_moves_the_champion_and_a_stale_version_writes_nothing(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    first = registry.record_run(engine, run_row(date(2013, 3, 1), 10.0), True, 0)
    champion = registry.current_champion(engine)
    assert first is not None
    assert (champion.kind, champion.processed_day, champion.version) == (
        "model",
        date(2013, 3, 1),
        1,
    )
    # A run scored against version 0 arrives late: refused, nothing written.
    assert registry.record_run(engine, run_row(date(2013, 3, 2), 5.0), True, 0) is None
    assert len(registry.history(engine)) == 1
    kept = registry.record_run(engine, run_row(date(2013, 3, 2), 11.0, decision="kept"), False, 1)
    assert kept is not None
    assert registry.current_champion(engine).processed_day == date(2013, 3, 1)
    assert list(registry.history(engine)["decision"]) == ["promoted", "kept"]


def test_store_is_content_addressed_and_written_once(tmp_path):
    from flight_delays.io import sha256

    model = tmp_path / "model.skops"
    model.write_bytes(b"model bytes")
    digest = sha256(model)
    stored = registry.store_model(model, digest, tmp_path / "store")
    assert stored.name == f"{digest}.skops" and stored.read_bytes() == b"model bytes"
    model.write_bytes(b"retrained")  # a rerun overwrites the run's file...
    assert registry.store_model(model, digest, tmp_path / "store").read_bytes() == b"model bytes"
    with pytest.raises(registry.RegistryError, match="changed while it was being stored"):
        registry.store_model(model, "0" * 64, tmp_path / "store")


def test_unreachable_registry_is_named(tmp_path):
    with pytest.raises(registry.RegistryError, match="cannot open the model registry"):
        registry.connect("postgresql://nobody:secret@127.0.0.1:1/nothing")


def _scorer(url: str, day_ordinal: int, mae: float) -> None:
    """What score.run does with the registry: read, decide, record; retry if stale."""
    engine = registry.connect(url)
    day = date.fromordinal(day_ordinal)
    for _ in range(50):
        champion = registry.current_champion(engine)
        champion_mae = 20.0 if champion.kind == "baseline" else 20.0 - champion.processed_day.day
        decision = decide(
            mae, champion_mae, day, champion.processed_day, margin=0.0, baseline_mae=20.0
        )
        row = run_row(day, mae, decision=decision.label, champion_mae=champion_mae)
        if registry.record_run(engine, row, decision.promote, champion.version) is not None:
            return
    raise AssertionError("never recorded")


def test_concurrent_runs_lose_no_row_and_never_promote_backwards(tmp_path):
    url = url_in(tmp_path)
    registry.connect(url).dispose()
    days = [date(2013, 4, 1) + timedelta(days=k) for k in range(8)]
    random.Random(3).shuffle(days)
    # A later day has a lower MAE, so the right final champion is the last day.
    jobs = [(url, d.toordinal(), 20.0 - d.day) for d in days]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.starmap(_scorer, jobs)

    engine = registry.connect(url)
    runs = registry.history(engine)
    assert sorted(runs["processed_day"]) == sorted(days)  # one row per run, none lost
    promoted = runs[runs["decision"] == "promoted"].sort_values("id")
    assert promoted["processed_day"].is_monotonic_increasing  # never backwards
    champion = registry.current_champion(engine)
    assert champion.processed_day == max(days)
    assert champion.version == len(promoted)
