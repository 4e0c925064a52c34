"""flight_delays.store.registry: migrations, champion pointer, and promotion under concurrency."""

from __future__ import annotations

import multiprocessing
import random
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from flight_delays.model.promotion import decide
from flight_delays.store import io, registry


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
    from flight_delays.model import serving

    for table in (
        registry.MODEL_RUNS,
        registry.CHAMPION,
        registry.CHALLENGERS,
        registry.CHAMPION_MOVES,
        serving.PREDICTIONS,
        serving.SERVED_SCORES,
        registry.DRIFT_SCORES,
    ):
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        assert migrated == set(table.c.keys()), table.name
    unique = {i["name"]: i["column_names"] for i in inspector.get_indexes("model_runs")}
    assert unique["uq_model_runs_day_run"] == ["processed_day", "run_id"]
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
    # A reader that asks for some columns gets those, in the same order of runs.
    narrow = registry.history(engine, ["processed_day", "decision"])
    assert list(narrow.columns) == ["processed_day", "decision"]
    assert narrow.to_dict("records") == [
        {"processed_day": date(2013, 3, 1), "decision": "promoted"},
        {"processed_day": date(2013, 3, 2), "decision": "kept"},
    ]
    with pytest.raises(KeyError):
        registry.history(engine, ["no_such_column"])


