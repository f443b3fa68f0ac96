"""RSS of the agent's OPC UA collection polling a hostile server (issue 10, item 1).

Two processes: an asyncua server whose string tag holds ``--mb`` MB (30 in the field report) in its
own process, and the agent side here (OpcuaDriver + Collector, a sink that counts) polling every
``--poll`` seconds for ``--seconds``. Printed: peak RSS of this process (ru_maxrss) before and after,
readings by quality, and the reasons seen. Before the fix the field saw 0.6 -> 2.3 GB in 25 s.

    .venv/bin/python bench/hostile_opcua.py                 # 30 MB string, default limits
    .venv/bin/python bench/hostile_opcua.py --mb 3          # under the 4 MiB transport limit
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = """
import asyncio, socket, sys
from asyncua import Server, ua

async def main() -> None:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/hostile")
    idx = await server.register_namespace("urn:hostile-device")
    obj = await server.nodes.objects.add_object(idx, "Cnc")
    big = "E" * int(float(sys.argv[1]) * 1_000_000)
    await obj.add_variable(ua.NodeId("AlarmCode", idx), "AlarmCode", big, ua.VariantType.String)
    await obj.add_variable(ua.NodeId("Execution", idx), "Execution", "ACTIVE", ua.VariantType.String)
    async with server:
        print(port, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(mb: float, seconds: float, poll: float) -> None:
    from agent.collector import Collector
    from drivers.opcua.driver import OpcuaDriver
    from tests.drivers.opcua_fixtures import machine_config

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(mb), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    port = int(await proc.stdout.readline())
    cfg = machine_config(
        f"poll_interval: {poll}s\nopcua: {{url: 'opc.tcp://127.0.0.1:{port}/hostile', timeout: 5s}}\n"
        "tags:\n  alarm_code: {node: 'nsu=urn:hostile-device;s=AlarmCode'}\n"
        "  execution: {node: 'nsu=urn:hostile-device;s=Execution'}\n"
    )
    seen: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()

    def sink(samples: object) -> None:
        for r in samples:  # type: ignore[attr-defined]
            seen[f"{r.tag}:{r.quality}"] += 1
            if r.reason:
                reasons[r.reason] += 1

    before = rss_mb()
    collector = Collector(
        OpcuaDriver(cfg), poll_interval=poll, sink=sink, subscribe=False, tags=cfg.tag_names
    )
    task = asyncio.create_task(collector.run())
    started = time.monotonic()
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    proc.terminate()
    await proc.wait()
    print(f"string tag: {mb:g} MB, polled every {poll:g} s for {time.monotonic() - started:.0f} s")
    print(f"peak RSS of the agent side: {before:.0f} MB before polling, {rss_mb():.0f} MB after")
    print("readings:", dict(seen))
    for reason, n in reasons.most_common(3):
        print(f"  {n} x {reason}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--poll", type=float, default=2.0)
    args = ap.parse_args()
    asyncio.run(run(args.mb, args.seconds, args.poll))


if __name__ == "__main__":
    main()
