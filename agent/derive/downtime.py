"""Downtime: from leaving ACTIVE (after the micro-stop threshold) until ACTIVE again.

- The start time is the moment the status left ACTIVE; the downtime is *reported* once the machine
  has stayed out of ACTIVE for ``micro_stop`` (shorter stops are micro-stops: no events).
- DISCONNECTED (and BAD: answering only errors) is neither producing nor stopped: it does not start, end or confirm a downtime. An
  open downtime keeps running through it (a dead machine stays down, ``downtime_exceeded`` still
  fires). A machine lost while ACTIVE that comes back not ACTIVE is down since contact was lost.
- Only a stop that was seen leaving ACTIVE is a downtime: a machine first seen idle is not.
- Auto-categorization rules are tried when the downtime starts and, while it has no category, on
  each later status change or new alarm; the first category found stands. Operators may
  (re)categorize open and recent downtimes at any time; every categorization is a new event.
- ``downtime_exceeded`` fires once per downtime per threshold, from the injected clock alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from agent.events import DOWNTIME_CATEGORIZED, DOWNTIME_ENDED, DOWNTIME_EXCEEDED, DOWNTIME_STARTED, iso_utc

from .conditions import AlarmFact, RuleContext
from .errors import InvalidCategorization, UnknownCategory, UnknownDowntime
from .snapshot import Fields
from .spec import ACTIVE, UNREADABLE, Categories, DowntimeSpec
from .status import StatusChange

Fact = tuple[str, dict[str, Any]]  # event type and its data sections
_KEEP_RECENT = 50
_MAX_NOTES = 2000
_KEEP_ALARMS = 20


@dataclass
class Downtime:
    id: str
    started_at: float
    ended_at: float | None = None
    category: str | None = None
    notes: str | None = None
    operator: dict[str, str] | None = None
    categorized_by: str | None = None  # "operator" or the rule path, e.g. "downtime.categorize[1]"
    exceeded: list[float] = field(default_factory=list)
    alarms: list[AlarmFact] = field(default_factory=list)  # seen since the machine left ACTIVE

    def duration(self, now: float) -> float:
        end = self.ended_at if self.ended_at is not None else now
        return round(max(0.0, end - self.started_at), 3)

    def section(self, now: float, categories: Categories) -> dict[str, Any]:
        cat = categories.find(self.category) if self.category else None
        return {
            "id": self.id,
            "started_at": iso_utc(self.started_at),
            "ended_at": None if self.ended_at is None else iso_utc(self.ended_at),
            "duration_seconds": self.duration(now),
            "category": self.category,
            "category_code": cat.code if cat else None,
            "category_group": cat.group if cat else None,
            "categorized_by": self.categorized_by,
            "notes": self.notes,
        }

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["alarms"] = [[a.code, a.text, a.severity] for a in self.alarms]
        return out

    @classmethod
    def load(cls, f: Fields) -> Downtime:
        operator = f.raw("operator")
        if operator is not None and not (
            isinstance(operator, dict) and all(isinstance(v, str) for v in operator.values())
        ):
            raise f.error("operator", "expected an object of strings or null")
        exceeded = f.raw("exceeded") or []
        if not isinstance(exceeded, list) or not all(isinstance(x, int | float) for x in exceeded):
            raise f.error("exceeded", "expected a list of numbers")
        alarms = f.raw("alarms") or []
        if not isinstance(alarms, list) or not all(isinstance(a, list) and len(a) == 3 for a in alarms):
            raise f.error("alarms", "expected a list of [code, text, severity]")
        return cls(
            id=f.text("id"),
            started_at=f.number("started_at"),
            ended_at=f.opt_number("ended_at"),
            category=f.opt_text("category"),
            notes=f.opt_text("notes"),
            operator=operator,
            categorized_by=f.opt_text("categorized_by"),
            exceeded=[float(x) for x in exceeded],
            alarms=[AlarmFact(a[0], str(a[1]), a[2]) for a in alarms],
        )


def normalize_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted({float(t) for t in thresholds if math.isfinite(t) and t >= 0}))


class DowntimeTracker:
    def __init__(
        self,
        spec: DowntimeSpec,
        categories: Categories,
        tz: tzinfo,
        exceeded_after: Sequence[float],
        new_id: Callable[[float], str],
    ) -> None:
        self.spec = spec
        self.categories = categories
        self.tz = tz
        self.thresholds = normalize_thresholds(exceeded_after)
        self.new_id = new_id
        self.left_at: float | None = None
        self.seen: dict[Any, AlarmFact] = {}
        self.open: Downtime | None = None
        self.recent: deque[Downtime] = deque(maxlen=_KEEP_RECENT)

    # -- inputs

    def on_status(self, change: StatusChange, active: Iterable[AlarmFact] = ()) -> list[Fact]:
        if change.to_state == ACTIVE:
            self.left_at = None
            self.seen.clear()
            dt = self.open
            if dt is None:
                return []
            dt.ended_at = max(change.since, dt.started_at)
            dt.alarms = []  # only auto-rules of an open downtime need them
            self.open = None
            self.recent.append(dt)
            return [(DOWNTIME_ENDED, self._data(dt, dt.ended_at))]
        if change.from_state == ACTIVE:
            self.left_at = change.since
            # The alarm that stopped the machine usually came before the debounced status change.
            self.seen = {a.code: a for a in list(active)[:_KEEP_ALARMS]}
        return []

    def on_alarm(self, fact: AlarmFact) -> None:
        if self.open is not None:
            known = self.open.alarms
            # A flapping alarm must not grow the snapshot: one entry per code, a bounded few codes.
            if all(a.code != fact.code for a in known) and len(known) < _KEEP_ALARMS:
                known.append(fact)
        elif self.left_at is not None and (fact.code in self.seen or len(self.seen) < _KEEP_ALARMS):
            self.seen[fact.code] = fact

    def step(self, now: float, state: str | None, ctx: RuleContext, retry_rules: bool) -> list[Fact]:
        """Timers: confirm a stop past the micro-stop threshold, categorize, fire thresholds."""
        out: list[Fact] = []
        dt = self.open
        if (
            dt is None
            and self.left_at is not None
            and state not in (ACTIVE, *UNREADABLE, None)
            and now - self.left_at >= self.spec.micro_stop
        ):
            dt = self.open = Downtime(self.new_id(self.left_at), self.left_at)
            dt.alarms.extend(self.seen.values())
            self.seen.clear()
            self.left_at = None
            categorized = self._auto_categorize(dt, state, ctx)
            out.append((DOWNTIME_STARTED, self._data(dt, now)))
            if categorized:
                out.append((DOWNTIME_CATEGORIZED, self._data(dt, now)))
        elif dt is not None and retry_rules and dt.category is None and self._auto_categorize(dt, state, ctx):
            out.append((DOWNTIME_CATEGORIZED, self._data(dt, now)))
        if dt is not None and self.thresholds:
            elapsed = now - dt.started_at
            for threshold in self.thresholds:
                if elapsed < threshold:
                    break
                if threshold not in dt.exceeded:
                    dt.exceeded.append(threshold)
                    data = self._data(dt, now)
                    data["downtime"]["threshold_seconds"] = threshold
                    out.append((DOWNTIME_EXCEEDED, data))
        return out

    def _auto_categorize(self, dt: Downtime, state: str | None, ctx: RuleContext) -> bool:
        if not self.spec.categorize:
            return False
        saved = ctx.state, ctx.alarms, ctx.local_minute
        start = datetime.fromtimestamp(dt.started_at, self.tz)
        merged = {a.code: a for a in dt.alarms}
        merged.update({a.code: a for a in ctx.alarms})
        ctx.state, ctx.alarms, ctx.local_minute = (
            state,
            tuple(merged.values()),
            start.hour * 60 + start.minute,
        )
        try:
            for rule in self.spec.categorize:
                if rule.when.check(ctx):
                    dt.category, dt.categorized_by = rule.category, rule.path
                    return True
            return False
        finally:
            ctx.state, ctx.alarms, ctx.local_minute = saved

    def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None,
        operator: Mapping[str, Any] | None,
        now: float,
    ) -> Fact:
        dt = self.find(downtime_id)
        if dt is None:
            raise UnknownDowntime(f"no open or recent downtime with id {downtime_id!r}")
        if not isinstance(category, str):
            raise UnknownCategory("category must be a string naming a plant downtime category")
        found = self.categories.find(category)
        if found is None:
            listed = ", ".join(self.categories.names) or "none configured"
            raise UnknownCategory(f"{category!r} is not a downtime category of this plant; listed: {listed}")
        if notes is not None and not isinstance(notes, str):
            raise InvalidCategorization("notes must be text")
        if notes is not None and len(notes) > _MAX_NOTES:
            raise InvalidCategorization(f"notes are longer than {_MAX_NOTES} characters")
        who = _operator(operator)
        dt.category, dt.notes, dt.operator, dt.categorized_by = found.name, notes, who, "operator"
        return (DOWNTIME_CATEGORIZED, self._data(dt, now))

    def find(self, downtime_id: str) -> Downtime | None:
        if self.open is not None and self.open.id == downtime_id:
            return self.open
        return next((d for d in self.recent if d.id == downtime_id), None)

    def _data(self, dt: Downtime, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {"downtime": dt.section(now, self.categories)}
        if dt.operator is not None:
            data["operator"] = dict(dt.operator)
        return data

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "left_at": self.left_at,
            "seen": [[a.code, a.text, a.severity] for a in self.seen.values()],
            "open": None if self.open is None else self.open.to_dict(),
            "recent": [d.to_dict() for d in self.recent],
        }

    def load(self, f: Fields) -> None:
        self.left_at = f.opt_number("left_at")
        seen = f.raw("seen") or []
        if not isinstance(seen, list) or not all(isinstance(a, list) and len(a) == 3 for a in seen):
            raise f.error("seen", "expected a list of [code, text, severity]")
        self.seen = {a[0]: AlarmFact(a[0], str(a[1]), a[2]) for a in seen}
        open_f = f.opt_sub("open")
        self.open = None if open_f is None else Downtime.load(open_f)
        self.recent.clear()
        self.recent.extend(Downtime.load(item) for item in f.items("recent"))


def _operator(operator: Mapping[str, Any] | None) -> dict[str, str] | None:
    if operator is None:
        return None
    if not isinstance(operator, Mapping):
        raise InvalidCategorization('operator must be an object like {"id": "op456", "name": "John Smith"}')
    unknown = set(operator) - {"id", "name"}
    if unknown:
        raise InvalidCategorization(f"operator: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    op_id = operator.get("id")
    if not isinstance(op_id, str) or not op_id.strip():
        raise InvalidCategorization("operator.id must be a non-empty string")
    name = operator.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidCategorization("operator.name must be a string")
    out = {"id": op_id}
    if name is not None:
        out["name"] = name
    return out
