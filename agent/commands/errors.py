"""The CLI's error vocabulary: a mistake the user can fix, and the argparse types that catch bad numbers.

A handler raises ``UsageError`` (exit 2) or ``CommandFailed`` (exit 1) with one sentence that says
what went wrong, where, and what to do; ``agent.cli.main`` prints it as one line. Anything else that
escapes a handler is a bug and is printed as one line too, with a hint to re-run with ``--debug``.
"""

from __future__ import annotations

import argparse

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure with a message written for the operator (no traceback is ever shown for it)."""

    exit_code = EXIT_FAILED


class CommandFailed(CommandError):
    """The command could not do its job (a port in use, an unreachable agent, a missing file)."""


class UsageError(CommandError):
    """The input was wrong (an option value, a name that does not exist)."""

    exit_code = EXIT_USAGE


def positive_int(text: str) -> int:
    """For counts such as ``--limit``: 0 or a negative number would show nothing or everything."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value
