"""Connections that abusive clients can hold on the operator API (issue 10, item 11).

The API (defaults: idle_timeout 10 s, max_connections 128) in this process on 127.0.0.1, and:
- ``--loris`` slow-loris clients sending one header byte a second: how many are still open after
  ``--after`` seconds (the field saw all 50 open past 90 s);
- ``--idle`` idle connections opened at once without a request: how many the server holds, how many
  it answers 503 at once.

    .venv/bin/python bench/api_abuse.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def loris(port: int, stop: asyncio.Event) -> bool:
    """True while the server keeps the connection open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        while not stop.is_set():
            writer.write(b"X")
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(1), 1.0)
                return False  # the server answered or closed
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        return False
    finally:
        writer.close()
    return True


async def idle(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(reader.read(64), 2.0)
        return "503" if data.startswith(b"HTTP/1.1 503") else "closed"
    except TimeoutError:
        return "held"
    finally:
        writer.close()


async def run(n_loris: int, after: float, n_idle: int) -> None:
    from agent.api.server import bound_port, create_app, start_api
    from agent.api.settings import ApiConfig
    from agent.config.source import Secret
    from tests.workflows.rig import FakeClock, make_rig

    with tempfile.TemporaryDirectory() as d:
        rig = await make_rig(Path(d), [], FakeClock(time.time()), dispatch=False)
        config = ApiConfig(enabled=True, port=0, token=Secret("x" * 32, "bench"))
        runner = await start_api(create_app(rig.pipeline, rig.outbox, config), config)
        port = bound_port(runner)
        try:
            stop = asyncio.Event()
            tasks = [asyncio.ensure_future(loris(port, stop)) for _ in range(n_loris)]
            await asyncio.sleep(after)
            stop.set()
            still_open = sum(await asyncio.gather(*tasks))
            print(f"slow-loris: {n_loris} clients, still open after {after:g} s: {still_open}")
            site = next(iter(runner.sites))
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, site.cap.open)  # type: ignore[attr-defined]
                    await asyncio.sleep(0.01)

            watcher = asyncio.ensure_future(watch())
            results = await asyncio.gather(*(idle(port) for _ in range(n_idle)))
            watcher.cancel()
            counts = {k: results.count(k) for k in ("held", "503", "closed")}
            print(
                f"idle: {n_idle} connections at once -> client side {counts}; "
                f"server side at most {peak} open (cap {config.max_connections}), "
                f"{site.cap.refused} answered 503"  # type: ignore[attr-defined]
            )
        finally:
            await runner.cleanup()
            await rig.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loris", type=int, default=50)
    ap.add_argument("--after", type=float, default=15.0)
    ap.add_argument("--idle", type=int, default=300)
    args = ap.parse_args()
    asyncio.run(run(args.loris, args.after, args.idle))


if __name__ == "__main__":
    main()
