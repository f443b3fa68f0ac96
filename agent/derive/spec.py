"""A machine file's ``status:``, ``alarms:``, ``downtime:``, ``parts:`` sections (and the plant's
``downtime_categories``) parsed into frozen dataclasses. Every problem names file, line and key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config.source import Section, as_bool, as_duration, as_int, as_str, in_range

from .conditions import CATEGORY_KEYS, STATUS_KEYS, Condition, compile_when, normalize_code

ACTIVE = "ACTIVE"
IDLE = "IDLE"
ALARM = "ALARM"
SETUP = "SETUP"
DISCONNECTED = "DISCONNECTED"
# The device answers, but every request with an error (e.g. a Modbus exception): not readable either.
BAD = "BAD"
UNREADABLE = (DISCONNECTED, BAD)
# Custom states are allowed (a plant may want WARMUP or OFF); only ACTIVE counts as producing.
_STATE_WORD = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Category:
    name: str
    code: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class Categories:
    """The plant's downtime categories; lookups ignore case and surrounding blanks."""

    items: tuple[Category, ...] = ()
    _by_key: Mapping[str, Category] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {_category_key(c.name): c for c in self.items})

    @classmethod
    def of(cls, entries: Iterable[str | Category]) -> Categories:
        return cls(tuple(e if isinstance(e, Category) else Category(e) for e in entries))

    def find(self, name: str) -> Category | None:
        return self._by_key.get(_category_key(name))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.items)


