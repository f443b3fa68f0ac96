"""Machine files are read straight from libyaml's events: same values, types and lines as PyYAML's
own constructors (YAML 1.1), and whatever uses more of YAML than that is still read by PyYAML."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.config import source, yaml_events
from agent.config.source import Problems, parse_yaml

pytestmark = pytest.mark.skipif(source._FastParser is None, reason="PyYAML built without libyaml")


def read(text: str) -> Any:
    return yaml_events.read(text, source._FastParser)  # type: ignore[arg-type]


def pure(text: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The reference: PyYAML's pure-Python parser and constructors, with the same line marks."""
    with monkeypatch.context() as m:
        m.setattr(source, "_FastParser", None)
        problems = Problems()
        data = parse_yaml(text, "ref.yaml", problems)
        assert not problems, problems.items
        return data


def same_tree(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and (a.line, a.key_lines) == (b.line, b.key_lines)
            and all(same_tree(a[k], b[k]) for k in a)
        )
    if isinstance(a, list):
        return (
            (a.line, a.item_lines) == (b.line, b.item_lines)
            and len(a) == len(b)
            and all(same_tree(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def test_plain_scalars_take_the_yaml_1_1_types() -> None:
    data = read(
        "octal: 012\nhex: 0x1F\nbinary: 0b101\nunderscores: 1_000\nsexagesimal: 1:30\nsigned: -7\n"
        "float: 1.5\nexponent: 1.0e+3\nno_dot: 1e3\ninf: .inf\n"
        "yes: yes\nOff: Off\ny: y\nnothing: ~\nempty:\nquoted: '12'\ntext: holding\n"
    )
    assert data == {
        "octal": 10,
        "hex": 31,
        "binary": 5,
        "underscores": 1000,
        "sexagesimal": 90,
        "signed": -7,
        "float": 1.5,
        "exponent": 1000.0,
        "no_dot": "1e3",  # YAML 1.1's float needs a dot
        "inf": math.inf,
        "True": True,  # a key that reads as a bool is the text Python gives it, as before
        "False": False,
        "y": "y",  # PyYAML leaves the one-letter booleans of YAML 1.1 as text
        "nothing": None,
        "empty": None,
        "quoted": "12",
        "text": "holding",
    }
    assert [type(data[k]) for k in ("octal", "float", "True", "quoted")] == [int, float, bool, str]


def test_every_mapping_key_and_list_item_knows_its_line() -> None:
    data = read("id: m1\ntags:\n  rpm: {table: holding,\n    address: 4}\nrules:\n  - a\n  -\n    b: 1\n")
    assert (data.line, data.key_lines) == (1, {"id": 1, "tags": 2, "rules": 5})
    assert (data["tags"].line, data["tags"].key_lines) == (3, {"rpm": 3})
    assert data["tags"]["rpm"].key_lines == {"table": 3, "address": 4}
    assert (data["rules"].line, data["rules"].item_lines) == (6, [6, 8])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "---\n",
        "42\n",
        "- 1\n- [2, {a: b}]\n-\n  - nested\n",
        "id: m1\nmodbus: {host: 127.0.0.1, port: 5020}\ntags:\n  x: {table: holding, address: 0, map: {0: A, 1: B}}\n",
        "a: 'quoted # not a comment'\nb: |\n  literal\n  block\nc: >\n  folded\n  text\nd: \"esc\\tape\"\n",
        "0: zero\n1.5: one and a half\ntrue: yes\n",
        "a: {}\nb: []\nc: -0\nd: .NaN\ne: +12\n",
        "%YAML 1.1\n---\na: 1\n...\n",
        "\ufeffa: 1\r\nb: 2\r\n",
    ],
)
def test_the_tree_is_the_one_pyyamls_constructors_build(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert same_tree(read(text), pure(text, monkeypatch))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: &b {table: holding}\nx: *b\n", {"base": {"table": "holding"}, "x": {"table": "holding"}}),
        ("<<: {a: 1}\nb: 2\n", {"a": 1, "b": 2}),
        ("a: !!str 12\n", {"a": "12"}),
        ("a: 2024-02-01\n", {"a": __import__("datetime").date(2024, 2, 1)}),
        ("? [a, b]\n: c\n", None),  # a list as a key: rejected with the constructors' message
    ],
)
def test_more_of_yaml_than_plain_data_is_left_to_pyyaml(text: str, expected: Any) -> None:
    with pytest.raises(yaml_events.Unusual):
        read(text)
    problems = Problems()
    assert parse_yaml(text, "m.yaml", problems) == expected
    assert bool(problems) == (expected is None)


def test_a_duplicate_key_is_still_named_with_its_line() -> None:
    problems = Problems()
    assert parse_yaml("tags:\n  a: 1\n  b: 2\n  a: 3\n", "dup.yaml", problems) is None
    assert [(p.line, p.message) for p in problems.items] == [(4, "YAML syntax error: duplicate key 'a'")]


def test_two_documents_in_one_file_are_an_error() -> None:
    problems = Problems()
    assert parse_yaml("a: 1\n---\nb: 2\n", "two.yaml", problems) is None
    assert [(p.line, p.message) for p in problems.items] == [
        (2, "YAML syntax error: but found another document")
    ]
