"""Rule conditions, table-driven: one `when` mapping, a set of tag values, the expected verdict."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config.source import Problems, Section, parse_yaml
from agent.derive.conditions import (
    CATEGORY_KEYS,
    STATUS_KEYS,
    AlarmFact,
    RuleContext,
    compile_when,
)

TAGS = {"execution", "mode", "estop", "alarm_code", "part_count", "spindle_rpm", "program"}


def check(
    when_yaml: str,
    values: dict[str, Any],
    *,
    now: float = 100.0,
    derived: frozenset[str] = STATUS_KEYS,
    **ctx_fields: Any,
) -> bool:
    problems = Problems()
    data = parse_yaml(when_yaml, "m.yaml", problems)
    cond = compile_when(
        Section(data, file="m.yaml", path="when", problems=problems), tag_names=TAGS, derived=derived
    )
    assert not problems, [str(p) for p in problems.items]
    assert cond is not None
    ctx = RuleContext()
    ctx.values.update(values)
    ctx.now = now
    ctx.changed_at.update(ctx_fields.pop("changed_at", {}))
    for key, value in ctx_fields.items():
        setattr(ctx, key, value)
    return cond.check(ctx)


CASES = [
    # (when, values, expected)
    ("{execution: ACTIVE}", {"execution": "ACTIVE"}, True),
    ("{execution: ACTIVE}", {"execution": "READY"}, False),
    ("{execution: ACTIVE}", {}, False),
    ("{estop: true}", {"estop": True}, True),
    ("{estop: true}", {"estop": False}, False),
    ("{mode: [SETUP, MANUAL]}", {"mode": "MANUAL"}, True),
    ("{mode: [SETUP, MANUAL]}", {"mode": "AUTOMATIC"}, False),
    ("{mode: {in: [SETUP]}}", {"mode": "SETUP"}, True),
    ("{mode: {not_in: [SETUP]}}", {"mode": "SETUP"}, False),
    ("{mode: {not_in: [SETUP]}}", {"mode": "AUTOMATIC"}, True),
    ("{alarm_code: {ne: 0}}", {"alarm_code": 1001}, True),
    ("{alarm_code: {ne: 0}}", {"alarm_code": 0}, False),
    ("{alarm_code: {ne: 0}}", {}, False),  # unknown is not "different"
    ("{spindle_rpm: {gt: 100, le: 5000}}", {"spindle_rpm": 2500.0}, True),
    ("{spindle_rpm: {gt: 100, le: 5000}}", {"spindle_rpm": 5000.5}, False),
    ("{spindle_rpm: {lt: 10}}", {"spindle_rpm": "FAULT"}, False),  # word vs number: no match, no crash
    ("{spindle_rpm: {ge: 10}}", {"spindle_rpm": 10}, True),
    ("{spindle_rpm: {eq: 10}}", {"spindle_rpm": 10.0}, True),
    ("{spindle_rpm: {truthy: true}}", {"spindle_rpm": 0.0}, False),
    ("{spindle_rpm: {truthy: false}}", {"spindle_rpm": 0.0}, True),
    ("{program: {matches: '^WARMUP'}}", {"program": "WARMUP-1"}, True),
    ("{program: {matches: '^WARMUP'}}", {"program": "O1000"}, False),
    ("{program: {matches: '^WARMUP'}}", {"program": 5}, False),
    ("{execution: ACTIVE, mode: AUTOMATIC}", {"execution": "ACTIVE", "mode": "AUTOMATIC"}, True),
    ("{execution: ACTIVE, mode: AUTOMATIC}", {"execution": "ACTIVE", "mode": "SETUP"}, False),
    ("{mode: [SETUP]}", {"mode": ["unhashable"]}, False),
]


@pytest.mark.parametrize(("when", "values", "expected"), CASES)
def test_condition_table(when: str, values: dict[str, Any], expected: bool) -> None:
    assert check(when, values) is expected


@pytest.mark.parametrize(
    ("changed_at", "now", "expected"),
    [({"part_count": 50.0}, 100.0, True), ({"part_count": 30.0}, 100.0, False), ({}, 100.0, False)],
)
def test_changed_within_reads_the_clock(changed_at: dict[str, float], now: float, expected: bool) -> None:
    assert (
        check("{part_count: {changed_within: 60s}}", {"part_count": 7}, now=now, changed_at=changed_at)
        is expected
    )


COOLANT = AlarmFact(2040, "Coolant low", 300)
OVERLOAD = AlarmFact(1001, "Spindle overload", 800)


@pytest.mark.parametrize(
    ("when", "fields", "expected"),
    [
        ("{alarm_code: [1001]}", {"alarms": (OVERLOAD,)}, True),
        ("{alarm_code: ['1001']}", {"alarms": (OVERLOAD,)}, True),  # digits compare as numbers
        ("{alarm_code: [1001]}", {"alarms": (COOLANT,)}, False),
        ("{alarm_code: {ge: 2000, lt: 3000}}", {"alarms": (OVERLOAD, COOLANT)}, True),
        ("{alarm_text: '(?i)coolant'}", {"alarms": (COOLANT,)}, True),
        ("{alarm_text: '(?i)coolant'}", {"alarms": ()}, False),
        ("{alarm_severity: {ge: 700}}", {"alarms": (COOLANT,)}, False),
        ("{alarm_active: true}", {"alarms": (COOLANT,)}, True),
        ("{alarm_active: false}", {"alarms": ()}, True),
        ("{state: SETUP}", {"state": "SETUP"}, True),
        ("{state: [IDLE, ALARM]}", {"state": "SETUP"}, False),
        ("{between: ['22:00', '06:00']}", {"local_minute": 23 * 60}, True),
        ("{between: ['22:00', '06:00']}", {"local_minute": 5 * 60 + 59}, True),
        ("{between: ['22:00', '06:00']}", {"local_minute": 6 * 60}, False),
        ("{between: ['08:00', '12:30']}", {"local_minute": 12 * 60 + 29}, True),
        ("{between: ['08:00', '12:30']}", {"local_minute": 7 * 60}, False),
    ],
)
def test_derived_keys_of_categorization(when: str, fields: dict[str, Any], expected: bool) -> None:
    assert check(when, {}, derived=CATEGORY_KEYS, **fields) is expected


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{spindle: 1}", "when.spindle: unknown tag 'spindle'"),
        ("{mode: {like: SETUP}}", "when.mode: unknown operator 'like'"),
        ("{mode: {in: SETUP}}", "when.mode: in: expected a list"),
        ("{program: {matches: '(unclosed'}}", "when.program: matches: invalid regular expression"),
        ("{part_count: {changed_within: soon}}", "when.part_count: changed_within: expected a duration"),
        ("{between: ['25:00', '06:00']}", "when.between: '25:00' is not a time of day"),
        ("{mode: null}", "when.mode: expected a value, a list or a mapping of operators"),
        ("{}", "when: a condition needs at least one key"),
        ("{alarm_text: {matches: 5}}", "when.alarm_text: matches: expected a regular expression"),
    ],
)
def test_bad_conditions_are_named(when: str, message: str) -> None:
    assert message in " | ".join(compile_problems(when, CATEGORY_KEYS))


def test_status_rules_cannot_use_categorization_facts() -> None:
    texts = compile_problems("{state: SETUP, between: ['22:00', '06:00']}", STATUS_KEYS)
    assert any("when.state: unknown tag 'state'" in t for t in texts), texts
    assert any("when.between: unknown tag 'between'" in t for t in texts), texts


def compile_problems(when: str, derived: frozenset[str]) -> list[str]:
    problems = Problems()
    data = parse_yaml(when, "m.yaml", problems)
    cond = compile_when(
        Section(data, file="m.yaml", path="when", problems=problems, line=3), tag_names=TAGS, derived=derived
    )
    assert cond is None
    texts = [str(p) for p in problems.items]
    assert all(t.startswith("m.yaml:") for t in texts)
    return texts
