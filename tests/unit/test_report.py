"""flight_delays.monitor.report: the run page says what the run decided, in words."""

from __future__ import annotations

import pytest

from flight_delays.monitor import report


def _metrics(**decision) -> dict:
    return {
        "day": "2013-06-30",
        "holdout_start": "2013-06-28",
        "holdout_end": "2013-06-30",
        "holdout_rows": 2400,
        "within_minutes": 15,
        "model": {"mae": 10.0},
        "champion": {"mae": 12.0},
        "baseline": {"mae": 11.0},
        "champion_info": {"name": "model of 2013-06-23"},
        "decision": {"reason": "the reason <as recorded>", **decision},
    }


@pytest.mark.parametrize(
    ("decision", "label", "css"),
    [
        ({"promoted": True}, "promoted", "promoted"),
        ({"promoted": False}, "kept the champion", "kept"),
        (
            {"promoted": False, "stepped_down": True},
            "the champion stepped down: the baseline is champion again",
            "stepped",
        ),
    ],
)
def test_the_page_names_the_decision_and_its_reason(decision, label, css) -> None:
    page = report.render(_metrics(**decision), {"train_rows": 9000}, [], {})
    assert f'<span class="{css}">{label}</span>' in page
    assert "the reason &lt;as recorded&gt;" in page  # escaped, never raw HTML
    assert f".{css}{{" in page  # the label has a style


def test_a_model_card_without_its_row_count_still_draws_the_page() -> None:
    # A card written by another version: a "?" where the count goes, not a ValueError.
    page = report.render(_metrics(promoted=True), {}, [], {})
    assert "<tr><th>Training rows</th><td>?</td></tr>" in page
    page = report.render(_metrics(promoted=True), {"train_rows": 123456}, [], {})
    assert "<tr><th>Training rows</th><td>123,456</td></tr>" in page


def test_the_page_says_what_max_rows_left_out_of_the_training_table() -> None:
    left = {"max_rows": 1_000_000, "rows": 2_210_345, "days": 255}
    card = {"train_rows": 998_113, "train_rows_left_out": left}
    page = report.render(_metrics(promoted=True), card, [], {})
    assert (
        "<tr><th>Training rows</th><td>998,113 (2,210,345 rows of the 255 oldest days left "
        "out: train.max_rows is 1,000,000)</td></tr>"
    ) in page
    nothing = {**left, "rows": 0, "days": 0}
    page = report.render(_metrics(promoted=True), {**card, "train_rows_left_out": nothing}, [], {})
    assert "<tr><th>Training rows</th><td>998,113</td></tr>" in page