def _category_key(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass(frozen=True)
class StatusRule:
    when: Condition
    state: str
    path: str  # ``status.rules[2]``: events name the rule that decided, so a status is explainable


@dataclass(frozen=True)
class StatusSpec:
    min_state: float = 5.0
    disconnect_after: float = 10.0
    rules: tuple[StatusRule, ...] = ()
    otherwise: str = IDLE

    @property
    def tags(self) -> frozenset[str]:
        return frozenset().union(*(r.when.tags for r in self.rules))

    @property
    def time_dependent(self) -> bool:
        return any(r.when.time_dependent for r in self.rules)


@dataclass(frozen=True)
class AlarmBit:
    tag: str
    bit: int
    code: str
    text: str
    severity: int | None


@dataclass(frozen=True)
class AlarmSpec:
    code_tag: str | None = None
    severity_tag: str | None = None
    count_tag: str | None = None
    bits: tuple[AlarmBit, ...] = ()
    texts: Mapping[str, str] = field(default_factory=dict)
    events: bool = True
    # How long a code the register shows waits for the device's event about it (0: not at all).
    event_grace: float = 2.0

    def text_for(self, code: str) -> str | None:
        return self.texts.get(str(normalize_code(code)))

    @property
    def tags(self) -> frozenset[str]:
        named = {self.code_tag, self.severity_tag, self.count_tag} | {b.tag for b in self.bits}
        return frozenset(t for t in named if t is not None)


@dataclass(frozen=True)
class CategoryRule:
    when: Condition
    category: str
    path: str


@dataclass(frozen=True)
class DowntimeSpec:
    micro_stop: float = 120.0
    categorize: tuple[CategoryRule, ...] = ()


@dataclass(frozen=True)
class PartsSpec:
    counter: str | None = None
    max: int = 4294967295  # the counter's largest value before it wraps to 0 (UINT32 by default)
    max_step: int = 10000  # a larger jump between two readings is a preset or garbage, not parts


@dataclass(frozen=True)
class DerivationSpec:
    status: StatusSpec = field(default_factory=StatusSpec)
    alarms: AlarmSpec = field(default_factory=AlarmSpec)
    downtime: DowntimeSpec = field(default_factory=DowntimeSpec)
    parts: PartsSpec = field(default_factory=PartsSpec)
    timezone: tzinfo = UTC  # for per-day part totals and ``between`` windows


def parse_categories(section: Section, key: str = "downtime_categories") -> Categories:
    """The plant list: names, or mappings ``{name, code, group}``; duplicates are errors."""
    items: list[Category] = []
    seen: set[str] = set()
    for path, line, raw in section.list(key):
        if isinstance(raw, Mapping):
            sub = Section(raw, file=section.file, path=path, problems=section.problems, line=line)
            name = sub.need("name", as_str)
            code = sub.opt("code", as_str)
            group = sub.opt("group", as_str)
            sub.done()
            if name is None:
                continue
        else:
            try:
                name = as_str(raw)
            except ValueError as exc:
                section.problems.add(section.file, line, path, str(exc))
                continue
            code = group = None
        name = " ".join(name.split())
        if _category_key(name) in seen:
            section.problems.add(section.file, line, path, f"category {name!r} is listed twice")
            continue
        seen.add(_category_key(name))
        items.append(Category(name, code, group))
    return Categories(tuple(items))


def parse_derivation(
    section: Section,
    tag_names: Set[str],
    categories: Categories | None = None,
    default_timezone: str | None = None,
    *,
    alarm_events: bool = True,
) -> DerivationSpec:
    """Read ``status``, ``alarms``, ``downtime``, ``parts`` and ``timezone`` of a machine file's root.

    ``tag_names`` are the machine's tags (rules naming others are errors); with ``categories``,
    categorization rules may only name listed categories. ``default_timezone`` is the plant's
    (an IANA name); without one and without ``timezone:`` in the machine file, days are UTC days.
    ``alarm_events`` says whether the machine's driver can deliver alarm events at all; it is the
    default of ``alarms.events``, so a register-only machine raises its register's codes at once.
    """
    tags = set(tag_names)
    tz = _parse_timezone(section, default_timezone)
    status = _parse_status(section.sub("status"), tags)
    alarms = _parse_alarms(section.sub("alarms"), tags, alarm_events)
    downtime = _parse_downtime(section.sub("downtime"), tags, categories)
    parts = _parse_parts(section.sub("parts"), tags)
    return DerivationSpec(status, alarms, downtime, parts, tz)


def _parse_timezone(section: Section, default: str | None) -> tzinfo:
    name = section.opt("timezone", as_str) or default
    if name is None:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        section.error("timezone", f"unknown time zone {name!r}; use an IANA name like Europe/Berlin")
        return UTC


def _state_word(value: Any) -> str:
    word = as_str(value)
    if not _STATE_WORD.match(word):
        raise ValueError(f"state {word!r} must be an upper-case word like ACTIVE, IDLE, ALARM, SETUP")
    if word in UNREADABLE:
        raise ValueError(f"{word} is decided by read quality (disconnect_after), not by rules")
    return word


def _parse_status(sec: Section, tags: set[str]) -> StatusSpec:
    min_state = sec.get("min_state", as_duration, 5.0)
    disconnect_after = sec.get("disconnect_after", as_duration, 10.0)
    otherwise = sec.get("otherwise", _state_word, IDLE)
    rules: list[StatusRule] = []
    for rule_sec in sec.sections("rules"):
        when = compile_when(rule_sec.sub("when", required=True), tag_names=tags, derived=STATUS_KEYS)
        state = rule_sec.need("state", _state_word)
        rule_sec.done()
        if when is not None and state is not None:
            rules.append(StatusRule(when, state, rule_sec.path))
    sec.done()
    return StatusSpec(min_state, disconnect_after, tuple(rules), otherwise)


def _tag_ref(tags: set[str]) -> Any:
    def convert(value: Any) -> str:
        name = as_str(value)
        if name not in tags:
            raise ValueError(f"unknown tag {name!r}; known tags: {', '.join(sorted(tags)) or 'none'}")
        return name

    return convert


def _parse_alarms(sec: Section, tags: set[str], events_default: bool) -> AlarmSpec:
    tag_ref = _tag_ref(tags)
    code_tag = sec.opt("code_tag", tag_ref)
    severity_tag = sec.opt("severity_tag", tag_ref)
    count_tag = sec.opt("count_tag", tag_ref)
    events = sec.get("events", as_bool, events_default)
    event_grace = sec.get("event_grace", as_duration, 2.0)
    texts: dict[str, str] = {}
    texts_sec = sec.sub("texts")
    codes = texts_sec.keys()  # Sections have keys() but no __iter__
    for code in codes:
        text = texts_sec.need(code, as_str)
        if text is not None:
            texts[str(normalize_code(code))] = text
    bits: list[AlarmBit] = []
    bits_sec = sec.sub("bits")
    bit_tags = bits_sec.keys()
    for tag in bit_tags:
        per_tag = bits_sec.sub(tag)
        if tag not in tags:
            bits_sec.error(tag, f"unknown tag {tag!r}; known tags: {', '.join(sorted(tags)) or 'none'}")
        bit_keys = per_tag.keys()
        for bit_key in bit_keys:
            bit_sec = per_tag.sub(bit_key)
            try:
                bit = in_range(as_int, 0, 63)(bit_key)
            except ValueError as exc:
                per_tag.error(bit_key, f"bit number: {exc}")
                bit = None
            code = bit_sec.need("code", as_str)
            text = bit_sec.get("text", as_str, code or "")
            severity = bit_sec.opt("severity", in_range(as_int, 1, 1000))
            bit_sec.done()
            if bit is not None and code is not None and tag in tags:
                bits.append(AlarmBit(tag, bit, code, text, severity))
    sec.done()
    return AlarmSpec(code_tag, severity_tag, count_tag, tuple(bits), texts, events, event_grace)


def _parse_downtime(sec: Section, tags: set[str], categories: Categories | None) -> DowntimeSpec:
    if sec.has("micro_stop") and sec.has("min_seconds"):
        sec.error("min_seconds", "give only one of micro_stop and min_seconds (the same setting)")
    micro_stop = sec.get("micro_stop", as_duration, sec.get("min_seconds", as_duration, 120.0))
    rules: list[CategoryRule] = []
    for rule_sec in sec.sections("categorize"):
        when = compile_when(rule_sec.sub("when", required=True), tag_names=tags, derived=CATEGORY_KEYS)
        name = rule_sec.need("category", as_str)
        rule_sec.done()
        if name is None:
            continue
        if categories is not None:
            found = categories.find(name)
            if found is None:
                listed = ", ".join(categories.names) or "none"
                rule_sec.error("category", f"{name!r} is not a plant downtime category; listed: {listed}")
                continue
            name = found.name
        if when is not None:
            rules.append(CategoryRule(when, name, rule_sec.path))
    sec.done()
    return DowntimeSpec(micro_stop, tuple(rules))


def _parse_parts(sec: Section, tags: set[str]) -> PartsSpec:
    counter = sec.opt("counter", _tag_ref(tags))
    maximum = sec.get("max", in_range(as_int, 1, 2**64 - 1), 4294967295)
    max_step = sec.get("max_step", in_range(as_int, 1), 10000)
    sec.done()
    return PartsSpec(counter, maximum, max_step)
