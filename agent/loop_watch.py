"""Watching the one event loop: how late it runs callbacks (lag sampling, to find stalls) and the
episodes in which accepting API connections fails for want of file descriptors."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("agent.runtime")

# asyncio gives no "accept works again" signal: an EMFILE episode is over after this long.
ACCEPT_EPISODE_SECONDS = 60.0
LAG_SAMPLE_SECONDS = 0.1
# A stall this long is logged (with the longest so far), so an operator sees it without /metrics.
STALL_LOG_SECONDS = 0.25
GC_LOG_SECONDS = 0.05
# After start, when the collectors' connections are up, long-lived objects are frozen once more.
GC_SETTLE_SECONDS = 30.0
# How often the young generation is collected whatever CPython's allocation count says (GcPauses).
YOUNG_SWEEP_SECONDS = 0.05
# A full collection comes after this many collections of the middle generation (CPython: 10).
# Each machine's wait lives a poll interval and is promoted to the oldest generation, so CPython's
# other condition (a quarter of the long-lived objects new since the last full collection) always
# holds: at 5,000 machines one every ~3 s, 10-30 ms each, freeing nothing (bench/stalls.py). Now
# about one a minute; cyclic garbage that reached the oldest generation waits that long.
FULL_AFTER = 100


class LoopLag:
    """Sleeps ``interval`` again and again and records how much later than asked it woke up: the
    time the loop spent on something else (a callback that blocked it, or simply too much work)."""

    def __init__(self, observe: Callable[[float], None], interval: float = LAG_SAMPLE_SECONDS) -> None:
        self._observe = observe
        self._interval = interval
        self.worst = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self._interval)
            lag = max(0.0, loop.time() - asked - self._interval)
            self._observe(lag)
            if lag > self.worst:
                self.worst = lag
                if lag >= STALL_LOG_SECONDS:
                    log.warning("event_loop_stalled", seconds=round(lag, 3))


class AcceptEpisodes:
    """asyncio retries a listening socket's accept() every second while descriptors run out
    (EMFILE); one line per episode instead of one per retry, and one when it clears."""

    def __init__(self) -> None:
        self.failing = False

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            if not self.failing:
                self.failing = True
                exc = context.get("exception")
                log.error("api_accept_failing", error=repr(exc), detail="out of file descriptors")
                loop.call_later(ACCEPT_EPISODE_SECONDS, self._over)
            return
        loop.default_exception_handler(context)

    def _over(self) -> None:
        self.failing = False


def start_without_gc() -> None:
    """Keep the garbage collector off until the runtime is READY (``GcPauses.install``).

    Start-up builds hundreds of thousands of objects that live as long as the process (parsed
    configuration, derivers, drivers) and almost no garbage cycles: at 2,000 machines, collections
    that walked them again and again were a third of loading the configuration.
    """
    gc.disable()


class GcPauses:
    """Logs a garbage collection that held the loop for ``GC_LOG_SECONDS`` or more (a full
    collection walks every tracked object: with thousands of machines that is a stall to name)."""

    def __init__(self, observe: Callable[[int, float], None] | None = None) -> None:
        self._observe = observe
        self._started = 0.0
        self.worst = 0.0
        self._sweeper: asyncio.TimerHandle | None = None
        self._thresholds: tuple[int, int, int] | None = None  # CPython's, while ours are set

    def install(self) -> None:
        # Configuration, derivers and drivers live as long as the process: frozen, out of the
        # collector's sight, a full collection no longer walks them. ``edge-agent run`` keeps the
        # collector off until here (see ``start_without_gc``): it is back on from now on.
        gc.freeze()
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            gc.set_threshold(self._thresholds[0], self._thresholds[1], FULL_AFTER)
        gc.enable()
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        self._sweep()

    def _sweep(self) -> None:
        """CPython 3.11 starts a young collection when allocations minus *all* deallocations pass
        700; when the objects dying are old ones (each machine's wait of the last second), young
        ones pile up uncounted: at 5,000 machines 100,000 of them, walked in one 50-100 ms stall.
        Collected every ``YOUNG_SWEEP_SECONDS`` instead, the young generation stays at a few
        thousand objects (about a millisecond)."""
        gc.collect(0)
        self._sweeper = asyncio.get_running_loop().call_later(YOUNG_SWEEP_SECONDS, self._sweep)

    def settle(self) -> None:
        """Once the connections are up: collect what start-up left behind, then freeze the rest
        (transports, protocols, tasks: they live as long as the process). Afterwards a full
        collection walks only what polls create (at 2,000 machines: 90-130 ms pauses before)."""
        if self._callback in gc.callbacks:  # not after the runtime stopped
            gc.collect()
            gc.freeze()

    def remove(self) -> None:
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        generation = int(info.get("generation", -1))
        if self._observe is not None:
            self._observe(generation, seconds)
        if seconds > self.worst:
            self.worst = seconds
        if seconds >= GC_LOG_SECONDS:
            log.warning(
                "gc_pause", generation=generation, seconds=round(seconds, 3), collected=info.get("collected")
            )
