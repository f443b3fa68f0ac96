"""docs/configuration.md names exactly the keys the parsers read, table by table.

The parsers say which keys they know: an unknown key gets "unknown key; known keys here: a, b, c".
So each documented table is checked by putting a probe key at its place in an otherwise valid file
and comparing the parser's list with the keys in the table's first column. A key added to a parser
without a row (or a row left for a removed key) fails here. To cover a new section, add its heading
and its place to ``PLACES``. The trigger table (one row per ``type``) is checked the same way per type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config.agent_file import collect_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
PROBE = "zz_probe"
TOKEN = "tok_reference_0123456789abcdef"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

AGENT: dict[str, Any] = {
    "agent": {"name": "ref"},
    "api": {"bind": "127.0.0.1:8787", "token": TOKEN},
    "outbox": {},
    "delivery": {"circuit_breaker": {}},
    "log": {},
    "downtime_categories": [{"name": "Setup"}],
}
MODBUS_MACHINE: dict[str, Any] = {
    "id": "m1",
    "modbus": {"host": "127.0.0.1", "port": 5020, "unit": 1},
    "tags": {
        "execution": {"table": "holding", "address": 0, "map": {1: "ACTIVE"}},
        "spare": {"table": "holding", "address": 5},  # probed: rules name only execution
    },
    "status": {"rules": [{"when": {"execution": "ACTIVE"}, "state": "ACTIVE"}]},
    "alarms": {"code_tag": "execution"},
    "downtime": {"micro_stop": "1m"},
    "parts": {"counter": "execution"},
}
OPCUA_MACHINE: dict[str, Any] = {
    "id": "m2",
    "opcua": {"url": "opc.tcp://127.0.0.1:4840", "alarms": {"notifier": "i=2253"}},
    "tags": {"execution": {"node": "ns=2;s=x"}, "spare": {"node": "ns=2;s=y"}},
}
WORKFLOW: dict[str, Any] = {
    "name": "ref",
    "trigger": {"type": "manual"},
    "actions": [{"webhook": {"url": "http://127.0.0.1:8090/x", "secret": SECRET}}],
}
ROTATING_WORKFLOW: dict[str, Any] = {
    "name": "ref",
    "trigger": {"type": "manual"},
    "actions": [{"webhook": {"url": "http://127.0.0.1:8090/x", "secrets": [{"secret": SECRET}]}}],
}

# heading in docs/configuration.md -> the places (file, path of the mapping) the table describes; a
# table of alternatives (modbus or opcua, secret or secrets) is the union of its places.
PLACES: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
    "### `agent:`": [("agent", ("agent",))],
    "### `log:`": [("agent", ("log",))],
    "### `api:`": [("agent", ("api",))],
    "### `outbox:`": [("agent", ("outbox",))],
    "### `delivery:`": [("agent", ("delivery",))],
    "### `downtime_categories:`": [("agent", ("downtime_categories", 0))],
    "## Machine files": [("modbus", ()), ("opcua", ())],
    "### `modbus:`": [("modbus", ("modbus",))],
    "### Modbus `tags:`": [("modbus", ("tags", "spare"))],
    "### `opcua:`": [("opcua", ("opcua",))],
    "### OPC-UA `tags:`": [("opcua", ("tags", "spare"))],
    "### `status:`": [("modbus", ("status",))],
    "### `alarms:`": [("modbus", ("alarms",))],
    "### `downtime:`": [("modbus", ("downtime",))],
    "### `parts:`": [("modbus", ("parts",))],
    "## Workflow files": [("workflow", ())],
    "### `webhook:` action": [
        ("workflow", ("actions", 0, "webhook")),
        ("rotating", ("actions", 0, "webhook")),
    ],
}


def documented_tables() -> dict[str, set[str]]:
    """Heading -> the keys in the first column of the first table under it (``a.b`` counts as ``a``)."""
    tables: dict[str, set[str]] = {}
    heading = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line
            continue
        if heading is None or not line.startswith("| `"):
            continue
        key = next((h for h in PLACES if heading.startswith(h)), None)
        if key is None:
            continue
        first_cell = line.split("|")[1]
        names = {token.split(".")[0] for token in re.findall(r"`([^`]+)`", first_cell)}
        tables.setdefault(key, set()).update(names)
    return tables


def parser_keys(tmp_path: Path, file_kind: str, path: tuple[Any, ...]) -> set[str]:
    workflow = ROTATING_WORKFLOW if file_kind == "rotating" else WORKFLOW
    docs = {"agent": AGENT, "modbus": MODBUS_MACHINE, "opcua": OPCUA_MACHINE, "workflow": workflow}
    docs = yaml.safe_load(yaml.safe_dump(docs))  # deep copy
    file_kind = "workflow" if file_kind == "rotating" else file_kind
    target = docs[file_kind]
    for step in path:
        target = target[step]
    target[PROBE] = 1
    (tmp_path / "machines").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(docs["agent"]))
    (tmp_path / "machines" / "m1.yaml").write_text(yaml.safe_dump(docs["modbus"]))
    (tmp_path / "machines" / "m2.yaml").write_text(yaml.safe_dump(docs["opcua"]))
    (tmp_path / "workflows" / "w.yaml").write_text(yaml.safe_dump(docs["workflow"]))
    _, problems = collect_config(tmp_path / "agent.yaml", tmp_path / "state")
    found = [p for p in problems.items if p.path.endswith(PROBE)]
    others = [str(p) for p in problems.items if not p.path.endswith(PROBE)]
    assert not others, others  # the base files are valid: only the probe may be reported
    assert len(found) == 1, [str(p) for p in problems.items]
    known = found[0].message.partition("known keys here: ")[2]
    return set(known.split(", ")) if known else set()


def test_every_place_has_a_table_in_the_doc() -> None:
    assert set(documented_tables()) == set(PLACES)


@pytest.mark.parametrize("heading", sorted(PLACES))
def test_documented_keys_are_the_keys_the_parser_reads(tmp_path: Path, heading: str) -> None:
    documented = documented_tables()[heading]
    parsed: set[str] = set()
    for n, (file_kind, path) in enumerate(PLACES[heading]):
        (tmp_path / str(n)).mkdir()
        parsed |= parser_keys(tmp_path / str(n), file_kind, path)
    assert parsed - documented == set(), f"{heading}: read by the parser but not documented"
    assert documented - parsed == set(), f"{heading}: documented but not read by the parser"


def documented_trigger_keys() -> dict[str, set[str]]:
    """``### Triggers``: trigger type -> the keys its row names (``key:`` or ``key,`` in backticks)."""
    section = DOC.read_text(encoding="utf-8").split("### Triggers\n", 1)[1].split("\n#", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = line.split("|")
        match = re.fullmatch(r"\s*`([a-z_]+)`\s*", cells[1]) if len(cells) > 3 else None
        if match is None or match.group(1) == "type":
            continue
        keys_cell = cells[2]
        same = re.search(r"same filters as `([a-z_]+)`", keys_cell)
        rows[match.group(1)] = (
            rows[same.group(1)] if same else set(re.findall(r"`([a-z_]+)`(?=[:,])", keys_cell))
        )
    return rows


TRIGGER_REQUIRED: dict[str, dict[str, str]] = {
    "downtime_exceeded": {"after": "1m"},
    "scheduled": {"cron": "0 1 * * *"},
}


def test_every_trigger_type_has_a_row() -> None:
    from agent.workflows.spec import TRIGGER_TYPES

    assert set(documented_trigger_keys()) == set(TRIGGER_TYPES)


@pytest.mark.parametrize("trigger_type", sorted(documented_trigger_keys()))
def test_documented_trigger_keys_are_the_keys_the_parser_reads(tmp_path: Path, trigger_type: str) -> None:
    workflow = yaml.safe_load(yaml.safe_dump(WORKFLOW))
    workflow["trigger"] = {"type": trigger_type, **TRIGGER_REQUIRED.get(trigger_type, {})}
    parsed = parser_keys_for_workflow(tmp_path, workflow)
    assert parsed - {"type"} == documented_trigger_keys()[trigger_type]


def parser_keys_for_workflow(tmp_path: Path, workflow: dict[str, Any]) -> set[str]:
    workflow["trigger"][PROBE] = 1
    (tmp_path / "machines").mkdir()
    (tmp_path / "workflows").mkdir()
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(AGENT))
    (tmp_path / "workflows" / "w.yaml").write_text(yaml.safe_dump(workflow))
    _, problems = collect_config(tmp_path / "agent.yaml", tmp_path / "state")
    (found,) = [p for p in problems.items if p.path.endswith(PROBE)] or [None]
    assert found is not None and len(problems.items) == 1, [str(p) for p in problems.items]
    return set(found.message.partition("known keys here: ")[2].split(", "))
