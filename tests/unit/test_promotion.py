from datetime import date

import pytest

from flight_delays.promotion import decide

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
    from flight_delays.promotion import Decision

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
