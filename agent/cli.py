"""``edge-agent`` command line: one subcommand per operator task.

Each ``agent.commands.*`` module adds its subcommands through ``register(subparsers)``; a handler
returns the process exit code (0 ok, 1 failure, 2 bad input/config).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agent import __version__
from agent.commands import (
    config_cmd,
    deliver_cmd,
    demo_cmd,
    mqtt_cmd,
    operate_cmd,
    read_cmd,
    receive_cmd,
    secret_cmd,
    simulate_cmd,
    workflow_cmd,
)

COMMAND_MODULES = (
    config_cmd,
    read_cmd,
    simulate_cmd,
    deliver_cmd,
    secret_cmd,
    receive_cmd,
    workflow_cmd,
    operate_cmd,
    demo_cmd,
    mqtt_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Collect CNC data over OPC-UA and Modbus TCP and deliver signed webhooks.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
