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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


def champion_name(model_day: date | None) -> str:
    """How decisions, reports and the backtest name a champion: ``baseline`` or
    ``model of <the day it was trained for>``."""
    return "baseline" if model_day is None else f"model of {model_day.isoformat()}"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "kept"


def decide(
    challenger_mae: float,
    champion_mae: float,
    challenger_day: date,
    champion_day: date | None,
    margin: float,
    champion_name: str = "champion",
    *,
    baseline_mae: float,
) -> Decision:
    """Promote the challenger or keep the champion; MAEs in minutes on the same holdout.

    ``champion_day`` is None while the baseline is champion (``champion_mae`` is then
    the baseline's). ``champion_name`` describes the champion in the reason (e.g.
    "baseline", "model of 2013-03-01").
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
    if champion_day is not None and challenger_day < champion_day:
        return Decision(
            False,
            f"champion ({champion_name}) was trained for {champion_day.isoformat()}, not "
            f"before this run's day {challenger_day.isoformat()}: a model never replaces a "
            "newer one",
        )
    if champion_day is not None and not challenger_mae < baseline_mae:
        return Decision(
            False,
            f"challenger MAE {challenger_mae:.2f} min is not better than the baseline's "
            f"{baseline_mae:.2f} min on this holdout: a model worse than the baseline is "
            f"never promoted (champion {champion_name}: {champion_mae:.2f} min)",
        )
    change = (champion_mae - challenger_mae) / champion_mae if champion_mae > 0 else 0.0
    comparison = (
        f"challenger MAE {challenger_mae:.2f} min vs {champion_name} {champion_mae:.2f} min "
        f"({change:+.1%}; margin {margin:.1%})"
    )
    if challenger_mae <= champion_mae * (1 - margin) and challenger_mae < champion_mae:
        return Decision(True, f"{comparison}: better by the margin")
    return Decision(False, f"{comparison}: not better by the margin")
