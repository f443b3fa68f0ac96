"""Parsing the derivation sections: defaults, every problem named by file, line and key path."""

from __future__ import annotations

import pytest

from agent.config.source import Problems, Section, parse_yaml
from agent.derive import Categories, parse_categories, parse_derivation
from agent.derive.spec import Category

from .builders import BASE, problems_of, spec_from


def test_the_documented_example_parses_into_frozen_data() -> None:
    spec = spec_from()
    assert spec.status.min_state == 5.0
    assert spec.status.disconnect_after == 10.0
    assert [r.state for r in spec.status.rules] == ["ALARM", "ALARM", "SETUP", "ACTIVE"]
    assert spec.status.rules[0].path == "status.rules[0]"
    assert spec.status.otherwise == "IDLE"
    assert spec.alarms.code_tag == "alarm_code"
    assert spec.alarms.text_for("1001") == "Spindle overload"
    assert [(b.tag, b.bit, b.code, b.severity) for b in spec.alarms.bits] == [
        ("alarm_bits", 0, "ESTOP", 900),
        ("alarm_bits", 1, "DOOR", None),
    ]
    assert spec.downtime.micro_stop == 120.0
    assert [r.category for r in spec.downtime.categorize] == [
        "Maintenance Required",
        "Maintenance Required",
        "Setup",
        "No Operator",
    ]
    assert spec.parts.counter == "part_count" and spec.parts.max == 9999
    assert str(spec.timezone) == "UTC"
    with pytest.raises(AttributeError):
        spec.status.min_state = 1.0  # type: ignore[misc]


def test_empty_sections_give_safe_defaults() -> None:
    spec = spec_from("{}\n", tags=set())
    assert spec.status.rules == () and spec.status.otherwise == "IDLE"
    assert spec.alarms.events is True
    assert spec.alarms.event_grace == 2.0  # a register's code waits this long for the device's event
    assert spec.parts.counter is None


def test_event_grace_is_a_duration() -> None:
    assert spec_from("alarms: {event_grace: 500ms}\n").alarms.event_grace == 0.5
    assert spec_from("alarms: {event_grace: 0}\n").alarms.event_grace == 0.0


def test_a_driver_without_alarm_events_turns_events_off_unless_the_file_says_otherwise() -> None:
    def events(text: str) -> bool:
        problems = Problems()
        root = Section(parse_yaml(text, "m.yaml", problems), file="m.yaml", path="", problems=problems)
        return parse_derivation(root, {"alarm_code"}, alarm_events=False).alarms.events

    assert events("alarms: {code_tag: alarm_code}\n") is False
    assert events("alarms: {code_tag: alarm_code, events: true}\n") is True


def test_min_seconds_is_the_issue_s_name_for_micro_stop() -> None:
    assert spec_from("downtime: {min_seconds: 30s}\n").downtime.micro_stop == 30.0
    assert "give only one of micro_stop and min_seconds" in " ".join(
        problems_of("downtime: {min_seconds: 30s, micro_stop: 1m}\n")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status: {min_state: soon}\n", "machines/mill-01.yaml:1: status.min_state: expected a duration"),
        (
            "status:\n  rules:\n    - {when: {spindle: 1}, state: ACTIVE}\n",
            "status.rules[0].when.spindle: unknown tag",
        ),
        ("status:\n  rules:\n    - {when: {mode: SETUP}, state: setup}\n", "must be an upper-case word"),
        ("status:\n  rules:\n    - {when: {mode: SETUP}, state: DISCONNECTED}\n", "decided by read quality"),
        ("status:\n  rules:\n    - {state: ACTIVE}\n", "status.rules[0].when: required key is missing"),
        (
            "status: {rules: [{when: {mode: SETUP}, state: SETUP, colour: red}]}\n",
            "status.rules[0].colour: unknown key",
        ),
        ("status: {debounce: 5s}\n", "status.debounce: unknown key"),
        ("alarms: {code_tag: alarm_register}\n", "alarms.code_tag: unknown tag 'alarm_register'"),
        ("alarms: {event_grace: soon}\n", "alarms.event_grace: expected a duration"),
        ("alarms: {bits: {door_bits: {0: {code: X}}}}\n", "alarms.bits.door_bits: unknown tag"),
        ("alarms: {bits: {alarm_bits: {x: {code: X}}}}\n", "alarms.bits.alarm_bits.x: bit number"),
        (
            "alarms: {bits: {alarm_bits: {0: {text: no code}}}}\n",
            "alarms.bits.alarm_bits.0.code: required key",
        ),
        ("alarms: {bits: {alarm_bits: {0: {code: X, severity: 5000}}}}\n", "severity: must be at most 1000"),
        (
            "downtime:\n  categorize:\n    - {when: {state: IDLE}, category: Lunch}\n",
            "'Lunch' is not a plant downtime category",
        ),
        (
            "downtime:\n  categorize:\n    - {when: {shift: 2}, category: Setup}\n",
            "categorize[0].when.shift: unknown tag",
        ),
        ("parts: {counter: parts}\n", "parts.counter: unknown tag 'parts'"),
        ("parts: {counter: part_count, max: 0}\n", "parts.max: must be at least 1"),
        ("timezone: Mars/Olympus\n", "timezone: unknown time zone 'Mars/Olympus'"),
    ],
)
def test_problems_name_file_line_and_key(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("machines/mill-01.yaml:") for p in problems)


def test_all_problems_of_a_file_are_reported_together() -> None:
    text = "status: {min_state: soon}\nparts: {counter: nope}\ndowntime: {micro_stop: later}\n"
    assert len(problems_of(text)) == 3


def test_categories_match_case_insensitively_and_keep_the_plant_spelling() -> None:
    spec = spec_from(BASE.replace("category: Setup", "category: '  setup '"))
    assert spec.downtime.categorize[2].category == "Setup"


def test_timezone_names_the_day_boundaries() -> None:
    spec = spec_from("timezone: Europe/Berlin\n")
    assert str(spec.timezone) == "Europe/Berlin"


def test_plant_categories_accept_names_and_mappings() -> None:
    problems = Problems()
    text = """
downtime_categories:
  - Maintenance Required
  - {name: Waiting for Material, code: WFM, group: Logistics}
  - {name: maintenance   required}
  - {code: X}
"""
    root = Section(parse_yaml(text, "agent.yaml", problems), file="agent.yaml", path="", problems=problems)
    cats = parse_categories(root)
    assert cats.names == ("Maintenance Required", "Waiting for Material")
    assert cats.find("waiting FOR material") == Category("Waiting for Material", "WFM", "Logistics")
    texts = [str(p) for p in problems.items]
    assert any(
        "agent.yaml:5: downtime_categories[2]: category 'maintenance required' is listed twice" in t
        for t in texts
    )
    assert any("downtime_categories[3].name: required key is missing" in t for t in texts), texts
    assert Categories.of(["A"]).find("B") is None


def test_two_parses_of_the_same_file_are_equal_so_a_reload_keeps_the_machine() -> None:
    assert spec_from() == spec_from()
    assert spec_from() != spec_from(BASE.replace("{estop: true}", "{estop: false}"))
