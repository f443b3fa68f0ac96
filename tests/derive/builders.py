"""Small builders shared by the derivation specs: a spec from YAML text, readings at a given time."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from agent.config.source import ConfigError, Problems, Section, parse_yaml
from agent.derive import Categories, DerivationSpec, MachineDeriver, parse_derivation
from agent.events import Event, MachineRef
from drivers.base import AlarmNotice, Quality, Reading

MACHINE = MachineRef("mill-01", "CNC Mill 01", "Milling")
CATEGORIES = Categories.of(
    ["Maintenance Required", "Waiting for Material", "Setup", "Tooling", "No Operator"]
)
TAGS = {
    "execution",
    "mode",
    "estop",
    "alarm_code",
    "alarm_severity",
    "alarm_count",
    "alarm_bits",
    "part_count",
}

BASE = """
timezone: UTC
status:
  min_state: 5s
  disconnect_after: 10s
  rules:
    - {when: {estop: true}, state: ALARM}
    - {when: {alarm_code: {ne: 0}}, state: ALARM}
    - {when: {mode: [SETUP, MANUAL]}, state: SETUP}
    - {when: {execution: ACTIVE}, state: ACTIVE}
  otherwise: IDLE
alarms:
  code_tag: alarm_code
  severity_tag: alarm_severity
  count_tag: alarm_count
  bits: {alarm_bits: {0: {code: ESTOP, text: Emergency stop, severity: 900}, 1: {code: DOOR, text: Door open}}}
  texts: {1001: Spindle overload, 2040: Coolant low}
downtime:
  micro_stop: 2m
  categorize:
    - {when: {alarm_code: [1001]}, category: Maintenance Required}
    - {when: {alarm_text: "(?i)coolant"}, category: Maintenance Required}
    - {when: {state: SETUP}, category: Setup}
    - {when: {between: ["22:00", "06:00"]}, category: No Operator}
parts: {counter: part_count, max: 9999, max_step: 100}
"""


def spec_from(
    text: str = BASE, tags: Iterable[str] = TAGS, categories: Categories = CATEGORIES
) -> DerivationSpec:
    problems = Problems()
    data = parse_yaml(text, "machines/mill-01.yaml", problems)
    root = Section(data, file="machines/mill-01.yaml", path="", problems=problems)
    spec = parse_derivation(root, set(tags), categories)
    root.done()
    problems.raise_if_any()
    return spec


def problems_of(text: str, tags: Iterable[str] = TAGS) -> list[str]:
    try:
        spec_from(text, tags)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def deriver(text: str = BASE, exceeded_after: Iterable[float] = ()) -> MachineDeriver:
    counter = itertools.count()
    return MachineDeriver(
        spec_from(text),
        MACHINE,
        CATEGORIES,
        tuple(exceeded_after),
        new_id=lambda ts: f"id{next(counter):06d}",
    )


def good(t: float, **values: Any) -> list[Reading]:
    return [Reading(MACHINE.id, tag, v, Quality.GOOD, t) for tag, v in values.items()]


def bad(t: float, *tags: str, quality: Quality = Quality.DISCONNECTED) -> list[Reading]:
    return [Reading(MACHINE.id, tag, None, quality, t, "connection refused") for tag in tags]


def notice(t: float, code: str | None, active: bool, message: str = "", severity: int = 500) -> AlarmNotice:
    return AlarmNotice(MACHINE.id, code, message, severity, active, t)


IDLE_VALUES: dict[str, Any] = {
    "execution": "READY",
    "mode": "AUTOMATIC",
    "estop": False,
    "alarm_code": 0,
    "alarm_severity": 0,
    "alarm_count": 0,
    "alarm_bits": 0,
}


def kinds(events: Iterable[Event]) -> list[str]:
    return [e.event for e in events]
