"""Alarms & Conditions, end to end: a limit alarm and CNC alarms raised and cleared once a period
become exactly one ``alarm_triggered`` and one ``alarm_cleared`` webhook each.

The real daemon (``python -m agent run``) runs on a generated config with three OPC UA machines:
- ``furnace-1``: node-opcua (tests/opcua_reference, an independent server) with a standard
  ExclusiveLimitAlarmType on a temperature; "raise" writes 95 (over the HighLimit 80), "clear" 20;
- ``oven-1``: the bundled simulator's ExclusiveLimitAlarmType machine;
- ``cnc-1``: the bundled simulator's OPC 40502 machine (CncAlarmType conditions, profile opc40502).
Every period each alarm is raised at 1/6 of it and cleared at 2/3. A verifying receiver counts the
signed deliveries per machine and event and prints them with the messages, severities and durations.

    .venv/bin/python bench/alarms.py --minutes 4          # the issue's "Done" run: 4 raises + 4 clears
    .venv/bin/python bench/alarms.py --cycles 2 --period 6 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.delivery.signing import generate_secret  # noqa: E402
from agent.receiver import start_receiver  # noqa: E402
from bench.e2e import Agent, free_port  # noqa: E402
from simulators.model import Alarm, MachineState  # noqa: E402
from simulators.opcua_server import start_opcua_server  # noqa: E402

HOST = "127.0.0.1"
REFERENCE_DIR = ROOT / "tests" / "opcua_reference"
CNC_ALARM = Alarm(1001, "Spindle overload", 700)
OVEN_ALARM = Alarm(1, "Oven temperature high", 800)


class NodeServer:
    """tests/opcua_reference/server.js: node-opcua with two furnaces' limit alarms."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc, self.port = proc, port

    @classmethod
    async def start(cls) -> NodeServer:
        node = shutil.which("node")
        if node is None or not (REFERENCE_DIR / "node_modules" / "node-opcua").is_dir():
            raise SystemExit(f"needs node and `npm ci` in {REFERENCE_DIR}")
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            node, str(REFERENCE_DIR / "server.js"), str(port), cwd=REFERENCE_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while not (line := (await proc.stdout.readline()).decode()).startswith("READY"):
                if not line:
                    raise SystemExit("the node-opcua server exited")
        return cls(proc, port)

    async def set(self, furnace: int, value: float) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"set {furnace} {value}\n".encode())
        await self.proc.stdin.drain()
        while not (line := (await self.proc.stdout.readline()).decode()).startswith(("OK ", "ERROR ")):
            if not line:
                raise RuntimeError("the node-opcua server exited")

    async def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()


