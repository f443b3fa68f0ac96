"""The whole daemon against its peers, side by side, in one command:

    .venv/bin/python bench/daemon.py                  # N = 500
    .venv/bin/python bench/daemon.py --n 500 --n 2000 --seconds 60 --warmup 20

For each N: an external simulator process serves N Modbus TCP machines (one port each, as in
bench/poll.py); then, one after the other, (1) a bare pymodbus asyncio loop (one client per machine,
one read of 20 holding registers a second, nothing else: the floor) and (2) ``edge-agent run`` reading the same
20 registers in one request, two status rules per machine, one ``machine_status_changed`` webhook
workflow and the API on,
are measured: CPU % of one core (utime+stime of the process over the window after warm-up), RSS,
spawn → READY=1 (sd_notify), missed cycles, poll lag p99 and the worst event-loop lag (from the
agent's own /metrics), and how long a /metrics scrape takes; (3) Node-RED 4.1.8 with
node-red-contrib-modbus, one read node per machine (bench/nodered.py installs it from npm on first
use, outside the repository; ``--no-node-red`` skips it). For every peer alike, reads/s is what the
simulator process served in the window: a peer that misses reads shows fewer than N a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.event_loop import LOOPS  # noqa: E402
from bench import nodered  # noqa: E402
from bench.e2e import Agent, free_port  # noqa: E402

HOST = "127.0.0.1"
REGISTERS = 20
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the bare loop: what polling alone costs with pymodbus and nothing else


async def bare(ports: list[int]) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def one(port: int, phase: float) -> None:
        client = AsyncModbusTcpClient(HOST, port=port, timeout=2)
        await client.connect()
        loop = asyncio.get_running_loop()
        at = loop.time() + phase
        while True:
            await asyncio.sleep(max(0.0, at - loop.time()))
            await client.read_holding_registers(0, count=REGISTERS, device_id=1)
            at += 1.0

    await asyncio.gather(*(one(p, i / len(ports)) for i, p in enumerate(ports)))


async def floor(ports: list[int]) -> None:
    """The least asyncio can do: the agent's own wire client, one read a second per machine, the reply
    not even decoded into tags. What no asyncio poller on this interpreter can get under."""
    from drivers.modbus.wire import ModbusTcpClient

    async def one(port: int, phase: float) -> None:
        client = ModbusTcpClient(lambda: None)
        await client.connect(HOST, port)
        loop = asyncio.get_running_loop()
        at = loop.time() + phase
        while True:
            await asyncio.sleep(max(0.0, at - loop.time()))
            await client.read(3, 0, REGISTERS, 1, 2.0)
            at += 1.0

    await asyncio.gather(*(one(p, i / len(ports)) for i, p in enumerate(ports)))


# -- the daemon


def write_config(root: Path, ports: list[int], receiver_url: str, event_loop: str) -> tuple[Path, str]:
    cfg = root / "config"
    for sub in ("machines", "workflows", "secrets"):
        (cfg / sub).mkdir(parents=True, exist_ok=True)
    (cfg / "secrets" / "api-token").write_text("bench-token-" + "x" * 32 + "\n")
    (cfg / "secrets" / "webhook.secret").write_text("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" + "\n")
    api_port = free_port()
    (cfg / "agent.yaml").write_text(
        f"agent: {{name: bench, state_dir: {root / 'state'}, event_loop: {event_loop}}}\n"
        "log: {level: warning, format: json}\n"
        f"api: {{bind: {HOST}:{api_port}, token_file: secrets/api-token}}\n"
    )
    # The setup: one read of 20 holding registers a second (as the bare loop does), two
    # status rules; the simulator's execution and mode registers change now and then.
    tags = "".join(f"  r{a}: {{table: holding, address: {a}}}\n" for a in range(2, REGISTERS))
    for i, port in enumerate(ports):
        mid = f"m{i:04d}"
        (cfg / "machines" / f"{mid}.yaml").write_text(
            f"id: {mid}\nname: Bench {mid}\ngroup: Bench\n"
            f"modbus: {{host: {HOST}, port: {port}, unit: 1, timeout: 2s}}\npoll_interval: 1s\n"
            "tags:\n  execution: {table: holding, address: 0}\n  mode: {table: holding, address: 1}\n"
            + tags
            + "status:\n  min_state: 0s\n  rules:\n"
            "    - {when: {execution: 1}, state: ACTIVE}\n    - {when: {mode: 2}, state: SETUP}\n"
            "  otherwise: IDLE\n"
        )
    (cfg / "workflows" / "status.yaml").write_text(
        "name: Status feed\ntrigger: {type: machine_status_changed}\nactions:\n"
        f'  - webhook: {{url: "{receiver_url}", secret_file: {cfg / "secrets" / "webhook.secret"}}}\n'
    )
    return cfg / "agent.yaml", f"http://{HOST}:{api_port}"


def metric_values(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()) if k != "machine")
            out[key] = out.get(key, 0.0) + s.value
    return out


def quantile_from_buckets(values: dict[str, float], name: str, q: float) -> float:
    buckets = sorted(
        (float(k.split("le=")[1]), v) for k, v in values.items() if k.startswith(name + "_bucket|le=")
    )
    total = buckets[-1][1] if buckets else 0.0
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("nan")


async def scrape(api: str) -> tuple[dict[str, float], float]:
    import aiohttp

    headers = {"Authorization": "Bearer bench-token-" + "x" * 32}
    async with aiohttp.ClientSession(headers=headers) as s:
        t0 = time.monotonic()
        async with s.get(api + "/metrics") as r:
            text = await r.text()
        return metric_values(text), time.monotonic() - t0


class Simulator:
    """The external simulator process (bench/poll.py --serve) and its served-requests counter."""

    def __init__(self, n: int, lean: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "poll.py"), "--serve", str(n), "--per-port", "1"]
            + (["--lean"] if lean else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]

    def served(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["requests"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def window(pid: int, sim: Simulator, seconds: float) -> dict[str, float]:
    """CPU % of one core of ``pid`` and the reads/s the simulator served, over ``seconds``; the
    simulator's own CPU too (on a 2-core box it competes with the peer measured)."""
    s0, c0, r0, t0 = cpu_seconds(sim.proc.pid), cpu_seconds(pid), sim.served(), time.monotonic()
    time.sleep(seconds)
    s1, c1, r1, t1 = cpu_seconds(sim.proc.pid), cpu_seconds(pid), sim.served(), time.monotonic()
    return {
        "cpu": 100 * (c1 - c0) / (t1 - t0),
        "reads": (r1 - r0) / (t1 - t0),
        "rss": rss_mb(pid),
        "sim_cpu": 100 * (s1 - s0) / (t1 - t0),
    }


