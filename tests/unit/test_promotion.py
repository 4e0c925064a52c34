import math
from datetime import date
from pathlib import Path

import pytest

from flight_delays.model.promotion import Decision, decide, with_served

D = date(2013, 6, 1)


def test_first_model_must_beat_the_baseline_by_the_margin():
    win = decide(9.0, 10.0, D, None, margin=0.05, champion_name="baseline", baseline_mae=10.0)
    assert win.promote and win.label == "promoted"
    assert "baseline 10.00 min" in win.reason and "+10.0%" in win.reason
    near = decide(9.8, 10.0, D, None, margin=0.05, baseline_mae=10.0)
    assert not near.promote and "not better by the margin" in near.reason


def test_equal_mae_is_never_a_promotion_even_with_zero_margin():
    assert not decide(10.0, 10.0, D, None, margin=0.0, baseline_mae=10.0).promote
    assert decide(9.99, 10.0, D, None, margin=0.0, baseline_mae=10.0).promote


def test_an_older_day_never_replaces_a_newer_champion():
    decision = decide(1.0, 10.0, date(2013, 5, 1), date(2013, 5, 2), margin=0.0, baseline_mae=9.0)
    assert not decision.promote
    assert "2013-05-02" in decision.reason and "newer" in decision.reason


def test_a_rerun_of_the_champions_day_leaves_it_in_place_and_says_so():
    decision = decide(
        1.0, 10.0, D, D, margin=0.0, champion_name="model of 2013-06-01", baseline_mae=9.0
    )
    assert not decision.promote
    assert "same day 2013-06-01 by an earlier run" in decision.reason
    assert "never replaces or demotes it" in decision.reason


def test_a_challenger_worse_than_the_baseline_never_replaces_a_weak_champion():
    # The champion model has fallen behind the baseline (17.25 against 16.19 min, the
    # week of 2013-10-22 in the backtest); a challenger at 16.57 beats it by 4 % but
    # would still serve worse than the baseline.
    champion_day = date(2013, 10, 15)
    kept = decide(16.57, 17.25, D.replace(month=10, day=22), champion_day, 0.01, baseline_mae=16.19)
    assert not kept.promote
    assert "not better than the baseline's 16.19 min" in kept.reason
    # ... and since the baseline beats that champion by more than the margin, the
    # champion steps down.
    assert kept.step_down and kept.label == "stepped down"
    # Better than both, by the margin over the champion: promoted.
    won = decide(16.0, 17.25, D.replace(month=10, day=22), champion_day, 0.01, baseline_mae=16.19)
    assert won.promote


def test_bad_numbers_are_named():
    with pytest.raises(ValueError, match="challenger nan"):
        decide(float("nan"), 10.0, D, None, margin=0.01, baseline_mae=10.0)
    with pytest.raises(ValueError, match="baseline -1"):
        decide(9.0, 10.0, D, None, margin=0.01, baseline_mae=-1.0)


def test_a_decayed_champion_steps_down_to_the_baseline_and_says_why():
    champion_day = date(2013, 10, 15)
    day = date(2013, 10, 22)
    # Challenger worse than the baseline; champion 5 % worse than the baseline.
    decision = decide(10.6, 10.5, day, champion_day, 0.01, "model of 2013-10-15", baseline_mae=10.0)
    assert decision.step_down and not decision.promote and decision.moves_champion
    assert decision.label == "stepped down"
    assert "model of 2013-10-15" in decision.reason and "decayed" in decision.reason
    assert "10.50 min" in decision.reason and "10.00 min" in decision.reason
    # The challenger is better than the baseline but not by the margin over a champion
    # that is itself only slightly worse than the baseline: kept, no step-down.
    near = decide(9.99, 10.05, day, champion_day, 0.01, baseline_mae=10.0)
    assert near.label == "kept" and not near.step_down


def test_the_step_down_needs_the_margin_like_a_promotion():
    champion_day, day = date(2013, 10, 15), date(2013, 10, 22)
    # Baseline better than the champion by 0.5 %, margin 1 %: the champion stays.
    stays = decide(11.0, 10.05, day, champion_day, 0.01, baseline_mae=10.0)
    assert stays.label == "kept"
    # By 1 % or more: it steps down.
    assert decide(11.0, 10.11, day, champion_day, 0.01, baseline_mae=10.0).step_down


def test_no_step_down_while_the_baseline_is_champion_or_from_an_older_holdout():
    # The baseline cannot step down to itself.
    assert not decide(11.0, 10.0, D, None, 0.01, baseline_mae=10.0).step_down
    # A backfill of a day before the champion's, or a re-run of its own day, never
    # demotes it, however bad it looks on that older holdout.
    champion_day = date(2013, 10, 15)
    older = decide(11.0, 20.0, date(2013, 10, 1), champion_day, 0.01, baseline_mae=10.0)
    same = decide(11.0, 20.0, champion_day, champion_day, 0.01, baseline_mae=10.0)
    assert older.label == "kept" and same.label == "kept"


def test_a_decision_cannot_promote_and_step_down():
    with pytest.raises(ValueError, match="both"):
        Decision(True, "x", step_down=True)