def write_config(root: Path, sim_url: str, node_url: str, receiver_url: str, secret: str) -> Path:
    cfg = root / "config"
    for sub in ("machines", "workflows", "secrets"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    (cfg / "secrets" / "api-token").write_text(generate_secret() + "\n")
    (cfg / "secrets" / "webhook.secret").write_text(secret + "\n")
    (cfg / "agent.yaml").write_text(
        f"agent: {{name: bench-alarms, state_dir: {root / 'state'}}}\n"
        "log: {level: warning, format: json}\n"
        f"api: {{bind: {HOST}:{free_port()}, token_file: secrets/api-token}}\n"
        "delivery: {timeout: 10s}\n"
    )
    ref_ns = "nsu=urn:edge-agent:test:node-opcua;s="
    sim_ns = "nsu=urn:edge-agent:simulator;s="
    machines = {
        "furnace-1": (
            f'opcua: {{url: "{node_url}", mode: subscribe, publishing_interval: 250ms,\n'
            f'        alarms: {{source: "{ref_ns}Furnace1.Temperature"}}}}\n'
            f'tags: {{temperature: {{node: "{ref_ns}Furnace1.Temperature"}}}}\n'
        ),
        "oven-1": (
            f'opcua: {{url: "{sim_url}", mode: subscribe, publishing_interval: 250ms,\n'
            f'        alarms: {{source: "{sim_ns}oven-1.MachineTool.Temperature"}}}}\n'
            f'tags: {{temperature: {{node: "{sim_ns}oven-1.MachineTool.Temperature"}}}}\n'
        ),
        "cnc-1": f'profile: opc40502\nopcua: {{url: "{sim_url}", prefix: "cnc-1."}}\n',
    }
    for mid, body in machines.items():
        (cfg / "machines" / f"{mid}.yaml").write_text(f"id: {mid}\nname: {mid}\ngroup: Bench\n{body}")
    secret_file = cfg / "secrets" / "webhook.secret"
    for kind in ("alarm_triggered", "alarm_cleared"):
        (cfg / "workflows" / f"{kind}.yaml").write_text(
            f"name: {kind}\ntrigger: {{type: {kind}}}\nactions:\n"
            f'  - webhook: {{url: "{receiver_url}{kind}", secret_file: {secret_file}}}\n'
        )
    return cfg / "agent.yaml"


async def run(cycles: int, period: float) -> dict[str, Any]:
    secret = generate_secret()
    receiver = await start_receiver(secret)
    node = await NodeServer.start()
    sim = await start_opcua_server([MachineState("cnc-1"), MachineState("oven-1")], limit_alarms=["oven-1"])
    root = Path(tempfile.mkdtemp(prefix="ea-alarms-"))
    agent = await Agent.spawn(
        root, write_config(root, sim.url, f"opc.tcp://{HOST}:{node.port}", receiver.url, secret)
    )
    try:
        await agent.ready(within=60)
        await asyncio.sleep(3)  # subscriptions and the first ConditionRefresh settle
        start = time.monotonic()
        for i in range(cycles):
            base = start + i * period
            await asyncio.sleep(max(0.0, base + period / 6 - time.monotonic()))
            await node.set(1, 95.0)
            await sim.raise_alarm("oven-1", OVEN_ALARM)
            await sim.raise_alarm("cnc-1", CNC_ALARM)
            await asyncio.sleep(max(0.0, base + period * 2 / 3 - time.monotonic()))
            await node.set(1, 20.0)
            await sim.clear_alarm("oven-1", OVEN_ALARM.code)
            await sim.clear_alarm("cnc-1", CNC_ALARM.code)
        await asyncio.sleep(max(0.0, start + cycles * period - time.monotonic()))
        # Let the last deliveries land: 3 machines x 2 events x cycles.
        expected = 3 * 2 * cycles
        with contextlib.suppress(TimeoutError):  # a shortfall is what the counts then show
            await receiver.wait_for(expected, within=30)
        await asyncio.sleep(2)  # and show anything beyond what was expected
    finally:
        await agent.stop()
        await sim.stop()
        await node.stop()
        await receiver.stop()
    counts: Counter[tuple[str, str]] = Counter()
    details: list[dict[str, Any]] = []
    invalid = 0
    for rec in receiver.received:
        if not rec.valid:
            invalid += 1
            continue
        body: Any = rec.json()
        machine = body["machine"]["id"]
        counts[(machine, body["event"])] += 1
        alarm = body["alarm"]
        details.append({"machine": machine, "event": body["event"], **alarm})
    shutil.rmtree(root, ignore_errors=True)
    return {
        "cycles": cycles,
        "period_seconds": period,
        "counts": {f"{m} {e}": n for (m, e), n in sorted(counts.items())},
        "invalid_signatures": invalid,
        "deliveries": details,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, help="one raise + clear per minute for this many minutes")
    parser.add_argument("--cycles", type=int, default=2, help="raise/clear cycles (default 2)")
    parser.add_argument("--period", type=float, default=60.0, help="seconds per cycle (default 60)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    cycles, period = (args.minutes, 60.0) if args.minutes else (args.cycles, args.period)
    result = asyncio.run(run(cycles, period))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{cycles} cycles of {period:g} s; invalid signatures: {result['invalid_signatures']}")
    for key, n in result["counts"].items():
        print(f"  {key:32} {n}")
    for d in result["deliveries"]:
        extra = f"  duration {d['duration_seconds']} s" if "duration_seconds" in d else ""
        print(
            f"  {d['machine']:10} {d['event']:16} code={d['code']} severity={d['severity']} {d['description']!r}{extra}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
