"""Which flight day a run processes.

In Airflow 3 a cron schedule (CronTriggerTimetable) gives every run a zero-length data
interval whose logical date is the run time, and a manual run may have no logical date
at all. So the processed day is derived explicitly from a timestamp passed in by the
caller: the local calendar day (America/New_York, where the flights depart) before the
run time. The nightly run at 02:00 on D+1 processes D; a run with no logical date, made
at any time on D+1, processes D too: the latest complete day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pendulum

TIMEZONE = "America/New_York"


def hour_repeats(day: date, tz: str = TIMEZONE) -> bool:
    """Whether the clock shows 01:00-02:00 twice on ``day`` in ``tz``: daylight saving
    time ends (2013-11-03 in New York), so an hourly feed has two rows for hour 1."""
    zone = pendulum.timezone(tz)
    before = datetime(day.year, day.month, day.day, 0, 30, tzinfo=zone).utcoffset()
    after = datetime(day.year, day.month, day.day, 3, 0, tzinfo=zone).utcoffset()
    return before is not None and after is not None and after < before


def parse_day(value: str | date | datetime) -> date:
    """A calendar day from a date, a datetime or an ISO string (``YYYY-MM-DD``)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError as exc:
        raise ValueError(f"not a day in YYYY-MM-DD form: {value!r}") from exc


def processed_day(
    logical_date: datetime | None,
    run_after: datetime | None = None,
    override: str | date | None = None,
    tz: str = TIMEZONE,
) -> date:
    """The flight day a run processes.

    ``override`` (a run parameter) wins; else the local day before ``logical_date``;
    else, for a run triggered without a logical date, the local day before ``run_after``.
    Naive datetimes are taken as UTC, as Airflow stores them.
    """
    if override not in (None, ""):
        return parse_day(override)
    return _run_day(logical_date, run_after, tz) - timedelta(days=1)


def predicted_day(
    logical_date: datetime | None,
    run_after: datetime | None = None,
    override: str | date | None = None,
    champion_day: str | date | None = None,
    tz: str = TIMEZONE,
) -> date:
    """The flight day a prediction run serves.

    ``override`` (a run parameter) wins. A run started by a change of the champion
    serves the day after the processed day of the newest triggering change
    (``champion_day``, from the event's extra): the nightly run for D decides at about
    02:00 on D+1, the day whose flights are about to leave. Else the local day of
    ``logical_date`` (the 05:00 run on D serves D), else of ``run_after`` (a run
    triggered without a logical date). Naive datetimes are taken as UTC.
    """
    if override not in (None, ""):
        return parse_day(override)
    if champion_day not in (None, ""):
        return parse_day(champion_day) + timedelta(days=1)
    return _run_day(logical_date, run_after, tz)


def _run_day(logical_date: datetime | None, run_after: datetime | None, tz: str) -> date:
    """The local calendar day (``tz``) of ``logical_date``, else of ``run_after`` (a run
    without a logical date). Naive datetimes are taken as UTC, as Airflow stores them."""
    moment = logical_date if logical_date is not None else run_after
    if moment is None:
        raise ValueError("a run needs a logical date, a run_after time or an explicit day")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=pendulum.UTC)
    local = pendulum.instance(moment).in_timezone(tz)
    return date(local.year, local.month, local.day)


def window(day: date, days: int) -> list[date]:
    """The ``days`` consecutive days ending on ``day``, oldest first."""
    if days < 1:
        raise ValueError(f"a window needs at least one day, got {days}")
    return [day - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
