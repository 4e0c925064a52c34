"""flight_delays.base.frames: the generic frame helpers the steps and the backtest share."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from flight_delays.base.errors import PipelineDataError
from flight_delays.base.frames import (
    InvalidFrameError,
    MissingColumnsError,
    require_columns,
    to_day,
    whole_numbers,
)


def test_require_columns_passes_a_complete_frame_and_names_what_is_missing() -> None:
    frame = pd.DataFrame({"a": [1], "b": [2]})
    require_columns(frame, ["b", "a"], "features")
    with pytest.raises(MissingColumnsError, match=r"^train frame .*: c, d$") as info:
        require_columns(frame, ["a", "c", "d"], "train")
    assert (info.value.frame_name, info.value.missing) == ("train", ["c", "d"])
    assert isinstance(info.value, PipelineDataError)  # a retry cannot fix it


@pytest.mark.parametrize(
    "values",
    [
        [date(2013, 6, 9), date(2013, 6, 10)],
        [datetime(2013, 6, 9, 17, 45), datetime(2013, 6, 10, 0, 5)],
        ["2013-06-09", "2013-06-10"],
    ],
)
def test_to_day_gives_midnights_from_dates_datetimes_and_strings(values) -> None:
    days = to_day(pd.Series(values))
    assert days.dtype == "datetime64[ns]"
    assert list(days) == [pd.Timestamp("2013-06-09"), pd.Timestamp("2013-06-10")]


def test_to_day_rejects_text_that_is_no_date() -> None:
    with pytest.raises(ValueError):
        to_day(pd.Series(["2013-06-09", "not a day"]))


def test_whole_numbers_turns_whole_floats_and_strings_into_int64() -> None:
    frame = pd.DataFrame({"hour": [7.0, 8.0], "flight": ["1545", "20"]})
    assert whole_numbers(frame, "hour", "weather").tolist() == [7, 8]
    got = whole_numbers(frame, "flight", "flights")
    assert got.dtype == "int64"
    assert got.tolist() == [1545, 20]


@pytest.mark.parametrize("bad", [[7.0, None], [7.5, 8.0], ["7", "x"]])
def test_whole_numbers_rejects_nulls_and_fractions(bad) -> None:
    frame = pd.DataFrame({"hour": bad})
    with pytest.raises(InvalidFrameError, match="weather frame: column hour must hold whole"):
        whole_numbers(frame, "hour", "weather")
