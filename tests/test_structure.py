"""The shape of the code base that docs/architecture.md promises, checked on the source itself.

- Imports point one way: drivers and simulators never import the agent's shell (only the shared
  libraries ``agent.config.source``, ``agent.config.interpolate`` and ``agent.logs``); the functional core imports no I/O library
  and no shell module.
- The shell stays readable: no module over 400 lines, no function over 50. The modules listed in
  ``NOT_YET`` are known exceptions, each with the reason it is still over; the list may only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_LIBRARIES = {"agent.config.source", "agent.config.interpolate", "agent.logs"}
CORE = [
    *sorted((ROOT / "agent" / "derive").glob("*.py")),
    *(
        ROOT / "agent" / "workflows" / f"{m}.py"
        for m in ("match", "payload", "plan", "schedule", "cron", "throttle")
    ),
    *(ROOT / "agent" / "delivery" / f"{m}.py" for m in ("records", "signing", "retry")),
    ROOT / "agent" / "events.py",
    ROOT / "agent" / "health.py",
]
IO_LIBRARIES = ("asyncio", "aiosqlite", "sqlite3", "aiohttp", "asyncua", "pymodbus", "socket", "subprocess")
SHELL_PACKAGES = (
    "agent.pipeline",
    "agent.runtime",
    "agent.collector",
    "agent.collection",
    "agent.holdback",
    "agent.state",
    "agent.api",
    "agent.commands",
    "agent.delivery.outbox",
    "agent.delivery.dispatcher",
    "agent.delivery.senders",
    "agent.delivery.report",
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# Over the limits today, and why they were left this round (item 6 of issue 12 and parallel work).
NOT_YET = {
    "agent/api/server.py": "the API's routes; other work owns agent/api this round",
    "agent/config/source.py": "config library; declarative config (issue 12 item 6) is deferred",
    "agent/config/machines.py": "config parser; declarative config is deferred",
    "agent/config/agent_file.py": "config parser; declarative config is deferred",
    "agent/delivery/settings.py": "config parser; declarative config is deferred",
    "agent/workflows/spec.py": "config parser; declarative config is deferred",
    "drivers/opcua/driver.py": "driver internals were out of scope (import moves only)",
    "drivers/opcua/config.py": "config parser; declarative config is deferred",
    "drivers/modbus/config.py": "config parser; declarative config is deferred",
}


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def shell_modules() -> Iterator[Path]:
    core = set(CORE)
    for top in ("agent", "drivers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path not in core:
                yield path


def test_drivers_and_simulators_do_not_import_the_agents_shell() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for top in ("drivers", "simulators")
        for path in sorted((ROOT / top).rglob("*.py"))
        for name in imports(path)
        if (name == "agent" or name.startswith("agent.")) and name not in SHARED_LIBRARIES
    ]
    assert wrong == []


def test_the_functional_core_imports_no_io_library_and_no_shell_module() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in CORE
        for name in imports(path)
        if name.split(".")[0] in IO_LIBRARIES
        or any(name == s or name.startswith(s + ".") for s in SHELL_PACKAGES)
    ]
    assert wrong == []


def test_shell_modules_and_functions_stay_short() -> None:
    too_long: list[str] = []
    for path in shell_modules():
        rel = str(path.relative_to(ROOT))
        if rel in NOT_YET:
            continue
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert too_long == []


def test_every_known_exception_is_still_over_a_limit() -> None:
    """A module that got short enough must leave ``NOT_YET``, so the list only shrinks."""
    fixed = []
    for rel in NOT_YET:
        text = (ROOT / rel).read_text(encoding="utf-8")
        lengths = [
            (node.end_lineno or node.lineno) - node.lineno + 1
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        if text.count("\n") <= MAX_MODULE_LINES and max(lengths, default=0) <= MAX_FUNCTION_LINES:
            fixed.append(rel)
    assert fixed == []
