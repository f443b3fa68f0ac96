"""docs/cli.md from the argparse definitions, so the reference cannot drift from the program.

``make docs`` (``python -m agent.commands.reference``) rewrites everything below the marker line;
the text above it is written by hand. ``--check`` exits 1 when the file is stale (a test runs it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from agent.commands import generated_doc

MARKER = (
    "<!-- Generated below from the argparse definitions by `make docs`: edit the help= texts in "
    "agent/commands/*.py, not this file. -->"
)
DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COLUMNS = "100"


def commands(
    parser: argparse.ArgumentParser, depth: int = 0
) -> Iterator[tuple[int, str, str, argparse.ArgumentParser]]:
    """(depth, name, one-line help, parser) of every subcommand, in registration order."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, child in action.choices.items():
            yield depth, name, helps.get(name, ""), child
            yield from commands(child, depth + 1)


def render(head: str) -> str:
    """``head`` (the hand-written part, up to and including the marker) plus the generated reference."""
    from agent.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS  # argparse wraps help to the terminal width it finds here
    try:
        parser = build_parser()
        subs = list(commands(parser))
        out = [head.rstrip("\n"), "", "| command | what it does |", "|---|---|"]
        for depth, name, text, _child in subs:
            if depth == 0:
                out.append(f"| [`{name}`](#{name}) | {text} |")
        out += ["", "```", parser.format_help().rstrip("\n"), "```"]
        for depth, _name, _text, child in subs:
            title = child.prog.removeprefix("edge-agent ")
            out += ["", f"{'#' * (depth + 2)} {title}", "", "```", child.format_help().rstrip("\n"), "```"]
        return "\n".join(out) + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def hand_written(text: str) -> str:
    return generated_doc.head(DOC, MARKER, text)


def main(argv: Sequence[str] | None = None) -> int:
    return generated_doc.main(
        DOC, lambda text: render(hand_written(text)), "python -m agent.commands.reference", __doc__, argv
    )


if __name__ == "__main__":
    sys.exit(main())
