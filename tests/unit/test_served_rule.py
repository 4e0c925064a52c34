"""Promotion rule 5: the served score steps a champion down within the day."""

from datetime import date, timedelta

import pytest

from flight_delays.model.promotion import Decision, ServedScore, served_step_down, with_served

D = date(2013, 11, 15)
RULE = {"margin": 0.25, "bad_days": 2, "days": 3}


def day(offset: int, served: float, baseline: float = 10.0, flights: int = 100) -> ServedScore:
    return ServedScore(D + timedelta(days=offset), flights, served, baseline)


def test_k_of_the_last_n_days_worse_by_the_margin_steps_down():
    history = [day(-2, 13.0), day(-1, 9.0), day(0, 13.0)]
    decision = served_step_down(history, D, **RULE, champion_name="model of 2013-11-10")
    assert decision.step_down and not decision.promote
    assert decision.label == "stepped down"
    assert "2 of the last 3 served days" in decision.reason
    assert "model of 2013-11-10" in decision.reason and "+30.0%" in decision.reason


def test_k_minus_one_of_n_days_is_not_enough():
    decision = served_step_down([day(-2, 9.0), day(-1, 9.0), day(0, 13.0)], D, **RULE)
    assert not decision.step_down
    assert "1 of the last 3" in decision.reason and "step-down at 2 of 3" in decision.reason


def test_exactly_the_margin_counts_as_worse_and_just_below_does_not():
    # 12.5 = 10 * (1 + 0.25): worse by exactly the margin.
    assert served_step_down([day(-1, 12.5), day(0, 12.5)], D, **RULE).step_down
    assert not served_step_down([day(-1, 12.5), day(0, 12.49)], D, **RULE).step_down
    assert ServedScore(D, 1, 12.5, 10.0).worse_by(0.25)
    assert not ServedScore(D, 1, 12.4999, 10.0).worse_by(0.25)
    assert ServedScore(D, 1, 11.0, 10.0).worse_by(0.1)  # 10 * 1.1 = 11.000000000000002
    # A zero margin still needs the served MAE to be worse, not equal.
    assert not ServedScore(D, 1, 10.0, 10.0).worse_by(0.0)


def test_only_the_last_n_served_days_count():
    # Two bad days, but the older one is out of the last 3 served days.
    history = [day(-3, 13.0), day(-2, 9.0), day(-1, 9.0), day(0, 13.0)]
    assert not served_step_down(history, D, **RULE).step_down


def test_the_step_down_acts_on_the_night_of_a_bad_day_only():
    # 2 bad days of the last 3, but the day judged was good: the count did not tip today.
    history = [day(-2, 13.0), day(-1, 13.0), day(0, 9.0)]
    assert not served_step_down(history, D, **RULE).step_down


def test_a_gap_day_is_skipped_never_counted():
    # Nothing served on D-1: the last 3 served days are D-3, D-2 and D.
    history = [day(-3, 13.0), day(-2, 9.0), day(0, 13.0)]
    assert served_step_down(history, D, **RULE).step_down
    history = [day(-3, 9.0), day(-2, 9.0), day(0, 13.0)]
    assert not served_step_down(history, D, **RULE).step_down
    # The night of a day with nothing served: skipped with a reason.
    skipped = served_step_down([day(-2, 13.0), day(-1, 13.0)], D, **RULE)
    assert not skipped.step_down and "skipped" in skipped.reason
    assert "never counted as a zero" in skipped.reason
    # A day scored on no flights, or with a missing MAE, is a gap too.
    for empty in (day(0, 13.0, flights=0), day(0, float("nan"))):
        verdict = served_step_down([day(-1, 13.0), empty], D, **RULE)
        assert not verdict.step_down and "skipped" in verdict.reason


def test_later_days_and_duplicates_are_ignored_and_the_rule_is_idempotent():
    history = [day(-1, 13.0), day(0, 13.0), day(1, 9.0), day(2, 9.0)]
    first = served_step_down(history, D, **RULE)
    assert first.step_down
    assert served_step_down(list(reversed(history)), D, **RULE) == first  # same again
    # The same day scored twice (a rerun): the last score of the day counts, once.
    assert not served_step_down([day(-1, 9.0), day(0, 13.0), day(0, 13.0)], D, **RULE).step_down


def test_a_day_scored_on_too_few_flights_is_skipped_never_counted():
    # A morning whose schedule was only partly loaded served 12 flights: too few to judge.
    few = {**RULE, "min_flights": 50}
    verdict = served_step_down([day(-1, 13.0), day(0, 30.0, flights=12)], D, **few)
    assert not verdict.step_down
    assert "skipped, 12 served flights scored, fewer than the 50 needed" in verdict.reason
    # Nor does it count among the last N days: D-1 was such a day, so the last 3 counted
    # are D-3, D-2 and D, of which only D is bad.
    history = [day(-3, 9.0), day(-2, 9.0), day(-1, 30.0, flights=12), day(0, 13.0)]
    assert not served_step_down(history, D, **few).step_down
    assert served_step_down(history, D, **RULE).step_down  # counted by default (1 flight)
    # At the threshold a day is judged.
    assert served_step_down([day(-1, 13.0), day(0, 13.0, flights=50)], D, **few).step_down


@pytest.mark.parametrize(
    "params", [{"margin": 0.1, "bad_days": 0, "days": 3}, {"margin": 0.1, "bad_days": 4, "days": 3},
               {"margin": -0.1, "bad_days": 1, "days": 1},
               {"margin": 0.1, "bad_days": 1, "days": 1, "min_flights": 0}]
)  # fmt: skip
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        served_step_down([day(0, 13.0)], D, **params)


def test_with_served_lets_rules_1_to_4_move_first():
    kept, promoted = Decision(False, "kept: x"), Decision(True, "promoted: y")
    down = Decision(False, "served: z", step_down=True)
    holdout_down = Decision(False, "decayed", step_down=True)
    assert with_served(promoted, down) is promoted
    assert with_served(holdout_down, down) is holdout_down
    assert with_served(kept, None) is kept
    fine = with_served(kept, Decision(False, "served fine"))
    assert not fine.moves_champion and fine.reason == "kept: x; served fine"
    combined = with_served(kept, down)
    assert combined.step_down and combined.reason == "kept: x; served: z"
