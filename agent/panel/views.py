"""What the panel shows, as plain data: tiles, tag rows, today's timeline. Pure code, clock injected.

The live feed compares these dicts to decide whether anything changed, so they hold no durations that
grow by themselves: a tile carries ``status_since`` and the browser counts the seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as clock_time
from typing import Any

# ISA-101: grey for normal, colour only where it asks for attention. Word and meaning, said once on
# the board's legend.
STATE_LEGEND: tuple[tuple[str, str], ...] = (
    ("ACTIVE", "running a program"),
    ("IDLE", "powered, not running"),
    ("SETUP", "in setup or manual mode"),
    ("ALARM", "stopped by an alarm"),
    ("DISCONNECTED", "the agent cannot read it"),
    ("UNKNOWN", "no reading yet"),
)
KNOWN_STATES = frozenset(s for s, _ in STATE_LEGEND)


def state_class(status: str | None) -> str:
    """CSS class of a state; a plant's own state word (``WARMUP``) is drawn like IDLE."""
    word = status or "UNKNOWN"
    return f"st-{word.lower()}" if word in KNOWN_STATES else "st-idle"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def downtime_view(machine_id: str, downtime: Any, now: float) -> dict[str, Any]:
    started = _num(getattr(downtime, "started_at", None))
    ended = _num(getattr(downtime, "ended_at", None))
    operator = getattr(downtime, "operator", None)
    return {
        "id": str(getattr(downtime, "id", "")),
        "machine_id": machine_id,
        "started_at": started,
        "ended_at": ended,
        "duration": None if started is None else max(0.0, (ended if ended is not None else now) - started),
        "category": getattr(downtime, "category", None),
        "notes": getattr(downtime, "notes", None),
        "operator": dict(operator) if isinstance(operator, Mapping) else None,
        "categorized_by": getattr(downtime, "categorized_by", None),
    }


def alarm_view(alarm: Any) -> dict[str, Any]:
    return {
        "code": str(getattr(alarm, "code", "")),
        "text": str(getattr(alarm, "description", "") or ""),
        "severity": getattr(alarm, "severity", None),
        "since": _num(getattr(alarm, "since", None)),
        "unknown": bool(getattr(alarm, "unknown", False)),
    }


# The last day computed per time zone: (ISO date, its midnight, the next midnight). Every tile of the
# board asks once a second; converting the time for each was 3 % of the daemon at 1,000 machines.
_DAYS: dict[tzinfo, tuple[str, float, float]] = {}


