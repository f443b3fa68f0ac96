"""The config reader: every problem is named with file, line and key path, and all are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.source import (
    ConfigError,
    Problems,
    Secret,
    Section,
    as_duration,
    as_int,
    as_size,
    load_yaml,
    one_of,
    parse_yaml,
)


def section(text: str, problems: Problems, file: str = "m.yaml", base: Path | None = None) -> Section:
    return Section(parse_yaml(text, file, problems), file=file, path="", problems=problems, base_dir=base)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        (3, 3.0),
        ("1.5s", 1.5),
    ],
)
def test_durations_are_human(raw: object, seconds: float) -> None:
    assert as_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5 parsecs", "-1s", True, [1], ""])
def test_bad_durations_say_what_is_expected(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        as_duration(raw)


def test_sizes_accept_binary_and_decimal_units() -> None:
    assert as_size("512MiB") == 512 * 2**20
    assert as_size("2GB") == 2 * 10**9
    assert as_size(4096) == 4096


def test_unknown_key_is_an_error_with_its_line() -> None:
    problems = Problems()
    top = section("id: mill-01\nnmae: CNC Mill\n", problems)
    top.need("id", str)
    top.done()
    assert [str(p) for p in problems.items] == ["m.yaml:2: nmae: unknown key; known keys here: id"]


def test_nested_error_names_the_key_path_and_line() -> None:
    problems = Problems()
    top = section("tags:\n  spindle:\n    type: float\n", problems)
    for _name, tag in top.named_sections("tags"):
        tag.need("type", one_of("int16", "float32"))
        tag.done()
    top.done()
    assert str(problems.items[0]) == (
        "m.yaml:3: tags.spindle.type: unknown value 'float'; expected one of int16, float32"
    )


def test_every_problem_is_collected_not_just_the_first() -> None:
    problems = Problems()
    top = section("a: x\nb: y\nc: 3\n", problems)
    top.need("a", as_int)
    top.need("b", as_int)
    top.need("missing", as_int)
    top.done()
    with pytest.raises(ConfigError) as exc:
        problems.raise_if_any()
    assert str(exc.value).splitlines() == [
        "m.yaml:1: a: expected an integer, got 'x'",
        "m.yaml:2: b: expected an integer, got 'y'",
        "m.yaml:1: missing: required key is missing",  # a missing key is reported at its mapping
        "m.yaml:3: c: unknown key; known keys here: a, b, missing",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("id: a\ntags: {x: 1\nname: b\n")
    problems = Problems()
    assert load_yaml(f, problems, "broken.yaml") is None
    assert problems.items[0].file == "broken.yaml"
    assert problems.items[0].line is not None
    assert "YAML syntax error" in problems.items[0].message


def test_duplicate_keys_are_rejected_instead_of_silently_overwritten() -> None:
    problems = Problems()
    assert parse_yaml("id: a\nid: b\n", "dup.yaml", problems) is None
    assert "duplicate key 'id'" in problems.items[0].message
    assert problems.items[0].line == 2


def test_missing_file_is_named(tmp_path: Path) -> None:
    problems = Problems()
    load_yaml(tmp_path / "nope.yaml", problems, "machines/nope.yaml")
    assert str(problems.items[0]) == "machines/nope.yaml: file not found"


def test_secret_from_env_file_or_literal_never_shows_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s.secret").write_text("whsec_fromfile\n")
    monkeypatch.setenv("HOOK_SECRET", "whsec_fromenv")
    problems = Problems()
    top = section(
        "a: {secret: whsec_literal}\nb: {secret_file: s.secret}\nc: {secret_env: HOOK_SECRET}\n",
        problems,
        base=tmp_path,
    )
    got = {k: top.sub(k).secret("secret") for k in "abc"}
    assert not problems
    values = {k: s.reveal() for k, s in got.items() if s is not None}
    assert values == {"a": "whsec_literal", "b": "whsec_fromfile", "c": "whsec_fromenv"}
    for s in got.values():
        assert isinstance(s, Secret)
        assert "whsec_" not in repr(s) and "whsec_" not in str(s)


def test_secret_problems_never_echo_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    problems = Problems()
    top = section(
        "a: {secret: whsec_x, secret_env: NOT_SET_ANYWHERE}\nb: {secret_env: NOT_SET_ANYWHERE}\n", problems
    )
    top.sub("a").secret("secret")
    top.sub("b").secret("secret")
    text = "\n".join(str(p) for p in problems.items)
    assert "give only one of secret, secret_file, secret_env" in text
    assert "environment variable NOT_SET_ANYWHERE is not set" in text
    assert "whsec_x" not in text
