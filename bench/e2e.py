"""End-to-end benchmark: a simulated machine changes → a verified, signed webhook arrives.

The real daemon (``python -m agent run``) runs as its own process on a generated config; this
process hosts the simulators (one Modbus server, one OPC-UA server) and a verifying receiver, all on
127.0.0.1. Each round toggles every machine's execution (READY ⇄ ACTIVE), spread evenly over the
round, and records the wall time of each change; the latency is the receipt time of the matching
``machine_status_changed`` delivery (status ``min_state: 0s``) minus that change time.

Modes: Modbus polling at 1 Hz, OPC-UA subscriptions at 100 ms and 250 ms publishing interval;
sizes 1, 50 and 200 machines. Plus the start-up time to READY=1 (sd_notify) with the shipped
``config/`` (secrets generated, simulators running), measured from process spawn.

    .venv/bin/python bench/e2e.py
    .venv/bin/python bench/e2e.py --sizes 1,50 --modes modbus --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.delivery.signing import generate_secret  # noqa: E402
from agent.receiver import Receiver, start_receiver  # noqa: E402
from simulators.model import Execution, MachineState  # noqa: E402

HOST = "127.0.0.1"
ROUND_SECONDS = 2.5  # each state holds at least ROUND - PHASE seconds: over one 1 Hz poll
PHASE_SECONDS = 1.0
MIN_SAMPLES = 12
MODES = {
    "modbus": "Modbus poll 1 Hz",
    "opcua100": "OPC-UA sub 100 ms",
    "opcua250": "OPC-UA sub 250 ms",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- sd_notify: the READY=1 datagram marks start-up complete


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    async def ready(self, within: float) -> float:
        """Wall time at which READY=1 arrived."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                if b"READY=1" in data.split(b"\n"):
                    return time.time()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Agent:
    root: Path
    proc: asyncio.subprocess.Process
    notify: NotifySocket
    log: Path
    spawned_at: float

    @classmethod
    async def spawn(cls, root: Path, config: Path, env: dict[str, str] | None = None) -> Agent:
        short = Path(tempfile.mkdtemp(prefix="ea-bench-"))
        notify = NotifySocket(short / "notify.sock")
        log = root / "agent.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        full_env.update(env or {})
        full_env["NOTIFY_SOCKET"] = str(notify.path)
        spawned = time.time()
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "run", "--config", str(config),
                cwd=ROOT, env=full_env, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        return cls(root, proc, notify, log, spawned)

    async def stop(self) -> int | None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.notify.close()
        shutil.rmtree(self.notify.path.parent, ignore_errors=True)
        return self.proc.returncode

    async def ready(self, within: float) -> float:
        """Wall time of READY=1; a config error or crash ends the bench with the agent's log."""
        waiter = asyncio.ensure_future(self.notify.ready(within))
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if waiter.done():
            return waiter.result()
        waiter.cancel()
        raise RuntimeError(
            f"the agent exited with {self.proc.returncode}:\n{self.log.read_text(errors='replace')}"
        )

    def startup_seconds(self) -> float | None:
        """What the agent logged for its own start (config loaded → READY, without interpreter start)."""
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and item.get("event") == "agent_ready":
                    return float(item["startup_seconds"])
        return None


# -- the latency runs


