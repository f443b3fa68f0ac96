"""The shipped profiles parse cleanly under a minimal machine file, and a machine may override them."""

from __future__ import annotations

import pytest

from agent.config.machines import parse_machine
from agent.config.source import Problems, parse_yaml

MODBUS = """
id: mill-01
name: CNC Mill 01
group: Milling
profile: modbus-sim
modbus: {host: 127.0.0.1, port: 5020, unit: 1}
"""
OPCUA = """
id: lathe-02
name: CNC Lathe 02
profile: opc40502
opcua: {url: "opc.tcp://127.0.0.1:4840", prefix: "lathe-02."}
"""


@pytest.mark.parametrize("text", [MODBUS, OPCUA])
def test_profile_gives_tags_status_rules_and_alarms(text: str) -> None:
    problems = Problems()
    machine = parse_machine(parse_yaml(text, "machines/m.yaml", problems), "machines/m.yaml", problems)
    assert not problems, [str(p) for p in problems.items]
    assert machine is not None
    spec = machine.derivation
    assert spec.status.rules[0].state == "ALARM"
    assert spec.status.rules[-1].state == "ACTIVE"
    assert spec.alarms.code_tag == "alarm_code"
    assert spec.parts.counter == "part_count"
    assert spec.downtime.micro_stop == 120.0


def test_a_machine_file_overrides_part_of_a_profile() -> None:
    text = MODBUS + "status: {min_state: 1s}\ndowntime: {micro_stop: 5m}\n"
    problems = Problems()
    machine = parse_machine(parse_yaml(text, "machines/m.yaml", problems), "machines/m.yaml", problems)
    assert machine is not None, [str(p) for p in problems.items]
    assert machine.derivation.status.min_state == 1.0
    assert len(machine.derivation.status.rules) == 4  # the profile's rules are kept
    assert machine.derivation.downtime.micro_stop == 300.0


def test_a_rule_on_a_tag_the_machine_lacks_is_an_error_naming_the_machine_file() -> None:
    text = MODBUS + "status:\n  rules:\n    - {when: {spindle_temp: {gt: 80}}, state: ALARM}\n"
    problems = Problems()
    assert parse_machine(parse_yaml(text, "machines/m.yaml", problems), "machines/m.yaml", problems) is None
    assert any(
        "machines/m.yaml:9: status.rules[0].when.spindle_temp: unknown tag" in str(p) for p in problems.items
    )
