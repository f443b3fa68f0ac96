"""A dispatcher process for the SIGKILL tests: ``burst`` enqueues and prints each accepted id;
``drain`` sends what is left and exits when nothing is pending; ``fifo`` drains one FIFO endpoint."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import structlog

from agent.config.source import Secret
from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import NewDelivery, Outbox
from agent.delivery.settings import DeliveryConfig, EndpointConfig, OutboxConfig


async def main(mode: str, db: Path, url: str, secret: str, count: int) -> None:
    box = await Outbox.open(db, OutboxConfig())
    fifo = mode == "fifo"
    ep = EndpointConfig("burst#0", url, (Secret(secret, "argv"),), fifo=fifo, concurrency=1 if fifo else 8)
    disp = Dispatcher(box, {"burst#0": ep}, DeliveryConfig(jitter=0.0, retry_schedule=(0.0, 0.05)))
    await disp.start()
    if mode == "burst":
        for start in range(0, count, 10):
            items = [
                NewDelivery(
                    f"msg_{i:06d}",
                    "burst#0",
                    url,
                    "burst",
                    "part_count",
                    "mill-01",
                    f"evt_{i:06d}",
                    b'{"seq": %d}' % i,
                    0.0,
                )
                for i in range(start, start + 10)
            ]
            await box.enqueue(items)
            sys.stdout.write("".join(f"accepted {d.message_id}\n" for d in items))
            sys.stdout.flush()
            disp.wake()
            await asyncio.sleep(0.005)  # a burst spread over time, so the kill lands inside it
        await asyncio.Event().wait()
    else:
        while True:
            c = await box.counts()
            if c.pending == 0 and c.in_flight == 0:
                break
            await asyncio.sleep(0.05)  # a worker process, not a test: plain polling is fine here
        await disp.stop()
        await box.close()
        print("drained", flush=True)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])))
