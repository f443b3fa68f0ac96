"""One timer for every collector's wait between two polls.

``asyncio.sleep`` makes, per machine and cycle, a coroutine, a future, a timer handle (and on uvloop a
libuv timer), a copy of the context and an argument tuple, and all of them live for the whole poll
interval. At 5,000 machines that is 30,000 objects a second which survive into the garbage collector's
older generations; CPython 3.11 also counts their deaths against the young generation's allocations, so
young collections came rarely and then walked 100,000 objects at once (50-100 ms stalls). Here a wait
is one future in a slot's list, and one timer, for the earliest slot, serves them all.
"""

from __future__ import annotations

import asyncio
import heapq
import math

RESOLUTION = 0.002  # seconds per slot: a wait ends at most this much after its time, never before


class Wakeups:
    def __init__(self, resolution: float = RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self._resolution = resolution
        self._slots: dict[int, list[asyncio.Future[None]]] = {}
        self._due: list[int] = []  # heap of the slots in ``_slots``
        self._timer: asyncio.TimerHandle | None = None
        self._armed: int | None = None  # the slot ``_timer`` fires for

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._slots.values())

    def after(self, delay: float) -> asyncio.Future[None]:
        """A future that is done ``delay`` seconds from now (loop time); await it like a sleep.
        Cancelling the awaiting task cancels the future, and the slot then skips it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        slot = math.ceil((loop.time() + max(0.0, delay)) / self._resolution)
        waiters = self._slots.get(slot)
        if waiters is not None:
            waiters.append(future)
            return future
        self._slots[slot] = [future]
        heapq.heappush(self._due, slot)
        if self._armed is None or slot < self._armed:
            self._arm(loop, slot)
        return future

    def close(self) -> None:
        """Cancel every wait (the runtime stops)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed = None
        for waiters in self._slots.values():
            for future in waiters:
                future.cancel()
        self._slots.clear()
        self._due.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = slot
        self._timer = loop.call_at(slot * self._resolution, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop may run a timer a clock tick early: the armed slot is due whatever time() says.
        limit = max(self._armed or 0, math.floor(loop.time() / self._resolution))
        self._timer = self._armed = None
        due = self._due
        while due and due[0] <= limit:
            for future in self._slots.pop(heapq.heappop(due)):
                if not future.done():
                    future.set_result(None)
        if due:
            self._arm(loop, due[0])
