"""The sender contract: a destination kind is one module under agent/delivery/senders/ plus its config.

The MQTT sender does not exist yet, so the kind here is a test module that plays one, registered
under the name the dispatcher imports; everything around it (outbox, dispatcher, retry policy) is
the real code, as a new kind would meet it.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.delivery.dispatcher import Dispatcher
from agent.delivery.outbox import Delivery, Outbox
from agent.delivery.senders import Destination, SendOutcome, create_sender

from .conftest import FakeClock, delivery, delivery_config, run_until


@dataclass(frozen=True)
class BrokerEndpoint:
    key: str
    url: str
    kind: str = "testbroker"
    fifo: bool = True
    concurrency: int = 1


class BrokerSender:
    """Acknowledges the first message of each endpoint with "busy" (503), every later one with 200."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def send(self, destination: Destination, row: Delivery, now: float) -> SendOutcome:
        self.sent.append((destination.key, row.body))
        return SendOutcome(503 if len(self.sent) == 1 else 200, 0.001, {"Retry-After": "7"})


@pytest.fixture
def broker() -> Iterator[BrokerSender]:
    sender = BrokerSender()
    module = types.ModuleType("agent.delivery.senders.testbroker")
    module.create = lambda config: sender  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield sender
    del sys.modules[module.__name__]


def test_an_unknown_kind_is_an_error_naming_it() -> None:
    for kind in ("pigeon", "base", "../webhook"):
        with pytest.raises(ValueError, match="no destination kind"):
            create_sender(kind, delivery_config())


async def test_a_new_kind_is_picked_by_the_endpoints_kind_and_retried_by_the_common_policy(
    outbox: Outbox, clock: FakeClock, broker: BrokerSender
) -> None:
    ep = BrokerEndpoint("wf#0", "mqtt://127.0.0.1:1883/plant/events")
    await outbox.enqueue([delivery(1, url=ep.url), delivery(2, url=ep.url)])
    d = Dispatcher(outbox, {ep.key: ep}, delivery_config(), clock=clock, sleep=clock.sleep, rand=lambda: 0.5)
    await d.start()
    try:
        assert broker.started
        await run_until(clock, d, clock.now + 60)
    finally:
        await d.stop(grace=0.1)
    assert broker.closed
    # 503 is "throttled" whatever the protocol: same message again after Retry-After, FIFO kept.
    assert broker.sent == [("wf#0", b'{"seq": 1}'), ("wf#0", b'{"seq": 1}'), ("wf#0", b'{"seq": 2}')]
    counts = await outbox.counts()
    assert (counts.delivered, counts.pending) == (2, 0)
    first = await outbox.get(1)
    assert first is not None
    assert [a.status for a in first.attempts] == [503, 200]
