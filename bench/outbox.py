"""Outbox and dispatcher benchmark: durable enqueue rate, delivery rate, RSS while draining a backlog.

    .venv/bin/python bench/outbox.py [--events 100000] [--deliveries 5000] [--backlog 1000000]

Targets on the 2-core reference machine: enqueue >= 20k events/s (WAL + synchronous=FULL, group
commit), delivery >= 1,000/s to a receiver in another process, RSS flat and < 150 MB while draining.
FIFO (one request in flight) is printed three ways: through the outbox to the receiver, the bare
signed round trip to the same receiver (its ceiling), and through the outbox to a sender that
answers at once (what the outbox and the dispatcher cost alone). Everything runs on 127.0.0.1 in a
temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402

from agent.config.source import Secret  # noqa: E402
from agent.delivery.dispatcher import Dispatcher  # noqa: E402
from agent.delivery.outbox import Delivery, NewDelivery, Outbox  # noqa: E402
from agent.delivery.senders import Destination, SendOutcome  # noqa: E402
from agent.delivery.settings import DeliveryConfig, EndpointConfig, OutboxConfig  # noqa: E402
from agent.delivery.signing import generate_secret, signing_headers  # noqa: E402
from agent.event_loop import LOOPS  # noqa: E402

BODY = (
    b'{"id":"01HQ3K6X7Z8Y9W0V1U2T3S4R5Q","event":"downtime_started","timestamp":"2024-01-15T14:32:00Z",'
    b'"machine":{"id":"mill-01","name":"CNC Mill 01","group":"Milling"},'
    b'"downtime":{"id":"dt-1","started_at":"2024-01-15T14:32:00Z","category":null}}'
)

RECEIVER = """
import asyncio, sys
from agent.event_loop import loop_factory
from agent.receiver import start_receiver
async def main():
    await start_receiver(sys.argv[1], port=int(sys.argv[2]), keep=0)
    await asyncio.Event().wait()
with asyncio.Runner(loop_factory=loop_factory(sys.argv[3])) as runner:
    runner.run(main())
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def item(i: int, endpoint: str = "bench#0", url: str = "http://127.0.0.1:9/") -> NewDelivery:
    return NewDelivery(
        f"msg_{i:09d}", endpoint, url, "bench", "downtime_started", "mill-01", f"evt_{i}", BODY, 0.0
    )


async def bench_enqueue(tmp: Path, events: int, producers: int) -> float:
    box = await Outbox.open(tmp / "enqueue.sqlite3", OutboxConfig(max_rows=10_000_000, max_size=2**34))
    per = events // producers

    async def producer(p: int) -> None:
        for k in range(per):
            await box.enqueue([item(p * per + k)])

    t = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(producers)))
    elapsed = time.perf_counter() - t
    batches = box.stats.committed_batches
    await box.close()
    rate = per * producers / elapsed
    print(
        f"enqueue: {per * producers} events from {producers} concurrent producers, one event per call, "
        f"{elapsed:.2f} s -> {rate:,.0f} events/s durable ({batches} commits, "
        f"{per * producers / max(batches, 1):.0f} events/commit)"
    )
    return rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver_process(secret: str, event_loop: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, secret, str(port), event_loop], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("receiver process did not start")


def finish_line(total: int) -> tuple[asyncio.Event, Callable[[str, str, float | None], None]]:
    """An event set by the dispatcher's own result callback when ``total`` rows are delivered: the
    time is taken at the last delivery, not at the next tick of a polling loop."""
    done = asyncio.Event()
    delivered = 0

    def on_result(key: str, outcome: str, latency: float | None) -> None:
        nonlocal delivered
        delivered += outcome == "delivered"
        if delivered >= total:
            done.set()

    return done, on_result


