"""Cron arithmetic: when a cron expression fires in an IANA time zone, DST-correct.

croniter does the cron arithmetic; this module adds the one rule it lacks. When clocks fall back, a
wall time such as 02:30 happens twice; a job pinned to an hour runs once (as Vixie cron does), while a
job whose hour field is ``*`` keeps its interval through both hours. When clocks spring forward, a
time inside the gap fires at the first instant after it (croniter already does this).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter


def check_cron(expr: str) -> str:
    """Converter for config: the expression itself, or ValueError saying why it is not one."""
    if not isinstance(expr, str) or not croniter.is_valid(expr):
        raise ValueError(f"not a valid 5-field cron expression: {expr!r}")
    if len(expr.split()) != 5:
        # Six fields would mean seconds to croniter; plant schedules are minute-grained.
        raise ValueError(f"expected 5 cron fields (minute hour day month weekday), got {expr!r}")
    try:
        # Valid syntax can still name a day that never comes (30 February): find that now, not at
        # start-up of the daemon or in the middle of a reload.
        next_fire(expr, "UTC", 0.0)
    except CroniterError as exc:
        raise ValueError(f"cron expression {expr!r} never fires: {exc}") from exc
    return expr


def check_timezone(name: str) -> str:
    """Converter for config: an IANA time zone name such as ``Europe/Berlin``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected an IANA time zone name, got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


def _pinned_hour(expr: str) -> bool:
    hours: list[object] = croniter(expr).expanded[1]
    return hours != ["*"]


def next_fire(expr: str, timezone: str, after: float) -> float:
    """The first fire time strictly after ``after`` (Unix seconds)."""
    return _walk(expr, timezone, after, forward=True)


def previous_fire(expr: str, timezone: str, before: float) -> float:
    """The last fire time strictly before ``before``: the start of the first window of a schedule."""
    return _walk(expr, timezone, before, forward=False)


def _walk(expr: str, timezone: str, t: float, *, forward: bool) -> float:
    it = croniter(expr, datetime.fromtimestamp(t, tz=UTC).astimezone(ZoneInfo(timezone)))
    pinned = _pinned_hour(expr)
    while True:
        candidate: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
        # A pinned hour that occurs twice (DST ends) fires once, at its first occurrence.
        if pinned and candidate.fold == 1 and candidate.utcoffset() != candidate.replace(fold=0).utcoffset():
            continue
        ts = candidate.timestamp()
        if (ts > t) if forward else (ts < t):
            return ts
