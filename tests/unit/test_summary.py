import json

from flight_delays.store.config import ProjectPaths
from flight_delays.summary import describe, latest_day, main


def test_summary_names_the_latest_days_artifacts_and_maes(tmp_path, capsys):
    paths = ProjectPaths(tmp_path)
    for day, mae in (("2013-03-14", 30.0), ("2013-03-15", 21.5)):
        out = tmp_path / "data" / "output" / f"ds={day}"
        out.mkdir(parents=True)
        metrics = {
            "model": {"mae": mae},
            "baseline": {"mae": 24.0},
            "champion": {"mae": 24.0},
            "champion_info": {"name": "baseline"},
            "decision": {"promoted": True, "reason": "better by the margin"},
            "challenger": {
                "run_id": f"scheduled__{day}",
                "model": f"/m/ds={day}/run=x/model.skops",
            },
        }
        (out / "metrics.json").write_text(json.dumps(metrics))
    assert latest_day(paths).isoformat() == "2013-03-15"
    assert main(["--root", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Processed day 2013-03-15" in printed
    assert "model 21.50 min, baseline 24.00 min" in printed
    assert "promoted: better by the margin" in printed
    assert "/m/ds=2013-03-15/run=x/model.skops (run scheduled__2013-03-15)" in printed
    assert "ds=2013-03-15/index.html" in describe(paths, latest_day(paths))


def test_summary_without_any_run_says_so(tmp_path, capsys):
    assert main(["--root", str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err