def write_config(
    root: Path, mode: str, n: int, sim_port: int, receiver: Receiver, secret: str
) -> tuple[Path, str]:
    cfg = root / "config"
    for sub in ("machines", "workflows", "secrets"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    token = generate_secret()
    (cfg / "secrets" / "api-token").write_text(token + "\n")
    (cfg / "secrets" / "webhook.secret").write_text(secret + "\n")
    api_port = free_port()
    (cfg / "agent.yaml").write_text(
        f"agent: {{name: bench, state_dir: {root / 'state'}}}\n"
        "log: {level: warning, format: json}\n"
        f"api: {{bind: {HOST}:{api_port}, token_file: secrets/api-token}}\n"
        "delivery: {timeout: 10s}\n"
    )
    for i in range(n):
        mid = f"m{i + 1:03d}"
        if mode == "modbus":
            conn = f"profile: modbus-sim\nmodbus: {{host: {HOST}, port: {sim_port}, unit: {i + 1}, timeout: 2s}}\npoll_interval: 1s\n"
        else:
            interval = "100ms" if mode == "opcua100" else "250ms"
            conn = (
                "profile: opc40502\n"
                f'opcua: {{url: "opc.tcp://{HOST}:{sim_port}", prefix: "{mid}.", mode: subscribe, '
                f"publishing_interval: {interval}}}\n"
            )
        (cfg / "machines" / f"{mid}.yaml").write_text(
            f"id: {mid}\nname: Bench {mid}\ngroup: Bench\n{conn}status: {{min_state: 0s}}\n"
        )
    (cfg / "workflows" / "status.yaml").write_text(
        "name: Status feed\ntrigger: {type: machine_status_changed}\nactions:\n"
        f'  - webhook: {{url: "{receiver.url}status", secret_file: {cfg / "secrets" / "webhook.secret"}}}\n'
    )
    return cfg / "agent.yaml", f"http://{HOST}:{api_port}|{token}"


async def all_idle(api: str, n: int, within: float) -> None:
    import aiohttp

    url, token = api.split("|")
    headers = {"Authorization": f"Bearer {token}"}
    async with asyncio.timeout(within), aiohttp.ClientSession(headers=headers) as session:
        while True:
            statuses: list[str] = []
            cursor: str | None = None
            while True:
                params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
                async with session.get(f"{url}/api/v1/machines", params=params) as resp:
                    page = await resp.json()
                statuses += [str(m.get("status")) for m in page["items"]]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
            if len(statuses) == n and all(s == "IDLE" for s in statuses):
                return
            await asyncio.sleep(0.5)  # a bench warm-up, not a test: polling the API is fine here


@dataclass
class Result:
    mode: str
    machines: int
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    invalid: int = 0
    startup: float | None = None


async def run_latency(mode: str, n: int, rounds: int) -> Result:
    from simulators.modbus_server import start_modbus_server
    from simulators.opcua_server import start_opcua_server

    states = [MachineState(name=f"m{i + 1:03d}") for i in range(n)]
    secret = generate_secret()
    receiver = await start_receiver(secret)
    root = Path(tempfile.mkdtemp(prefix="edge-agent-e2e-"))
    modbus: Any = None
    opcua: Any = None
    agent: Agent | None = None
    result = Result(mode, n)
    try:
        if mode == "modbus":
            modbus = await start_modbus_server({i + 1: s for i, s in enumerate(states)}, HOST)
            port = modbus.port
        else:
            opcua = await start_opcua_server(states, HOST)
            port = int(opcua.url.rsplit(":", 1)[1].split("/")[0])
        config, api = write_config(root, mode, n, port, receiver, secret)
        agent = await Agent.spawn(root, config)
        ready_at = await agent.ready(60)
        result.startup = ready_at - agent.spawned_at
        await all_idle(api, n, 120)

        async def show(i: int) -> None:
            if modbus is not None:
                modbus.publish(i + 1)
            else:
                await opcua.publish(states[i].name)

        rounds = max(rounds, math.ceil(MIN_SAMPLES / n))
        spacing = ROUND_SECONDS / n
        loop = asyncio.get_running_loop()
        changes: list[tuple[str, str, float]] = []  # machine, expected status, wall time of the change
        rng = random.Random(n)
        start = loop.time()
        schedule: list[tuple[float, int, Execution]] = []
        for r in range(rounds):
            target = Execution.ACTIVE if r % 2 == 0 else Execution.READY
            for i in range(n):
                # A random phase against the agent's 1 s poll clock and the publishing interval, so
                # the figures are not an artefact of both schedules being in step.
                due = start + r * ROUND_SECONDS + i * spacing + rng.uniform(0, PHASE_SECONDS)
                schedule.append((due, i, target))
        for due, i, target in sorted(schedule, key=lambda item: item[0]):
            await asyncio.sleep(max(0.0, due - loop.time()))
            states[i].execution = target
            changes.append((states[i].name, "ACTIVE" if target is Execution.ACTIVE else "IDLE", time.time()))
            await show(i)
        # Start-up status deliveries may still be arriving, so counts alone do not say "done": wait
        # until every change is matched, or nothing new came for 10 s (bounded at 2 min).
        async with asyncio.timeout(120):
            while True:
                result.latencies, result.missing = match(changes, receiver)
                if not result.missing:
                    break
                try:
                    await receiver.wait_for(len(receiver.received) + 1, within=10)
                except TimeoutError:
                    break
        result.invalid = sum(1 for r in receiver.received if not r.valid)
    finally:
        if agent is not None:
            await agent.stop()
        if opcua is not None:
            await opcua.stop()
        if modbus is not None:
            await modbus.stop()
        await receiver.stop()
        shutil.rmtree(root, ignore_errors=True)
    return result


def match(changes: list[tuple[str, str, float]], receiver: Receiver) -> tuple[list[float], int]:
    """Pair each change with the first unused delivery for that machine and status that came after it."""
    arrivals: dict[tuple[str, str], list[float]] = {}
    for rec in receiver.received:
        if not rec.valid:
            continue
        body = rec.json()
        if not isinstance(body, dict) or body.get("event") != "machine_status_changed":
            continue
        key = (str(body.get("machine", {}).get("id")), str(body.get("status", {}).get("to")))
        arrivals.setdefault(key, []).append(rec.at)
    latencies: list[float] = []
    missing = 0
    for machine, status, at in changes:
        queue = arrivals.get((machine, status), [])
        while queue and queue[0] < at:
            queue.pop(0)
        if queue:
            latencies.append(queue.pop(0) - at)
        else:
            missing += 1
    return latencies, missing


# -- start-up with the shipped config


async def run_startup(repeats: int) -> list[tuple[float, float | None]]:
    from agent.commands.demo_cmd import prepare
    from simulators.modbus_server import start_modbus_server
    from simulators.opcua_server import start_opcua_server

    ports = {"modbus": free_port(), "opcua": free_port(), "receiver": free_port(), "api": free_port()}
    modbus = await start_modbus_server({1: MachineState(name="sim-01")}, HOST, ports["modbus"])
    opcua = await start_opcua_server(
        [MachineState(name="sim-01"), MachineState(name="sim-02")], HOST, ports["opcua"]
    )
    out: list[tuple[float, float | None]] = []
    try:
        for _ in range(repeats):
            root = Path(tempfile.mkdtemp(prefix="edge-agent-start-"))
            env = prepare(ROOT / "config", root, ports, generate_secret(), generate_secret())
            agent = await Agent.spawn(root, root / "config" / "agent.yaml", env)
            try:
                ready_at = await agent.ready(60)
                out.append((ready_at - agent.spawned_at, None))
            finally:
                await agent.stop()
                out[-1] = (out[-1][0], agent.startup_seconds())
                shutil.rmtree(root, ignore_errors=True)
    finally:
        await opcua.stop()
        await modbus.stop()
    return out


def ms(x: float) -> str:
    return f"{x * 1000:8.0f}"


async def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,50,200", help="machine counts, comma separated")
    p.add_argument("--modes", default=",".join(MODES), help=f"any of {', '.join(MODES)}")
    p.add_argument("--rounds", type=int, default=4, help="state changes per machine (at least 12 samples)")
    p.add_argument("--startup-repeats", type=int, default=3)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # asyncua/pymodbus chatter would hide the table
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    print(
        f"edge-agent end-to-end latency (change on the simulator → verified receipt), {os.cpu_count()} cores"
    )
    print(
        f"{'mode':<20}{'machines':>9}{'samples':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'missing':>9}{'invalid':>9}{'READY s':>9}"
    )
    failed = False
    for mode in modes:
        for n in sizes:
            r = await run_latency(mode, n, args.rounds)
            lat = r.latencies or [float("nan")]
            failed |= bool(r.missing or r.invalid)
            print(
                f"{MODES[mode]:<20}{n:>9}{len(r.latencies):>9}{ms(statistics.median(lat)):>9}"
                f"{ms(percentile(lat, 0.99)):>9}{ms(max(lat)):>9}{r.missing:>9}{r.invalid:>9}"
                f"{(r.startup or float('nan')):>9.2f}",
                flush=True,
            )
    if args.startup_repeats:
        runs = await run_startup(args.startup_repeats)
        spawn = [s for s, _ in runs]
        own = [o for _, o in runs if o is not None]
        print(
            f"\nstart-up to READY=1 with config/ (2 machines, 6 workflows), {len(runs)} runs: "
            f"spawn→READY median {statistics.median(spawn):.2f} s (max {max(spawn):.2f} s); "
            f"agent's own start (config loaded→READY) median {statistics.median(own) if own else float('nan'):.3f} s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
