"""The durable outbox: every delivery is committed here (SQLite, WAL, synchronous=FULL) before it is sent.

``Outbox`` opens the file and wires its parts; each part is a module with one job:

- ``schema``: tables, migrations, connection set-up, a damaged file moved aside;
- ``writer``: the only writer (one task, group commit); every other part submits statements to it;
- ``intake``: ``enqueue`` (validation, size limits, making room);
- ``queue``: what the dispatcher uses (due rows, claim, attempt results, endpoint state);
- ``queries``: read-only views for the API and the CLI;
- ``operations``: operator and maintenance writes (retry, cancel, purge, prune).

Reads use a second connection: WAL gives them a committed snapshot that never sees a transaction
that may still roll back. The methods below only hand on to the part that owns the job.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import aiosqlite

from agent.delivery.outbox.intake import Intake
from agent.delivery.outbox.occupancy import Occupancy
from agent.delivery.outbox.operations import PRUNE_BATCH, Operations
from agent.delivery.outbox.queries import History
from agent.delivery.outbox.queue import DispatchQueue
from agent.delivery.outbox.schema import SCHEMA_VERSION, connect, open_writer, recover_in_flight
from agent.delivery.outbox.writer import Writer
from agent.delivery.records import (
    RESPONSE_KEEP,
    ROW_OVERHEAD,
    Attempt,
    AttemptRecord,
    Candidates,
    Delivery,
    DeliveryDetail,
    DeliverySummary,
    EndpointSummary,
    Execution,
    NewDelivery,
    OutboxCounts,
    OutboxError,
    OutboxFull,
    OutboxStats,
    OutboxUnavailable,
    Page,
    checksum,
)
from agent.delivery.retry import CANCELLED, DEAD, DELIVERED
from agent.delivery.settings import OutboxConfig


class Outbox:
    def __init__(
        self,
        path: Path,
        config: OutboxConfig,
        clock: Callable[[], float],
        writer_conn: aiosqlite.Connection,
        reader_conn: aiosqlite.Connection,
    ) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self.stats = OutboxStats()
        self.reader = reader_conn
        self.occupancy = Occupancy()
        self.writer = Writer(writer_conn, path, self.stats)
        self.intake = Intake(path, config, clock, self.writer, reader_conn, self.occupancy, self.stats)
        self.queue = DispatchQueue(clock, self.writer, reader_conn, self.occupancy, self.stats)
        self.history = History(clock, reader_conn, self.occupancy)
        self.operations = Operations(config, clock, self.writer, reader_conn, self.occupancy)

    @classmethod
    async def open(
        cls,
        path: Path,
        config: OutboxConfig,
        clock: Callable[[], float] = time.time,
        *,
        recover: bool = True,
    ) -> Outbox:
        """Open (creating or migrating) the outbox. ``recover`` puts rows left in flight by a dead
        process back to pending; the CLI passes False because the agent may be running."""
        w = await open_writer(path, clock)
        try:
            r = await connect(path)
            # The writer task is the only writer: SQLite itself refuses a write on this connection.
            await r.execute("PRAGMA query_only = ON")
        except BaseException:
            await w.close()
            raise
        box = cls(path, config, clock, w, r)
        try:
            if recover and not await recover_in_flight(w, path):
                box.writer.recovery_pending = True
                box.stats.unavailable = True
            await box.occupancy.reload(r)
        except BaseException:
            await w.close()
            await r.close()
            raise
        box.writer.make_reserve()
        box.writer.start()
        return box

    @property
    def recovery_pending(self) -> bool:
        """Rows left in flight by a dead process still wait to be put back (the disk was full)."""
        return self.writer.recovery_pending

    async def close(self) -> None:
        if self.writer.closed:
            return
        await self.writer.close()
        await self.reader.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def _w(self) -> aiosqlite.Connection:
        return self.writer.conn

    # ---- intake

    async def enqueue(self, items: Sequence[NewDelivery]) -> None:
        await self.intake.enqueue(items)

    # ---- the dispatcher's queue

    async def candidates(self, endpoint: str, now: float, limit: int, fifo: bool) -> Candidates:
        return await self.queue.candidates(endpoint, now, limit, fifo)

    async def claim(self, ids: Sequence[int]) -> set[int]:
        return await self.queue.claim(ids)

    async def record(self, records: Sequence[AttemptRecord]) -> None:
        await self.queue.record(records)

    async def release(self, ids: Sequence[int], error: str) -> None:
        await self.queue.release(ids, error)

    async def mark_corrupt(self, rows: Sequence[tuple[int, str]]) -> None:
        await self.queue.mark_corrupt(rows)

    async def note_unconfigured(self, configured: Iterable[str]) -> int:
        return await self.queue.note_unconfigured(configured)

    async def note_held(self, endpoint: str, error: str) -> None:
        await self.queue.note_held(endpoint, error)

    async def disable_endpoint(self, url: str, reason: str) -> None:
        await self.queue.disable_endpoint(url, reason)

    async def enable_endpoint(self, url: str) -> bool:
        return await self.queue.enable_endpoint(url)

    async def disabled_endpoints(self) -> dict[str, str]:
        return await self.queue.disabled_endpoints()

    # ---- read-only queries

    async def list(
        self,
        state: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: int | None = None,
        endpoint: str | None = None,
    ) -> Page:
        return await self.history.list(state, workflow, since, limit, cursor, endpoint)

    async def get(self, delivery_id: int) -> DeliveryDetail | None:
        return await self.history.get(delivery_id)

    async def counts(self) -> OutboxCounts:
        return await self.history.counts()

    async def executions(
        self,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> Page:
        return await self.history.executions(workflow, since, limit, cursor)

    async def endpoint_summary(self) -> builtins.list[EndpointSummary]:
        return await self.history.endpoint_summary()

    # ---- operator and maintenance writes

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        return await self.operations.prune(batch)

    async def retry(self, delivery_id: int) -> bool:
        return await self.operations.retry(delivery_id)

    async def retry_dead(self) -> int:
        return await self.operations.retry_dead()

    async def cancel(self, delivery_id: int) -> bool:
        return await self.operations.cancel(delivery_id)

    async def purge(
        self,
        states: Sequence[str] = (DELIVERED, DEAD, CANCELLED),
        *,
        endpoint: str | None = None,
        older_than: float | None = None,
    ) -> int:
        return await self.operations.purge(states, endpoint=endpoint, older_than=older_than)


__all__ = [
    "PRUNE_BATCH",
    "RESPONSE_KEEP",
    "ROW_OVERHEAD",
    "SCHEMA_VERSION",
    "Attempt",
    "AttemptRecord",
    "Candidates",
    "Delivery",
    "DeliveryDetail",
    "DeliverySummary",
    "EndpointSummary",
    "Execution",
    "NewDelivery",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "OutboxFull",
    "OutboxStats",
    "OutboxUnavailable",
    "Page",
    "checksum",
]