def test_one_row_per_run_a_second_record_returns_the_first_and_writes_nothing(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    day = date(2013, 3, 1)
    first = registry.record_run(engine, run_row(day, 10.0, run_id="scheduled__a"), True, 0)
    # The same run again (a retried score), even with another decision and a stale
    # champion version: the recorded row wins, nothing is written.
    again = run_row(day, 30.0, run_id="scheduled__a", decision="kept")
    assert registry.record_run(engine, again, False, 0) == first
    runs = registry.history(engine)
    assert len(runs) == 1 and runs.loc[0, "decision"] == "promoted"
    assert registry.current_champion(engine).version == 1
    assert registry.recorded_run(engine, day, "scheduled__a")["id"] == first
    assert registry.recorded_run(engine, day, "manual__b") is None
    # The key is enforced by the database too, not only by record_run.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(registry.MODEL_RUNS.insert().values(**again))


def test_migration_0002_keeps_every_row_and_renames_earlier_retries(tmp_path):
    from alembic import command

    from flight_delays.store.db import open_engine

    engine = open_engine(url_in(tmp_path), create_dir=True)
    with engine.begin() as conn:
        command.upgrade(registry._alembic_config(conn), "0001")
    day = date(2013, 3, 1)
    rows = [
        run_row(day, 10.0, run_id="scheduled__a"),  # the decision acted on
        run_row(day, 10.0, run_id="scheduled__a", decision="kept"),  # a retry's row
        run_row(day, 11.0, run_id=None),
        run_row(day, 12.0, run_id=None),
    ]
    with engine.begin() as conn:
        insert = registry.MODEL_RUNS.insert()
        ids = [conn.execute(insert.values(**row)).inserted_primary_key[0] for row in rows]
    registry.upgrade(engine)
    runs = registry.history(engine)
    assert list(runs["id"]) == ids
    assert list(runs["run_id"].fillna("-")) == [
        "scheduled__a",
        f"scheduled__a#{ids[1]}",
        "-",
        "-",
    ]
    assert runs["report_json"].isna().all()


def test_store_is_content_addressed_and_written_once(tmp_path):
    from flight_delays.store.io import sha256

    model = tmp_path / "model.skops"
    model.write_bytes(b"model bytes")
    digest = sha256(model)
    stored = registry.store_model(model, digest, tmp_path)
    # Where the catalog puts it: stored_model, models/registry/<sha256>.skops.
    assert stored == tmp_path / "models" / "registry" / f"{digest}.skops"
    assert stored.read_bytes() == b"model bytes"
    model.write_bytes(b"retrained")  # a rerun overwrites the run's file...
    assert registry.store_model(model, digest, tmp_path).read_bytes() == b"model bytes"
    with pytest.raises(registry.RegistryError, match="changed while it was being stored"):
        registry.store_model(model, "0" * 64, tmp_path)


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


# --- champion moves and rollback -----------------------------------------------------------
def promoted_with_model(engine, store: Path, day: date, mae: float) -> int:
    """Record a promoted run whose model file exists in the store, as score does."""
    model = store / f"{day}.skops"
    model.write_bytes(f"model of {day}".encode())
    row = run_row(day, mae, model_path=str(model), model_sha256=registry.io.sha256(model))
    version = registry.current_champion(engine).version
    return registry.record_run(engine, row, promote=True, expected_version=version)


def test_rollback_restores_the_previous_champion_and_records_why(tmp_path, capsys):
    url = url_in(tmp_path)
    engine = registry.connect(url)
    first, second = date(2013, 3, 1), date(2013, 3, 8)
    promoted_with_model(engine, tmp_path, first, 15.0)
    promoted_with_model(engine, tmp_path, second, 14.0)
    before = registry.current_champion(engine)
    assert before.processed_day == second

    champion = registry.rollback(engine, "the 03-08 model decayed in service")
    assert champion.processed_day == first
    assert champion.version == before.version + 1  # a score running meanwhile scores again
    moves = registry.champion_moves(engine)
    assert moves["kind"].tolist() == ["promotion", "promotion", "rollback"]
    last = moves.iloc[-1]
    assert (last["champion_day"], last["previous_day"]) == (first, second)
    assert last["reason"] == "the 03-08 model decayed in service"

    # The command: to the baseline, then back to a day; `show` lists the moves.
    assert registry.main(["rollback", "--url", url, "--to", "baseline", "--reason", "audit"]) == 0
    assert registry.current_champion(engine).kind == "baseline"
    # It starts no prediction run, and says so and how to start one.
    out = capsys.readouterr().out
    assert "champion: baseline" in out
    assert "the prediction DAG serves it from its next run (05:00 New York time)" in out
    assert 'airflow dags trigger flight_delays_predict --conf \'{"day": "YYYY-MM-DD"}\'' in out
    assert registry.main(["rollback", "--url", url, "--to", str(second), "--reason", "ok"]) == 0
    assert registry.current_champion(engine).processed_day == second
    assert registry.main(["show", "--url", url]) == 0
    assert "champion moves:" in capsys.readouterr().out
    engine.dispose()


def test_each_rollback_goes_one_champion_further_back(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    days = [date(2013, 3, 1), date(2013, 3, 8), date(2013, 3, 15)]
    for k, day in enumerate(days):
        promoted_with_model(engine, tmp_path, day, 15.0 - k)
    # Not back to 03-15 on the second: the rollback into 03-08 is not its promotion.
    assert registry.rollback(engine, "03-15 decayed").processed_day == days[1]
    assert registry.rollback(engine, "03-08 too").processed_day == days[0]
    assert registry.rollback(engine, "and 03-01").kind == "baseline"
    engine.dispose()


def test_a_rollback_to_a_day_that_is_no_date_is_named(tmp_path, capsys):
    args = ["rollback", "--url", url_in(tmp_path), "--to", "2013-13-01", "--reason", "x"]
    with pytest.raises(SystemExit) as exited:
        registry.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--to: expected a day YYYY-MM-DD or 'baseline', got '2013-13-01'" in err


def test_rollback_refuses_a_changed_model_file_and_leaves_the_champion(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    first = date(2013, 3, 1)
    promoted_with_model(engine, tmp_path, first, 15.0)
    promoted_with_model(engine, tmp_path, date(2013, 3, 8), 14.0)
    (tmp_path / f"{first}.skops").write_bytes(b"swapped")
    before = registry.current_champion(engine)
    with pytest.raises(registry.RegistryError, match="differs from its recorded SHA-256"):
        registry.rollback(engine, "try")
    assert registry.current_champion(engine) == before
    with pytest.raises(registry.RegistryError, match="needs a reason"):
        registry.rollback(engine, " ")
    with pytest.raises(registry.RegistryError, match="no promoted run for 2013-01-01"):
        registry.rollback(engine, "x", to_day=date(2013, 1, 1))
    engine.dispose()


def test_rollback_with_the_baseline_as_champion_has_nothing_to_return_to(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    with pytest.raises(registry.RegistryError, match="baseline is the champion"):
        registry.rollback(engine, "x")
    engine.dispose()


def test_a_step_down_makes_the_baseline_champion_and_records_the_move(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    stored = tmp_path / "stored.skops"  # rollback checks the stored file's hash
    stored.write_bytes(b"a model")
    stored_row = run_row(date(2013, 3, 1), 10.0, model_path=str(stored))
    registry.record_run(engine, {**stored_row, "model_sha256": io.sha256(stored)}, True, 0)
    decayed = run_row(date(2013, 3, 8), 25.0, decision="stepped down", reason="it decayed")
    assert registry.record_run(engine, decayed, False, 1, step_down=True) is not None
    champion = registry.current_champion(engine)
    # The baseline, since the day of the run that stepped the model down.
    assert (champion.kind, champion.processed_day, champion.version) == (
        "baseline",
        date(2013, 3, 8),
        2,
    )
    move = registry.champion_moves(engine).iloc[-1]
    assert (move["kind"], move["previous_day"], move["reason"]) == (
        "step_down",
        date(2013, 3, 1),
        "it decayed",
    )
    # The baseline cannot step down, and a run cannot both promote and step down:
    # refused before anything is written.
    later = run_row(date(2013, 3, 15), 25.0, decision="stepped down")
    with pytest.raises(registry.RegistryError, match="no model to step down"):
        registry.record_run(engine, later, False, 2, step_down=True)
    with pytest.raises(ValueError, match="both"):
        registry.record_run(engine, later, True, 2, step_down=True)
    assert len(registry.history(engine)) == 2
    # A rollback to the plain baseline lifts the step-down's day; a second one refuses.
    assert registry.rollback(engine, "start afresh", baseline=True).processed_day is None
    with pytest.raises(registry.RegistryError, match="already the champion"):
        registry.rollback(engine, "again", baseline=True)
    # A rollback can bring the stepped-down model back.
    assert registry.rollback(engine, "recovered", to_day=date(2013, 3, 1)).processed_day == (
        date(2013, 3, 1)
    )


def test_revision_0004_keeps_the_rows_and_refuses_to_drop_a_step_down(tmp_path):
    from alembic import command

    engine = registry.connect(url_in(tmp_path))
    with engine.begin() as conn:
        config = registry._alembic_config(conn)
        command.downgrade(config, "0003")
    registry.record_run(engine, run_row(date(2013, 3, 1), 10.0), True, 0)
    with pytest.raises(IntegrityError):  # 0003 does not know the new decision
        registry.record_run(
            engine, run_row(date(2013, 3, 8), 25.0, decision="stepped down"), False, 1
        )
    registry.upgrade(engine)
    assert registry.current_revision(engine) == registry.head_revision()
    assert registry.current_champion(engine).processed_day == date(2013, 3, 1)
    decayed = run_row(date(2013, 3, 8), 25.0, decision="stepped down")
    registry.record_run(engine, decayed, False, 1, step_down=True)
    with engine.begin() as conn:
        command.downgrade(registry._alembic_config(conn), "0004")
    with engine.begin() as conn, pytest.raises(RuntimeError, match="step-down"):
        command.downgrade(registry._alembic_config(conn), "0003")
    assert registry.current_revision(engine) == "0004"


def _connect_and_report(url: str) -> str:
    engine = registry.connect(url)
    try:
        return registry.current_revision(engine)
    finally:
        engine.dispose()


def test_first_runs_that_migrate_at_once_all_get_the_newest_schema(tmp_path):
    """The first runs of a backfill open a fresh SQLite registry together: each migrates
    or waits for the one that does; none finds half the tables of another."""
    url = url_in(tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        revisions = pool.map(_connect_and_report, [url] * 8)
    assert revisions == [registry.head_revision()] * 8


def drift_frame(psi_distance: float | None, rows: int = 900) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": ["carrier", "distance", "temp"],
            "kind": ["categorical", "numeric", "numeric"],
            "psi": [0.01, psi_distance, 4.2],
            "threshold": [0.25, 0.25, None],
            "flagged": [False, bool(psi_distance and psi_distance >= 0.25), False],
            "day_rows": [rows] * 3,
            "window_rows": [70000] * 3,
        }
    )


def test_drift_rows_round_trip_one_set_per_run_and_the_latest_day_first(tmp_path):
    engine = registry.connect(url_in(tmp_path))
    day, later = date(2013, 3, 1), date(2013, 3, 2)
    assert registry.drift_scores(engine).empty
    assert registry.record_drift(engine, day, "run-a", drift_frame(0.5)) == 3
    assert registry.record_drift(engine, day, "run-a", drift_frame(0.6)) == 3  # a retry
    registry.record_drift(engine, later, "run-b", drift_frame(0.02))
    registry.record_drift(engine, later, "run-c", drift_frame(None, rows=40))

    first = registry.drift_scores(engine, day)
    assert list(first["feature"]) == ["temp", "distance", "carrier"]  # largest PSI first
    assert first.set_index("feature").loc["distance", "psi"] == 0.6  # replaced, not added
    assert bool(first.set_index("feature").loc["distance", "flagged"])
    assert first["threshold"].isna().tolist() == [True, False, False]
    # Without a day: the newest day's run recorded last; an unmeasured PSI comes last.
    latest = registry.drift_scores(engine)
    assert set(latest["run_id"]) == {"run-c"} and latest["feature"].iloc[-1] == "distance"
    assert latest["psi"].isna().tolist() == [False, False, True]
    assert registry.drift_scores(engine, later, "run-b")["day_rows"].tolist() == [900] * 3
    engine.dispose()


def test_revision_0006_drift_adds_the_table_and_downgrades_cleanly(tmp_path):
    from alembic import command

    engine = registry.connect(url_in(tmp_path))
    registry.record_drift(engine, date(2013, 3, 1), "run-a", drift_frame(0.5))
    with engine.begin() as conn:
        command.downgrade(registry._alembic_config(conn), "0005")
    assert not inspect(engine).has_table("drift_scores")
    assert registry.drift_scores(engine).empty  # a reader never migrates
    registry.upgrade(engine)
    assert registry.current_revision(engine) == registry.head_revision()
    assert inspect(engine).has_table("drift_scores")
    assert registry.drift_scores(engine).empty
    engine.dispose()


def test_show_prints_each_runs_decision_with_its_reason(tmp_path, capsys):
    # A run kept although its challenger beat the champion must say why on `show`, not
    # only in its metrics.json (a newer champion, the baseline's bound, the margin).
    url = url_in(tmp_path)
    engine = registry.connect(url)
    row = run_row(date(2013, 6, 30), 45.59)
    row.update(
        decision="kept",
        reason="champion (model of 2026-12-06) was trained for 2026-12-06, not before this "
        "run's day 2013-06-30: a model never replaces a newer one",
    )
    registry.record_run(engine, row, promote=False, expected_version=0)
    engine.dispose()
    assert registry.main(["show", "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("processed_day"))
    assert header.split()[-2:] == ["decision", "reason"]
    shown = next(line for line in lines if line.startswith("2013-06-30"))
    assert shown.split()[1] == "45.59"
    assert row["reason"] in shown and "kept" in shown.split()
