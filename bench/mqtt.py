"""MQTT benchmarks against a real Mosquitto on 127.0.0.1 (Debian's ``mosquitto``), in a temporary directory.

    .venv/bin/python bench/mqtt.py [--messages 20000] [--agents 20] [--machines 50] [--seconds 20]

1. Raw client: QoS 1 publishes/s through ``MqttLink`` with the in-flight window full (PUBACK awaited).
2. Sink: QoS 1 messages/s from a full outbox to the broker: dispatcher + MQTT sender, every row
   recorded as delivered in SQLite (target >= 5,000/s).
3. Fleet: N agent processes (one per cell) x M machines each into one broker. Each agent runs the
   real pipeline (workflow mqtt: action + Unified Namespace), outbox and dispatcher on synthetic
   status changes (each machine every --period seconds, random phase: collecting from 1,000 simulated
   CNCs would measure the simulators, not MQTT). Prints broker messages/s (as one subscriber to ``#``
   receives them), each agent's CPU, and end-to-end latency (event -> subscriber) p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.delivery.dispatcher import Dispatcher  # noqa: E402
from agent.delivery.outbox import NewDelivery, Outbox  # noqa: E402
from agent.delivery.settings import DeliveryConfig, OutboxConfig  # noqa: E402
from agent.logs import configure  # noqa: E402
from agent.mqtt.link import MqttLink  # noqa: E402
from agent.mqtt.settings import MqttConfig, MqttEndpoint, MqttTarget  # noqa: E402
from tests.mqtt.broker import Broker  # noqa: E402

BODY = (
    b'{"id":"01HQ3K6X7Z8Y9W0V1U2T3S4R5Q","event":"machine_status_changed","timestamp":"2024-01-15T14:32:00Z",'
    b'"machine":{"id":"mill-01","name":"CNC Mill 01","group":"Milling"},'
    b'"status":{"from":"ACTIVE","to":"IDLE","since":"2024-01-15T14:32:00Z"},"message_id":"msg_x"}'
)


def quiet() -> None:
    """The agent's own logging setup at its default level (a cheaper logger here would hide what a
    debug line per delivered row costs in production), written nowhere."""
    configure("info", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the life of the process


@dataclass
class Cpu:
    """CPU seconds of this process, of its event loop thread alone, and of the broker process."""

    process: float
    loop: float
    broker: float

    @staticmethod
    def now(broker_pid: int) -> Cpu:
        # /proc/<pid>/stat fields 14 and 15: utime and stime in clock ticks (proc(5)).
        fields = Path(f"/proc/{broker_pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return Cpu(time.process_time(), time.thread_time(), ticks / os.sysconf("SC_CLK_TCK"))

    def per_message(self, before: Cpu, n: int) -> str:
        agent, loop, broker = (
            (self.process - before.process) / n,
            (self.loop - before.loop) / n,
            (self.broker - before.broker) / n,
        )
        return (
            f"agent CPU {agent * 1e6:.0f} µs/msg (event loop {loop * 1e6:.0f}, other threads "
            f"{(agent - loop) * 1e6:.0f}) = {1 / agent:,.0f} msg/s per core; broker {broker * 1e6:.0f} µs/msg"
        )


async def bench_raw(port: int, n: int, broker_pid: int) -> tuple[float, str]:
    link = MqttLink(MqttConfig(host="127.0.0.1", port=port, agent="bench-raw"))
    await link.start()
    assert await link.wait_connected(10)
    window = asyncio.Semaphore(link.config.in_flight)

    async def one(i: int) -> None:
        async with window:
            await link.publish(f"bench/raw/m{i % 50}", BODY, 1, False, f"msg_{i}")

    cpu0 = Cpu.now(broker_pid)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    cpu = Cpu.now(broker_pid).per_message(cpu0, n)
    await link.stop()
    return n / elapsed, cpu


async def bench_sink(tmp: Path, port: int, n: int, broker_pid: int) -> tuple[float, str]:
    box = await Outbox.open(
        Path(tempfile.mkdtemp(dir=tmp)) / "sink.sqlite3", OutboxConfig(max_rows=10_000_000, max_size=2**34)
    )
    for start in range(0, n, 2000):
        await box.enqueue(
            [
                NewDelivery(
                    f"msg_{i:09d}",
                    "sink#0",
                    f"mqtt:bench/sink/m{i % 50}",
                    "sink",
                    "bench",
                    None,
                    f"e{i}",
                    BODY,
                    0.0,
                )
                for i in range(start, min(n, start + 2000))
            ]
        )
    broker = MqttConfig(host="127.0.0.1", port=port, agent="bench-sink")
    ep = MqttEndpoint("sink#0", "mqtt:bench/sink/{machine}", MqttTarget("bench/sink/{machine}", 1), broker)
    done = asyncio.Event()
    delivered = 0

    def on_result(key: str, outcome: str, latency: float | None) -> None:
        nonlocal delivered
        delivered += outcome == "delivered"
        if delivered >= n:
            done.set()

    disp = Dispatcher(box, {"sink#0": ep}, DeliveryConfig(), on_result=on_result)
    cpu0 = Cpu.now(broker_pid)
    started = time.perf_counter()
    await disp.start()
    await done.wait()
    elapsed = time.perf_counter() - started
    cpu = Cpu.now(broker_pid).per_message(cpu0, n)
    await disp.stop()
    counts = await box.counts()
    await box.close()
    assert counts.delivered == n and counts.dead == 0, counts
    return n / elapsed, cpu


AGENT = """
import asyncio, dataclasses, json, random, resource, sys, time, logging, tempfile
from pathlib import Path
sys.path.insert(0, {root!r})
import structlog
logging.disable(logging.WARNING)
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
from agent.config.source import Problems, Section
from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import Outbox
from agent.delivery.settings import DeliveryConfig, OutboxConfig
from agent.events import MACHINE_STATUS_CHANGED, Event, MachineRef, iso_utc, new_event_id
from agent.mqtt.settings import MqttConfig, PublishConfig
from agent.mqtt.uns import Namespace, endpoints
from agent.pipeline import Pipeline
from agent.workflows.spec import parse_workflow