async def drain(
    disp: Dispatcher, done: asyncio.Event, total: int, sample: list[tuple[int, float]] | None
) -> float:
    t = time.perf_counter()
    await disp.start()
    next_mark = 0
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.25)
        if sample is not None and disp.stats.delivered >= next_mark:
            sample.append((disp.stats.delivered, rss_mb()))
            next_mark = disp.stats.delivered + max(total // 20, 1)
    elapsed = time.perf_counter() - t
    await disp.stop()
    return elapsed


async def bench_delivery(tmp: Path, url: str, secret: str, n: int, *, fifo: bool, concurrency: int) -> float:
    box = await Outbox.open(tmp / f"deliver-{fifo}.sqlite3", OutboxConfig())
    for start in range(0, n, 1000):
        await box.enqueue([item(i, url=url) for i in range(start, min(n, start + 1000))])
    ep = EndpointConfig("bench#0", url, (Secret(secret, "bench"),), fifo=fifo, concurrency=concurrency)
    done, on_result = finish_line(n)
    disp = Dispatcher(box, {"bench#0": ep}, DeliveryConfig(), on_result=on_result)
    commits = box.stats.committed_batches
    elapsed = await drain(disp, done, n, None)
    commits = box.stats.committed_batches - commits
    counts = await box.counts()
    await box.close()
    assert counts.delivered == n, counts
    rate = n / elapsed
    mode = "FIFO (1 in flight)" if fifo else f"unordered, {concurrency} in flight"
    print(
        f"deliver: {n} signed webhooks to a receiver process, {mode}: {elapsed:.2f} s -> {rate:,.0f}/s "
        f"({commits} outbox commits, {commits / n:.2f} per delivery)"
    )
    return rate


class InstantSender:
    """A destination kind for this benchmark only (``senders/base.py``'s contract): signs each row as
    the webhook sender does and answers 200 at once, so FIFO measures the outbox and the dispatcher
    alone, without any network or receiver."""

    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config

    async def start(self) -> None:
        pass

    async def send(self, destination: Destination, row: Delivery, now: float) -> SendOutcome:
        assert isinstance(destination, EndpointConfig)
        secrets = [s.reveal() for s in destination.secrets]
        signing_headers("standard", secrets, row.message_id, int(now), row.body)
        await asyncio.sleep(0)  # the answer comes in a later loop turn, as a real one would
        return SendOutcome(200, 0.0, {}, b"")

    async def close(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class InstantEndpoint(EndpointConfig):
    kind: ClassVar[str] = "bench_instant"


async def bench_fifo_floor(tmp: Path, secret: str, n: int) -> float:
    """FIFO through the real outbox and dispatcher to ``InstantSender``: what they cost per delivery."""
    module = types.ModuleType("agent.delivery.senders.bench_instant")
    module.create = InstantSender  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    box = await Outbox.open(tmp / "fifo-floor.sqlite3", OutboxConfig())
    for start in range(0, n, 1000):
        await box.enqueue([item(i) for i in range(start, min(n, start + 1000))])
    ep = InstantEndpoint("bench#0", "http://127.0.0.1:9/", (Secret(secret, "bench"),), fifo=True)
    done, on_result = finish_line(n)
    disp = Dispatcher(box, {"bench#0": ep}, DeliveryConfig(), on_result=on_result)
    cpu = time.process_time()
    elapsed = await drain(disp, done, n, None)
    cpu = time.process_time() - cpu
    await box.close()
    rate = n / elapsed
    print(
        f"FIFO floor: {n} rows through the outbox and dispatcher to a sender that signs and answers at "
        f"once (no network): {elapsed:.2f} s -> {rate:,.0f}/s, {cpu / n * 1e6:.0f} us of process CPU each"
    )
    return rate


async def bench_round_trip(url: str, secret: str, n: int) -> float:
    """The ceiling of FIFO with one in flight: the same signed POSTs, one after another, on one
    aiohttp session, with no outbox and no dispatcher."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        t = time.perf_counter()
        for i in range(n):
            headers = signing_headers("standard", [secret], f"msg_{i}", int(time.time()), BODY)
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
        elapsed = time.perf_counter() - t
    rate = n / elapsed
    print(f"ceiling: {n} signed POSTs one after another, no outbox: {elapsed:.2f} s -> {rate:,.0f}/s")
    return rate


async def bench_backlog(tmp: Path, url: str, secret: str, n: int) -> float:
    box = await Outbox.open(tmp / "backlog.sqlite3", OutboxConfig(max_rows=10_000_000, max_size=2**34))
    t = time.perf_counter()
    for start in range(0, n, 2000):
        await box.enqueue([item(i, url=url) for i in range(start, min(n, start + 2000))])
    fill = time.perf_counter() - t
    size = (await box.counts()).bytes
    print(f"backlog: {n} deliveries written in {fill:.1f} s ({size / 2**20:.0f} MiB on disk); draining...")
    ep = EndpointConfig("bench#0", url, (Secret(secret, "bench"),), fifo=False, concurrency=16)
    done, on_result = finish_line(n)
    disp = Dispatcher(box, {"bench#0": ep}, DeliveryConfig(), on_result=on_result)
    samples: list[tuple[int, float]] = [(0, rss_mb())]
    elapsed = await drain(disp, done, n, samples)
    samples.append((n, rss_mb()))
    await box.close()
    peak = max(r for _, r in samples)
    trail = "  ".join(f"{d // 1000}k:{r:.0f}" for d, r in samples[:: max(1, len(samples) // 10)])
    print(
        f"backlog: drained {n} in {elapsed:.0f} s ({n / elapsed:,.0f}/s); RSS MB by delivered count: {trail}"
    )
    print(f"backlog: RSS start {samples[0][1]:.0f} MB, peak {peak:.0f} MB, end {samples[-1][1]:.0f} MB")
    return peak


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events for the enqueue test")
    parser.add_argument("--producers", type=int, default=500, help="concurrent enqueue callers")
    parser.add_argument("--deliveries", type=int, default=5_000, help="webhooks for the delivery test")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="backlog to drain for the RSS test")
    parser.add_argument(
        "--event-loop",
        choices=LOOPS,
        default="asyncio",
        help="the loop of the outbox side and of the receiver process (agent.event_loop)",
    )
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    print(f"event loop: {args.event_loop} (outbox side and receiver)")
    # Loggers cached as the daemon does (agent/logs.py): uncached, every log call binds anew.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR), cache_logger_on_first_use=True
    )
    secret = generate_secret()
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as d:
        tmp = Path(d)
        enq = await bench_enqueue(tmp, args.events, args.producers)
        floor = await bench_fifo_floor(tmp, secret, max(args.deliveries, 100))
        proc, url = start_receiver_process(secret, args.event_loop)
        try:
            fifo_n = max(args.deliveries // 2, 100)
            # The round trip before and after FIFO: on a shared box it drifts by a third within
            # minutes, and FIFO is compared with what the same receiver did around it.
            before = await bench_round_trip(url, secret, fifo_n)
            fifo = await bench_delivery(tmp, url, secret, fifo_n, fifo=True, concurrency=1)
            ceiling = (before + await bench_round_trip(url, secret, fifo_n)) / 2
            rate = await bench_delivery(tmp, url, secret, args.deliveries, fifo=False, concurrency=16)
            peak = await bench_backlog(tmp, url, secret, args.backlog) if args.backlog else 0.0
        finally:
            proc.terminate()
            proc.wait()
    print(
        f"summary: enqueue {enq:,.0f} events/s (target >= 20,000); delivery {rate:,.0f}/s (target >= 1,000); "
        f"FIFO {fifo:,.0f}/s = {fifo / ceiling:.0%} of the bare round trip's {ceiling:,.0f}/s (mean of before "
        f"and after; target >= 2,000; {floor:,.0f}/s without the network); "
        f"backlog RSS peak {peak:.0f} MB (target < 150, flat)"
    )


if __name__ == "__main__":
    from agent.event_loop import loop_factory

    options = arguments()
    with asyncio.Runner(loop_factory=loop_factory(options.event_loop)) as runner:
        runner.run(main(options))
