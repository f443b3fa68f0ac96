"""``MachineDeriver``: one machine's readings in, events out. Pure: the clock is the ``now`` argument.

Times: every decision uses ``now`` (when the agent processed the samples), never device timestamps,
so one clock orders everything. ``now`` never runs backwards here: a smaller value (the wall clock
stepped back) is treated as the last one seen, so no duration is ever negative.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from agent.events import (
    ALARM_CLEARED,
    ALARM_TRIGGERED,
    MACHINE_STATUS_CHANGED,
    PART_COUNT,
    Event,
    MachineRef,
    iso_utc,
    new_event_id,
)
from drivers.base import AlarmNotice, AlarmRefresh, Quality, Reading

from .alarms import ActiveAlarm, AlarmChange, AlarmTracker
from .conditions import AlarmFact, RuleContext, normalize_code
from .downtime import Downtime, DowntimeTracker, Fact, normalize_thresholds
from .errors import SnapshotError, UnknownCategory
from .parts import PartCounter
from .snapshot import Fields
from .spec import BAD, DISCONNECTED, UNREADABLE, Categories, DerivationSpec
from .status import StatusChange, StatusTracker, evaluate

SNAPSHOT_VERSION = 1
_NONE: Any = object()
_GOOD = Quality.GOOD


class MonotonicIds:
    """ULIDs that also sort in creation order within one millisecond (random part incremented)."""

    def __init__(self) -> None:
        self._ms = -1
        self._rand = 0

    def __call__(self, ts: float) -> str:
        ms = int(ts * 1000)
        if ms == self._ms and self._rand < (1 << 80) - 1:
            self._rand += 1
        else:
            self._ms, self._rand = ms, int.from_bytes(os.urandom(10), "big") >> 1
        return new_event_id(ts, self._rand.to_bytes(10, "big"))


class MachineDeriver:
    def __init__(
        self,
        spec: DerivationSpec,
        machine: MachineRef,
        categories: Categories,
        exceeded_after: Sequence[float] = (),
        *,
        new_id: Callable[[float], str] | None = None,
    ) -> None:
        for rule in spec.downtime.categorize:
            if categories.find(rule.category) is None:
                raise UnknownCategory(
                    f"{rule.path}: {rule.category!r} is not a plant downtime category; "
                    f"listed: {', '.join(categories.names) or 'none'}"
                )
        self.spec = spec
        self.machine = machine
        self.categories = categories
        self._new_id = new_id or MonotonicIds()
        self._ctx = RuleContext()
        self._status = StatusTracker(spec.status.min_state)
        self._alarms = AlarmTracker(spec.alarms)
        self._downtime = DowntimeTracker(
            spec.downtime, categories, spec.timezone, exceeded_after, self._new_id
        )
        self._parts = PartCounter(spec.parts, spec.timezone)
        self._rule_tags = spec.status.tags
        self._alarm_tags = spec.alarms.tags
        self._counter = spec.parts.counter
        self._timed = spec.status.time_dependent
        self._disconnect_after = spec.status.disconnect_after
        self._last_now = -math.inf
        self._bad_since: float | None = None
        self._bad_reason = ""
        # Every failed read of this outage was answered with an error (BAD), none went unanswered.
        self._bad_answered = True
        self._dirty = True  # status rules must be evaluated at the next step
        # No state is decided before the first good reading: rules over no values would report the
        # ``otherwise`` state (a false IDLE) for a device that accepts TCP and never answers.
        self._seen_good = False
        self._retry_for_alarm = False  # a new alarm may let a category rule match an open downtime

    # -- inputs

    def ingest(self, samples: Sequence[Reading | AlarmNotice | AlarmRefresh], now: float) -> list[Event]:
        now = self._clock(now)
        events: list[Fact] = []
        if now >= self._alarms.next_due:
            self._alarm_events(self._alarms.due(now), events)
        values = self._ctx.values
        changed_at = self._ctx.changed_at
        rule_tags, alarm_tags, counter = self._rule_tags, self._alarm_tags, self._counter
        any_good = any_bad = rules_changed = alarms_changed = False
        counter_value: Any = _NONE
        for s in samples:
            if s.__class__ is Reading or isinstance(s, Reading):
                if s.quality is _GOOD:
                    any_good = True
                    tag, value = s.tag, s.value
                    old = values.get(tag, _NONE)
                    if old is _NONE or old != value:
                        values[tag] = value
                        if old is not _NONE:
                            changed_at[tag] = now
                        if tag in rule_tags:
                            rules_changed = True
                        if tag in alarm_tags:
                            alarms_changed = True
                    if tag == counter:
                        counter_value = value
                else:
                    # A failed read keeps the tag's last good value: one glitch must not flip the
                    # status. Only a machine that reads badly as a whole becomes DISCONNECTED.
                    any_bad = True
                    self._bad_reason = s.reason or str(s.quality)
                    if s.quality is not Quality.BAD:
                        self._bad_answered = False
            elif isinstance(s, AlarmNotice):
                self._alarm_events(self._alarms.notice(s, now), events)
            else:
                self._alarm_events(self._alarms.refresh(s, now), events)
        if any_good:
            self._seen_good = True
            self._bad_since = None
            self._bad_answered = True
            if self._alarms.has_unknown:
                self._alarm_events(self._alarms.from_tags(values, now), events)
                self._alarms.settle()
            elif alarms_changed:
                self._alarm_events(self._alarms.from_tags(values, now), events)
        elif any_bad and self._bad_since is None:
            self._bad_since = now
        if counter_value is not _NONE:
            delta = self._parts.update(counter_value, now)
            if delta is not None:
                events.append((PART_COUNT, {"parts": delta.section()}))
        if rules_changed:
            self._dirty = True
        self._step(now, events)
        return self._wrap(events, now)

    def tick(self, now: float) -> list[Event]:
        """Timers without readings: debounce, disconnect, micro-stop, ``downtime_exceeded``, and the
        register's held alarms whose event did not come."""
        now = self._clock(now)
        events: list[Fact] = []
        if now >= self._alarms.next_due:
            self._alarm_events(self._alarms.due(now), events)
        self._step(now, events)
        return self._wrap(events, now)

    def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None,
        operator: Mapping[str, Any] | None,
        now: float,
    ) -> Event:
        """An operator's category for an open or recent downtime; raises a ``DeriveError`` subclass."""
        now = self._clock(now)
        return self._wrap([self._downtime.categorize(downtime_id, category, notes, operator, now)], now)[0]

    def set_exceeded_after(self, thresholds: Sequence[float]) -> None:
        """New ``downtime_exceeded`` thresholds (workflows reloaded); fired ones stay fired."""
        self._downtime.thresholds = normalize_thresholds(thresholds)

    # -- the decisions

    def _step(self, now: float, events: list[Fact]) -> None:
        st = self._status
        change: StatusChange | None
        if self._bad_since is not None:
            if now - self._bad_since >= self._disconnect_after:
                if self._bad_answered:
                    change = st.force(
                        BAD, self._bad_since, f"the machine answers with errors: {self._bad_reason}"
                    )
                else:
                    change = st.force(
                        DISCONNECTED, self._bad_since, f"cannot read the machine: {self._bad_reason}"
                    )
            else:
                change = st.confirm(now)  # during the grace period the rules' view is frozen
        elif (self._dirty or self._timed) and self._seen_good:
            ctx = self._ctx
            ctx.now = now
            self._dirty = False
            candidate, reason = evaluate(self.spec.status, ctx)
            change = st.propose(candidate, reason, now)
        else:
            change = st.confirm(now) if st.pending is not None else None
        retry_rules = False
        if change is not None:
            events.append((MACHINE_STATUS_CHANGED, {"status": _status_section(change)}))
            if change.to_state in UNREADABLE:
                self._alarms.mark_unknown()
                self._ctx.values.clear()  # stale values must not decide the status after reconnect
                self._seen_good = False
                self._dirty = True
            events.extend(self._downtime.on_status(change, self._ctx.alarms))
            retry_rules = True
        if self._alarms.active and self._retry_for_alarm:
            retry_rules = True
        self._retry_for_alarm = False
        events.extend(self._downtime.step(now, st.state, self._ctx, retry_rules))

    def _alarm_events(self, changes: list[AlarmChange], events: list[Fact]) -> None:
        if not changes:
            return
        for c in changes:
            a = c.alarm
            if c.triggered:
                self._downtime.on_alarm(AlarmFact(normalize_code(a.code), a.description, a.severity))
                self._retry_for_alarm = True
            events.append((ALARM_TRIGGERED if c.triggered else ALARM_CLEARED, {"alarm": c.section()}))
        self._ctx.alarms = self._alarms.facts()
        self._dirty = True  # ``alarm_active`` may be part of the status rules

    def _clock(self, now: float) -> float:
        if now < self._last_now or not math.isfinite(now):
            return self._last_now
        self._last_now = now
        return now

    def _wrap(self, facts: list[Fact], now: float) -> list[Event]:
        return [Event(self._new_id(now), kind, now, self.machine, data) for kind, data in facts]

    # -- views

    @property
    def status(self) -> str | None:
        return self._status.state

    @property
    def status_since(self) -> float | None:
        return self._status.since

    @property
    def status_reason(self) -> str | None:
        """Why the machine has its status: the rule that decided it, or, while DISCONNECTED or BAD,
        why the last reads failed (``no answer to 3 requests ...``, ``exception 4 (device failure) ...``)."""
        st = self._status
        if st.state in UNREADABLE and self._bad_since is not None and self._bad_reason:
            return f"{'the machine answers with errors' if st.state == BAD else 'cannot read the machine'}: {self._bad_reason}"
        return st.reason

    @property
    def open_downtime(self) -> Downtime | None:
        dt = self._downtime.open
        return None if dt is None else copy.deepcopy(dt)

    @property
    def recent_downtimes(self) -> tuple[Downtime, ...]:
        return tuple(copy.deepcopy(d) for d in self._downtime.recent)

    @property
    def active_alarms(self) -> tuple[ActiveAlarm, ...]:
        """Active alarms in raise order; ``unknown`` ones were active when contact was lost, ``held``
        ones are shown by the register and not announced yet (waiting for the device's event)."""
        return tuple(copy.copy(a) for a in self._alarms.active.values())

    def part_totals(self, day: date | str) -> int:
        return self._parts.day_total(day)

    def parts_today(self, now: float) -> tuple[str, int]:
        """The machine's local day (its ``timezone:``) at ``now`` and the parts made in it so far."""
        day = datetime.fromtimestamp(now, self._parts.tz).date().isoformat()
        return day, self._parts.day_total(day)

    def parts_since(self, ts: float) -> int:
        return self._parts.since(ts)

    @property
    def part_total(self) -> int:
        """Running total since the agent first saw the counter (persisted; never decreases)."""
        return self._parts.total

    # -- persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "machine": self.machine.id,
            "last_now": None if self._last_now == -math.inf else self._last_now,
            "bad_since": self._bad_since,
            "bad_reason": self._bad_reason,
            "bad_answered": self._bad_answered,
            "status": self._status.to_dict(),
            "alarms": self._alarms.to_dict(),
            "downtime": self._downtime.to_dict(),
            "parts": self._parts.to_dict(),
        }

    def restore(self, data: Mapping[str, Any], *, after_restart: bool = True) -> None:
        """Continue from ``snapshot()``; a damaged one raises ``SnapshotError`` and changes nothing.

        ``after_restart`` (the agent was down): active alarms become unknown until the first good
        readings settle them. Pass ``False`` when only the configuration was reloaded.
        """
        f = Fields(data, f"snapshot[{self.machine.id}]")
        version = f.raw("version")
        if version != SNAPSHOT_VERSION:
            raise SnapshotError(f"{f.path}.version: expected {SNAPSHOT_VERSION}, got {version!r}")
        status = StatusTracker(self.spec.status.min_state)
        alarms = AlarmTracker(self.spec.alarms)
        downtime = DowntimeTracker(
            self.spec.downtime, self.categories, self.spec.timezone, self._downtime.thresholds, self._new_id
        )
        parts = PartCounter(self.spec.parts, self.spec.timezone)
        status.load(f.sub("status"))
        alarms.load(f.sub("alarms"))
        if not after_restart:
            alarms.settle()
        downtime.load(f.sub("downtime"))
        parts.load(f.sub("parts"))
        last_now = f.opt_number("last_now")
        bad_since = f.opt_number("bad_since")
        bad_reason = f.opt_text("bad_reason") or ""
        self._status, self._alarms, self._downtime, self._parts = status, alarms, downtime, parts
        self._last_now = -math.inf if last_now is None else last_now
        self._bad_since, self._bad_reason = bad_since, bad_reason
        answered = data.get("bad_answered", True)  # absent in snapshots from before BAD existed
        self._bad_answered = answered if isinstance(answered, bool) else True
        self._ctx.values.clear()
        self._ctx.changed_at.clear()
        self._ctx.alarms = alarms.facts()
        self._seen_good = False
        self._dirty = True


def _status_section(change: StatusChange) -> dict[str, Any]:
    return {
        "from": change.from_state,
        "to": change.to_state,
        "since": iso_utc(change.since),
        "previous_duration_seconds": None
        if change.previous_duration is None
        else round(change.previous_duration, 3),
        "reason": change.reason,
    }
