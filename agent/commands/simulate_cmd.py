"""``edge-agent simulate``: the simulators' own command line (``simulators/cli.py``) as a subcommand."""

from __future__ import annotations

import argparse
from typing import Any

from simulators.cli import add_arguments, run


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "simulate",
        help="run simulated CNC machines (OPC-UA and/or Modbus TCP) following a scenario",
        description="Run N simulated CNC machines on 127.0.0.1 following a scenario. Ctrl-C stops.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)
