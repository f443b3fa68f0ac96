"""Shared parts for delivery tests: a controllable clock/sleeper, secrets, outboxes in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.config.source import Secret
from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import NewDelivery, Outbox
from agent.delivery.settings import DeliveryConfig, EndpointConfig, OutboxConfig
from agent.delivery.signing import generate_secret

T0 = 1_800_000_000.0


class FakeClock:
    """Time that moves only when the test says so; ``sleep`` returns when the time is reached."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.changed = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + delay, fut)
        self.sleepers.append(entry)
        await self._notify()
        try:
            await fut
        finally:
            self.sleepers.remove(entry)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    @property
    def next_deadline(self) -> float | None:
        live = [t for t, f in self.sleepers if not f.done()]
        return min(live) if live else None

    def advance_to(self, when: float) -> None:
        self.now = max(self.now, when)
        for t, f in self.sleepers:
            if t <= self.now and not f.done():
                f.set_result(None)

    def advance(self, seconds: float) -> None:
        self.advance_to(self.now + seconds)

    async def settled(self, dispatcher: Dispatcher, within: float = 10.0) -> float:
        """Wait until the dispatcher has nothing in flight and sleeps; returns its wake-up time."""

        def quiet() -> bool:
            return dispatcher.busy == 0 and self.next_deadline is not None and not dispatcher.wake_pending

        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(quiet)
        deadline = self.next_deadline
        assert deadline is not None
        return deadline


async def run_until(clock: FakeClock, dispatcher: Dispatcher, until: float) -> None:
    """Step through every wake-up the dispatcher asks for up to ``until``, then settle there."""
    for _ in range(10_000):
        deadline = await clock.settled(dispatcher)
        if deadline > until:
            break
        clock.advance_to(deadline)
    else:
        raise AssertionError("dispatcher kept asking for wake-ups: busy loop?")
    clock.advance_to(until)
    await clock.settled(dispatcher)


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def outbox(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "outbox.sqlite3", OutboxConfig(), clock=clock)
    yield box
    await box.close()


def endpoint(key: str, url: str, secret: str, **kw: object) -> EndpointConfig:
    return EndpointConfig(key=key, url=url, secrets=(Secret(secret, "test"),), **kw)  # type: ignore[arg-type]


def delivery(
    i: int, endpoint_key: str = "wf#0", url: str = "http://127.0.0.1:9/", **kw: object
) -> NewDelivery:
    base: dict[str, object] = {
        "message_id": f"msg_{i:06d}",
        "endpoint": endpoint_key,
        "url": url,
        "workflow": endpoint_key.split("#")[0],
        "event_type": "downtime_started",
        "machine_id": "mill-01",
        "event_id": f"evt_{i:06d}",
        "body": b'{"seq": %d}' % i,
        "not_before": 0.0,
    }
    base.update(kw)
    return NewDelivery(**base)  # type: ignore[arg-type]


def delivery_config(**kw: object) -> DeliveryConfig:
    base: dict[str, object] = {"jitter": 0.0, "timeout": 5.0}
    base.update(kw)
    return DeliveryConfig(**base)  # type: ignore[arg-type]


def seqs(received: list, predicate: Callable[[object], bool] | None = None) -> list[int]:  # type: ignore[type-arg]
    return [r.json()["seq"] for r in received if predicate is None or predicate(r)]
