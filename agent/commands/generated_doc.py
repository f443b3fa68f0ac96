"""A document whose tail is generated from the code (docs/cli.md, docs/logs.md): the hand-written head
ends at a marker line, ``make docs`` rewrites what follows it, and ``--check`` says when it is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def head(doc: Path, marker: str, text: str) -> str:
    """The hand-written part of ``text``, up to and including the marker line."""
    if marker not in text:
        raise SystemExit(
            f"{doc}: the marker line is missing; put it back after the hand-written part:\n{marker}"
        )
    return text[: text.index(marker) + len(marker)] + "\n"


def main(
    doc: Path, render: Callable[[str], str], prog: str, description: str | None, argv: Sequence[str] | None
) -> int:
    """``render(current text) -> fresh text``; writes it, or with ``--check`` exits 1 when it differs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {doc.name} is stale, write nothing")
    args = parser.parse_args(argv)
    current = doc.read_text(encoding="utf-8")
    fresh = render(current)
    if args.check:
        if fresh != current:
            print(f"{doc} is stale: run `make docs` and commit it", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        doc.write_text(fresh, encoding="utf-8")
        print(f"wrote {doc}")
    return 0
