"""score.served_* (promotion rule 5): typed, checked, with clear errors."""

from pathlib import Path

import pytest

from flight_delays.store.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_shipped_served_rule_loads(tmp_path):
    score = load_settings(tmp_path, REPO / "include" / "params.yaml").score
    assert 0 < score.served_margin < 1
    assert 1 <= score.served_bad_days <= score.served_days


def test_served_settings_are_read(tmp_path):
    text = "score: {served_margin: 0.1, served_bad_days: 2, served_days: 5}\n"
    score = load_settings(tmp_path, write(tmp_path, text)).score
    assert (score.served_margin, score.served_bad_days, score.served_days) == (0.1, 2, 5)
    # An integer margin is read as a float.
    assert (
        load_settings(tmp_path, write(tmp_path, "score: {served_margin: 0}\n")).score.served_margin
        == 0.0
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("score: {served_margin: -0.1}", r"score.served_margin must be in \[0, 10\), got -0.1"),
        ("score: {served_days: 0, served_bad_days: 1}", r"score.served_days must be >= 1, got 0"),
        (
            "score: {served_days: 2, served_bad_days: 3}",
            r"score.served_bad_days must be in \[1, score.served_days = 2\], got 3",
        ),
        ("score: {served_bad_days: 0}", r"score.served_bad_days must be in \[1, .*got 0"),
        ("score: {served_days: two}", r"score.served_days must be int, got 'two'"),
        ("score: {served_days: 1.5}", r"score.served_days must be int, got 1.5"),
        ("score: {promotion_margin: 1.5}", r"score.promotion_margin must be in \[0, 1\)"),
        ("score: {served_rule: cusum}", r"section 'score' has unknown keys: served_rule"),
    ],
)
def test_bad_served_settings_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, write(tmp_path, text + "\n"))
