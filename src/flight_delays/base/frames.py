"""Generic helpers for the pipeline's pandas frames: required columns, calendar days and
whole-number columns, and the errors they raise.

Shared by the steps (featurize, split and its past-day statistics in history) and the
backtest, so no step imports another step for a helper. :mod:`flight_delays.base.schema`
stays declarations only (column names and contracts, no pandas); the code that checks
frames against them lives here.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from flight_delays.base.errors import PipelineDataError


class MissingColumnsError(PipelineDataError):
    """A frame lacks columns a step needs: names the frame and the columns."""

    def __init__(self, frame_name: str, missing: Iterable[str]) -> None:
        self.frame_name = frame_name
        self.missing = list(missing)
        super().__init__(
            f"{frame_name} frame is missing required column(s): {', '.join(self.missing)}"
        )


class InvalidFrameError(PipelineDataError):
    """A frame has the right columns but values that break its schema."""


def require_columns(frame: pd.DataFrame, columns: Iterable[str], frame_name: str) -> None:
    """Raise :class:`MissingColumnsError` unless ``frame`` has every name in ``columns``."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingColumnsError(frame_name, missing)


def to_day(values: pd.Series) -> pd.Series:
    """Calendar days as datetime64[ns] at midnight, from dates, datetimes or ISO strings."""
    return pd.to_datetime(values).astype("datetime64[ns]").dt.normalize()


def whole_numbers(frame: pd.DataFrame, column: str, frame_name: str) -> pd.Series:
    """``frame[column]`` as int64, from ints or from floats/strings holding whole numbers
    (a null in a source column turns an integer column into float through SQL).

    Raises :class:`InvalidFrameError` for a null or a fractional value."""
    numbers = pd.to_numeric(frame[column], errors="coerce")
    if numbers.isna().any() or not (numbers == numbers.round()).all():
        raise InvalidFrameError(
            f"{frame_name} frame: column {column} must hold whole numbers, without nulls"
        )
    return numbers.astype("int64")
