"""Column contracts shared by the steps: what the source holds, what a raw partition
holds, and what the feature table hands to split, train and score.

Times are local to the origin airport (America/New_York); delays are in minutes,
distances in miles, temperatures in °F, wind in mph, precipitation in inches,
pressure in millibars, visibility in miles.
"""

from __future__ import annotations

# --- source tables and raw partitions -------------------------------------------------
DAY = "local_date"  # the (replayed) local calendar day of the row
ORIGINAL_DAY = "original_date"  # the day in the 2013 data set the row was replayed from
REPLAY_CYCLE = "replay_cycle"  # k: the row is 2013 shifted forward by 364 * k days

FLIGHT_COLUMNS = [
    DAY,
    ORIGINAL_DAY,
    REPLAY_CYCLE,
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "sched_dep_time",
    "sched_arr_time",  # HHMM, local
    "dep_time",
    "dep_delay",
    "arr_time",
    "arr_delay",
    "air_time",  # actuals: never features
    "distance",
]
FLIGHT_KEY = [DAY, "carrier", "flight", "origin", "sched_dep_time"]

WEATHER_COLUMNS = [
    DAY,
    ORIGINAL_DAY,
    REPLAY_CYCLE,
    "origin",
    "hour",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
WEATHER_KEY = [DAY, "origin", "hour"]
WEATHER_MEASURES = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]

# --- feature table ----------------------------------------------------------------------
TARGET = "arr_delay"  # minutes; negative = early
SCHED_HOUR = "sched_hour"  # scheduled departure hour, 0-23 local
CATEGORICAL_FEATURES = ["carrier", "origin", "dest"]
# Known before departure: the schedule, the calendar, the weather at the origin in the
# scheduled hour (taken as a perfect forecast) and how busy the schedule is.
NUMERIC_FEATURES = [
    SCHED_HOUR,
    "day_of_week",
    "month",
    "distance",
    "sched_block_minutes",
    *WEATHER_MEASURES,
    "origin_hour_departures",
    "origin_day_departures",
    "carrier_day_departures",
]
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES
