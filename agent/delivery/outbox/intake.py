"""Taking new deliveries in: validation, the size limits, making room, the durable insert.

``enqueue`` returns once the rows are committed (the writer group-commits concurrent callers). When
the limits are reached it deletes the oldest finished history in the same transaction as the insert:
history must never block a new delivery (at 17 webhooks/s a 512 MiB outbox filled with delivered rows
in 11 h, long before ``keep_delivered`` expired them, and every webhook after that was refused). Only
when undelivered rows alone fill the limits does ``when_full`` act: it raises ``OutboxFull`` (both
settings: nothing undelivered is ever dropped), logged once per episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from agent.delivery.outbox.occupancy import Occupancy
from agent.delivery.outbox.writer import Statements, Writer
from agent.delivery.records import ROW_OVERHEAD, NewDelivery, OutboxFull, OutboxStats, checksum
from agent.delivery.settings import OutboxConfig

log = structlog.get_logger(__name__)

MAKE_ROOM_MAX = 5000
_INSERT = (
    "INSERT OR IGNORE INTO deliveries (message_id, endpoint, url, workflow, event_type, machine_id, event_id, body, "
    "checksum, created_at, age_base, due_at, state, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'pending',?)"
)


class Intake:
    def __init__(
        self,
        path: Path,
        config: OutboxConfig,
        clock: Callable[[], float],
        writer: Writer,
        reader: aiosqlite.Connection,
        occupancy: Occupancy,
        stats: OutboxStats,
    ) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self._writer = writer
        self._r = reader
        self._occ = occupancy
        self.stats = stats
        self._full = False  # in a refusing episode (logged once)

    async def enqueue(self, items: Sequence[NewDelivery]) -> None:
        """Returns once the rows are durable. ``OutboxFull`` / ``OutboxUnavailable`` otherwise."""
        if not items:
            return
        now = self.clock()
        params = [_insert_params(d, now) for d in items]
        size = sum(len(d.body) + ROW_OVERHEAD for d in items)
        statements: Statements = []
        if not self._fits(len(items), size):
            statements = self._make_room(len(items), size)
        elif self._full:
            self._full = False
            log.info("outbox_not_full", path=str(self.path), rejected_total=self.stats.rejected_full)
        n = len(items)
        occ = self._occ

        def committed() -> None:
            occ.rows += n
            occ.active += n
            occ.used_bytes += size
            self.stats.enqueued += n

        occ.queued_rows += n
        occ.queued_bytes += size
        try:
            if statements:
                statements.append((_INSERT, params))
                await self._writer.submit(statements, on_commit=committed)
                await occ.reload(self._r)
            else:
                await self._writer.submit([(_INSERT, params)], mergeable=True, on_commit=committed)
        finally:
            occ.queued_rows -= n
            occ.queued_bytes -= size

    def _fits(self, rows: int, size: int) -> bool:
        occ = self._occ
        return (
            occ.rows + occ.queued_rows + rows <= self.config.max_rows
            and occ.used_bytes + occ.queued_bytes + size <= self.config.max_size
        )

    def _make_room(self, rows: int, size: int) -> Statements:
        occ = self._occ
        # Bytes of undelivered rows are estimated by their overhead only; with no history at all
        # there is nothing to drop, whatever the estimate says.
        active_ok = (
            occ.rows > occ.active
            and occ.active + occ.queued_rows + rows <= self.config.max_rows
            and occ.active * ROW_OVERHEAD + occ.queued_bytes + size <= self.config.max_size
        )
        if not active_ok:
            self.stats.rejected_full += 1
            if not self._full:
                self._full = True
                log.error(
                    "outbox_full",
                    path=str(self.path),
                    rows=occ.rows,
                    undelivered=occ.active,
                    bytes=occ.used_bytes,
                    max_rows=self.config.max_rows,
                    max_size=self.config.max_size,
                    when_full=self.config.when_full,
                    detail="undelivered rows alone fill the outbox; new deliveries are refused",
                )
            raise OutboxFull(
                f"outbox {self.path} is full ({occ.rows} rows, {occ.used_bytes} bytes; limits "
                f"{self.config.max_rows} rows, {self.config.max_size} bytes)"
            )
        # Drop the oldest finished history: a tenth of the limit so this is rare, but never more than
        # a few thousand rows, since it runs inside the enqueue transaction and stalls every writer.
        chunk = max(rows, min(self.config.max_rows // 10, MAKE_ROOM_MAX))
        # ``+state``: walk rows in id order and stop at the limit rather than sort every finished row.
        sel = "SELECT id FROM deliveries WHERE +state IN ('delivered', 'cancelled') ORDER BY id LIMIT ?"
        log.info("outbox_dropping_history", rows=chunk)
        return [
            (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [(chunk,)]),
            (f"DELETE FROM deliveries WHERE id IN ({sel})", [(chunk,)]),
        ]


def _insert_params(d: NewDelivery, now: float) -> Sequence[Any]:
    """The insert's parameters; ``TypeError`` / ``ValueError`` naming the message for a malformed item."""
    if not isinstance(d.body, bytes):
        raise TypeError(f"delivery {d.message_id}: body must be bytes")
    for name in ("message_id", "endpoint", "url", "workflow", "event_type", "event_id"):
        if not isinstance(getattr(d, name), str):
            raise TypeError(f"delivery {d.message_id!r}: {name} must be a string")
    if not isinstance(d.not_before, int | float) or (
        d.machine_id is not None and not isinstance(d.machine_id, str)
    ):
        raise TypeError(f"delivery {d.message_id!r}: not_before must be a number, machine_id str|None")
    if "." in d.message_id or not d.message_id:
        raise ValueError(f"delivery message_id {d.message_id!r} must be non-empty without '.'")
    return (
        d.message_id,
        d.endpoint,
        d.url,
        d.workflow,
        d.event_type,
        d.machine_id,
        d.event_id,
        d.body,
        checksum(d.body),
        now,
        now,
        max(now, d.not_before),
        now,
    )
