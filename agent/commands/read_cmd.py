"""``edge-agent read MACHINE [--watch]``: live decoded values and their quality, straight from the device.

The first thing to run after writing a machine file: it shows whether the register map or node ids
are right before any status rule or workflow is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

from agent import logs
from agent.commands.common import add_config_arg, load_config_or_exit
from drivers.base import Reading


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("read", help="read a machine's tags once (or --watch) and print them decoded")
    p.add_argument("machine", help="machine id")
    p.add_argument("--watch", action="store_true", help="keep reading at the machine's poll interval")
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after N reads (0 = until Ctrl-C)")
    p.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the first connect"
    )
    add_config_arg(p)
    p.set_defaults(handler=run)


def shown(value: object, precision: int | None = None) -> object:
    """A float as a person writes it: scaling 254 by 0.1 gives 25.400000000000002, shown as 25.4.

    With the tag's ``precision`` it has exactly that many decimals (``25.40``); without, 12
    significant digits keep every digit a 32- or 64-bit register can carry in practice while
    dropping the binary-fraction noise of the scale arithmetic.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if precision is not None and math.isfinite(value):
        return f"{value:.{precision}f}"
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


def precisions(connection: Any) -> dict[str, int]:
    """Tag name → its configured ``precision`` (tags without one are left out)."""
    return {t.name: t.precision for t in getattr(connection, "tags", ()) if t.precision is not None}


def render(machine_id: str, readings: list[Reading], precision: Mapping[str, int] | None = None) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(readings[0].timestamp)) if readings else "--:--:--"
    width = max((len(r.tag) for r in readings), default=4)
    lines = [f"{machine_id}  {stamp}"]
    for r in readings:
        value = (
            repr(r.value) if isinstance(r.value, str) else str(shown(r.value, (precision or {}).get(r.tag)))
        )
        reason = f"  ({r.reason})" if r.reason else ""
        lines.append(f"  {r.tag:<{width}}  {value:<24} {r.quality.value}{reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args, with_workflows=False)
    machine = config.machine(args.machine)
    if machine is None:
        known = ", ".join(m.id for m in config.machines) or "none"
        print(f"unknown machine {args.machine!r}; configured: {known}", file=sys.stderr)
        return 2
    # stdout is the table; the drivers' own reports would interleave with it (and pymodbus' stdlib
    # chatter with stderr): failures are printed below in words, and per tag as quality and reason.
    logs.configure("error", "console", stream=sys.stderr)
    return asyncio.run(_read(machine, args))


async def _read(machine: Any, args: argparse.Namespace) -> int:
    from agent.collection import build_driver
    from drivers.base import DriverError

    driver = build_driver(machine)
    try:
        try:
            await asyncio.wait_for(driver.connect(), args.connect_timeout)
        except (DriverError, TimeoutError) as exc:
            print(f"{machine.id}: cannot connect: {exc or 'timed out'}", file=sys.stderr)
            return 1
        n = 0
        while True:
            started = time.monotonic()
            readings = await driver.read()
            print(render(machine.id, readings, precisions(machine.connection)), flush=True)
            n += 1
            if not args.watch or (args.count and n >= args.count):
                bad = [r for r in readings if r.quality.value != "good"]
                return 1 if bad and len(bad) == len(readings) else 0
            await asyncio.sleep(max(0.0, machine.poll_interval - (time.monotonic() - started)))
    finally:
        await driver.close()
