"""The promotion rule: when a challenger replaces the champion. Pure: numbers and days
in, a decision with its reason out.

1. Never backwards in time: a challenger trained for a day no later than the champion's
   day is kept out, however good (a backfill of old days must not demote the model
   trained on the newest data; a re-run of the champion's own day leaves it in place).
2. Never worse than the baseline: the challenger's holdout MAE must be lower than the
   naive baseline's on the same holdout. A champion model can fall behind the baseline
   on a later holdout; a challenger that beats such a champion but not the baseline
   stays out, so a promoted model has always beaten the baseline on its own holdout.
3. Better by a margin: the challenger's holdout MAE must be lower than the champion's,
   on the same holdout, by at least ``margin`` (a fraction of the champion's MAE).
The naive baseline is the first champion, so the first promotion needs the margin over
the baseline itself.
4. A decayed champion steps down: when the challenger stays out, and the champion model
   loses to the baseline on this holdout by the same margin (the baseline would be
   promoted over it), the baseline becomes champion again. Only a run for a later day
   than the champion's can say so: an older holdout is not the champion's future.
5. The served score steps a champion down within the day (:func:`served_step_down`):
   each nightly run joins the predictions the champion served that morning to what
   happened; when the champion's served MAE was worse than the baseline's on the same
   flights by at least ``served_margin`` on ``served_bad_days`` of its last
   ``served_days`` served days, the baseline serves from the next morning. It reads only
   the days this champion served (a new champion starts afresh), and a day with nothing
   served is skipped with a reason, never counted. The nightly run applies it when rules
   1-4 leave the champion model in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any


def champion_name(model_day: date | None) -> str:
    """How decisions, reports and the backtest name a champion: ``baseline`` or
    ``model of <the day it was trained for>``."""
    return "baseline" if model_day is None else f"model of {model_day.isoformat()}"


#: The decision labels the registry, the reports and the backtest record.
PROMOTED, KEPT, STEPPED_DOWN = "promoted", "kept", "stepped down"
LABELS = (PROMOTED, KEPT, STEPPED_DOWN)


@dataclass(frozen=True)
class Decision:
    """``promote``: the challenger becomes champion. ``step_down``: the champion model
    gives way to the baseline (never both)."""

    promote: bool
    reason: str
    step_down: bool = False

    def __post_init__(self) -> None:
        if self.promote and self.step_down:
            raise ValueError("a decision cannot both promote the challenger and step down")

    @property
    def label(self) -> str:
        if self.promote:
            return PROMOTED
        return STEPPED_DOWN if self.step_down else KEPT

    @property
    def moves_champion(self) -> bool:
        return self.promote or self.step_down


def decide(
    challenger_mae: float,
    champion_mae: float,
    challenger_day: date,
    champion_day: date | None,
    margin: float,
    champion_name: str = "champion",
    *,
    baseline_mae: float,
    baseline_since: date | None = None,
) -> Decision:
    """Promote the challenger or keep the champion; MAEs in minutes on the same holdout.

    ``champion_day`` is None while the baseline is champion (``champion_mae`` is then
    the baseline's). ``champion_name`` describes the champion in the reason (e.g.
    "baseline", "model of 2013-03-01"). ``baseline_since``: the day whose run made the
    baseline champion again by a step-down (None: it always was, or a person rolled
    back): rule 1 holds from that day, so a late run of an older day cannot bring back a
    model from before the decay.
    """
    if not (challenger_mae >= 0 and champion_mae >= 0 and baseline_mae >= 0):
        raise ValueError(
            f"MAEs must be finite and >= 0, got challenger {challenger_mae}, "
            f"champion {champion_mae}, baseline {baseline_mae}"
        )
    if champion_day is not None and challenger_day == champion_day:
        return Decision(
            False,
            f"the champion ({champion_name}) was trained for this same day "
            f"{challenger_day.isoformat()} by an earlier run: a re-run of a day is a run of "
            "its own and never replaces or demotes it",
        )
    if champion_day is None and baseline_since is not None and challenger_day <= baseline_since:
        return Decision(
            False,
            f"the baseline is champion again since the run for {baseline_since.isoformat()}, "
            f"when a decayed model stepped down: a model for the earlier day "
            f"{challenger_day.isoformat()} never replaces it",
        )
    if champion_day is not None and challenger_day < champion_day:
        return Decision(
            False,
            f"champion ({champion_name}) was trained for {champion_day.isoformat()}, not "
            f"before this run's day {challenger_day.isoformat()}: a model never replaces a "
            "newer one",
        )
    if champion_day is not None and not challenger_mae < baseline_mae:
        kept = (
            f"challenger MAE {challenger_mae:.2f} min is not better than the baseline's "
            f"{baseline_mae:.2f} min on this holdout: a model worse than the baseline is "
            f"never promoted (champion {champion_name}: {champion_mae:.2f} min)"
        )
        return _kept_or_step_down(kept, champion_mae, baseline_mae, margin, champion_name)
    change = (champion_mae - challenger_mae) / champion_mae if champion_mae > 0 else 0.0
    comparison = (
        f"challenger MAE {challenger_mae:.2f} min vs {champion_name} {champion_mae:.2f} min "
        f"({change:+.1%}; margin {margin:.1%})"
    )
    if beats(challenger_mae, champion_mae, margin):
        return Decision(True, f"{comparison}: better by the margin")
    kept = f"{comparison}: not better by the margin"
    if champion_day is None:
        return Decision(False, kept)
    return _kept_or_step_down(kept, champion_mae, baseline_mae, margin, champion_name)


def beats(mae: float, other_mae: float, margin: float) -> bool:
    """Whether ``mae`` is lower than ``other_mae`` by at least ``margin`` (a fraction of
    ``other_mae``): the test a challenger passes to be promoted, and the baseline to
    take over from a decayed champion. At exactly the margin, it does."""
    # Compared to the nanominute: 9.3 against 10.0 is better by exactly 7 %, but
    # 10.0 * (1 - 0.07) is 9.299999999999999 in floating point. Rounding both sides keeps
    # the boundary sharp (a tolerance would move it); the strict second test keeps an
    # equal MAE out with a zero margin.
    return round(mae, 9) <= round(other_mae * (1 - margin), 9) and mae < other_mae


def _kept_or_step_down(
    kept: str, champion_mae: float, baseline_mae: float, margin: float, champion_name: str
) -> Decision:
    """The challenger stays out (``kept`` says why); the champion model steps down when
    the baseline beats it by the margin on this holdout."""
    if not beats(baseline_mae, champion_mae, margin):
        return Decision(False, kept)
    change = (champion_mae - baseline_mae) / champion_mae
    return Decision(
        False,
        f"{kept}; the champion ({champion_name}) decayed: its MAE {champion_mae:.2f} min "
        f"is worse than the baseline's {baseline_mae:.2f} min ({change:+.1%} for the "
        f"baseline; margin {margin:.1%}), so it steps down and the baseline is champion again",
        step_down=True,
    )


@dataclass(frozen=True)
class ServedScore:
    """One served day of a champion: the MAE (minutes) of the predictions it served for
    ``day`` against the actual arrival delays of ``flights`` flights, and the baseline's
    on the same flights."""

    day: date
    flights: int
    served_mae: float
    baseline_mae: float

    @property
    def usable(self) -> bool:
        """Whether the day can be counted: flights were scored and both MAEs are finite."""
        return (
            self.flights > 0
            and math.isfinite(self.served_mae)
            and math.isfinite(self.baseline_mae)
            and self.served_mae >= 0
            and self.baseline_mae >= 0
        )

    def worse_by(self, margin: float) -> bool:
        """Whether the served MAE is worse than the baseline's by at least ``margin`` (a
        fraction of the baseline's MAE): at exactly the margin, it is."""
        # As a difference, with a nanominute of tolerance: 11.0 against 10.0 is worse by
        # exactly 10 % (10 * 1.1 is 11.000000000000002 in floating point).
        excess = self.served_mae - self.baseline_mae
        return excess > 0 and excess >= self.baseline_mae * margin - 1e-9


