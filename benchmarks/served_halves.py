"""The served targets of issue 18 per half, from backtest.csv files of
``python -m flight_delays.backtest --every 7`` (one per alignment).

    .venv/bin/python benchmarks/served_halves.py reports/backtest/served_1231/backtest.csv ...

First half: holdouts ending by 2013-06-30 (where rule 5 was chosen); second half: after.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

FIRST_HALF_END = "2013-06-30"


def cells(frame: pd.DataFrame) -> str:
    gain = frame["improvement_pct"].to_numpy()
    served = frame["champion_improvement_pct"].to_numpy()
    steps = int(frame["served_step_down"].notna().sum())
    return (
        f"{int((gain > 0).sum())}/{len(gain)} ({100 * np.mean(gain > 0):.0f} %) | "
        f"{gain.mean():+.2f} | {served.min():+.2f} | {served.mean():+.2f} | {steps}"
    )


def main(paths: list[str]) -> None:
    print(
        "| alignment (last end) | part | challenger beats baseline | challenger mean | "
        "served worst week | served mean | served step-downs |"
    )
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        frame = pd.read_csv(path)
        end = frame["holdout_end"].max()
        first = frame[frame["holdout_end"] <= FIRST_HALF_END]
        second = frame[frame["holdout_end"] > FIRST_HALF_END]
        for part, chosen in (("first half", first), ("second half", second), ("all", frame)):
            print(f"| {end} ({Path(path).parent.name}) | {part} | {cells(chosen)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
