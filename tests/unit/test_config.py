from pathlib import Path

import pytest

from flight_delays.store.config import ENV_SOURCE_URL, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_shipped_parameter_file_loads(tmp_path):
    settings = load_settings(root=tmp_path, params_file=REPO / "include" / "params.yaml")
    assert settings.ingest.window_days == 90
    assert settings.split.holdout_days == 7
    assert (settings.split.recent_days, settings.split.history_days) == (7, 28)
    assert settings.train.loss == "absolute_error"
    assert settings.train.bagging() == {"n_models": 2, "day_fraction": 0.8}
    assert "bagging_models" not in settings.train.hyperparameters()
    assert settings.paths.root == tmp_path.resolve()
    assert (settings.drift.warn, settings.drift.alert, settings.drift.min_rows) == (0.1, 0.25, 300)
    assert "distance" in settings.drift.watch and "temp" not in settings.drift.watch


def test_the_defaults_in_code_are_the_shipped_parameters(tmp_path):
    # A parameter file that leaves a key out gets what include/params.yaml ships.
    shipped = load_settings(root=tmp_path, params_file=REPO / "include" / "params.yaml")
    assert load_settings(root=tmp_path, params_file=write(tmp_path, "{}\n")) == shipped


def test_source_url_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_SOURCE_URL, raising=False)
    embedded = load_settings(tmp_path, write(tmp_path, "ingest: {window_days: 10}\n"))
    assert embedded.source_url == f"sqlite:///{tmp_path.resolve()}/data/source/flights.sqlite"
    monkeypatch.setenv(ENV_SOURCE_URL, "postgresql://u@h/warehouse")
    assert load_settings(tmp_path, write(tmp_path, "{}\n")).source_url.endswith("/warehouse")
    pinned = load_settings(tmp_path, write(tmp_path, "source: {url: 'sqlite:///x.db'}\n"))
    assert pinned.source_url == "sqlite:///x.db"


def test_int_accepted_for_float_and_settings_are_frozen(tmp_path):
    settings = load_settings(tmp_path, write(tmp_path, "score: {within_minutes: 10}\n"))
    assert settings.score.within_minutes == 10.0
    with pytest.raises(AttributeError):
        settings.score.within_minutes = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ingest: {window_dayz: 10}\n", "unknown keys: window_dayz"),
        (
            "alerts: {nightly_deadline: '04:00'}\n",
            "unknown keys: nightly_deadline; alerts.nightly_deadline was never read: the "
            "deadline is the prediction DAG's 05:00 schedule",
        ),
        ("trian: {}\n", "unknown sections: trian"),
        ("score: {served_min_flights: 0}\n", "score.served_min_flights must be >= 1, got 0"),
        ("ingest: {wait_until: '3:30 am'}\n", "ingest.wait_until must be a time of day"),
        ("split: {holdout_days: 'seven'}\n", "split.holdout_days must be int"),
        ("ingest: {window_days: 5}\nsplit: {holdout_days: 5}\n", "holdout_days"),
        ("split: {history_days: 0}\n", "split.history_days must be >= 1"),
        ("split: {recent_days: -1}\n", "split.recent_days must be >= 1"),
        ("train: {bagging_models: 0}\n", "train.bagging_models must be >= 1"),
        ("train: {bagging_models: 2.5}\n", "train.bagging_models must be int"),
        ("train: {bagging_day_fraction: 0}\n", r"train.bagging_day_fraction must be in \(0, 1\]"),
        ("train: {bagging_day_fraction: 1.5}\n", "train.bagging_day_fraction must be in"),
        ("train: {max_features: 0.0}\n", r"train.max_features must be in \(0, 1\]"),
        ("train: {max_rows: 0}\n", "train.max_rows must be a whole number >= 1 or null, got 0"),
        ("train: {max_rows: true}\n", "train.max_rows must be a whole number >= 1 or null"),
        ("train: {max_rows: 1.5e6}\n", "train.max_rows must be int"),
        ("drift: {warn: 0.3, alert: 0.2}\n", "0 < warn <= alert, got warn 0.3, alert 0.2"),
        ("drift: {warn: 0}\n", "0 < warn <= alert"),
        ("drift: {alert: 'high'}\n", "drift.alert must be float"),
        ("drift: {min_rows: 0}\n", "drift.min_rows must be >= 1"),
        ("drift: {bins: 1}\n", "drift.bins must be >= 2"),
        ("drift: {epsilon: 0}\n", r"drift.epsilon must be in \(0, 0.01\)"),
        ("drift: {min_category_share: 1}\n", r"drift.min_category_share must be in \[0, 1\)"),
        ("drift: {watch: [distance, distanse]}\n", "drift.watch names unknown .*: distanse"),
        ("drift: {watch: distance}\n", "drift.watch must be a list of names"),
        ("ingest: [1, 2]\n", "section 'ingest' must be a mapping"),
        ("ingest: {window_days: [\n", "not valid YAML"),
    ],
)
def test_bad_parameter_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, write(tmp_path, text))


def test_missing_parameter_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"parameter file not found: .*nope\.yaml"):
        load_settings(tmp_path, tmp_path / "nope.yaml")


def test_the_training_rows_are_bounded_by_default_and_null_lifts_the_bound(tmp_path):
    assert load_settings(tmp_path, write(tmp_path, "{}\n")).train.max_rows == 1_000_000
    lifted = load_settings(tmp_path, write(tmp_path, "train: {max_rows: null}\n"))
    assert lifted.train.max_rows is None
    assert "max_rows" not in lifted.train.hyperparameters()  # not the booster's own
