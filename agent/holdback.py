"""Rows on their way into the outbox, held in memory while it refuses them (disk full, I/O error,
``when_full: reject``), in order, and offered again ahead of anything newer.

Beyond ``max_waiting`` rows the newest are rejected, counted and logged (the outbox's own
``when_full: reject``), never dropped silently. The journal forgets a row once the outbox holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import structlog

from agent.delivery.records import NewDelivery, OutboxFull, OutboxUnavailable
from agent.state.journal import Journal

log = structlog.get_logger("agent.pipeline")


class OutboxIntake(Protocol):
    async def enqueue(self, items: Sequence[NewDelivery]) -> None: ...


class HoldBack:
    def __init__(
        self,
        outbox: OutboxIntake,
        journal: Journal,
        on_enqueued: Callable[[], None] | None = None,
        max_waiting: int = 100_000,
    ) -> None:
        self._outbox = outbox
        self._journal = journal
        self._on_enqueued = on_enqueued
        self.max_waiting = max_waiting
        self.waiting: list[NewDelivery] = []
        self.refusing = False  # the outbox refused the last write; rows wait in memory
        self.rejected = 0  # rows given up because even the memory queue was full
        self.discarded = 0  # rows still waiting when the agent stopped: lost (logged, counted)
        # One enqueue at a time: two failing writes that overlapped used to put the newer batch back
        # ahead of the older one, breaking FIFO per endpoint.
        self._lock = asyncio.Lock()

    async def enqueue(self, rows: list[NewDelivery]) -> bool:
        """True when ``rows`` (and anything waiting before them) are durable in the outbox."""
        async with self._lock:
            return await self._enqueue(rows)

    async def _enqueue(self, rows: list[NewDelivery]) -> bool:
        batch = self.waiting + rows
        if not batch:
            return True
        self.waiting = []
        try:
            await self._outbox.enqueue(batch)
        except (OutboxUnavailable, OutboxFull) as exc:
            # Keep the rows (in order, ahead of anything newer) and try again at the next tick.
            self.waiting = batch
            self._hold(exc)
            return False
        if self.refusing:
            log.warning("outbox_accepting_again", delivered_from_memory=len(batch))
            self.refusing = False
        self._journal.drop(batch)
        if self._on_enqueued is not None:
            self._on_enqueued()
        return True

    def withdraw(self, message_ids: Collection[str]) -> list[NewDelivery]:
        """Take rows back out of the waiting queue: their caller was told they were not accepted."""
        taken = [r for r in self.waiting if r.message_id in message_ids]
        self.waiting = [r for r in self.waiting if r.message_id not in message_ids]
        self._journal.drop(taken)
        return taken

    def discard_waiting(self) -> list[NewDelivery]:
        """At stop, what never reached the outbox: logged with its ids and counted, never silent."""
        lost, self.waiting = self.waiting, []
        if lost:
            self.discarded += len(lost)
            log.error(
                "deliveries_lost_at_stop",
                count=len(lost),
                message_ids=[r.message_id for r in lost[:20]],
                more=max(0, len(lost) - 20),
                detail="the outbox refused them until the end (disk full or I/O error)",
            )
        return lost

    def _hold(self, exc: Exception) -> None:
        excess = len(self.waiting) - self.max_waiting
        if excess > 0:
            rejected, self.waiting = self.waiting[-excess:], self.waiting[:-excess]
            self._journal.forget(rejected)
            self.rejected += len(rejected)
            log.error(
                "deliveries_rejected",
                count=len(rejected),
                rejected_total=self.rejected,
                waiting=len(self.waiting),
                first_message_id=rejected[0].message_id,
                reason=str(exc),
            )
        if not self.refusing:
            # Once per episode, not every tick: the condition is also on /readyz and STATUS=.
            log.error(
                "outbox_refused_rows_kept",
                waiting=len(self.waiting),
                error=type(exc).__name__,
                reason=str(exc),
            )
            self.refusing = True