def test_after_a_step_down_no_model_comes_back_from_an_older_day():
    since = date(2013, 10, 22)
    # A late run of a day before the step-down, however good: kept out.
    late = decide(
        5.0, 10.0, date(2013, 10, 20), None, 0.01, baseline_mae=10.0, baseline_since=since
    )
    assert late.label == "kept" and "since the run for 2013-10-22" in late.reason
    same = decide(5.0, 10.0, since, None, 0.01, baseline_mae=10.0, baseline_since=since)
    assert same.label == "kept"
    # A later day's model that beats the baseline by the margin: promoted as usual.
    later = decide(
        5.0, 10.0, date(2013, 10, 29), None, 0.01, baseline_mae=10.0, baseline_since=since
    )
    assert later.promote


# --- the boundaries (issue 20: planted bugs no test caught) ------------------------------
# The rule (promotion.beats): better by *at least* the margin, so a challenger better by
# exactly the margin is promoted, and one a hair short of it is kept.
CHAMPION_DAY = date(2013, 5, 31)  # a model champion, trained the day before D


def below(x: float) -> float:
    """The float just below ``x``: the smallest step past a boundary. (Just short of
    one is 1e-6 min away: the rule compares to the nanominute.)"""
    return math.nextafter(x, -math.inf)


@pytest.mark.parametrize(
    ("champion", "margin", "at_margin"),
    [
        (10.0, 0.25, 7.5),  # exact in binary
        (10.0, 0.07, 9.3),  # 10.0 * (1 - 0.07) is 9.299999999999999 in floating point
        (16.0, 0.05, 15.2),
        (20.0, 0.1, 18.0),
    ],
)
def test_better_by_exactly_a_nonzero_margin_is_promoted_and_a_hair_short_is_kept(
    champion, margin, at_margin
):
    # Over the baseline as first champion, and over a model champion (baseline far worse).
    for champion_day, baseline in ((None, champion), (CHAMPION_DAY, 30.0)):
        exact = decide(at_margin, champion, D, champion_day, margin, baseline_mae=baseline)
        assert exact.promote, exact.reason
        assert "better by the margin" in exact.reason
        short = decide(at_margin + 1e-6, champion, D, champion_day, margin, baseline_mae=baseline)
        assert not short.promote and "not better by the margin" in short.reason
        assert decide(
            below(at_margin), champion, D, champion_day, margin, baseline_mae=baseline
        ).promote


def test_the_shipped_margin_promotes_any_lower_mae_and_never_an_equal_one():
    # include/params.yaml: score.promotion_margin 0.0, "0.0: any lower MAE".
    from flight_delays.store.config import load_settings

    margin = load_settings(Path(__file__).resolve().parents[2]).score.promotion_margin
    assert margin == 0.0
    for champion_day, baseline in ((None, 10.0), (CHAMPION_DAY, 30.0)):
        assert decide(below(10.0), 10.0, D, champion_day, margin, baseline_mae=baseline).promote
        equal = decide(10.0, 10.0, D, champion_day, margin, baseline_mae=baseline)
        assert not equal.promote and "not better by the margin" in equal.reason


def test_the_baseline_better_by_exactly_the_margin_steps_a_champion_down():
    # beats() also decides rule 4: the baseline takes over at exactly the margin.
    # Champion 10.0, baseline 7.5: better by exactly 25 %.
    exact = decide(12.0, 10.0, D, CHAMPION_DAY, 0.25, baseline_mae=7.5)
    assert exact.step_down and not exact.promote
    short = decide(12.0, 10.0, D, CHAMPION_DAY, 0.25, baseline_mae=7.5 + 1e-6)
    assert short.label == "kept"


@pytest.mark.parametrize("margin", [0.0, 0.01, 0.1])
def test_a_challenger_equal_to_the_baseline_never_replaces_a_model_champion(margin):
    # The champion model (12.0) has fallen behind the baseline (10.0); a challenger that
    # only ties the baseline beats the champion by 16.7 %, yet must stay out (rule 2:
    # lower than the baseline, strictly).
    decision = decide(10.0, 12.0, D, CHAMPION_DAY, margin, baseline_mae=10.0)
    assert not decision.promote
    assert "not better than the baseline's 10.00 min" in decision.reason
    # The baseline beats the champion by 16.7 %, more than any of these margins.
    assert decision.step_down
    # A hair better than the baseline: promoted (it beats the champion by the margin).
    assert decide(below(10.0), 12.0, D, CHAMPION_DAY, margin, baseline_mae=10.0).promote


def test_a_challenger_equal_to_the_baseline_does_not_take_a_served_step_down():
    # Rule 5 stepped the champion down; the challenger ties the baseline on the holdout:
    # the baseline serves, the challenger does not take its place.
    kept = decide(10.0, 9.0, D, CHAMPION_DAY, 0.0, baseline_mae=10.0)
    served = Decision(False, "served worse", step_down=True)
    tie = with_served(kept, served, challenger_mae=10.0, baseline_mae=10.0, margin=0.0)
    assert tie.step_down and not tie.promote
    better = with_served(kept, served, challenger_mae=below(10.0), baseline_mae=10.0, margin=0.0)
    assert better.promote
