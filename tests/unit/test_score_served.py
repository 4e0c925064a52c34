"""The nightly score task applies promotion rule 5: the champion model steps down within
the day on its served scores (the registry's ``served_scores``)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flight_delays import score, train
from flight_delays.model import fitted, serving
from flight_delays.store import io, registry
from flight_delays.store.config import TrainSettings

GOOD_TRAIN = TrainSettings(max_iter=20, min_samples_leaf=5, max_leaf_nodes=15, bagging_models=1)


def _champion(art, tmp_path: Path) -> tuple[str, date]:
    """A good champion model (fitted on this window's training days), promoted a week
    before the processed day; returns its SHA-256 and day."""
    day, settings = art["day"], art["settings"]
    engine = registry.connect(settings.registry_url)
    model_path = fitted.save_model(train.fit_model(art["train"], GOOD_TRAIN), tmp_path / "c.skops")
    sha = io.sha256(model_path)
    stored = registry.store_model(model_path, sha, settings.paths.root)
    old_day = day - timedelta(days=7)
    row = {
        "processed_day": old_day,
        "run_id": "scheduled__old",
        "window_start": old_day - timedelta(days=9),
        "window_end": old_day,
        "holdout_start": old_day - timedelta(days=2),
        "holdout_end": old_day,
        "holdout_rows": 100,
        "model_path": str(stored),
        "model_sha256": sha,
        "challenger_mae": 10.0,
        "champion_mae": 20.0,
        "baseline_mae": 20.0,
        "champion_kind": "baseline",
        "champion_day": None,
        "metrics_json": "{}",
        "decision": "promoted",
        "reason": "promoted in an earlier week",
    }
    assert registry.record_run(engine, row, True, 0) is not None
    engine.dispose()

    return sha, old_day


def _served(engine, day: date, served_mae: float, sha: str, champion_day: date) -> None:
    serving.record_served_score(
        engine,
        {
            "flight_day": day,
            "flights": 120,
            "served_mae": served_mae,
            "baseline_mae": 10.0,
            "champion_kind": "model",
            "champion_day": champion_day,
            "model_sha256": sha,
        },
        "scheduled__earlier",
    )


def _weak_challenger_params(art) -> Path:
    """Rule 5 at 2 of the last 3 served days worse by 10 %; a challenger of one tiny
    boosting round, which never beats the baseline (so rules 1-4 keep the champion)."""
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["train"].update(max_iter=1, learning_rate=0.01)
    values["score"].update(served_margin=0.1, served_bad_days=2, served_days=3)
    params.write_text(yaml.safe_dump(values))
    return params


@pytest.mark.parametrize(
    ("served", "stepped", "says"),
    [
        # day offsets -2, -1, 0 -> served MAE (baseline 10.0); None: nothing served.
        ({-2: 9.0, -1: 11.0, 0: 11.0}, True, "2 of the last 3 served days"),  # exactly 10 %
        ({-2: 9.0, -1: 9.0, 0: 12.0}, False, "1 of the last 3 served days"),  # K - 1
        ({-2: 12.0, -1: 12.0}, False, "skipped, no served predictions"),  # a gap: today
        ({-3: 12.0, -2: 9.0, 0: 12.0}, True, "2 of the last 3 served days"),  # gap on -1
    ],
)
def test_the_champion_steps_down_within_the_day_on_its_served_scores(
    split_artifacts, tmp_path, served, stepped, says
) -> None:
    art = split_artifacts
    day, settings = art["day"], art["settings"]
    sha, champion_day = _champion(art, tmp_path)
    engine = registry.connect(settings.registry_url)
    for offset, mae in served.items():
        _served(engine, day + timedelta(days=offset), mae, sha, champion_day)
    # A day served by another model: never this champion's history.
    _served(engine, day - timedelta(days=5), 50.0, "f" * 64, champion_day)
    params = _weak_challenger_params(art)

    train.run(day, root=art["root"], params_file=params, run_id="scheduled__now")
    result = score.run(day, root=art["root"], params_file=params, run_id="scheduled__now")

    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["model"]["mae"] >= metrics["baseline"]["mae"], "precondition: weak challenger"
    assert metrics["champion"]["mae"] < metrics["baseline"]["mae"] * 1.01, "precondition: no rule 4"
    reason = metrics["decision"]["reason"]
    assert says in reason
    champion = registry.current_champion(engine)
    if stepped:
        assert result["decision"] == "stepped down" and metrics["decision"]["stepped_down"]
        assert "steps down within the day" in reason
        assert champion.kind == "baseline" and champion.processed_day == day
        last = registry.champion_moves(engine).iloc[-1]
        assert last["kind"] == "step_down" and "served MAE" in last["reason"]
    else:
        assert result["decision"] == "kept" and champion.model_sha256 == sha
    moves, version = len(registry.champion_moves(engine)), champion.version

    # The retried task finds its row: nothing is judged or moved again.
    again = score.run(day, root=art["root"], params_file=params, run_id="scheduled__now")
    assert again["decision"] == result["decision"]
    # The same day run twice (a run of its own): the same verdict, or none once the
    # baseline already serves; never a second move.
    train.run(day, root=art["root"], params_file=params, run_id="manual__again")
    rerun = score.run(day, root=art["root"], params_file=params, run_id="manual__again")
    assert rerun["decision"] == "kept"
    assert len(registry.champion_moves(engine)) == moves
    assert registry.current_champion(engine).version == version
    history = registry.history(engine)
    assert len(history) == 3 and history["decision"].tolist()[-1] == "kept"
    assert pd.notna(history.iloc[-1]["reason"])
    engine.dispose()


def test_a_challenger_better_than_the_baseline_takes_the_place_of_a_stepped_down_champion(
    split_artifacts, tmp_path
) -> None:
    """The champion served badly on 2 of its last 3 days; this run's challenger (the same
    fit as the champion: not better by the margin, so rules 1-4 keep the champion) beats
    the baseline on the holdout: it is promoted in the champion's place."""
    art = split_artifacts
    day, settings = art["day"], art["settings"]
    sha, champion_day = _champion(art, tmp_path)
    engine = registry.connect(settings.registry_url)
    for offset in (-1, 0):
        _served(engine, day + timedelta(days=offset), 12.0, sha, champion_day)
    params = Path(art["params_file"])
    values = yaml.safe_load(params.read_text())
    values["score"].update(
        promotion_margin=0.0, served_margin=0.1, served_bad_days=2, served_days=3
    )
    params.write_text(yaml.safe_dump(values))

    train.run(day, root=art["root"], params_file=params, run_id="scheduled__now")
    result = score.run(day, root=art["root"], params_file=params, run_id="scheduled__now")

    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics["model"]["mae"] < metrics["baseline"]["mae"], "precondition"
    assert result["decision"] == "promoted"
    reason = metrics["decision"]["reason"]
    assert "not better by the margin" in reason and "steps down within the day" in reason
    assert "the challenger takes its place" in reason
    champion = registry.current_champion(engine)
    assert champion.run_id == "scheduled__now" and champion.processed_day == day
    assert registry.champion_moves(engine).iloc[-1]["kind"] == "promotion"
    engine.dispose()


def test_served_verdict_judges_only_a_champion_model_on_its_own_later_days(tmp_path) -> None:
    from flight_delays.store.config import ScoreSettings

    engine = registry.connect(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    registry.upgrade(engine)
    rule = ScoreSettings(served_margin=0.1, served_bad_days=1, served_days=1)
    day = date(2013, 11, 15)
    model = registry.Champion(
        version=1, processed_day=day - timedelta(days=3), model_path="m", model_sha256="a" * 64
    )
    _served(engine, day, 12.0, "a" * 64, model.processed_day)
    assert serving.served_verdict(engine, model, day, rule).step_down
    # The baseline serves: nothing to step down.
    assert serving.served_verdict(engine, registry.Champion(version=2), day, rule) is None
    # A run for a day no later than the champion's own: it served nothing up to then.
    assert serving.served_verdict(engine, model, model.processed_day, rule) is None
    # A later day with nothing served: skipped, with its reason.
    later = serving.served_verdict(engine, model, day + timedelta(days=1), rule)
    assert not later.step_down and "skipped" in later.reason
    engine.dispose()
