"""Cron schedules in an IANA zone: next/previous fire times, including both DST changes in Berlin."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from agent.workflows.cron import check_cron, check_timezone, next_fire, previous_fire

BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, BERLIN).isoformat()


def test_daily_at_23_berlin_keeps_local_wall_time_across_spring_forward() -> None:
    t = at(2024, 3, 30, 12, 0)
    fires = []
    for _ in range(3):
        t = next_fire("0 23 * * *", "Europe/Berlin", t)
        fires.append(local(t))
    assert fires == [
        "2024-03-30T23:00:00+01:00",
        "2024-03-31T23:00:00+02:00",
        "2024-04-01T23:00:00+02:00",
    ]
    # The DST day has 23 hours, so the gap between the first two runs is 23 h, not 24 h.
    assert at(2024, 3, 31, 23) - at(2024, 3, 30, 23) == 23 * 3600


def test_time_inside_the_spring_gap_fires_once_right_after_it() -> None:
    t = next_fire("30 2 * * *", "Europe/Berlin", at(2024, 3, 30, 12))
    assert local(t) == "2024-03-31T03:00:00+02:00"
    assert local(next_fire("30 2 * * *", "Europe/Berlin", t)) == "2024-04-01T02:30:00+02:00"


def test_pinned_time_in_the_repeated_autumn_hour_fires_once() -> None:
    t = next_fire("30 2 * * *", "Europe/Berlin", at(2024, 10, 26, 12))
    assert local(t) == "2024-10-27T02:30:00+02:00"
    assert local(next_fire("30 2 * * *", "Europe/Berlin", t)) == "2024-10-28T02:30:00+01:00"


def test_interval_job_keeps_running_through_the_repeated_hour() -> None:
    t = at(2024, 10, 27, 1, 50)
    fires = []
    for _ in range(5):
        t = next_fire("*/30 * * * *", "Europe/Berlin", t)
        fires.append(local(t))
    assert fires == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:30:00+01:00",
        "2024-10-27T03:00:00+01:00",
    ]


def test_next_is_strictly_after_and_previous_strictly_before() -> None:
    t = at(2024, 6, 1, 23, 0)
    assert local(next_fire("0 23 * * *", "Europe/Berlin", t)) == "2024-06-02T23:00:00+02:00"
    assert local(previous_fire("0 23 * * *", "Europe/Berlin", t)) == "2024-05-31T23:00:00+02:00"


def test_utc_default_zone() -> None:
    assert next_fire("0 0 * * *", "UTC", 0.0) == 86400.0


@pytest.mark.parametrize("bad", ["bad", "61 * * * *", "* * * *", "0 0 * * * *", ""])
def test_invalid_cron_rejected_with_reason(bad: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(bad)


def test_unknown_timezone_rejected() -> None:
    assert check_timezone("Europe/Berlin") == "Europe/Berlin"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        check_timezone("Mars/Olympus")
