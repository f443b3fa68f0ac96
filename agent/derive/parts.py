"""Part counts from a device counter: deltas that are never negative and never counted twice.

- The first value is a baseline (parts made before the agent saw the machine are not ours to count).
- A rise of at most ``max_step`` is that many parts; a larger jump is a preset or garbage: rebaseline.
- A fall is a wrap-around when ``max - last + value + 1 <= max_step`` (the counter rolled over),
  otherwise a reset (to 0 at shift start, typically): the new value is the parts made since.
- Values that cannot be a counter (negative, above ``max``, not whole numbers) are ignored.
Totals: a running total (exact; a workflow that remembers it can subtract), per-day totals in the
machine's time zone (62 days kept) and per-minute counts for ``since(ts)`` (26 hours kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from .snapshot import Fields
from .spec import PartsSpec

_KEEP_DAYS = 62
_KEEP_MINUTES = 26 * 60


@dataclass(frozen=True, slots=True)
class PartDelta:
    delta: int
    total: int
    day: str
    day_total: int
    counter: int
    kind: str  # "count", "wrap" or "reset"

    def section(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "total": self.total,
            "day": self.day,
            "day_total": self.day_total,
            "counter": self.counter,
            "kind": self.kind,
        }


class PartCounter:
    def __init__(self, spec: PartsSpec, tz: tzinfo) -> None:
        self.spec = spec
        self.tz = tz
        self.last: int | None = None
        self.total = 0
        self.days: dict[str, int] = {}
        self.minutes: dict[int, int] = {}
        self._day = ("", 0.0, -1.0)  # (day, start, end) of the day last used: skips tz math per part

    def update(self, raw: Any, now: float) -> PartDelta | None:
        value = _counter_value(raw, self.spec.max)
        if value is None:
            return None
        last = self.last
        self.last = value
        if last is None or value == last:
            return None
        step = self.spec.max_step
        if value > last:
            delta, kind = value - last, "count"
            if delta > step:
                return None
        else:
            wrapped = self.spec.max - last + value + 1
            if wrapped <= step:
                delta, kind = wrapped, "wrap"
            else:
                delta, kind = (value if value <= step else 0), "reset"
            if delta == 0:
                return None
        return self._add(delta, value, kind, now)

    def _add(self, delta: int, value: int, kind: str, now: float) -> PartDelta:
        day, start, end = self._day
        if not start <= now < end:
            day, start, end = self._day = _day_bounds(now, self.tz)
            if day not in self.days and len(self.days) >= _KEEP_DAYS:
                for old in sorted(self.days)[: len(self.days) - _KEEP_DAYS + 1]:
                    del self.days[old]
        self.total += delta
        day_total = self.days[day] = self.days.get(day, 0) + delta
        minute = int(now // 60)
        if minute not in self.minutes:
            horizon = minute - _KEEP_MINUTES
            for m in [m for m in self.minutes if m < horizon]:
                del self.minutes[m]
        self.minutes[minute] = self.minutes.get(minute, 0) + delta
        return PartDelta(delta, self.total, day, day_total, value, kind)

    def day_total(self, day: date | str) -> int:
        key = day.isoformat() if isinstance(day, date) else day
        return self.days.get(key, 0)

    def since(self, ts: float) -> int:
        """Parts counted in the minutes starting at or after ``ts`` (minute resolution).

        Older than the 26 hours of minute counts, it falls back to whole days from ``ts``'s day on.
        For exact "since my last run" counts, remember ``total`` and subtract.
        """
        first = -int(-ts // 60)  # ceil: a minute that began before ts is not "since ts"
        if self.minutes and first > max(self.minutes) - _KEEP_MINUTES:
            return sum(c for m, c in self.minutes.items() if m >= first)
        day = datetime.fromtimestamp(ts, self.tz).date().isoformat()
        return sum(c for d, c in self.days.items() if d >= day)

    def to_dict(self) -> dict[str, Any]:
        return {
            "last": self.last,
            "total": self.total,
            "days": dict(self.days),
            "minutes": [[m, c] for m, c in self.minutes.items()],
        }

    def load(self, f: Fields) -> None:
        self.last = f.opt_integer("last")
        self.total = f.integer("total")
        days = f.raw("days") or {}
        if not isinstance(days, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in days.items()
        ):
            raise f.error("days", "expected an object of day -> count")
        minutes = f.raw("minutes") or []
        if not isinstance(minutes, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in minutes
        ):
            raise f.error("minutes", "expected a list of [minute, count] pairs")
        self.days = dict(days)
        self.minutes = {m: c for m, c in minutes}
        self._day = ("", 0.0, -1.0)


def _counter_value(raw: Any, maximum: int) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        if not raw.is_integer():
            return None
        raw = int(raw)
    if not isinstance(raw, int) or raw < 0 or raw > maximum:
        return None
    return raw


def _day_bounds(now: float, tz: tzinfo) -> tuple[str, float, float]:
    d = datetime.fromtimestamp(now, tz).date()
    start = datetime(d.year, d.month, d.day, tzinfo=tz).timestamp()
    nxt = d + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()
    return d.isoformat(), start, end