async def webhook_sink() -> tuple[Any, str, list[int]]:
    """Where the daemon's status webhooks go (204 to each): the runner to clean up, its URL, and
    the number received so far (``got[0]``)."""
    from aiohttp import web

    got = [0]

    async def hook(request: web.Request) -> web.Response:
        got[0] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    return runner, f"http://{HOST}:{port}/hook", got


async def daemon(sim: Simulator, seconds: float, warmup: float, event_loop: str) -> dict[str, float]:
    runner, hook_url, got = await webhook_sink()
    root = Path(tempfile.mkdtemp(prefix="ea-daemon-"))
    config, api = write_config(root, sim.ports, hook_url, event_loop)
    agent = await Agent.spawn(root, config)
    try:
        ready = await agent.ready(within=120) - agent.spawned_at
        await asyncio.sleep(warmup)
        before, _ = await scrape(api)
        # The bench's own loop only answers the webhooks: blocking it for the window is harmless.
        measured = window(agent.proc.pid, sim, seconds)
        after, scrape_s = await scrape(api)
        lag = {k: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("edge_agent_poll_lag")}
        loop_lag = {
            k: after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("edge_agent_event_loop_lag")
        }
        return {
            **measured,
            "ready": ready,
            "missed": after.get("edge_agent_poll_missed_cycles_total", 0)
            - before.get("edge_agent_poll_missed_cycles_total", 0),
            "lag_p99": quantile_from_buckets(lag, "edge_agent_poll_lag_seconds", 0.99),
            "loop_lag_max": quantile_from_buckets(loop_lag, "edge_agent_event_loop_lag_seconds", 1.0),
            "scrape": scrape_s,
            "webhooks": got[0],
        }
    finally:
        await agent.stop()
        await runner.cleanup()


