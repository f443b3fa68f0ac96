"""Active alarms as an MTConnect-style condition chain, fed by device alarm events and by tags.

- A code not active yet is raised (``alarm_triggered``); the same code again is not a new alarm.
- Clearing one code leaves the others; a device "clear all" (an AlarmNotice without a code) clears
  every alarm except those mirrored from alarm bits, whose live signal decides for itself.
- Tag sources act on *changes*: an alarm code register raises its new code and, when it drops to 0,
  clears what it raised; ``count_tag`` (number of active alarms) clears the oldest register-raised
  alarms beyond that count; each configured alarm bit raises/clears its own code.
- DISCONNECTED (or an agent restart) makes every alarm *unknown*: it stays in the chain, flagged,
  without any event. The first good readings afterwards resolve them: a set bit or the register's
  code confirms an alarm; a clear bit, or a code register reading 0, clears the unknown alarms it
  covers with ``cleared_by: reconnect``. Alarms only an event source knew stay active until the
  device clears them (configure ``code_tag`` to let the register settle them after a reconnect).
- With events on, a register may show a code before the device's event for it arrives (a server
  publishes values and events separately, in either order). A code the register shows while
  connected is then *held*: it sits in the chain flagged ``held``, without ``alarm_triggered``, for
  ``event_grace`` seconds. The event raises it in that time (with its message and severity); else
  the register raises it at the deadline (``due``). Whatever ends a held alarm first raises it, so
  an alarm the device showed never vanishes silently. The first look at the register, and a resync
  after a gap, raise at once: no event will tell about alarms that were already active.
- An event may name its alarm by a ``key`` (an OPC UA condition's ConditionId): the key, not the code
  or message, is then the alarm's identity, so two conditions with one code stay apart and a clear
  always finds its raise. A refresh (``AlarmRefresh``: the device listed what it still retains)
  clears the event alarms it did not list (``cleared_by: refresh``); the listed ones were announced
  by the refresh's own notices, never twice.
- Event alarms carry the device's times: ``started_at`` is the device's time of the raise and the
  duration runs to the device's time of the clear (a device clock ahead of ours is cut to ours).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.events import iso_utc
from drivers.base import AlarmNotice, AlarmRefresh

from .conditions import AlarmFact, normalize_code
from .snapshot import Fields
from .spec import AlarmSpec

EVENT = "event"
CODE_TAG = "code_tag"
BITS = "bits"
_SOURCES = (EVENT, CODE_TAG, BITS)
_NONE = object()
# Bounds on what a device can make the agent keep, persist in its snapshot and send in every alarm
# webhook: a broken PLC once put a 30 MB string in the alarm code register.
MAX_CODE_LENGTH = 128
MAX_TEXT_LENGTH = 1024
MAX_ACTIVE = 256


def bounded_code(code: str) -> str:
    """``code`` itself, or a long one cut short with a digest of the whole, so that two long codes
    with the same beginning stay two alarms."""
    if len(code) <= MAX_CODE_LENGTH:
        return code
    digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{code[: MAX_CODE_LENGTH - 14]}…#{digest}"


def bounded_text(text: str) -> str:
    return text if len(text) <= MAX_TEXT_LENGTH else text[: MAX_TEXT_LENGTH - 1] + "…"


@dataclass(slots=True)
class ActiveAlarm:
    code: str
    description: str
    severity: int | None
    since: float
    source: str
    unknown: bool = False
    held: bool = False  # shown by the register, ``alarm_triggered`` waits for the device's event
    key: str | None = None  # the device's identity of the alarm (ConditionId); None: the code is

    @property
    def ident(self) -> str:
        return self.code if self.key is None else self.key

    def section(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "description": self.description,
            "severity": self.severity,
            "source": self.source,
            "started_at": iso_utc(self.since),
        }


@dataclass(frozen=True, slots=True)
class AlarmChange:
    triggered: bool
    alarm: ActiveAlarm
    at: float
    cleared_by: str | None = None

    def section(self) -> dict[str, Any]:
        out = self.alarm.section()
        if not self.triggered:
            out["cleared_at"] = iso_utc(self.at)
            out["duration_seconds"] = round(max(0.0, self.at - self.alarm.since), 3)
            out["cleared_by"] = self.cleared_by
        return out


def _code_of(value: Any) -> str | None:
    """The register's code as text, ``None`` for "no alarm" (0, empty) or an unusable value."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # a scaled float register can read NaN/inf; it names no alarm
    if isinstance(value, int | float):
        return None if value == 0 else str(int(value))
    if isinstance(value, str):
        text = value.strip()
        return None if text in ("", "0") else bounded_code(text)
    return None


def _device_time(ts: float, now: float) -> float:
    """The device's time of an alarm change, never later than ours (its clock may run ahead)."""
    return ts if math.isfinite(ts) and 0 < ts <= now else now


def _bit_set(value: Any, bit: int) -> bool | None:
    if isinstance(value, bool):
        return value if bit == 0 else None
    if isinstance(value, int):
        return bool((value >> bit) & 1)
    return None