def day_of(now: float, tz: tzinfo) -> tuple[str, float]:
    """The local day (ISO date) of ``now`` and the Unix time of its midnight."""
    known = _DAYS.get(tz)
    if known is not None and known[1] <= now < known[2]:
        return known[0], known[1]
    local = datetime.fromtimestamp(now, tz=tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = datetime.combine(local.date() + timedelta(days=1), clock_time(), tzinfo=tz)
    _DAYS[tz] = (local.date().isoformat(), midnight.timestamp(), following.timestamp())
    return local.date().isoformat(), midnight.timestamp()


def tile_view(ref: Any, deriver: Any, now: float) -> dict[str, Any]:
    """One machine's board tile. ``deriver`` is a ``MachineDeriver`` (or ``None`` before it exists)."""
    out: dict[str, Any] = {
        "id": ref.id,
        "name": ref.name,
        "group": ref.group,
        "status": None,
        "status_since": None,
        "alarms": [],
        "parts_today": None,
        "downtime": None,
    }
    if deriver is None:
        return out
    out["status"] = deriver.status
    out["status_since"] = _num(deriver.status_since)
    out["alarms"] = [alarm_view(a) for a in deriver.active_alarms]
    tz = getattr(getattr(deriver, "spec", None), "timezone", None) or UTC
    out["parts_today"] = deriver.part_totals(day_of(now, tz)[0])
    open_dt = deriver.open_downtime
    if open_dt is not None:
        view = downtime_view(ref.id, open_dt, now)
        view.pop("duration")  # grows by itself; the browser counts from started_at
        out["downtime"] = view
    return out


@dataclass(frozen=True, slots=True)
class TagValue:
    tag: str
    value: str
    quality: str
    reason: str | None
    at: float


# What the feed keeps of a tag's newest reading: value, quality, reason, time (see LiveFeed.samples).
Latest = tuple[Any, str, "str | None", float]


def tag_rows(latest: Mapping[str, Latest]) -> list[TagValue]:
    """Tag rows for the machine page, by tag name."""
    rows = [
        TagValue(tag, show_value(v), quality, reason, at) for tag, (v, quality, reason, at) in latest.items()
    ]
    return sorted(rows, key=lambda t: t.tag)


def show_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


# -- today's timeline


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float
    label: str
    kind: str  # a CSS class: st-<state>, downtime, downtime-open, alarm


def status_segments(changes: Sequence[tuple[float, str]], day_start: float, now: float) -> list[Segment]:
    """States from ``changes`` (time, new state; in time order) clipped to [day_start, now]."""
    out: list[Segment] = []
    for i, (at, state) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else now
        start, end = max(at, day_start), min(end, now)
        if end > start:
            out.append(Segment(start, end, state, state_class(state)))
    return out


def downtime_segments(downtimes: Iterable[Mapping[str, Any]], day_start: float, now: float) -> list[Segment]:
    out: list[Segment] = []
    for d in downtimes:
        started = _num(d.get("started_at"))
        if started is None:
            continue
        ended = _num(d.get("ended_at"))
        start, end = max(started, day_start), min(ended if ended is not None else now, now)
        if end > start:
            label = str(d.get("category") or "uncategorized")
            out.append(Segment(start, end, label, "downtime" if ended is not None else "downtime-open"))
    return sorted(out, key=lambda s: s.start)


def alarm_segments(alarms: Iterable[Mapping[str, Any]], day_start: float, now: float) -> list[Segment]:
    out: list[Segment] = []
    for a in alarms:
        since = _num(a.get("since"))
        if since is None:
            continue
        start = max(since, day_start)
        end = min(_num(a.get("until")) or now, now)
        if end > start:
            out.append(Segment(start, end, f"{a.get('code')} {a.get('text') or ''}".strip(), "alarm"))
    return out


def lanes(
    segments: Sequence[Segment], day_start: float, now: float, width: float = 1000.0, tz: tzinfo = UTC
) -> list[dict[str, Any]]:
    """Segments as x/width on a ``width``-wide bar from local midnight to now, with local clock times."""
    span = max(now - day_start, 1.0)
    out = []
    for s in segments:
        x = (s.start - day_start) / span * width
        w = max((s.end - s.start) / span * width, 1.0)  # a 2-second stop still shows as a hairline
        out.append(
            {
                "x": round(x, 2),
                "w": round(min(w, width - x), 2),
                "label": s.label,
                "kind": s.kind,
                "from": clock_text(s.start, tz)[:5],
                "to": clock_text(s.end, tz)[:5],
            }
        )
    return out


def hour_ticks(day_start: float, now: float, width: float = 1000.0) -> list[dict[str, Any]]:
    span = max(now - day_start, 1.0)
    step = 3600 if span <= 8 * 3600 else 7200
    ticks = []
    t = day_start
    while t <= now:
        ticks.append(
            {"x": round((t - day_start) / span * width, 2), "label": f"{int((t - day_start) // 3600):02d}:00"}
        )
        t += step
    return ticks


def duration_text(seconds: float | None) -> str:
    """``1h 05m``, ``4m 09s``, ``12s``: what a tile shows before the browser takes over counting."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def url_shown(url: str, full: bool) -> str:
    """A webhook URL for the screen: whole for an admin, else scheme and host only (a Slack or Teams
    webhook URL carries its credential in the path)."""
    if full:
        return url
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}/…" if sep else "…"


def clock_text(ts: float | None, tz: tzinfo = UTC) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, tz=tz).strftime("%H:%M:%S")
