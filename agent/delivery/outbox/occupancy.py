"""How full the outbox is: row counts and bytes, kept in memory so an enqueue checks its limits
without a query, and re-read from the file after anything that deletes or revives many rows."""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite


@dataclass
class Occupancy:
    rows: int = 0
    active: int = 0  # pending or in flight: what making room can never drop
    used_bytes: int = 0
    # Accepted by ``enqueue`` but not yet committed: counted so concurrent callers cannot overshoot.
    queued_rows: int = 0
    queued_bytes: int = 0

    async def reload(self, reader: aiosqlite.Connection) -> None:
        rows = await reader.execute_fetchall(
            "SELECT count(*), coalesce(sum(state IN ('pending', 'in_flight')), 0) FROM deliveries"
        )
        total, active = next(iter(rows))
        self.rows, self.active = int(total), int(active)
        await self.refresh_bytes(reader)

    async def refresh_bytes(self, reader: aiosqlite.Connection) -> None:
        rows = await reader.execute_fetchall(
            "SELECT (p.page_count - f.freelist_count) * s.page_size "
            "FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s"
        )
        self.used_bytes = int(next(iter(rows))[0])