class AlarmTracker:
    def __init__(self, spec: AlarmSpec) -> None:
        self.spec = spec
        self.active: dict[str, ActiveAlarm] = {}
        self._prev: dict[str, Any] = {}  # last seen value of each alarm tag, for edge detection
        self.tags = spec.tags
        self.has_unknown = False
        self.next_due = math.inf  # earliest deadline of a held alarm; ``due`` has work from then on
        self.overflow = 0  # alarms not tracked because MAX_ACTIVE were active already

    def facts(self) -> tuple[AlarmFact, ...]:
        """What rules see: announced alarms only, so no rule acts on an alarm before its event."""
        return tuple(
            AlarmFact(normalize_code(a.code), a.description, a.severity)
            for a in self.active.values()
            if not a.held
        )

    # -- sources

    def notice(self, n: AlarmNotice, now: float) -> list[AlarmChange]:
        if not self.spec.events:
            return []
        if n.code is None:
            if n.active:
                return []  # an active alarm without a code cannot be tracked
            doomed = [a for a in self.active.values() if a.source != BITS]
            return self._clear_all(doomed, now, lambda a: "event_clear_all")
        code = bounded_code(str(n.code).strip())
        existing = self.active.get(n.key or code)
        if existing is None and n.key is not None:
            existing = self._adopt(code, n.key)
        if n.active and existing is None and self._full():
            return []
        at = _device_time(n.timestamp, now)
        if n.active:
            text = n.message or self.spec.text_for(code) or f"Alarm {code}"
            severity = n.severity if 1 <= n.severity <= 1000 else None
            if existing is not None and existing.held:
                return [self._promote(existing, text, severity, now)]
            if existing is not None:
                existing.unknown = False
                return []
            return [self._raise(code, text, severity, at, EVENT, n.key)]
        if existing is None:
            return []  # a clear for an alarm never seen raised: nothing to pair it with
        return self._clear(existing, max(at, existing.since), EVENT)

    def refresh(self, r: AlarmRefresh, now: float) -> list[AlarmChange]:
        """The device listed what it retains: event alarms it left out ended while we did not listen."""
        if not self.spec.events:
            return []
        doomed = [a for a in self.active.values() if a.source == EVENT and a.ident not in r.keys]
        return self._clear_all(doomed, now, lambda a: "refresh")

    def _find(self, code: str) -> ActiveAlarm | None:
        """The active alarm with this code (a condition adopted by an event is keyed otherwise)."""
        found = self.active.get(code)
        if found is None:
            found = next((a for a in self.active.values() if a.code == code), None)
        return found

    def _adopt(self, code: str, key: str) -> ActiveAlarm | None:
        """The register's alarm with this code becomes the condition ``key`` (one alarm, two views)."""
        found = next((a for a in self.active.values() if a.source != EVENT and a.code == code), None)
        if found is not None:
            del self.active[found.ident]
            found.key = key
            self.active[key] = found
        return found

    def from_tags(self, values: Mapping[str, Any], now: float) -> list[AlarmChange]:
        """Act on alarm tags whose value changed since the last call (all of them after a resync)."""
        out: list[AlarmChange] = []
        spec = self.spec
        prev = self._prev
        resync = self.has_unknown
        if spec.code_tag is not None:
            value = values.get(spec.code_tag, _NONE)
            before = prev.get(spec.code_tag, _NONE)
            if value is not _NONE and before != value:
                prev[spec.code_tag] = value
                # Only a change seen while connected can race the device's event for the same code.
                may_hold = before is not _NONE and not resync
                out.extend(self._code_changed(value, values, now, resync, may_hold))
            if spec.count_tag is not None:
                count = values.get(spec.count_tag, _NONE)
                if count is not _NONE and prev.get(spec.count_tag, _NONE) != count:
                    prev[spec.count_tag] = count
                    out.extend(self._trim_to_count(count, _code_of(value), now))
        for b in spec.bits:
            value = values.get(b.tag, _NONE)
            if value is _NONE:
                continue
            before = prev.get(b.tag, _NONE)
            now_set = _bit_set(value, b.bit)
            if now_set is None:
                continue
            was_set = None if before is _NONE else _bit_set(before, b.bit)
            if was_set == now_set and not resync:
                continue
            existing = self._find(b.code)
            if now_set and existing is None:
                out.append(self._raise(b.code, b.text, b.severity, now, BITS))
            elif now_set and existing is not None:
                existing.unknown = False
            elif not now_set and existing is not None and (existing.source == BITS or existing.unknown):
                out.extend(self._clear(existing, now, "reconnect" if existing.unknown else BITS))
        for b in spec.bits:
            if b.tag in values:
                prev[b.tag] = values[b.tag]
        return out

    def _code_changed(
        self, value: Any, values: Mapping[str, Any], now: float, resync: bool, may_hold: bool
    ) -> list[AlarmChange]:
        code = _code_of(value)
        if code is None:
            if resync:
                # 0 after a gap: the device says nothing is active; settle every unknown alarm too.
                doomed = [
                    a
                    for a in self.active.values()
                    if a.source == CODE_TAG or (a.unknown and a.source != BITS)
                ]
            else:
                doomed = [a for a in self.active.values() if a.source == CODE_TAG]
            return self._clear_all(doomed, now, lambda a: "reconnect" if a.unknown else CODE_TAG)
        existing = self._find(code)
        if existing is not None:
            existing.unknown = False
            return []
        if self._full():
            return []
        severity = None
        if self.spec.severity_tag is not None:
            raw = values.get(self.spec.severity_tag)
            if isinstance(raw, int | float) and not isinstance(raw, bool) and 1 <= raw <= 1000:
                severity = int(raw)
        text = self.spec.text_for(code) or f"Alarm {code}"
        if may_hold and self.spec.events and self.spec.event_grace > 0:
            self._hold(code, text, severity, now)
            return []
        return [self._raise(code, text, severity, now, CODE_TAG)]

    def _trim_to_count(self, count: Any, current: str | None, now: float) -> list[AlarmChange]:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return []
        from_register = [a for a in self.active.values() if a.source == CODE_TAG]
        excess = len(from_register) - count
        out = []
        for a in from_register:  # oldest first: dicts keep raise order
            if excess <= 0:
                break
            if a.code != current:
                out.extend(self._clear(a, now, "count_tag"))
                excess -= 1
        return out

    # -- held register raises

    def due(self, now: float) -> list[AlarmChange]:
        """Raise the held alarms whose grace period has passed without the device's event."""
        if now < self.next_due:
            return []
        out = []
        for a in self.active.values():
            if a.held and now >= self._deadline(a):
                a.held = False
                out.append(AlarmChange(True, a, now))
        self._reschedule()
        return out

    def _deadline(self, alarm: ActiveAlarm) -> float:
        # Events turned off by a reload: nothing can come any more, the hold ends at once.
        return alarm.since + self.spec.event_grace if self.spec.events else alarm.since

    def _reschedule(self) -> None:
        self.next_due = min((self._deadline(a) for a in self.active.values() if a.held), default=math.inf)

    def _full(self) -> bool:
        if len(self.active) < MAX_ACTIVE:
            return False
        self.overflow += 1
        return True

    def _hold(self, code: str, text: str, severity: int | None, now: float) -> None:
        alarm = ActiveAlarm(code, bounded_text(text), severity, now, CODE_TAG, held=True)
        self.active[alarm.ident] = alarm
        self.next_due = min(self.next_due, self._deadline(alarm))

    def _promote(self, alarm: ActiveAlarm, text: str, severity: int | None, now: float) -> AlarmChange:
        """The device's event for a held code: it raises the alarm, which keeps the register's start."""
        alarm.description, alarm.severity, alarm.source = bounded_text(text), severity, EVENT
        alarm.held = alarm.unknown = False
        self._reschedule()
        return AlarmChange(True, alarm, now)

    # -- connection

    def mark_unknown(self) -> None:
        """The machine cannot be read: alarms become unknown and tag edges restart from scratch."""
        for a in self.active.values():
            a.unknown = True
        self._prev.clear()
        self.has_unknown = bool(self.active)

    def settle(self) -> None:
        """After the first good readings following a gap: what survived is known again."""
        for a in self.active.values():
            a.unknown = False
        self.has_unknown = False

    # -- chain

    def _raise(
        self, code: str, text: str, severity: int | None, now: float, source: str, key: str | None = None
    ) -> AlarmChange:
        alarm = ActiveAlarm(code, bounded_text(text), severity, now, source, key=key)
        self.active[alarm.ident] = alarm
        return AlarmChange(True, alarm, now)

    def _clear(self, alarm: ActiveAlarm, now: float, by: str) -> list[AlarmChange]:
        """The alarm ends; a held one is raised first (at its end: it was never announced)."""
        del self.active[alarm.ident]
        if not alarm.held:
            return [AlarmChange(False, alarm, now, by)]
        alarm.held = False
        self._reschedule()
        return [AlarmChange(True, alarm, now), AlarmChange(False, alarm, now, by)]

    def _clear_all(
        self, doomed: list[ActiveAlarm], now: float, by: Callable[[ActiveAlarm], str]
    ) -> list[AlarmChange]:
        out: list[AlarmChange] = []
        for a in doomed:
            out.extend(self._clear(a, now, by(a)))
        return out

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "active": [
                {
                    "code": a.code,
                    "description": a.description,
                    "severity": a.severity,
                    "since": a.since,
                    "source": a.source,
                    "unknown": a.unknown,
                    "held": a.held,
                    "key": a.key,
                }
                for a in self.active.values()
            ]
        }

    def load(self, f: Fields) -> None:
        self.active.clear()
        for item in f.items("active"):
            source = item.text("source")
            if source not in _SOURCES:
                raise item.error("source", f"unknown alarm source {source!r}")
            alarm = ActiveAlarm(
                item.text("code"),
                item.text("description"),
                item.opt_integer("severity"),
                item.number("since"),
                source,
                item.flag("unknown"),
                item.flag("held"),  # absent in snapshots from before the hold existed
                item.opt_text("key"),  # absent in snapshots from before conditions had keys
            )
            self.active[alarm.ident] = alarm
        self._reschedule()
        # After a restart nothing is known about the device: resolve like after a disconnect.
        self.mark_unknown()
