import json
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from flight_delays import split
from flight_delays.base import schema
from flight_delays.base.frames import MissingColumnsError
from flight_delays.model import history
from flight_delays.split import split_by_day, split_with_history
from flight_delays.store import artifacts
from flight_delays.store.config import load_settings
from flight_delays.store.io import MissingArtifactError

DAY = date(2024, 1, 20)


def features_frame(days: list[date]) -> pd.DataFrame:
    """A stand-in feature table: two flights per listed day, rows in shuffled order, with
    the keys the past-day statistics group by."""
    rows = [
        {
            schema.DAY: d,
            "carrier": "AA",
            "flight": 10 * i + k,
            "origin": "JFK",
            "dest": "LAX",
            schema.SCHED_HOUR: 7,
            schema.TARGET: float(10 * i + k),
        }
        for i, d in enumerate(days)
        for k in (1, 2)
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame[schema.DAY] = pd.to_datetime(frame[schema.DAY]).astype("datetime64[ns]")
    return frame


def days_before(day: date, count: int) -> list[date]:
    """``count`` days ending on ``day``, oldest first."""
    return [day - timedelta(days=n) for n in range(count - 1, -1, -1)]


def day_set(frame: pd.DataFrame) -> set[date]:
    return set(frame[schema.DAY].dt.date)


def test_holdout_is_the_last_days_ending_on_the_day_inclusive():
    features = features_frame(days_before(DAY, 5))  # 16th..20th
    train, holdout = split_by_day(features, DAY, holdout_days=2)
    assert day_set(holdout) == {date(2024, 1, 19), date(2024, 1, 20)}
    assert day_set(train) == {date(2024, 1, 16), date(2024, 1, 17), date(2024, 1, 18)}
    assert (len(train), len(holdout)) == (6, 4)


def test_no_overlap_no_leakage_no_row_lost():
    features = features_frame(days_before(DAY, 6))
    train, holdout = split_by_day(features, DAY, holdout_days=3)
    assert train[schema.DAY].max() < holdout[schema.DAY].min()
    assert holdout[schema.DAY].max() <= pd.Timestamp(DAY)
    assert set(train["flight"]).isdisjoint(holdout["flight"])
    both = pd.concat([train, holdout]).sort_values("flight", ignore_index=True)
    pd.testing.assert_frame_equal(both, features.sort_values("flight", ignore_index=True))
    assert list(train.columns) == list(features.columns)
    assert list(train.index) == list(range(len(train)))
    assert list(holdout.index) == list(range(len(holdout)))


def test_gaps_in_the_days_do_not_move_the_boundary():
    # no flights on the 18th and 19th: the holdout is still the 19th..20th
    features = features_frame([date(2024, 1, 16), date(2024, 1, 17), DAY])
    train, holdout = split_by_day(features, DAY.isoformat(), holdout_days=2)
    assert day_set(holdout) == {DAY}
    assert day_set(train) == {date(2024, 1, 16), date(2024, 1, 17)}


def test_date_objects_and_times_of_day_are_accepted():
    features = features_frame(days_before(DAY, 4))
    late_in_day = features.assign(**{schema.DAY: features[schema.DAY] + pd.Timedelta("23h")})
    as_dates = features.assign(**{schema.DAY: features[schema.DAY].dt.date})
    for frame in (late_in_day, as_dates):
        train, holdout = split_by_day(frame, DAY, holdout_days=2)
        assert (len(train), len(holdout)) == (4, 4)


def test_input_is_not_modified():
    features = features_frame(days_before(DAY, 4))
    before = features.copy(deep=True)
    train, holdout = split_by_day(features, DAY, holdout_days=2)
    train.loc[0, schema.TARGET] = -1.0
    holdout.loc[0, schema.TARGET] = -1.0
    pd.testing.assert_frame_equal(features, before)


def test_rows_after_the_day_raise_as_leakage():
    features = features_frame([*days_before(DAY, 4), DAY + timedelta(days=1)])
    with pytest.raises(ValueError, match=r"2 feature rows are dated after .*2024-01-20.*leak"):
        split_by_day(features, DAY, holdout_days=2)


def test_empty_train_names_the_side_and_date():
    features = features_frame(days_before(DAY, 2))
    with pytest.raises(ValueError, match=r"train side is empty: .* before .* 2024-01-19"):
        split_by_day(features, DAY, holdout_days=2)


def test_empty_holdout_names_the_side_and_range():
    features = features_frame(days_before(DAY - timedelta(days=3), 4))
    with pytest.raises(ValueError, match=r"holdout side is empty: .* 2024-01-19\.\.2024-01-20"):
        split_by_day(features, DAY, holdout_days=2)


def test_missing_day_column_and_bad_holdout_days_raise():
    features = features_frame(days_before(DAY, 4))
    with pytest.raises(MissingColumnsError, match=schema.DAY):
        split_by_day(features.drop(columns=schema.DAY), DAY, holdout_days=2)
    with pytest.raises(ValueError, match="holdout_days must be >= 1"):
        split_by_day(features, DAY, holdout_days=0)


def busy_features(days: list[date], per_day: int = 12) -> pd.DataFrame:
    """``per_day`` flights a day, delays varying by day and flight, two origins."""
    rows = [
        {
            schema.DAY: d,
            "carrier": "AA" if k % 3 else "B6",
            "flight": k % 4,
            "origin": "JFK" if k % 2 else "EWR",
            "dest": "LAX",
            schema.SCHED_HOUR: 7 + k % 2,
            schema.TARGET: float((i * 7 + k * 3) % 23 - 5),
        }
        for i, d in enumerate(days)
        for k in range(per_day)
    ]
    frame = pd.DataFrame(rows)
    frame[schema.DAY] = pd.to_datetime(frame[schema.DAY]).astype("datetime64[ns]")
    return frame


def test_split_with_history_adds_the_statistics_with_the_holdout_start_as_cutoff():
    features = busy_features(days_before(DAY, 20))
    train, holdout = split_with_history(
        features, DAY, holdout_days=3, recent_days=4, history_days=9
    )
    plain_train, plain_holdout = split_by_day(features, DAY, holdout_days=3)
    assert list(train.columns) == [*features.columns, *schema.HISTORY_FEATURES]
    pd.testing.assert_frame_equal(train[features.columns], plain_train)
    pd.testing.assert_frame_equal(holdout[features.columns], plain_holdout)
    expected = history.add_history_features(
        plain_train,
        plain_holdout,
        cutoff=date(2024, 1, 18),
        block_days=3,
        statistics=history.history_statistics(4, 9),
    )
    pd.testing.assert_frame_equal(train, expected[0])
    pd.testing.assert_frame_equal(holdout, expected[1])
    # holdout rows see the days before the holdout: 1..3 days old
    assert sorted(holdout[schema.HISTORY_LAG].unique()) == [1, 2, 3]
    assert holdout["recent_nyc_delay"].nunique() == 1


def test_holdout_history_features_do_not_change_when_holdout_delays_change():
    features = busy_features(days_before(DAY, 30))
    in_holdout = features[schema.DAY] >= pd.Timestamp(date(2024, 1, 14))
    changed = features.assign(**{schema.TARGET: features[schema.TARGET].where(~in_holdout, 1000.0)})
    before = split_with_history(features, DAY, holdout_days=7, recent_days=7, history_days=28)
    after = split_with_history(changed, DAY, holdout_days=7, recent_days=7, history_days=28)
    columns = schema.HISTORY_FEATURES
    pd.testing.assert_frame_equal(before[0], after[0])  # train: untouched entirely
    pd.testing.assert_frame_equal(before[1][columns], after[1][columns])
    assert before[1][columns].notna().all().all()
    assert (after[1][schema.TARGET] == 1000.0).all()  # the change did reach the holdout


# --- the step on the runner -----------------------------------------------------------


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  window_days: 4\nsplit:\n  holdout_days: 2\n")
    return path


def test_run_writes_train_and_holdout(tmp_path, params_file, caplog):
    folder = artifacts.PROCESSED.path(tmp_path, DAY)
    folder.mkdir(parents=True)
    features = features_frame(days_before(DAY, 4))
    features.to_parquet(folder / "features.parquet", index=False)
    with caplog.at_level("INFO", logger="flight_delays.split"):
        result = split.run(DAY.isoformat(), root=tmp_path, params_file=params_file)
    assert result == {
        "train": str(folder / "train.parquet"),
        "holdout": str(folder / "holdout.parquet"),
        "train_rows": 4,
        "holdout_rows": 4,
        "holdout_start": "2024-01-19",
        "holdout_end": "2024-01-20",
    }
    assert json.loads(json.dumps(result)) == result
    assert day_set(pd.read_parquet(result["holdout"])) == {date(2024, 1, 19), DAY}
    assert day_set(pd.read_parquet(result["train"])) == {date(2024, 1, 17), date(2024, 1, 18)}
    for side in ("train", "holdout"):
        assert set(schema.HISTORY_FEATURES) <= set(pd.read_parquet(result[side]).columns)
    assert sorted(p.name for p in folder.iterdir()) == [
        "features.parquet",
        "holdout.parquet",
        "train.parquet",
    ]
    assert len(caplog.records) == 1 and str(folder) in caplog.text


def test_run_without_features_names_the_featurize_task(tmp_path, params_file):
    with pytest.raises(MissingArtifactError, match="'featurize' task") as info:
        split.run(DAY, root=tmp_path, params_file=params_file)
    assert info.value.path == artifacts.PROCESSED.path(tmp_path.resolve(), DAY) / "features.parquet"


@pytest.mark.parametrize("stored", ["datetime64[ns]", "date", "with times of day"])
def test_run_writes_what_split_with_history_gives(tmp_path, params_file, stored):
    # The step frees the feature table after the cut; the core keeps the caller's. Both
    # give the same tables, whatever type the day column was stored as.
    features = features_frame(days_before(DAY, 4))
    if stored == "date":
        features[schema.DAY] = features[schema.DAY].dt.date
    elif stored == "with times of day":
        features[schema.DAY] = features[schema.DAY] + pd.to_timedelta(
            np.arange(len(features)) % 24, unit="h"
        )
    folder = artifacts.PROCESSED.path(tmp_path, DAY)
    folder.mkdir(parents=True)
    features.to_parquet(folder / "features.parquet", index=False)
    result = split.run(DAY.isoformat(), root=tmp_path, params_file=params_file)
    stored_back = pd.read_parquet(folder / "features.parquet")
    settings = load_settings(tmp_path, params_file).split
    train, holdout = split_with_history(
        stored_back, DAY, settings.holdout_days, settings.recent_days, settings.history_days
    )
    pd.testing.assert_frame_equal(pd.read_parquet(result["train"]), train)
    pd.testing.assert_frame_equal(pd.read_parquet(result["holdout"]), holdout)


def test_run_refuses_rows_after_the_day_and_writes_nothing(tmp_path, params_file):
    folder = artifacts.PROCESSED.path(tmp_path, DAY)
    folder.mkdir(parents=True)
    features_frame([*days_before(DAY, 4), DAY + timedelta(days=1)]).to_parquet(
        folder / "features.parquet", index=False
    )
    with pytest.raises(ValueError, match="2 feature rows are dated after the processed day"):
        split.run(DAY.isoformat(), root=tmp_path, params_file=params_file)
    assert not (folder / "train.parquet").exists()
