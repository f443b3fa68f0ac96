"""Keeps long-running parts alive: a part that fails is logged, restarted with backoff, and counted.

A failing part (one machine's collector, the dispatcher, the ticker) never takes the others down.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

PartFactory = Callable[[], Awaitable[None]]


@dataclass
class PartState:
    name: str
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self, *, backoff_start: float = 1.0, backoff_max: float = 60.0, stable_after: float = 60.0
    ) -> None:
        self._parts: dict[str, PartState] = {}
        self._backoff_start = backoff_start
        self._backoff_max = backoff_max
        self._stable_after = stable_after

    @property
    def parts(self) -> dict[str, PartState]:
        return dict(self._parts)

    def start(self, name: str, factory: PartFactory) -> None:
        if name in self._parts and self._parts[name].task is not None:
            raise RuntimeError(f"part {name!r} is already running")
        state = PartState(name)
        self._parts[name] = state
        state.task = asyncio.create_task(self._keep(state, factory), name=name)

    async def _keep(self, state: PartState, factory: PartFactory) -> None:
        delay = self._backoff_start
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await factory()
                log.warning("part_exited", part=state.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.error("part_failed", part=state.name, error=state.last_error, exc_info=True)
            state.restarts += 1
            if loop.time() - started > self._stable_after:
                delay = self._backoff_start
            wait = delay * (0.8 + 0.4 * random.random())
            log.info("part_restarting", part=state.name, in_seconds=round(wait, 2), restarts=state.restarts)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._backoff_max)

    async def stop(self, name: str) -> None:
        state = self._parts.pop(name, None)
        if state is None or state.task is None:
            return
        state.task.cancel()
        await asyncio.gather(state.task, return_exceptions=True)

    async def stop_all(self) -> None:
        names = list(self._parts)
        await asyncio.gather(*(self.stop(n) for n in names))
