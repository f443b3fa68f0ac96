"""A fleet's machine files repeat the same tags and rules; what one file read without a problem is
reused for the next (issue 13, start-up time). None of that may change what a file means or which
file and line an error names."""

from __future__ import annotations

from pathlib import Path

from agent.config.machines import MachineConfig, load_machines
from agent.config.source import Problems

STATUS = """status:
  min_state: {min_state}
  rules:
    - {{when: {{execution: 1}}, state: ACTIVE}}
"""


def machine(
    mid: str, *, tags: str = "  execution: {table: holding, address: 0}\n", min_state: str = "0s"
) -> str:
    return f"id: {mid}\nmodbus: {{host: 127.0.0.1, port: 5020, unit: 1}}\ntags:\n{tags}" + STATUS.format(
        min_state=min_state
    )


def load(tmp_path: Path, files: dict[str, str]) -> tuple[list[MachineConfig], list[str]]:
    folder = tmp_path / "machines"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    problems = Problems()
    machines = load_machines(folder, problems, display_root=tmp_path)
    return machines, [str(p) for p in problems.items]


def test_files_with_the_same_rules_each_get_them(tmp_path: Path) -> None:
    machines, problems = load(tmp_path, {"a.yaml": machine("a"), "b.yaml": machine("b")})
    assert problems == []
    a, b = machines
    assert a.derivation == b.derivation
    assert [r.state for r in b.derivation.status.rules] == ["ACTIVE"]


def test_the_same_rules_over_a_tag_the_next_machine_lacks_are_an_error_in_that_file(tmp_path: Path) -> None:
    other_tags = "  mode: {table: holding, address: 1}\n"
    machines, problems = load(
        tmp_path,
        {"a.yaml": machine("a"), "b.yaml": "# b reads no execution\n" + machine("b", tags=other_tags)},
    )
    assert [m.id for m in machines] == ["a"]
    assert problems == [
        "machines/b.yaml:9: status.rules[0].when.execution: unknown tag 'execution'; known here: "
        "alarm_active, mode"
    ]


def test_the_same_broken_rules_in_two_files_name_each_file_and_its_line(tmp_path: Path) -> None:
    machines, problems = load(
        tmp_path,
        {
            "a.yaml": machine("a", min_state="soon"),
            "b.yaml": "# one more line\n" + machine("b", min_state="soon"),
        },
    )
    assert machines == []
    assert [p.split(": status.")[0] for p in problems] == ["machines/a.yaml:6", "machines/b.yaml:7"]


def test_a_value_equal_in_python_but_not_in_yaml_is_not_taken_for_the_reused_one(tmp_path: Path) -> None:
    # 0 and false are the same dict key in Python; only the first is a duration.
    machines, problems = load(
        tmp_path, {"a.yaml": machine("a", min_state="0"), "b.yaml": machine("b", min_state="false")}
    )
    assert [m.id for m in machines] == ["a"]
    assert len(problems) == 1 and problems[0].startswith("machines/b.yaml:6: status.min_state: ")


def test_an_unknown_key_beside_reused_rules_is_still_reported(tmp_path: Path) -> None:
    machines, problems = load(tmp_path, {"a.yaml": machine("a"), "b.yaml": machine("b") + "statsu: {}\n"})
    assert [m.id for m in machines] == ["a"]
    assert len(problems) == 1 and problems[0].startswith("machines/b.yaml:9: statsu: unknown key")


def test_an_error_in_a_profile_provided_key_names_each_files_own_profile_line(tmp_path: Path) -> None:
    # `program` is a string of 32 characters in modbus-sim; made a uint16 here, the profile's
    # `length` no longer fits. That key comes from the profile: it is named at the `profile:` line.
    override = "tags:\n  program: {type: uint16}\n"
    machines, problems = load(
        tmp_path,
        {
            "a.yaml": "id: a\nprofile: modbus-sim\nmodbus: {host: h}\n" + override,
            "b.yaml": "id: b\n# the profile\n# comes later here\nprofile: modbus-sim\nmodbus: {host: h}\n"
            + override,
            "c.yaml": "id: c\nprofile: modbus-sim\nmodbus: {host: h}\n",
        },
    )
    assert [m.id for m in machines] == ["c"]
    assert problems == [
        "machines/a.yaml:2: tags.program.length: only a string has a length",
        "machines/b.yaml:4: tags.program.length: only a string has a length",
    ]
