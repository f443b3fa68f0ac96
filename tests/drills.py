"""Fault drills that need a hand on a real part's internals (no production code path does this)."""

from __future__ import annotations

from agent.delivery.outbox import Outbox


async def set_page_limit(outbox: Outbox, pages: int) -> int:
    """``PRAGMA max_page_count`` on the outbox's writer connection: the disk-full drill (SQLite then
    fails every write that needs a new page with SQLITE_FULL). Returns the effective limit."""
    rows = await outbox.writer.conn.execute_fetchall(f"PRAGMA max_page_count = {int(pages)}")
    return int(next(iter(rows))[0])