def measure_process(cmd: list[str], sim: Simulator, seconds: float, warmup: float) -> dict[str, float]:
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited with {proc.returncode} during the warm-up")
        return window(proc.pid, sim, seconds)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    n: int,
    seconds: float,
    warmup: float,
    node_red: bool,
    lean: bool,
    with_bare: bool,
    with_floor: bool,
    event_loop: str,
) -> dict[str, dict[str, float]]:
    sim = Simulator(n, lean)
    try:
        bare_cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", json.dumps(sim.ports)]
        out = {"bare": measure_process(bare_cmd, sim, seconds, warmup)} if with_bare else {}
        if with_floor:
            floor_cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--run-floor",
                json.dumps(sim.ports),
                "--event-loop",
                event_loop,
            ]
            out["floor"] = measure_process(floor_cmd, sim, seconds, warmup)
        if node_red:
            with tempfile.TemporaryDirectory(prefix="ea-node-red-") as work:
                out["node_red"] = measure_process(
                    nodered.command(sim.ports, Path(work)), sim, seconds, warmup
                )
        out["daemon"] = asyncio.run(daemon(sim, seconds, warmup, event_loop))
        return out
    finally:
        sim.close()


def cell(r: dict[str, float] | None) -> str:
    if r is None:
        return f"{'not run':>24}"
    return f"{r['cpu']:>5.1f} % {r['rss']:>4.0f} MB {r['reads']:>6.1f}/s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="machines (repeatable); default 500")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before the window (default 20)")
    ap.add_argument("--no-node-red", action="store_true", help="skip the Node-RED column")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare pymodbus loop column")
    ap.add_argument(
        "--lean-sim",
        action="store_true",
        help="serve the machines with bench/poll.py's minimal responder instead of pymodbus "
        "(for N beyond what the pymodbus simulator can serve on this box)",
    )
    ap.add_argument(
        "--floor", action="store_true", help="also measure the asyncio floor (our wire client alone)"
    )
    ap.add_argument(
        "--event-loop",
        choices=LOOPS,
        default="asyncio",
        help="the daemon's agent.event_loop (and the floor's loop); the bare loop and Node-RED are unchanged",
    )
    ap.add_argument("--run-floor", help=argparse.SUPPRESS)
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        asyncio.run(bare(json.loads(args.bare)))
        return 0
    if args.run_floor:
        from agent.event_loop import loop_factory

        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(floor(json.loads(args.run_floor)))
        return 0
    print(
        f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"the daemon runs on the {args.event_loop} event loop",
        flush=True,
    )
    print(
        f"{'N':>5} | {'bare pymodbus loop':>24} | {'Node-RED + contrib-modbus':>25} | {'edge-agent run':>24} | "
        f"{'/bare':>5} | {'/N-RED':>6} | {'READY':>6} | {'missed':>6} | {'lag p99':>8} | {'loop lag max':>12} | "
        f"{'/metrics':>8}"
    )
    for n in args.n or [500]:
        r = run(
            n,
            args.seconds,
            args.warmup,
            not args.no_node_red,
            args.lean_sim,
            not args.no_bare,
            args.floor,
            args.event_loop,
        )
        b, d, nr = r.get("bare"), r["daemon"], r.get("node_red")
        versus_nr = f"{d['cpu'] / nr['cpu']:>6.2f}" if nr else f"{'-':>6}"
        versus_bare = f"{d['cpu'] / b['cpu']:>5.2f}" if b else f"{'-':>5}"
        print(
            f"{n:>5} | {cell(b)} | {cell(nr):>25} | {cell(d)} | {versus_bare} | {versus_nr} | "
            f"{d['ready']:>5.2f}s | {int(d['missed']):>6} | ≤{1000 * d['lag_p99']:>5.0f}ms | "
            f"≤{1000 * d['loop_lag_max']:>9.0f}ms | {1000 * d['scrape']:>6.0f}ms",
            flush=True,
        )
        print(f"      simulator CPU while measuring the agent: {d['sim_cpu']:.1f} % of a core", flush=True)
        if "floor" in r:
            print(
                f"      {args.event_loop} floor (wire client alone, no decoding): {cell(r['floor'])}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
