"""How soon a restarted controller is read again: from the moment it accepts connections after an
outage to the first good reading the collector delivers.

A Modbus simulator and an OPC UA simulator each go away for ``--down`` seconds (long enough for the
reconnect backoff to reach its cap), then come back on the same port; a ``Collector`` per machine
polls at 1 s as the daemon does. Repeated ``--repeat`` times; prints each delay and the worst.

    .venv/bin/python bench/reconnect.py --down 40 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.collector import BACKOFF_CAP, Collector  # noqa: E402
from agent.config.source import Problems, Section, parse_yaml  # noqa: E402
from drivers.base import Quality, Reading, Sample  # noqa: E402
from drivers.modbus.config import parse as parse_modbus  # noqa: E402
from drivers.modbus.driver import ModbusDriver  # noqa: E402
from drivers.modbus.link import LinkPool  # noqa: E402
from drivers.opcua.config import parse as parse_opcua  # noqa: E402
from drivers.opcua.driver import OpcuaDriver  # noqa: E402
from simulators.modbus_server import start_modbus_server  # noqa: E402
from simulators.model import MachineState  # noqa: E402
from simulators.opcua_server import start_opcua_server  # noqa: E402


def sections(text: str) -> tuple[Section, Problems]:
    problems = Problems()
    return Section(
        parse_yaml(text, "bench.yaml", problems), file="bench.yaml", path="", problems=problems
    ), problems


class FirstGood:
    """A sink that notes when the first good reading arrives (``reset`` to wait for the next)."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.seen = asyncio.Event()

    def reset(self) -> None:
        self.at = None
        self.seen.clear()

    def __call__(self, samples: Sequence[Sample]) -> None:
        if self.at is None and any(isinstance(s, Reading) and s.quality is Quality.GOOD for s in samples):
            self.at = time.monotonic()
            self.seen.set()


async def measure(kind: str, down: float) -> float:
    first = FirstGood()
    if kind == "modbus":
        sim = await start_modbus_server({1: MachineState("m")})
        top, _ = sections(
            f"modbus: {{host: 127.0.0.1, port: {sim.port}, unit: 1, timeout: 1s}}\ntags: {{x: {{table: holding, address: 0}}}}"
        )
        driver: ModbusDriver | OpcuaDriver = ModbusDriver(
            parse_modbus("m", top.sub("modbus"), top.sub("tags"), 1.0), links=LinkPool()
        )
    else:
        osim = await start_opcua_server([MachineState("m")])
        top, _ = sections(
            f'opcua: {{url: "{osim.url}", timeout: 1s}}\n'
            'tags: {x: {node: "nsu=urn:edge-agent:simulator;s=m.Production.PartCount"}}'
        )
        driver = OpcuaDriver(parse_opcua("m", top.sub("opcua"), top.sub("tags"), 1.0))
    collector = Collector(driver, poll_interval=1.0, sink=first)
    task = asyncio.create_task(collector.run())
    try:
        await first.seen.wait()
        if kind == "modbus":
            await sim.stop()
        else:
            await osim.stop()
        await asyncio.sleep(down)
        first.reset()
        if kind == "modbus":
            sim = await start_modbus_server({1: MachineState("m")}, port=sim.port)
        else:
            await osim.start()
        back = time.monotonic()
        await first.seen.wait()
        assert first.at is not None
        return first.at - back
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if kind == "modbus":
            await sim.stop()
        else:
            await osim.stop()


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--down", type=float, default=40.0, help="seconds the controller is away")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"backoff cap {BACKOFF_CAP:g} s, outage {args.down:g} s, poll 1 s")
    for kind in ("modbus", "opcua"):
        delays = [await measure(kind, args.down) for _ in range(args.repeat)]
        shown = ", ".join(f"{d:.2f}" for d in delays)
        print(f"{kind:7} back -> first good reading: {shown} s (worst {max(delays):.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