async def main(agent, port, machines, seconds, period, tmp):
    problems = Problems()
    wf = parse_workflow(Section({{"name": "MES", "trigger": {{"type": "machine_status_changed"}},
        "actions": [{{"mqtt": {{"topic": "mes/{{line}}/{{machine}}/status", "qos": 1}}}}]}},
        file="bench", path="", problems=problems))
    assert wf is not None, problems.items
    refs = {{f"m{{i:03d}}": MachineRef(f"m{{i:03d}}", f"Machine {{i}}", "Machining") for i in range(machines)}}
    box = await Outbox.open(Path(tmp) / "outbox.sqlite3", OutboxConfig())
    broker = MqttConfig(host="127.0.0.1", port=port, agent=agent, client_id=agent)
    pub = PublishConfig(enterprise="acme", site="plant1")
    eps = {{ep.key: dataclasses.replace(ep, broker=broker) for ep in [*wf.endpoints, *endpoints(pub, broker)]}}
    disp = Dispatcher(box, eps, DeliveryConfig())
    pipe = Pipeline(refs, {{}}, [wf], box, namespace=Namespace(pub, agent), agent_name=agent, on_enqueued=disp.wake)
    await disp.start()
    print("ready", flush=True)
    await asyncio.sleep(1.0)
    cpu0 = time.process_time(); t0 = time.time(); events = 0
    state = {{m: "IDLE" for m in refs}}
    async def machine(mid):
        nonlocal events
        await asyncio.sleep(random.random() * period)
        while time.time() - t0 < seconds:
            new = "ACTIVE" if state[mid] == "IDLE" else "IDLE"
            now = time.time()
            ev = Event(new_event_id(now), MACHINE_STATUS_CHANGED, now, refs[mid],
                       {{"status": {{"from": state[mid], "to": new, "since": iso_utc(now)}}}})
            state[mid] = new
            await pipe.fire([ev]); events += 1
            await asyncio.sleep(period)
    await asyncio.gather(*(machine(m) for m in refs))
    while (await box.counts()).pending or (await box.counts()).in_flight:
        await asyncio.sleep(0.2)
    wall = time.time() - t0; cpu = time.process_time() - cpu0
    c = await box.counts()
    await disp.stop(); await box.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"agent": agent, "events": events, "delivered": c.delivered, "cpu": cpu, "wall": wall, "rss_mb": rss}}), flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]))
