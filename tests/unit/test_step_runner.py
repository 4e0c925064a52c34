"""flight_delays.store.step_runner: what every step gets from the runner, tried on small
steps declared here (the real steps' own tests run them through the same runner)."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flight_delays.store import artifacts, io
from flight_delays.store.step_runner import Result, Step

DAY = date(2013, 6, 30)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "params.yaml").write_text(
        yaml.safe_dump({"split": {"holdout_days": 3}})
    )
    return tmp_path


def _features(root: Path) -> pd.DataFrame:
    frame = pd.DataFrame({"local_date": ["2013-06-29", "2013-06-30"], "arr_delay": [4.0, -2.0]})
    io.write_parquet(frame, artifacts.FEATURES.path(root, DAY))
    return frame


def _halves(day, params, features):
    return Result(
        outputs={"train": features.iloc[:1], "holdout": features.iloc[1:]},
        summary={"holdout_days": params.holdout_days, "day": day.isoformat()},
        line=f"{len(features)} rows in",
    )


HALVES = Step(
    name="halves",
    core=_halves,
    reads={"features": artifacts.FEATURES},
    writes={"train": artifacts.TRAIN_TABLE, "holdout": artifacts.HOLDOUT_TABLE},
    params=lambda settings: settings.split,
)


def test_the_runner_reads_calls_the_core_writes_and_returns_the_xcom_dict(root, caplog):
    frame = _features(root)
    with caplog.at_level("INFO", logger="flight_delays.halves"):
        result = HALVES.run(DAY.isoformat(), root=root)
    train = artifacts.TRAIN_TABLE.path(root, DAY)
    holdout = artifacts.HOLDOUT_TABLE.path(root, DAY)
    assert result == {
        "train": str(train),
        "holdout": str(holdout),
        "holdout_days": 3,  # from include/params.yaml, through `params`
        "day": "2013-06-30",
    }
    assert json.loads(json.dumps(result)) == result  # plain values: XCom
    pd.testing.assert_frame_equal(pd.read_parquet(holdout), frame.iloc[1:].reset_index(drop=True))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("halves 2013-06-30: 2 rows in in ")
    assert line.endswith(f"-> train {train}, holdout {holdout}")
    # Atomic writes: no temporary file is left beside the outputs.
    assert sorted(p.name for p in train.parent.iterdir()) == [
        "features.parquet",
        "holdout.parquet",
        "train.parquet",
    ]


def test_a_missing_input_names_the_task_that_writes_it_and_nothing_is_written(root):
    with pytest.raises(io.MissingArtifactError, match="featurize"):
        HALVES.run(DAY, root=root)
    assert not artifacts.TRAIN_TABLE.path(root, DAY).exists()


def test_a_failing_core_writes_nothing(root):
    _features(root)

    def failing(day, params, features):
        raise ValueError("no holdout rows")

    with pytest.raises(ValueError, match="no holdout rows"):
        Step(**{**HALVES.__dict__, "core": failing}).run(DAY, root=root)
    assert not artifacts.TRAIN_TABLE.path(root, DAY).exists()


def test_an_output_the_step_does_not_declare_is_refused_before_anything_is_written(root):
    _features(root)

    def extra(day, params, features):
        return Result({"train": features, "predictions": features}, {}, "")

    with pytest.raises(ValueError, match=r"outputs it does not declare: \['predictions'\]"):
        Step(**{**HALVES.__dict__, "core": extra}).run(DAY, root=root)
    assert not artifacts.TRAIN_TABLE.path(root, DAY).exists()


def test_an_output_left_out_is_not_written_nor_returned(root):
    _features(root)

    def train_only(day, params, features):
        return Result({"train": features}, {}, "train only")

    result = Step(**{**HALVES.__dict__, "core": train_only}).run(DAY, root=root)
    assert set(result) == {"train"}
    assert not artifacts.HOLDOUT_TABLE.path(root, DAY).exists()


def test_a_card_gets_the_run_id_and_the_hashes_of_what_was_read_and_written(root):
    _features(root)
    manifest = io.write_json({"day": DAY.isoformat()}, artifacts.MANIFEST.path(root, DAY))
    recorded = {}

    def model(day, params, features):
        return Result({"model": b"model bytes", "card": {"rows": len(features)}}, {}, "fitted")

    def record(run, written, result):
        recorded.update(run_id=run.run_id, sha=written["model"].sha256)
        return {"run_id": run.run_id}

    step = Step(
        name="fit",
        core=model,
        reads={"features": artifacts.FEATURES},
        requires={"manifest": artifacts.MANIFEST},
        writes={"model": artifacts.RUN_MODEL, "card": artifacts.RUN_MODEL_CARD},
        record=record,
        card="card",
        run_id=True,
    )
    result = step.run(DAY, root=root, run_id="manual__1")
    model_path = artifacts.RUN_MODEL.path(root, DAY, "manual__1")
    card = json.loads(Path(result["card"]).read_text())
    features = artifacts.FEATURES.path(root, DAY)
    assert card == {
        "rows": 2,
        "run_id": "manual__1",
        "inputs": {
            "features": {"path": str(features), "sha256": io.sha256(features)},
            "manifest": {"path": str(manifest), "sha256": io.sha256(manifest)},
        },
        "model": {"path": str(model_path), "sha256": hashlib.sha256(b"model bytes").hexdigest()},
    }
    assert recorded == {"run_id": "manual__1", "sha": io.sha256(model_path)}
    assert result["run_id"] == "manual__1"
    # Without a run id, the runner makes a new local one for each run.
    again = step.run(DAY, root=root)
    assert again["run_id"].startswith("local__2013-06-30__") and again["run_id"] != "manual__1"


def test_a_required_file_that_is_missing_fails_before_any_work_and_names_its_task(root):
    _features(root)
    worked = []

    def fit(day, params, features):
        worked.append(day)
        return Result({"model": b"model bytes", "card": {}}, {}, "")

    step = Step(
        name="fit",
        core=fit,
        reads={"features": artifacts.FEATURES},
        requires={"manifest": artifacts.MANIFEST},
        writes={"model": artifacts.RUN_MODEL, "card": artifacts.RUN_MODEL_CARD},
        card="card",
        run_id=True,
    )
    with pytest.raises(io.MissingArtifactError, match="ingest"):
        step.run(DAY, root=root, run_id="manual__1")
    # Checked before the core: no fit, and no model file left without its card.
    assert worked == []
    assert not artifacts.RUN_MODEL_DIR.path(root, DAY, "manual__1").exists()


def test_an_option_the_step_does_not_take_is_refused_by_name(root):
    _features(root)
    with pytest.raises(TypeError, match="step halves takes no option refech"):
        HALVES.run(DAY, root=root, refech=True)
    fetching = Step(**{**HALVES.__dict__, "options": ("refetch",)})
    with pytest.raises(TypeError, match=r"no option now \(its options: refetch\)"):
        fetching.run(DAY, root=root, now=None)
    assert fetching.run(DAY, root=root, refetch=True)["holdout_days"] == 3


def test_a_group_member_the_step_does_not_declare_is_refused_before_any_write(root):
    def figures(day, params):
        return Result({"figures": {"residuals": b"png", "pie_chart": b"png"}}, {}, "")

    step = Step(name="draw", core=figures, writes={"figures": artifacts.FIGURE_ENTRIES})
    with pytest.raises(ValueError, match=r"\['figures/pie_chart'\]"):
        step.run(DAY, root=root)
    assert not artifacts.FIGURES.path(root, DAY).exists()


def test_the_registry_engine_is_disposed_when_a_hook_fails(root, monkeypatch):
    from flight_delays.store import step_runner

    disposed = []

    class Engine:
        def dispose(self):
            disposed.append(True)

    monkeypatch.setattr(step_runner.registry, "connect", lambda url: Engine())

    def load(run, inputs):
        run.registry()
        raise RuntimeError("warehouse went away")

    with pytest.raises(RuntimeError, match="warehouse went away"):
        Step(name="x", core=_halves, load=load).run(DAY, root=root)
    assert disposed == [True]