def served_step_down(
    history: Sequence[ServedScore],
    day: date,
    *,
    margin: float,
    bad_days: int,
    days: int,
    min_flights: int = 1,
    champion_name: str = "champion",
) -> Decision:
    """Rule 5: whether the champion model steps down after the night of ``day``.

    ``history``: the served days of the current champion model (any order, the days it
    served only; later days than ``day`` are ignored, so a rerun of an old night judges
    what was known then). The champion steps down when, among its last ``days`` usable
    served days up to ``day``, at least ``bad_days`` were worse than the baseline by
    ``margin`` (:meth:`ServedScore.worse_by`) and ``day`` itself is one of them (a step
    down acts on new evidence: the night whose score tips the count). A day with no
    served flights (a gap: nothing was served, or no served flight arrived) is skipped
    with a reason and never counted, as good or as bad; so is a day scored on fewer than
    ``min_flights`` flights (the prediction run read a schedule only partly loaded): too
    few to judge a champion on. Never promotes.
    """
    if not 1 <= bad_days <= days:
        raise ValueError(f"need 1 <= bad_days <= days, got {bad_days} of {days}")
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    if min_flights < 1:
        raise ValueError(f"min_flights must be >= 1, got {min_flights}")
    by_day: dict[date, ServedScore] = {}
    for score in history:
        if score.day <= day:
            by_day[score.day] = score
    today = by_day.get(day)
    if today is None or not today.usable:
        return Decision(
            False,
            f"served score of {day.isoformat()}: skipped, no served predictions were scored "
            f"for the day (never counted as a zero); {champion_name} stays",
        )
    if today.flights < min_flights:
        return Decision(
            False,
            f"served score of {day.isoformat()}: skipped, {today.flights} served flights "
            f"scored, fewer than the {min_flights} needed to judge the day (never counted); "
            f"{champion_name} stays",
        )
    counted = [s for s in by_day.values() if s.usable and s.flights >= min_flights]
    recent = sorted(counted, key=lambda s: s.day)[-days:]
    bad = [s for s in recent if s.worse_by(margin)]
    change = today.served_mae / today.baseline_mae - 1 if today.baseline_mae > 0 else 0.0
    status = (
        f"served MAE {today.served_mae:.2f} min vs baseline {today.baseline_mae:.2f} min on "
        f"{today.flights} flights of {day.isoformat()} ({change:+.1%}); worse by the served "
        f"margin {margin:.1%} on {len(bad)} of the last {len(recent)} served days of "
        f"{champion_name} (step-down at {bad_days} of {days})"
    )
    if len(bad) >= bad_days and today.worse_by(margin):
        return Decision(
            False,
            f"{status}: the champion ({champion_name}) steps down within the day and the "
            "baseline serves from the next morning",
            step_down=True,
        )
    return Decision(False, status)


