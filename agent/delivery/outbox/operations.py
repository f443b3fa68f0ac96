"""Operator and maintenance writes on history: retry, cancel, purge, and the periodic prune.

All of them go through the writer; each re-reads the occupancy afterwards because it may delete or
revive many rows at once.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
import structlog

from agent.delivery.outbox.occupancy import Occupancy
from agent.delivery.outbox.writer import Writer
from agent.delivery.retry import CANCELLED, DEAD, DELIVERED, IN_FLIGHT, STATES
from agent.delivery.settings import OutboxConfig

log = structlog.get_logger(__name__)

# Rows deleted per prune transaction: each is short, so enqueues queued meanwhile commit in between.
PRUNE_BATCH = 1000


class Operations:
    def __init__(
        self,
        config: OutboxConfig,
        clock: Callable[[], float],
        writer: Writer,
        reader: aiosqlite.Connection,
        occupancy: Occupancy,
    ) -> None:
        self.config = config
        self.clock = clock
        self._writer = writer
        self._r = reader
        self._occ = occupancy

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        """Delete delivered/cancelled rows older than ``keep_delivered`` (and their attempts), at most
        ``batch`` rows per transaction so the writer is never held for long."""
        cutoff = self.clock() - self.config.keep_delivered
        # Both statements run in one transaction over the same unchanged rows, so the same LIMITed
        # selection picks the same ids for attempts and deliveries.
        sel = (
            "SELECT id FROM deliveries INDEXED BY deliveries_state_updated "
            "WHERE state IN ('delivered', 'cancelled') AND updated_at < ? LIMIT ?"
        )
        total = 0
        while True:
            res = await self._writer.submit(
                [
                    (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [(cutoff, batch)]),
                    (f"DELETE FROM deliveries WHERE id IN ({sel})", [(cutoff, batch)]),
                ]
            )
            total += res[1]
            if res[1] < batch:
                break
        await self._occ.reload(self._r)
        if total:
            log.info("outbox_pruned", rows=total)
        return total

    async def retry(self, delivery_id: int) -> bool:
        """Send again now with a fresh attempt budget (any state but in flight)."""
        now = self.clock()
        res = await self._writer.submit(
            [
                (
                    "UPDATE deliveries SET state = 'pending', due_at = ?, age_base = ?, attempts = 0, "
                    "throttled = 0, updated_at = ? WHERE id = ? AND state != 'in_flight'",
                    [(now, now, now, delivery_id)],
                )
            ]
        )
        await self._occ.reload(self._r)
        return res[0] > 0

    async def retry_dead(self) -> int:
        now = self.clock()
        res = await self._writer.submit(
            [
                (
                    "UPDATE deliveries SET state = 'pending', due_at = ?, age_base = ?, attempts = 0, "
                    "throttled = 0, updated_at = ? WHERE state = 'dead' AND last_error NOT LIKE 'corrupt row:%'",
                    [(now, now, now)],
                )
            ]
        )
        await self._occ.reload(self._r)
        return res[0]

    async def cancel(self, delivery_id: int) -> bool:
        res = await self._writer.submit(
            [
                (
                    "UPDATE deliveries SET state = 'cancelled', updated_at = ? "
                    "WHERE id = ? AND state IN ('pending', 'dead')",
                    [(self.clock(), delivery_id)],
                )
            ]
        )
        await self._occ.reload(self._r)
        return res[0] > 0

    async def purge(
        self,
        states: Sequence[str] = (DELIVERED, DEAD, CANCELLED),
        *,
        endpoint: str | None = None,
        older_than: float | None = None,
    ) -> int:
        """Delete rows (and attempts) in ``states``; in-flight rows are never purged."""
        bad = [s for s in states if s not in STATES or s == IN_FLIGHT]
        if bad or not states:
            raise ValueError(f"cannot purge state(s) {', '.join(bad) or 'none'}")
        where = [f"state IN ({','.join('?' * len(states))})"]
        args: builtins.list[Any] = builtins.list(states)
        if endpoint is not None:
            where.append("endpoint = ?")
            args.append(endpoint)
        if older_than is not None:
            where.append("updated_at < ?")
            args.append(self.clock() - older_than)
        sel = f"SELECT id FROM deliveries WHERE {' AND '.join(where)}"
        res = await self._writer.submit(
            [
                (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [tuple(args)]),
                (f"DELETE FROM deliveries WHERE id IN ({sel})", [tuple(args)]),
            ]
        )
        await self._occ.reload(self._r)
        return res[1]
