"""Rule conditions (``when:`` mappings) compiled once into plain closures: no ``eval``, no I/O.

A ``when`` mapping holds one condition per key and matches when all of them hold. A key names a
tag of the machine, or one of the derived facts a context offers (``state``, ``alarm_code``,
``alarm_text``, ``alarm_severity``, ``alarm_active``, ``between``). The value is
- a scalar: equals (``execution: ACTIVE``, ``estop: true``),
- a list: in (``mode: [SETUP, MANUAL]``),
- a mapping of operators, all of which must hold: ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``,
  ``in``, ``not_in``, ``truthy`` (true/false), ``matches`` (a regular expression, searched),
  and for tags ``changed_within`` (a duration: the tag's value changed that recently).
A tag that has no good value yet matches nothing, not even ``ne`` (unknown is not "different").
Comparing values of unlike types (a word with a number) is simply false, never an error.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from typing import Any

from agent.config.source import Section, as_duration

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class AlarmFact:
    """What a categorization rule may know about one alarm: code (digits as int), text, severity."""

    code: Any
    text: str
    severity: int | None


class RuleContext:
    """The facts a condition reads; one mutable object reused for every evaluation (no allocation)."""

    __slots__ = ("alarms", "changed_at", "local_minute", "now", "state", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.changed_at: dict[str, float] = {}
        self.now: float = 0.0
        self.state: str | None = None
        self.alarms: tuple[AlarmFact, ...] = ()
        self.local_minute: int = 0  # minute of the day in the machine's time zone, for ``between``


Check = Callable[[RuleContext], bool]
ValueCheck = Callable[[Any], bool]


@dataclass(frozen=True)
class Condition:
    """A compiled ``when``: ``check(ctx)``; ``tags`` it reads; ``time_dependent`` if ``now`` matters.

    Equality is by ``source`` (the canonical text of the ``when``), not by the closure, so two
    parses of an unchanged file compare equal and a config reload leaves that machine alone.
    """

    check: Check = field(compare=False)
    tags: frozenset[str]
    time_dependent: bool
    source: str = ""


# Derived keys, by context. Status rules see only tags and ``alarm_active``; categorization rules
# see the downtime's facts. In a context, a derived key means the derived fact even if a tag has
# the same name (documented in docs/events.md and the profiles).
STATUS_KEYS: frozenset[str] = frozenset({"alarm_active"})
CATEGORY_KEYS: frozenset[str] = frozenset(
    {"state", "alarm_code", "alarm_text", "alarm_severity", "alarm_active", "between"}
)

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_OPERATORS = (*_COMPARE, "in", "not_in", "truthy", "matches", "changed_within")


def normalize_code(code: Any) -> Any:
    """Alarm codes compare as numbers when they are digits: ``"1001"`` from OPC-UA equals ``1001``."""
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return code


def compile_when(sec: Section, *, tag_names: Set[str], derived: Set[str]) -> Condition | None:
    """Compile one ``when`` mapping; problems are recorded on ``sec`` and yield ``None``."""
    checks: list[Check] = []
    tags: set[str] = set()
    time_dependent = False
    ok = sec.ok
    if not sec.keys() and sec.ok:
        sec.error_here("a condition needs at least one key")
        ok = False
    names = sec.keys()  # a Section, not a dict: it has no __iter__
    for key in names:
        raw = sec.raw(key)
        if key in derived:
            check = _compile_derived(sec, key, raw)
            time_dependent = time_dependent or key == "between"
        elif key in tag_names:
            tags.add(key)
            check, timed = _compile_tag(sec, key, raw)
            time_dependent = time_dependent or timed
        else:
            choices = sorted(tag_names | set(derived))
            sec.error(key, f"unknown tag {key!r}; known here: {', '.join(choices) or 'none'}")
            check = None
        if check is None:
            ok = False
        else:
            checks.append(check)
    sec.done()
    if not ok:
        return None
    source = json.dumps(dict(sec.data), sort_keys=True, default=str)
    return Condition(_all(checks), frozenset(tags), time_dependent, source)


def _all(checks: list[Check]) -> Check:
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda ctx: first(ctx) and second(ctx)
    frozen = tuple(checks)
    return lambda ctx: all(c(ctx) for c in frozen)


def _compile_tag(sec: Section, tag: str, raw: Any) -> tuple[Check | None, bool]:
    within: float | None = None
    if isinstance(raw, dict) and "changed_within" in raw:
        try:
            within = as_duration(raw["changed_within"])
        except ValueError as exc:
            sec.error(tag, f"changed_within: {exc}")
            return None, True
        raw = {k: v for k, v in raw.items() if k != "changed_within"}
        if not raw:
            raw = None
    value_check = None
    if raw is not None:
        value_check = compile_value(sec, tag, raw)
        if value_check is None:
            return None, within is not None
    elif within is None:
        sec.error(tag, "expected a value, a list or a mapping of operators")
        return None, False

    # The common shapes get a closure without the generic layers: status rules run on every change.
    if within is None and isinstance(raw, str | int | float | bool):
        expected = raw
        return (lambda ctx: ctx.values.get(tag, _MISSING) == expected), False
    if within is None:
        assert value_check is not None
        vc = value_check

        def by_value(ctx: RuleContext) -> bool:
            value = ctx.values.get(tag, _MISSING)
            return value is not _MISSING and vc(value)

        return by_value, False

    limit = within

    def recently_changed(ctx: RuleContext) -> bool:
        ts = ctx.changed_at.get(tag)
        if ts is None or ctx.now - ts > limit:
            return False
        if value_check is None:
            return True
        value = ctx.values.get(tag, _MISSING)
        return value is not _MISSING and value_check(value)

    return recently_changed, True


def _compile_derived(sec: Section, key: str, raw: Any) -> Check | None:
    if key == "between":
        return _compile_between(sec, raw)
    if key == "alarm_active":
        if not isinstance(raw, bool):
            sec.error(key, "expected true or false")
            return None
        want = raw
        return lambda ctx: bool(ctx.alarms) == want
    if key == "state":
        vc = compile_value(sec, key, raw)
        if vc is None:
            return None
        state_check = vc
        return lambda ctx: ctx.state is not None and state_check(ctx.state)
    if key == "alarm_text":
        if isinstance(raw, str) or (isinstance(raw, list) and all(isinstance(x, str) for x in raw)):
            raw = {"matches": raw}
        vc = compile_value(sec, key, raw)
        if vc is None:
            return None
        text_check = vc
        return lambda ctx: any(text_check(a.text) for a in ctx.alarms)
    if key == "alarm_severity":
        vc = compile_value(sec, key, raw)
        if vc is None:
            return None
        sev_check = vc
        return lambda ctx: any(a.severity is not None and sev_check(a.severity) for a in ctx.alarms)
    # alarm_code
    vc = compile_value(sec, key, _normalize_expected(raw))
    if vc is None:
        return None
    code_check = vc
    return lambda ctx: any(code_check(a.code) for a in ctx.alarms)


def _normalize_expected(raw: Any) -> Any:
    if isinstance(raw, list):
        return [normalize_code(x) for x in raw]
    if isinstance(raw, dict):
        return {k: _normalize_expected(v) if k != "truthy" else v for k, v in raw.items()}
    return normalize_code(raw)


def compile_value(sec: Section, key: str, raw: Any) -> ValueCheck | None:
    """A check of one value: scalar → equals, list → in, mapping → operators (all must hold)."""
    if isinstance(raw, bool | int | float | str):
        expected = raw
        return lambda v: bool(v == expected)
    if isinstance(raw, list):
        return _member(sec, key, raw, negate=False)
    if not isinstance(raw, dict) or not raw:
        sec.error(key, "expected a value, a list or a mapping of operators")
        return None
    checks: list[ValueCheck] = []
    for op, arg in raw.items():
        check = _operator(sec, key, str(op), arg)
        if check is None:
            return None
        checks.append(check)
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)
    return lambda v: all(c(v) for c in frozen)


def _operator(sec: Section, key: str, op: str, arg: Any) -> ValueCheck | None:
    if op in _COMPARE:
        if not isinstance(arg, bool | int | float | str):
            sec.error(key, f"{op}: expected a single value")
            return None
        fn = _COMPARE[op]
        return _guarded(lambda v: bool(fn(v, arg)))
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            sec.error(key, f"{op}: expected a list")
            return None
        return _member(sec, key, arg, negate=op == "not_in")
    if op == "truthy":
        if not isinstance(arg, bool):
            sec.error(key, "truthy: expected true or false")
            return None
        want = arg
        return lambda v: bool(v) == want
    if op == "matches":
        patterns = arg if isinstance(arg, list) else [arg]
        compiled = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                sec.error(key, "matches: expected a regular expression string")
                return None
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                sec.error(key, f"matches: invalid regular expression {pattern!r}: {exc}")
                return None
        regexes = tuple(compiled)
        return lambda v: isinstance(v, str) and any(r.search(v) for r in regexes)
    if op == "changed_within":
        sec.error(key, "changed_within: only for tags")
        return None
    sec.error(key, f"unknown operator {op!r}; expected one of {', '.join(_OPERATORS)}")
    return None


def _member(sec: Section, key: str, items: list[Any], *, negate: bool) -> ValueCheck | None:
    for item in items:
        if not isinstance(item, bool | int | float | str):
            sec.error(key, "a list of conditions may hold only plain values")
            return None
    choices = frozenset(items)

    def member(v: Any) -> bool:
        try:
            return (v in choices) != negate
        except TypeError:  # an unhashable device value is in no list
            return negate

    return member


def _guarded(fn: ValueCheck) -> ValueCheck:
    def check(v: Any) -> bool:
        try:
            return fn(v)
        except TypeError:  # a word compared with a number: not a match, not a crash
            return False

    return check


_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _compile_between(sec: Section, raw: Any) -> Check | None:
    if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):
        sec.error("between", 'expected two times of day, like ["22:00", "06:00"]')
        return None
    minutes = []
    for text in raw:
        m = _CLOCK.match(text.strip())
        if not m:
            sec.error("between", f"{text!r} is not a time of day like 06:30")
            return None
        minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
    start, end = minutes
    if start == end:
        sec.error("between", "start and end are the same time; the window would be empty")
        return None
    if start < end:
        return lambda ctx: start <= ctx.local_minute < end
    return lambda ctx: ctx.local_minute >= start or ctx.local_minute < end
