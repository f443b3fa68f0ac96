"""Poll benchmark: N Modbus machines x 20 registers at 1 Hz through the agent's collection path.

Two processes, as in production: the simulators in one, the agent's collection (ModbusDriver +
Collector per machine, a sink that counts) in the other; only the collection process is measured.

    .venv/bin/python bench/poll.py                      # N = 50, 200, 500, then the ceiling search
    .venv/bin/python bench/poll.py --n 500 --seconds 30  # one N
    .venv/bin/python bench/poll.py --no-ceiling

Each machine is its own Modbus TCP server (its own connection, the usual plant layout) unless
``--per-port K`` puts K unit ids behind one port, as behind a gateway.
Reported: CPU % of one core and RSS of the collection process, readings/s, poll lag (actual start -
scheduled start) p50/p99 and missed cycles. The ceiling is the largest N (searched up to --max-n)
polled at 1 Hz with no missed cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGISTERS = 20
HOST = "127.0.0.1"


# -- simulator process


class LeanServer(asyncio.Protocol):
    """Holding/input register reads (functions 3, 4) of one unit from a fixed map, nothing else.

    For N beyond what the pymodbus simulator serves on a small box (it costs about 200 µs of CPU per
    request, so 5,000 machines at 1 Hz would need more than a core of their own): the benchmark
    measures the agent, and a reply's bytes are the same whoever builds them. Anything else gets
    exception 1 (illegal function)."""

    def __init__(self, registers: list[int], counter: list[int]) -> None:
        self._registers = registers
        self._counter = counter
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data
        while len(buf) >= 12:
            tid, _proto, length, unit, function, address, count = struct.unpack_from(">HHHBBHH", buf)
            buf = buf[6 + length :]
            self._counter[0] += 1
            regs = self._registers[address : address + count]
            if function in (3, 4) and len(regs) == count:
                body = struct.pack(f">BB{count}H", function, 2 * count, *regs)
            else:
                body = struct.pack(">BB", function | 0x80, 1 if function not in (3, 4) else 2)
            assert self._transport is not None
            self._transport.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
        self._buffer = buf


class LeanSim:
    def __init__(self, server: asyncio.Server, counter: list[int]) -> None:
        self.port: int = server.sockets[0].getsockname()[1]
        self._server = server
        self._counter = counter

    def request_count(self) -> int:
        return self._counter[0]

    async def stop(self) -> None:
        self._server.close()


async def serve(n: int, per_port: int, lean: bool = False) -> None:
    from simulators.modbus_server import machines_for, render, start_modbus_server
    from simulators.model import MachineState

    # A reply to a client that already hung up (at the end of a run) is not news.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    sims: list[Any] = []
    loop = asyncio.get_running_loop()
    for first in range(0, n, per_port):
        count = min(per_port, n - first)
        if lean:
            registers = render(MachineState(name=f"m{first}"))["holding"]
            counter = [0]
            server = await loop.create_server(lambda r=registers, c=counter: LeanServer(r, c), HOST, 0)
            sims.append(LeanSim(server, counter))
            continue
        sims.append(
            await start_modbus_server(machines_for([f"m{first + i}" for i in range(count)]), host=HOST)
        )
    print(json.dumps({"ports": [s.port for s in sims]}), flush=True)
    # Run until the parent closes our stdin; a line "count" asks how many requests were served so far
    # (bench/daemon.py turns that into reads/s for every peer alike).
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "count":
            print(json.dumps({"requests": sum(s.request_count() for s in sims)}), flush=True)
    for sim in sims:
        await sim.stop()


# -- collection process


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def collect(ports: list[int], n: int, per_port: int, seconds: float, warmup: float) -> dict[str, float]:
    from agent.collector import Collector
    from drivers.base import Quality, Reading, Sample
    from drivers.modbus.config import ModbusMachineConfig, ModbusTag
    from drivers.modbus.driver import ModbusDriver
    from drivers.modbus.link import LinkPool

    counts = {"readings": 0, "bad": 0}

    def sink(samples: object) -> None:
        batch: list[Sample] = samples  # type: ignore[assignment]
        counts["readings"] += len(batch)
        for r in batch:
            if isinstance(r, Reading) and r.quality is not Quality.GOOD:
                counts["bad"] += 1

    collectors = []
    links = LinkPool()  # units behind one port share its connection, as in the agent
    for i in range(n):
        unit = i % per_port + 1
        tags = tuple(ModbusTag(f"r{a}", "holding", a, "uint16", unit) for a in range(REGISTERS))
        config = ModbusMachineConfig(f"m{i}", HOST, ports[i // per_port], unit, 1.0, 0.0, 1.0, tags)
        collectors.append(Collector(ModbusDriver(config, links=links), poll_interval=1.0, sink=sink))
    tasks = [asyncio.create_task(c.run()) for c in collectors]
    await asyncio.sleep(warmup)

    for c in collectors:
        c.stats.lags.clear()
    skipped0 = sum(c.stats.skipped for c in collectors)
    polls0 = sum(c.stats.polls for c in collectors)
    readings0, bad0 = counts["readings"], counts["bad"]
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.monotonic()
    elapsed = wall1 - wall0
    lags = sorted(lag for c in collectors for lag in c.stats.lags)
    result = {
        "n": n,
        "cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
        "rss_mb": rss_mb(),
        "reads_per_s": (counts["readings"] - readings0) / elapsed,
        "polls_per_s": (sum(c.stats.polls for c in collectors) - polls0) / elapsed,
        "lag_p50_ms": 1000 * percentile(lags, 50),
        "lag_p99_ms": 1000 * percentile(lags, 99),
        "missed": sum(c.stats.skipped for c in collectors) - skipped0,
        "bad": counts["bad"] - bad0,
        "connected": sum(1 for c in collectors if c.stats.connects),
    }
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=30)
    result["stuck_at_shutdown"] = len(stuck)
    return result


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    k = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
    return values[k]


# -- orchestration


def run_once(n: int, per_port: int, seconds: float, warmup: float) -> dict[str, float]:
    me = [sys.executable, str(Path(__file__).resolve())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim = subprocess.Popen(
        [*me, "--serve", str(n), "--per-port", str(per_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert sim.stdout is not None
        ports = json.loads(sim.stdout.readline())["ports"]
        timing = ["--seconds", str(seconds), "--warmup", str(warmup)]
        out = subprocess.run(
            [*me, "--collect", json.dumps(ports), "--n", str(n), "--per-port", str(per_port), *timing],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        if sim.stdin is not None:
            sim.stdin.close()
        try:
            sim.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()


HEADER = f"{'N':>5} {'CPU %':>6} {'RSS MB':>7} {'reads/s':>8} {'polls/s':>8} {'lag p50':>8} {'lag p99':>8} {'missed':>6}"


def row(r: dict[str, float]) -> str:
    return (
        f"{int(r['n']):>5} {r['cpu_pct']:>6.1f} {r['rss_mb']:>7.1f} {r['reads_per_s']:>8.0f} "
        f"{r['polls_per_s']:>8.1f} {r['lag_p50_ms']:>6.1f}ms {r['lag_p99_ms']:>6.1f}ms {int(r['missed']):>6}"
        + (f"  ({int(r['bad'])} bad readings)" if r["bad"] else "")
    )


def ceiling(per_port: int, seconds: float, warmup: float, start: int, max_n: int) -> int:
    """Largest N with no missed cycle: double from ``start`` until one misses, then bisect."""
    ok, bad = 0, None
    n = start
    while n <= max_n:
        r = run_once(n, per_port, seconds, warmup)
        print(row(r), " <- ceiling search", flush=True)
        if r["missed"] or r["polls_per_s"] < 0.98 * n:
            bad = n
            break
        ok = n
        n = min(max_n, n * 2) if n < max_n else max_n + 1
    if bad is None:
        return ok
    while bad - ok > max(25, ok // 20):
        mid = (ok + bad) // 2
        r = run_once(mid, per_port, seconds, warmup)
        print(row(r), " <- ceiling search", flush=True)
        if r["missed"] or r["polls_per_s"] < 0.98 * mid:
            bad = mid
        else:
            ok = mid
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="machines (repeatable); default 50, 200, 500")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per N (default 20)")
    ap.add_argument(
        "--warmup", type=float, default=3.0, help="seconds before measuring (connects, first polls)"
    )
    ap.add_argument("--per-port", type=int, default=1, help="unit ids behind one simulated port (default 1)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the ceiling search")
    ap.add_argument("--max-n", type=int, default=2000, help="ceiling search limit (default 2000)")
    ap.add_argument("--ceiling-seconds", type=float, default=10.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--lean", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--collect", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve is not None:
        asyncio.run(serve(args.serve, args.per_port, args.lean))
        return 0
    if args.collect is not None:
        result = asyncio.run(
            collect(json.loads(args.collect), args.n[0], args.per_port, args.seconds, args.warmup)
        )
        print(json.dumps(result))
        return 0

    sizes = args.n or [50, 200, 500]
    print(
        f"poll benchmark: {REGISTERS} holding registers per machine at 1 Hz, {args.per_port} unit(s) per port"
    )
    print(HEADER)
    for n in sizes:
        print(row(run_once(n, args.per_port, args.seconds, args.warmup)), flush=True)
    if not args.no_ceiling and not args.n:
        top = ceiling(args.per_port, args.ceiling_seconds, args.warmup, 1000, args.max_n)
        print(f"ceiling: {top} machines at 1 Hz with no missed cycle (searched up to {args.max_n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
