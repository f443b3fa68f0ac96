"""A plain aiomqtt subscriber for tests: what any consumer of the broker would see."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    user_properties: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    messages: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, pred: Any, within: float = 20.0) -> list[Seen]:
        async def loop() -> list[Seen]:
            while True:
                hits = [m for m in self.messages if pred(m)]
                if hits:
                    return hits
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), within)

    async def wait_until(self, check: Any, within: float = 30.0) -> None:
        """Until ``check()`` holds; it is looked at again on every message."""

        async def loop() -> None:
            while not check():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), within)

    async def wait_count(self, n: int, pred: Any = lambda m: True, within: float = 30.0) -> list[Seen]:
        async def loop() -> list[Seen]:
            while True:
                hits = [m for m in self.messages if pred(m)]
                if len(hits) >= n:
                    return hits
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(loop(), within)


@contextlib.asynccontextmanager
async def subscribe(
    port: int, topic: str, *, qos: int = 1, username: str | None = None, password: str | None = None
) -> AsyncIterator[Collector]:
    got = Collector()
    async with aiomqtt.Client(
        "127.0.0.1", port, username=username, password=password, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(topic, qos=qos)

        async def pump() -> None:
            async for m in client.messages:
                props = getattr(m.properties, "UserProperty", None) or []
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                got.messages.append(Seen(str(m.topic), payload, m.retain, m.qos, dict(props)))
                got.changed.set()

        task = asyncio.create_task(pump())
        try:
            yield got
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