"""


async def bench_fleet(
    tmp: Path, port: int, agents: int, machines: int, seconds: float, period: float
) -> dict[str, object]:
    import aiomqtt

    from agent.events import iso_utc  # noqa: F401 - the subscriber parses what iso_utc writes

    latencies: list[float] = []
    received = 0
    first: float | None = None
    last = 0.0

    def parse_ts(text: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-subscriber", max_queued_incoming_messages=0
    ) as sub:
        await sub.subscribe("#", qos=1)

        async def pump() -> None:
            nonlocal received, first, last
            async for msg in sub.messages:
                now = time.time()
                received += 1
                first = first or now
                last = now
                topic = str(msg.topic)
                if topic.startswith("mes/") and isinstance(msg.payload, bytes):
                    body = json.loads(msg.payload)
                    latencies.append(now - parse_ts(body["timestamp"]))

        pumping = asyncio.create_task(pump())
        script = AGENT.format(root=str(ROOT))
        procs = []
        for a in range(agents):
            d = tmp / f"agent-{a:02d}"
            d.mkdir()
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    script,
                    f"cell-{a:02d}",
                    str(port),
                    str(machines),
                    str(seconds),
                    str(period),
                    str(d),
                    stdout=subprocess.PIPE,
                )
            )
        results = []
        for p in procs:
            assert p.stdout is not None
            ready = await p.stdout.readline()
            assert ready.strip() == b"ready", ready
        for p in procs:
            assert p.stdout is not None
            out = await p.stdout.readline()
            results.append(json.loads(out))
            await p.wait()
        await asyncio.sleep(1.0)
        pumping.cancel()
    latencies.sort()
    span = max(last - (first or last), 1e-9)
    cpus = [r["cpu"] / r["wall"] * 100 for r in results]
    return {
        "agents": agents,
        "machines_per_agent": machines,
        "events": sum(r["events"] for r in results),
        "delivered": sum(r["delivered"] for r in results),
        "received": received,
        "broker_msgs_per_s": received / span,
        "published_per_s": sum(r["delivered"] for r in results) / seconds,
        "agent_cpu_pct_mean": statistics.mean(cpus),
        "agent_cpu_pct_max": max(cpus),
        "agent_rss_mb_max": max(r["rss_mb"] for r in results),
        "latency_p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "latency_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--machines", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--period", type=float, default=10.0, help="seconds between status changes per machine")
    ap.add_argument("--skip", choices=["raw", "sink", "fleet"], action="append", default=[])
    ap.add_argument("--repeat", type=int, default=1, help="run raw and sink this many times, alternating")
    ap.add_argument(
        "--broker-inflight",
        type=int,
        default=0,
        help="mosquitto's max_inflight_messages, its MQTT 5 Receive Maximum (0: none; Mosquitto's default is 20)",
    )
    args = ap.parse_args()
    quiet()
    random.seed(1)
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as d:
        tmp = Path(d)
        broker = await Broker(tmp / "broker", max_inflight=args.broker_inflight).start()
        try:
            print(
                f"mosquitto on 127.0.0.1:{broker.port}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            assert broker.proc is not None
            pid = broker.proc.pid
            for _ in range(args.repeat):
                if "raw" not in args.skip:
                    rate, cpu = await bench_raw(broker.port, args.messages, pid)
                    print(f"raw client   QoS 1, window 64       {rate:>9,.0f} msg/s  {cpu}")
                if "sink" not in args.skip:
                    rate, cpu = await bench_sink(tmp, broker.port, args.messages, pid)
                    print(f"sink         outbox -> broker QoS 1 {rate:>9,.0f} msg/s  {cpu}")
            print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            if "fleet" not in args.skip:
                r = await bench_fleet(tmp, broker.port, args.agents, args.machines, args.seconds, args.period)
                print(
                    f"fleet        {r['agents']} agents x {r['machines_per_agent']} machines, "
                    f"{args.seconds:g} s, a change per machine every {args.period:g} s\n"
                    f"  events {r['events']}, rows delivered {r['delivered']}, subscriber received {r['received']}\n"
                    f"  published by the agents {r['published_per_s']:,.0f} msg/s; "
                    f"one subscriber to # received {r['broker_msgs_per_s']:,.0f} msg/s over the whole run\n"
                    f"  agent CPU  mean {r['agent_cpu_pct_mean']:.1f} %  max {r['agent_cpu_pct_max']:.1f} %  "
                    f"(RSS max {r['agent_rss_mb_max']:.0f} MB)\n"
                    f"  latency event -> subscriber  p50 {r['latency_p50_ms']:.1f} ms  p99 {r['latency_p99_ms']:.1f} ms"
                )
        finally:
            await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