def with_served(
    decision: Decision,
    served: Decision | None,
    *,
    challenger_mae: float | None = None,
    baseline_mae: float | None = None,
    margin: float = 0.0,
) -> Decision:
    """The night's decision: rules 1-4's ``decision`` when it moves the champion (a
    promotion replaces the champion whose served score rule 5 judged), else rules 1-4's
    reason followed by rule 5's ``served`` verdict on the day's served score, which steps
    the champion down or says why not (None: rule 5 had nothing to judge).

    When the champion steps down on its served score and the run's challenger beats the
    baseline on the holdout by ``margin`` (``challenger_mae`` and ``baseline_mae``, in
    minutes; rules 2 and 3 against the baseline, which would be champion), the challenger
    is promoted in its place: the baseline does not serve while a better model is at
    hand. Without the MAEs, the baseline takes over."""
    if decision.moves_champion or served is None:
        return decision
    reason = f"{decision.reason}; {served.reason}"
    if not served.step_down:
        return Decision(False, reason)
    if (
        challenger_mae is not None
        and baseline_mae is not None
        and beats(challenger_mae, baseline_mae, margin)
    ):
        change = (baseline_mae - challenger_mae) / baseline_mae if baseline_mae > 0 else 0.0
        return Decision(
            True,
            f"{reason}; instead of the baseline, the challenger takes its place: its MAE "
            f"{challenger_mae:.2f} min beats the baseline's {baseline_mae:.2f} min "
            f"({change:+.1%}; margin {margin:.1%})",
        )
    return Decision(False, reason, step_down=True)


def champion_event(score_result: dict[str, Any], day: date | str) -> dict[str, Any] | None:
    """What the ``champion`` asset event of a nightly run carries, or None when the run
    left the champion in place (no event).

    ``score_result``: what :func:`flight_delays.score.run` returned (``decision``,
    ``model_sha256``, the holdout MAEs). The extra names the new champion: the run's
    model after a promotion, the baseline after a step-down; its MAE on the run's
    holdout (minutes) and the processed day."""
    decision = score_result["decision"]
    if decision not in (PROMOTED, STEPPED_DOWN):
        return None
    promoted = decision == PROMOTED
    return {
        "day": day if isinstance(day, str) else day.isoformat(),
        "decision": decision,
        "champion": "model" if promoted else "baseline",
        "model_sha256": score_result["model_sha256"] if promoted else None,
        "mae": score_result["model_mae"] if promoted else score_result["baseline_mae"],
        "run_id": score_result.get("run_id"),
    }
