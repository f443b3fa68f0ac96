"""Property: whatever bytes or YAML a config file holds, ``check-config`` answers with a message and exit 2.

Never a traceback, never "0 problem(s)", never an accepted file: the generated files are written to a
folder with no ``machines/`` (agent.yaml cases) or next to a valid agent.yaml (machine-file cases),
and ``main`` is the real CLI entry point with its error boundary, so an exception that escapes the
loader shows up as exit 1 "unexpected error".
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AGENT_KEYS = ["agent", "log", "api", "outbox", "delivery", "downtime_categories", "workflows", "name"]
MACHINE_KEYS = [
    "id", "name", "group", "profile", "modbus", "opcua", "poll_interval", "tags", "status", "alarms",
    "downtime", "parts", "table", "address", "type", "map", "node", "rules", "when", "state",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["5s", "2m", "-1s", "512MiB", "ACTIVE", "127.0.0.1:0", "nsu=x;s=y", "0x10", "1e999"]),
)


def documents(keys: list[str]) -> st.SearchStrategy[Any]:
    """Nested mappings and lists whose keys are mostly the loader's own words (so deep code runs)."""
    key = st.one_of(st.sampled_from(keys), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(key, inner, max_size=5)),
        max_leaves=25,
    )


def check(files: dict[str, bytes], *, agent_yaml: bytes | None) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if agent_yaml is not None:
            (root / "agent.yaml").write_bytes(agent_yaml)
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(content)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["check-config", str(root), "--state-dir", str(root / "state")])
        return code, out.getvalue() + err.getvalue()


def assert_rejected_with_a_message(code: int, text: str) -> None:
    assert "Traceback" not in text and "unexpected error" not in text, text
    assert code == 2, text
    assert text.rstrip().endswith("problem(s) found"), text
    assert " 0 problem(s) found" not in text, text


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_agent_yaml_get_a_message(content: bytes) -> None:
    assert_rejected_with_a_message(*check({}, agent_yaml=content))


@FUZZ
@given(documents(AGENT_KEYS))
def test_any_yaml_document_as_agent_yaml_gets_a_message(doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    assert_rejected_with_a_message(*check({}, agent_yaml=text))


VALID_AGENT = b"agent: {name: fuzz}\ndowntime_categories: [Setup]\n"


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_a_machine_file_get_a_message(content: bytes) -> None:
    assert_rejected_with_a_message(*check({"machines/m.yaml": content}, agent_yaml=VALID_AGENT))


@FUZZ
@given(documents(MACHINE_KEYS))
def test_any_yaml_document_as_a_machine_file_gets_a_message_or_passes(doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    code, out = check({"machines/m.yaml": text}, agent_yaml=VALID_AGENT)
    assert "Traceback" not in out and "unexpected error" not in out, out
    # A generated document is almost never a valid machine, but it may be: then it is listed.
    assert code == 2 or (code == 0 and "  machine  " in out), out


@FUZZ
@given(documents(["name", "trigger", "type", "actions", "webhook", "url", "secret", "scope", "cron"]))
def test_any_yaml_document_as_a_workflow_file_gets_a_message(doc: Any) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    files = {"machines/.keep": b"", "workflows/w.yaml": text}
    assert_rejected_with_a_message(*check(files, agent_yaml=VALID_AGENT))


@FUZZ
@given(st.text(alphabet=st.sampled_from("[]{}:-,'\"!&*|>#? \n\tab1"), max_size=120))
def test_yaml_punctuation_soup_gets_a_message(text: str) -> None:
    assert_rejected_with_a_message(*check({}, agent_yaml=text.encode()))


def test_values_yaml_parses_but_cannot_build_are_messages_not_tracebacks() -> None:
    for text, message in (
        (b"agent: {name: 2024-02-30}\n", "YAML value cannot be read: day is out of range for month"),
        (b"a: " + b"[" * 5000 + b"\n", "YAML nested too deeply to read"),
        (b"# only a comment\n", "the file is empty"),
    ):
        code, out = check({}, agent_yaml=text)
        assert_rejected_with_a_message(code, out)
        assert message in out


def test_a_single_value_with_commas_is_one_error_not_a_strange_name() -> None:
    agent = b"agent: {name: x}\ndowntime_categories: Setup, Tooling\n"
    workflow = b"name: w\nscope:\n  groups: Milling, Turning\ntrigger: {type: manual}\n"
    code, out = check(
        {"machines/.keep": b"", "workflows/w.yaml": workflow + b"actions: []\n"}, agent_yaml=agent
    )
    assert code == 2
    lines = out.splitlines()
    assert any(
        line.endswith("downtime_categories: one value with commas; for a list write [Setup, Tooling]")
        for line in lines
    )
    assert (
        sum(
            "scope.groups: one value with commas; for a list write [Milling, Turning]" in line
            for line in lines
        )
        == 1
    )
