"""docs/logs.md's list of log events, found in the source, so the list cannot drift from the program.

Every log line is a structlog event whose name is the first argument of a ``log.<level>(...)`` call.
``make docs`` (``python -m agent.commands.log_events``) rewrites the list below the marker line;
``--check`` exits 1 when it is stale (a test runs it, and checks every name is snake_case).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.commands import generated_doc

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "logs.md"
PACKAGES = ("agent", "drivers", "simulators")
MARKER = (
    "<!-- Generated below from the log calls in agent/, drivers/ and simulators/ by `make docs`: "
    "rename an event there, not in this file. -->"
)
LEVELS = ("debug", "info", "warning", "error", "exception", "critical")
# Helpers that log the event name they are given, and the position of that argument.
EVENT_HELPERS = {"_outage": 0}
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@dataclass
class Event:
    levels: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)


def _is_logger(node: ast.expr) -> bool:
    text = ast.unparse(node)
    return text == "log" or text.endswith(("._log", ".log")) or "get_logger(" in text


def _levels(node: ast.expr) -> list[str]:
    """The levels of ``log.info`` or ``log.info if quiet else log.debug``; [] for anything else."""
    if isinstance(node, ast.Attribute) and node.attr in LEVELS and _is_logger(node.value):
        return [node.attr]
    if isinstance(node, ast.IfExp):
        body, orelse = _levels(node.body), _levels(node.orelse)
        return body + orelse if body and orelse else []
    return []


def _aliases(tree: ast.AST) -> dict[str, list[str]]:
    """Names bound to a logger method (``emit = log.info if few else log.debug``) and their levels."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            levels = _levels(node.value)
            if levels:
                out[node.targets[0].id] = levels
    return out


def calls(tree: ast.AST) -> Iterator[tuple[str, str, list[str]]]:
    """(event, level, keyword names) of every log call with a literal event name in ``tree``."""
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in aliases and node.args:
            arg, levels = node.args[0], aliases[func.id]
        elif isinstance(func, ast.Attribute) and _levels(func) and node.args:
            arg, levels = node.args[0], _levels(func)
        elif (
            isinstance(func, ast.Attribute)
            and func.attr in EVENT_HELPERS
            and len(node.args) > EVENT_HELPERS[func.attr]
        ):
            arg, levels = node.args[EVENT_HELPERS[func.attr]], ["warning"]
        else:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            keywords = sorted(k.arg for k in node.keywords if k.arg not in (None, "exc_info"))
            for level in levels:
                yield arg.value, level, keywords


def scan(root: Path = ROOT) -> dict[str, Event]:
    events: dict[str, Event] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for name, level, keywords in calls(ast.parse(path.read_text(encoding="utf-8"))):
                event = events.setdefault(name, Event())
                event.levels.add(level)
                event.modules.add(module)
                event.fields.update(keywords)
    return dict(sorted(events.items()))


def render(head: str, events: dict[str, Event]) -> str:
    """``head`` (the hand-written part, up to and including the marker) plus the table of events."""
    out = [
        head.rstrip("\n"),
        "",
        f"{len(events)} events.",
        "",
        "| event | level | logged by | fields |",
        "|---|---|---|---|",
    ]
    for name, e in events.items():
        levels = ", ".join(level for level in LEVELS if level in e.levels)
        modules = ", ".join(f"`{m}`" for m in sorted(e.modules))
        fields = ", ".join(f"`{f}`" for f in sorted(e.fields)) or "-"
        out.append(f"| `{name}` | {levels} | {modules} | {fields} |")
    return "\n".join(out) + "\n"


def hand_written(text: str) -> str:
    return generated_doc.head(DOC, MARKER, text)


def main(argv: Sequence[str] | None = None) -> int:
    return generated_doc.main(
        DOC,
        lambda text: render(hand_written(text), scan()),
        "python -m agent.commands.log_events",
        __doc__,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
