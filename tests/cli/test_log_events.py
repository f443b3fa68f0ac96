"""docs/logs.md lists every log event the program can emit, each named in snake_case."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from agent.commands.log_events import DOC, MARKER, ROOT, SNAKE_CASE, calls, hand_written, render, scan


def documented() -> set[str]:
    table = DOC.read_text(encoding="utf-8").split(MARKER, 1)[1]
    return {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}


def test_docs_logs_md_is_what_make_docs_generates() -> None:
    current = DOC.read_text(encoding="utf-8")
    assert current == render(hand_written(current), scan()), "docs/logs.md is stale: run `make docs`"


def test_every_event_name_is_snake_case() -> None:
    events = scan()
    assert len(events) > 50  # the scan found the program's log calls, not nothing
    assert [name for name in events if not SNAKE_CASE.fullmatch(name)] == []


def test_log_calls_are_found_and_other_error_methods_are_not() -> None:
    source = """
log.info("api_listening", host=h, port=p)
structlog.get_logger("agent.run").error("state_dir_in_use", error=e)
self._outage("modbus_disconnected", reason)
section.error("bind", "expected host:port")
log.warning(event_name_in_a_variable)
emit = log.info if few else log.debug
emit("sim_step", machine=m)
"""
    assert sorted(calls(ast.parse(source))) == [
        ("api_listening", "info", ["host", "port"]),
        ("modbus_disconnected", "warning", []),
        ("sim_step", "debug", ["machine"]),
        ("sim_step", "info", ["machine"]),
        ("state_dir_in_use", "error", ["error"]),
    ]


def test_the_events_a_real_process_logs_are_in_the_list() -> None:
    """The simulators, started and stopped for real, log only events the document names."""
    proc = subprocess.run(
        [sys.executable, "-m", "simulators", "--duration", "0.5", "--modbus-port", "0", "--opcua-port", "0",
         "--log-format", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    # Libraries' own lines (asyncua, pymodbus) carry free text as their event: only ours are listed.
    logged = {
        e["event"] for e in lines if e.get("logger", "").startswith(("agent.", "drivers.", "simulators."))
    }
    assert logged, proc.stderr
    assert logged <= documented(), logged - documented()
