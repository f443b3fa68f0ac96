"""The MQTT destination: one QoS 0/1 PUBLISH per attempt on the agent's broker connection.

A row holds its rendered topic in ``url`` (``mqtt:<topic>``) and its payload in ``body`` (with
``message_id``); QoS and retain come from the destination (``MqttEndpoint``). The connection itself
(reconnect, birth, Last Will, TLS) is ``agent.mqtt.link``; it opens at the first row for a broker.

Outcomes in the dispatcher's HTTP terms (``senders/base.py``): the PUBACK (QoS 1) or the write to
the socket (QoS 0) is 200; an MQTT 5 PUBACK with an error reason code (ACL: 0x87 Not authorized)
is 403, retried on the schedule and then dead. A broker that cannot be reached is 503 with ``Retry-After``: like a
webhook endpoint in an outage, rows wait in the outbox without burning their attempt budget, and
only ``delivery.max_age`` ends them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from agent.delivery.records import Delivery
from agent.delivery.senders.base import Destination, SendOutcome
from agent.delivery.settings import DeliveryConfig
from agent.mqtt.link import LinkDown, MqttLink, PublishRefused
from agent.mqtt.settings import MqttConfig, MqttEndpoint
from agent.mqtt.topics import URL_PREFIX


def down_outcome(error: str, latency: float, next_attempt_at: float | None, now: float) -> SendOutcome:
    """Throttled until the link's next reconnect attempt (the dispatcher clamps it to its minimum)."""
    wait = 1 if next_attempt_at is None else max(1, math.ceil(next_attempt_at - now))
    return SendOutcome(503, latency, {"Retry-After": str(wait)}, error_class="mqtt_down", error=error)


class MqttSender:
    def __init__(self, config: DeliveryConfig) -> None:
        self.config = config
        self._links: dict[MqttConfig, MqttLink] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to open yet: ``configure`` names the brokers."""

    def configure(self, destinations: Sequence[Destination]) -> None:
        """The brokers the configured destinations use: a link opens now for each new one (birth
        message and link state from the start, not at the first row) and the link of a broker no
        longer used closes (``offline``), so an ``mqtt:`` change applies at a reload. Rows waiting
        for a PUBACK on a closing link fail as ``LinkDown`` and are sent again on the new one."""
        brokers = {d.broker for d in destinations if isinstance(d, MqttEndpoint) and d.broker is not None}
        for broker in brokers - set(self._links):
            self._open(broker)
        for broker in set(self._links) - brokers:
            task = asyncio.create_task(self._links.pop(broker).stop(), name="mqtt-link-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _open(self, broker: MqttConfig) -> MqttLink:
        link = self._links[broker] = MqttLink(broker)
        link.open()
        return link

    def links(self) -> list[MqttLink]:
        """The open links, for metrics and health."""
        return list(self._links.values())

    async def link(self, broker: MqttConfig) -> MqttLink:
        link = self._links.get(broker) or self._open(broker)
        if link.connects == 0:
            # Rows that arrive before the first connect wait for it instead of being throttled.
            await link.wait_connected(broker.connect_timeout)
        return link

    async def send(self, destination: Destination, row: Delivery, now: float) -> SendOutcome:
        if not isinstance(destination, MqttEndpoint):
            raise TypeError(f"mqtt sender got a {type(destination).__name__} for {destination.key}")
        started = time.perf_counter()
        if destination.broker is None:
            # check-config refuses this; a reload race must still not lose the row.
            return SendOutcome(503, 0.0, {}, error_class="config", error="no mqtt: broker connection")
        link = await self.link(destination.broker)
        target = destination.target
        try:
            await link.publish(
                row.url.removeprefix(URL_PREFIX), row.body, target.qos, target.retain, row.message_id
            )
        except LinkDown as exc:
            return down_outcome(str(exc), time.perf_counter() - started, link.next_attempt_at, now)
        except PublishRefused as exc:
            # 403: a failed attempt on the retry schedule, then dead; the history says why.
            return SendOutcome(403, time.perf_counter() - started, error=str(exc))
        return SendOutcome(200, time.perf_counter() - started)

    async def close(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            await link.stop()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def create(config: DeliveryConfig) -> MqttSender:
    return MqttSender(config)
