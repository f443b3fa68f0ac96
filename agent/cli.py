"""``edge-agent`` command line: one subcommand per operator task.

Each ``agent.commands.*`` module adds its subcommands through ``register(subparsers)``; a handler
returns the process exit code (0 ok, 1 failure, 2 bad input/config).

``main`` is the one error boundary: no command ever shows a traceback unless ``--debug`` is given.
A known error (``CommandError``, a config problem, an OS error naming a file) is one line saying
what, where and what to do; an unknown one is one line plus the hint to re-run with ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Iterator, Sequence

from agent import __version__
from agent.commands import (
    config_cmd,
    demo_cmd,
    endpoint_cmd,
    history_cmd,
    mqtt_cmd,
    operate_cmd,
    outbox_cmd,
    read_cmd,
    receive_cmd,
    secret_cmd,
    simulate_cmd,
    workflow_cmd,
)
from agent.commands.errors import EXIT_FAILED, EXIT_USAGE, CommandError
from agent.config.source import ConfigError

COMMAND_MODULES = (
    config_cmd,
    read_cmd,
    simulate_cmd,
    outbox_cmd,
    history_cmd,
    endpoint_cmd,
    secret_cmd,
    receive_cmd,
    workflow_cmd,
    operate_cmd,
    demo_cmd,
    mqtt_cmd,
)

DEBUG_HELP = "show the full traceback of an unexpected error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Collect CNC data over OPC-UA and Modbus TCP and deliver signed webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    # "run with --debug" must work wherever the user puts it, so every subcommand accepts it too;
    # SUPPRESS keeps a subcommand's default from resetting a --debug given before the command.
    for sub_parser in subcommand_parsers(parser):
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def subcommand_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every (nested) subcommand parser, depth first, in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for child in action.choices.values():
                if id(child) in seen:  # aliases map several names to one parser
                    continue
                seen.add(id(child))
                yield child
                yield from subcommand_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = " ".join(
        str(getattr(args, k))
        for k in ("command", "outbox_command", "endpoint_command", "secret_command")
        if getattr(args, k, None)
    )
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        code, line = describe_error(exc)
        print(f"edge-agent {command}: {line}", file=sys.stderr)
        return code


def describe_error(exc: BaseException) -> tuple[int, str]:
    """Exit code and the one line shown for an error that reached the boundary."""
    if isinstance(exc, CommandError):
        return exc.exit_code, str(exc)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        where = f"{exc.filename}: " if exc.filename else ""
        if exc.errno == errno.EADDRINUSE:
            what += " (another program, or another edge-agent, listens on that port)"
        return EXIT_FAILED, f"{where}{what}"
    return EXIT_FAILED, f"unexpected error {type(exc).__name__}: {exc} (run with --debug for the traceback)"
