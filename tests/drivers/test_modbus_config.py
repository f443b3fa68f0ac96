"""Broken Modbus machine files: every problem named with file, line and key path, all at once."""

from __future__ import annotations

from tests.drivers.conftest import modbus_config, modbus_config_problems


def test_a_good_file_gives_typed_tags_with_defaults() -> None:
    config = modbus_config(
        """
modbus: {host: 127.0.0.1, port: 5020, unit: 3, timeout: 250ms}
tags:
  execution: {table: holding, address: 0, map: {0: READY, 1: ACTIVE}}
  rpm: {table: holding, address: 4, type: float32, byte_order: cdab, scale: 2, offset: -1}
  estop: {table: discrete, address: 0}
  other: {table: input, address: 7, unit: 9}
""",
        poll_interval=0.5,
    )
    assert config.tag_names == ("execution", "rpm", "estop", "other")
    assert (config.host, config.port, config.unit, config.timeout, config.poll_interval) == (
        "127.0.0.1",
        5020,
        3,
        0.25,
        0.5,
    )
    execution, rpm, estop, other = config.tags
    assert (execution.type, execution.map) == ("uint16", ((0, "READY"), (1, "ACTIVE")))
    assert (rpm.type, rpm.byte_order, rpm.scale, rpm.offset, rpm.size) == ("float32", "CDAB", 2.0, -1.0, 2)
    assert (estop.type, estop.unit) == ("bit", 3)
    assert other.unit == 9


def test_unknown_type_names_file_line_and_key() -> None:
    _, problems = modbus_config_problems(
        """modbus: {host: 127.0.0.1}
tags:
  spindle:
    table: holding
    address: 4
    type: float
"""
    )
    assert problems == [
        "machines/m1.yaml:6: tags.spindle.type: unknown value 'float'; expected one of int16, uint16, "
        "int32, uint32, int64, uint64, float32, float64, string, bit"
    ]


def test_every_problem_of_a_file_is_reported() -> None:
    _, problems = modbus_config_problems(
        """modbus:
  port: 70000
  colour: blue
tags:
  a: {table: holding, address: 0, type: float32, byte_order: ABDC}
  b: {table: coils, address: 0}
  c: {table: holding, address: 30, type: string}
  d: {table: coil, address: 1, type: int16}
  e: {table: holding, address: -1}
  f: {table: holding, address: 0, type: bit}
  g: {table: holding, address: 0, type: string, length: 4, scale: 2}
  h: {table: holding, address: 0, map: {one: A}}
  i: {table: holding, address: 0, map: {1: ON}}
  j: {table: holding, address: 65535, type: uint32}
  k: {table: holding, address: 0, bogus: 1}
"""
    )
    text = "\n".join(problems)
    expected = [
        "machines/m1.yaml:2: modbus.host: required key is missing",
        "machines/m1.yaml:2: modbus.port: must be at most 65535, got 70000",
        "machines/m1.yaml:3: modbus.colour: unknown key",
        "machines/m1.yaml:5: tags.a.byte_order: unknown value 'ABDC'; expected one of ABCD, DCBA, BADC, CDAB",
        "machines/m1.yaml:6: tags.b.table: unknown value 'coils'; expected one of holding, input, coil, discrete",
        "machines/m1.yaml:7: tags.c: length: required for type string",
        "machines/m1.yaml:8: tags.d.type: table coil holds single bits",
        "machines/m1.yaml:9: tags.e.address: must be at least 0, got -1",
        "machines/m1.yaml:10: tags.f: bit: required for type bit on a register",
        "machines/m1.yaml:11: tags.g.scale: only numeric types can be scaled, not string",
        "machines/m1.yaml:12: tags.h.map.one: map key 'one' is not an integer",
        "machines/m1.yaml:13: tags.i.map.1: YAML read this word as true/false; quote it",
        "machines/m1.yaml:14: tags.j.address: uint32 at 65535 runs past the last address 65535",
        "machines/m1.yaml:15: tags.k.bogus: unknown key",
    ]
    for want in expected:
        assert want in text, f"missing: {want}\n--- got:\n{text}"
    assert len(problems) == len(expected)


def test_no_tags_is_an_error() -> None:
    _, problems = modbus_config_problems("modbus: {host: 127.0.0.1}\ntags: {}\n")
    assert len(problems) == 1
    assert "tags: no tags" in problems[0]


# A plant's machine files repeat the same tag definitions; a definition that read without a problem
# is reused for the next file. These say what that reuse must never change.


def test_a_tag_repeated_in_another_file_with_a_mistake_is_reported_in_that_file() -> None:
    good = "modbus: {host: 127.0.0.1}\ntags:\n  rpm: {table: holding, address: 4, type: float32}\n"
    modbus_config(good, file="machines/a.yaml")
    _, problems = modbus_config_problems(
        "modbus: {host: 127.0.0.1}\ntags:\n  rpm: {table: holding, address: 4, type: float32, scael: 2}\n",
        file="machines/b.yaml",
    )
    assert problems == [
        "machines/b.yaml:3: tags.rpm.scael: unknown key; known keys here: address, bit, byte_order, "
        "length, map, offset, precision, scale, table, type, unit"
    ]


def test_the_same_broken_tag_in_two_files_is_reported_in_each_with_its_own_line() -> None:
    broken = "tags:\n  rpm: {table: holding, address: 4, type: float}\n"
    _, first = modbus_config_problems("modbus: {host: h}\n" + broken, file="machines/a.yaml")
    _, second = modbus_config_problems("modbus: {host: h}\n# a comment\n" + broken, file="machines/b.yaml")
    assert [p.split(": tags.")[0] for p in first + second] == ["machines/a.yaml:3", "machines/b.yaml:4"]


def test_a_value_equal_in_python_but_not_in_yaml_is_not_taken_for_the_reused_one() -> None:
    # 1, 1.0 and true are the same dict key in Python; only the first is an address.
    modbus_config("modbus: {host: h}\ntags:\n  door: {table: coil, address: 1}\n")
    for wrong, shown in (("1.0", "1.0"), ("true", "True")):
        _, problems = modbus_config_problems(
            f"modbus: {{host: h}}\ntags:\n  door: {{table: coil, address: {wrong}}}\n"
        )
        assert problems == [f"machines/m1.yaml:3: tags.door.address: expected an integer, got {shown}"]


def test_a_reused_tag_takes_the_unit_of_the_machine_that_reads_it() -> None:
    tags = "tags:\n  rpm: {table: holding, address: 4}\n"
    three = modbus_config("modbus: {host: h, unit: 3}\n" + tags)
    five = modbus_config("modbus: {host: h, unit: 5}\n" + tags)
    assert (three.tags[0].unit, five.tags[0].unit) == (3, 5)


def test_a_tag_of_the_same_values_under_another_name_keeps_its_own_name() -> None:
    first = modbus_config("modbus: {host: h}\ntags:\n  rpm: {table: holding, address: 4}\n")
    second = modbus_config("modbus: {host: h}\ntags:\n  speed: {table: holding, address: 4}\n")
    assert (first.tag_names, second.tag_names) == (("rpm",), ("speed",))
