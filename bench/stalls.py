"""The longest event-loop stalls of the running daemon, and what caused them:

    .venv/bin/python bench/stalls.py --n 2000 [--n 5000 --lean-sim] [--seconds 60 --warmup 20]

Issue 13's rule: nothing in the loop may block it for more than 20 ms. The daemon runs as in
bench/daemon.py (an external simulator of N Modbus machines, two status rules each, a status webhook
workflow, the API on) with ``bench/stall_probe`` on its PYTHONPATH: every callback asyncio runs is
timed between SIGUSR1 and SIGUSR2 (the window after warm-up, a /metrics scrape at each end
included). Printed: callbacks run, how many took 5 ms or more (by millisecond), and the longest,
each with its task and where it stopped, and the garbage collection inside it. asyncio's own loop
only: uvloop's callbacks cannot be timed from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.daemon import Simulator, cpu_seconds, scrape, webhook_sink, write_config  # noqa: E402
from bench.e2e import Agent  # noqa: E402

RULE_MS = 20.0


async def measure(n: int, seconds: float, warmup: float, lean: bool, show: int) -> None:
    sim = Simulator(n, lean)
    runner, hook_url, _ = await webhook_sink()
    root = Path(tempfile.mkdtemp(prefix="ea-stalls-"))
    out = root / "stalls.json"
    config, api = write_config(root, sim.ports, hook_url, "asyncio")
    probe = str(ROOT / "bench" / "stall_probe")
    path = os.pathsep.join(p for p in (probe, os.environ.get("PYTHONPATH", "")) if p)
    agent = await Agent.spawn(root, config, env={"PYTHONPATH": path, "EDGE_AGENT_STALL_OUT": str(out)})
    try:
        await agent.ready(within=120)
        await asyncio.sleep(warmup)
        agent.proc.send_signal(signal.SIGUSR1)
        before, _ = await scrape(api)
        c0, t0 = cpu_seconds(agent.proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = 100 * (cpu_seconds(agent.proc.pid) - c0) / (time.monotonic() - t0)
        after, scrape_s = await scrape(api)
        # Written by the probe's SIGUSR2 handler, which runs before the SIGTERM of stop() is seen.
        agent.proc.send_signal(signal.SIGUSR2)
    finally:
        await agent.stop()
        await runner.cleanup()
        sim.close()
    report = json.loads(out.read_text())
    missed = after.get("edge_agent_poll_missed_cycles_total", 0) - before.get(
        "edge_agent_poll_missed_cycles_total", 0
    )
    longest = report["longest"]
    over = sum(c for ms, c in report["at_least_5ms_by_ms"].items() if int(ms) >= RULE_MS)
    print(
        f"N={n}: {seconds:.0f} s window after {warmup:.0f} s warm-up, asyncio loop, CPU {cpu:.1f} % of a core, "
        f"{missed:.0f} missed cycles, /metrics scrape {scrape_s * 1000:.0f} ms (two in the window)"
    )
    print(
        f"  {report['callbacks']:,} callbacks; {over} took {RULE_MS:.0f} ms or more; "
        f"longest {longest[0]['ms'] if longest else 0:.1f} ms"
    )
    print(f"  callbacks of 5 ms or more, by ms: {report['at_least_5ms_by_ms']}")
    print(
        f"  a full collection walks {report['oldest_generation']:,} objects ({report['frozen']:,} frozen "
        f"are not walked); most: {report['oldest_generation_by_type']}"
    )
    print(f"  collections in the window by generation (0, 1, 2): {report['collections_by_generation']}")
    for e in longest[:show]:
        gc = "no gc"
        if e["gc_generation"] >= 0:
            gc = f"gc {e['gc_ms']:.1f} ms, gen {e['gc_generation']}, {e['gc_garbage']} freed"
        print(f"  {e['ms']:7.1f} ms ({gc:>34})  {e['what']}")
        if e["stack"]:
            print("            running then: " + " > ".join(e["stack"]))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="machines (repeatable; default 2000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=20.0, help="after READY, before the window")
    parser.add_argument("--lean-sim", action="store_true", help="the lean simulator (beyond ~2,000 machines)")
    parser.add_argument("--show", type=int, default=12, help="longest callbacks to print")
    args = parser.parse_args()
    for n in args.n or [2000]:
        asyncio.run(measure(n, args.seconds, args.warmup, args.lean_sim, args.show))
    return 0


if __name__ == "__main__":
    sys.exit(main())
