"""The durable outbox: every webhook is committed here (SQLite, WAL, synchronous=FULL) before it is sent.

One writer task owns all writes and group-commits whatever is queued when it gets to run, so
concurrent ``enqueue`` calls share one transaction and one fsync. Reads use a second connection:
WAL gives them a committed snapshot that never sees a transaction that may still roll back.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import structlog

from agent.delivery.retry import (
    CANCELLED,
    DEAD,
    DELIVERED,
    IN_FLIGHT,
    PENDING,
    STATES,
    Decision,
)
from agent.delivery.settings import OutboxConfig

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 3
RESPONSE_KEEP = 1024
# Rows deleted per prune transaction: each is short, so enqueues queued meanwhile commit in between.
PRUNE_BATCH = 1000
# Rough per-row cost beyond the body (columns, index entries), for the size check before a write.
ROW_OVERHEAD = 256
MAKE_ROOM_MAX = 5000
_FINISHED = (DELIVERED, CANCELLED)

_MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        url TEXT NOT NULL,
        workflow TEXT NOT NULL,
        event_type TEXT NOT NULL,
        machine_id TEXT,
        event_id TEXT NOT NULL,
        body BLOB NOT NULL,
        checksum INTEGER NOT NULL,
        created_at REAL NOT NULL,
        age_base REAL NOT NULL,
        due_at REAL NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        throttled INTEGER NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_fifo ON deliveries(endpoint, id) WHERE state = 'pending';
    CREATE INDEX deliveries_due ON deliveries(endpoint, due_at) WHERE state = 'pending';
    CREATE INDEX deliveries_event ON deliveries(event_id, workflow);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL,
        at REAL NOT NULL,
        status INTEGER,
        latency REAL,
        error_class TEXT,
        error TEXT,
        response BLOB
    );
    CREATE INDEX attempts_delivery ON attempts(delivery_id);
    CREATE TABLE endpoint_state (
        url TEXT PRIMARY KEY,
        disabled_at REAL NOT NULL,
        reason TEXT NOT NULL
    );
    """,
    # v2: a message is accepted once. The pipeline's message ids are deterministic, so a run that is
    # enqueued again after a crash (before its bookkeeping was saved) collapses into the first row.
    """
    DELETE FROM deliveries WHERE id NOT IN (SELECT MIN(id) FROM deliveries GROUP BY message_id);
    CREATE UNIQUE INDEX deliveries_message ON deliveries(message_id);
    """,
    # v3: maintenance without full scans. prune() finds old finished rows by (state, updated_at);
    # counts() counts states on that index (covering) and finds the oldest unfinished row on a small
    # partial index instead of reading every row.
    """
    CREATE INDEX deliveries_state_updated ON deliveries(state, updated_at);
    CREATE INDEX deliveries_active_created ON deliveries(created_at) WHERE state IN ('pending', 'in_flight');
    """,
)


class OutboxError(Exception):
    pass


class OutboxFull(OutboxError):
    """The configured size limit is reached and ``when_full`` forbids making room."""


class OutboxUnavailable(OutboxError):
    """The database cannot be written (disk full, I/O error); keep the items and try again later."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    body: bytes
    not_before: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """A row the dispatcher may send."""

    id: int
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    body: bytes
    created_at: float
    age_base: float
    due_at: float
    attempts: int
    throttled: int


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    id: int
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    state: str
    attempts: int
    created_at: float
    due_at: float
    updated_at: float
    last_status: int | None
    last_error: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status: int | None
    latency: float | None
    error_class: str | None
    error: str | None
    response: bytes


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    summary: DeliverySummary
    body: bytes
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class Execution:
    """One event handled by one workflow: the deliveries it produced."""

    event_id: str
    workflow: str
    event_type: str
    machine_id: str | None
    created_at: float
    deliveries: int
    states: dict[str, int]
    last_error: str | None
    cursor: int


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int
    in_flight: int
    delivered: int
    dead: int
    cancelled: int
    oldest_pending_age: float | None
    bytes: int


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    url: str
    counts: dict[str, int]
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished HTTP attempt and the row's next state."""

    delivery_id: int
    at: float
    status: int | None
    latency: float | None
    error_class: str | None
    error: str | None
    response: bytes
    decision: Decision


@dataclass(frozen=True, slots=True)
class Candidates:
    rows: list[Delivery]
    corrupt: list[tuple[int, str]]
    next_due: float | None


@dataclass
class OutboxStats:
    """Counters for /metrics and logs."""

    committed_batches: int = 0
    enqueued: int = 0
    rejected_full: int = 0
    write_errors: int = 0
    corrupt_rows: int = 0
    unavailable: bool = False


@dataclass
class _Op:
    statements: list[tuple[str, list[Sequence[Any]]]]
    future: asyncio.Future[list[int]]
    mergeable: bool = False
    on_commit: Callable[[], None] | None = None


_ROW_COLS = (
    "id, message_id, endpoint, url, workflow, event_type, machine_id, event_id, body, checksum, "
    "created_at, age_base, due_at, attempts, throttled"
)
_SUMMARY_COLS = (
    "id, message_id, endpoint, url, workflow, event_type, machine_id, event_id, state, attempts, "
    "created_at, due_at, updated_at, last_status, last_error, length(body)"
)
_INSERT = (
    "INSERT OR IGNORE INTO deliveries (message_id, endpoint, url, workflow, event_type, machine_id, event_id, body, "
    "checksum, created_at, age_base, due_at, state, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'pending',?)"
)
_RECORD = (
    "UPDATE deliveries SET state = ?, due_at = ?, attempts = ?, throttled = ?, last_status = ?, "
    "last_error = ?, updated_at = ? WHERE id = ? AND state = 'in_flight'"
)
_ATTEMPT = (
    "INSERT INTO attempts (delivery_id, at, status, latency, error_class, error, response) "
    "VALUES (?,?,?,?,?,?,?)"
)


def checksum(body: bytes) -> int:
    return zlib.crc32(body)


def _decode_row(r: Sequence[Any]) -> Delivery:
    """A row as written by ``enqueue``; ``ValueError`` for anything else (damage, foreign writes)."""
    (rid, msg_id, endpoint, url, workflow, event_type, machine_id, event_id, body, crc) = r[:10]
    created_at, age_base, due_at, attempts, throttled = r[10:]
    if not isinstance(body, bytes):
        raise ValueError(f"body is {type(body).__name__}, not bytes")
    if not isinstance(crc, int) or checksum(body) != crc:
        raise ValueError("body checksum mismatch")
    for name, v in (("message_id", msg_id), ("endpoint", endpoint), ("url", url), ("workflow", workflow)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{name} is not a non-empty string")
    if "." in msg_id:
        raise ValueError("message_id contains '.'")
    for name, v in (("created_at", created_at), ("age_base", age_base), ("due_at", due_at)):
        if not isinstance(v, int | float):
            raise ValueError(f"{name} is not a number")
    if not isinstance(attempts, int) or not isinstance(throttled, int) or attempts < 0:
        raise ValueError("attempt counters are not integers")
    return Delivery(
        id=rid,
        message_id=msg_id,
        endpoint=endpoint,
        url=url,
        workflow=workflow,
        event_type=str(event_type),
        machine_id=machine_id if isinstance(machine_id, str) else None,
        event_id=str(event_id),
        body=body,
        created_at=float(created_at),
        age_base=float(age_base),
        due_at=float(due_at),
        attempts=attempts,
        throttled=throttled,
    )


def _summary(r: Sequence[Any]) -> DeliverySummary:
    return DeliverySummary(
        id=int(r[0]),
        message_id=str(r[1]),
        endpoint=str(r[2]),
        url=str(r[3]),
        workflow=str(r[4]),
        event_type=str(r[5]),
        machine_id=r[6] if isinstance(r[6], str) else None,
        event_id=str(r[7]),
        state=str(r[8]),
        attempts=r[9] if isinstance(r[9], int) else 0,
        created_at=float(r[10]) if isinstance(r[10], int | float) else 0.0,
        due_at=float(r[11]) if isinstance(r[11], int | float) else 0.0,
        updated_at=float(r[12]) if isinstance(r[12], int | float) else 0.0,
        last_status=r[13] if isinstance(r[13], int) else None,
        last_error=r[14] if isinstance(r[14], str) else None,
        size=int(r[15] or 0),
    )


def _move_aside(path: Path, aside: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(aside.with_name(aside.name + suffix))


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        # Power cuts are normal on a shop floor: FULL syncs the WAL on every commit.
        mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        if next(iter(mode))[0] != "wal":
            raise OutboxError(f"{path}: cannot switch to WAL journal mode")
        await conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        await conn.close()
        raise
    return conn


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
        self._w = writer_conn
        self._r = reader_conn
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = OutboxStats()
        self._rows = 0
        self._active = 0
        self._used_bytes = 0
        self._queued_rows = 0
        self._queued_bytes = 0

    # ---- lifecycle

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
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            w = await _connect(path)
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise OutboxUnavailable(f"{path}: {exc}") from exc
            aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
            # Keep the damaged file for forensics; a fresh outbox lets the agent keep working.
            log.error("outbox.corrupt_file", path=str(path), moved_to=str(aside), error=str(exc))
            _move_aside(path, aside)
            w = await _connect(path)
        try:
            await cls._migrate(w, path)
            if recover:
                cur = await w.execute(
                    "UPDATE deliveries SET state = 'pending' WHERE state = 'in_flight'",
                )
                if cur.rowcount:
                    log.warning("outbox.recovered_in_flight", rows=cur.rowcount)
            r = await _connect(path)
        except BaseException:
            await w.close()
            raise
        box = cls(path, config, clock, w, r)
        try:
            await box._load_counts()
        except BaseException:
            await w.close()
            await r.close()
            raise
        box._writer = asyncio.create_task(box._write_loop(), name="outbox-writer")
        return box

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
        rows = await conn.execute_fetchall("PRAGMA user_version")
        version = int(next(iter(rows))[0])
        if version > len(_MIGRATIONS):
            raise OutboxError(
                f"{path}: schema version {version} is newer than this edge-agent understands "
                f"({len(_MIGRATIONS)}); upgrade edge-agent or move the file aside"
            )
        for target in range(version + 1, len(_MIGRATIONS) + 1):
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _MIGRATIONS[target - 1].split(";"):
                    if stmt.strip():
                        await conn.execute(stmt)
                await conn.execute(f"PRAGMA user_version = {target}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            log.info("outbox.migrated", path=str(path), version=target)

    async def _load_counts(self) -> None:
        rows = await self._r.execute_fetchall(
            "SELECT count(*), coalesce(sum(state IN ('pending', 'in_flight')), 0) FROM deliveries"
        )
        total, active = next(iter(rows))
        self._rows, self._active = int(total), int(active)
        await self._refresh_used_bytes()

    async def _refresh_used_bytes(self) -> None:
        rows = await self._r.execute_fetchall(
            "SELECT (p.page_count - f.freelist_count) * s.page_size "
            "FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s"
        )
        self._used_bytes = int(next(iter(rows))[0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            # Let queued writes finish: they were accepted and their callers wait for them.
            done = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Op([], done))
            with contextlib.suppress(OutboxError):
                await done
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self._w.close()
        await self._r.close()

    async def __aenter__(self) -> Outbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- the writer

    def _submit(
        self,
        statements: list[tuple[str, list[Sequence[Any]]]],
        *,
        mergeable: bool = False,
        on_commit: Callable[[], None] | None = None,
    ) -> asyncio.Future[list[int]]:
        if self._closed:
            raise OutboxError("outbox is closed")
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(statements, fut, mergeable, on_commit))
        return fut

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Op]) -> None:
        results: list[list[int]] = [[] for _ in batch]
        try:
            await self._w.execute("BEGIN IMMEDIATE")
            i = 0
            while i < len(batch):
                if not batch[i].mergeable:
                    for sql, params in batch[i].statements:
                        if len(params) == 1:
                            cur = await self._w.execute(sql, params[0])
                        else:
                            cur = await self._w.executemany(sql, params)
                        results[i].append(cur.rowcount)
                    i += 1
                    continue
                # A run of mergeable ops touches independent rows: one executemany per distinct SQL.
                grouped: dict[str, list[Sequence[Any]]] = {}
                while i < len(batch) and batch[i].mergeable:
                    for sql, params in batch[i].statements:
                        grouped.setdefault(sql, []).extend(params)
                    i += 1
                for sql, params in grouped.items():
                    await self._w.executemany(sql, params)
            await self._w.execute("COMMIT")
        except Exception as exc:  # the writer must survive anything a batch can raise
            with contextlib.suppress(sqlite3.Error):
                await self._w.execute("ROLLBACK")
            self.stats.write_errors += 1
            err: OutboxError
            if isinstance(exc, sqlite3.Error):
                if not self.stats.unavailable:
                    log.error("outbox.write_failed", path=str(self.path), error=str(exc), ops=len(batch))
                self.stats.unavailable = True
                err = OutboxUnavailable(f"outbox {self.path} cannot be written: {exc}")
            else:
                log.error("outbox.write_rejected", path=str(self.path), error=repr(exc), ops=len(batch))
                # Other callers share this transaction: for them it is a transient failure.
                err = OutboxUnavailable(f"outbox {self.path} write failed: {type(exc).__name__}: {exc}")
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(err)
            return
        if self.stats.unavailable:
            log.warning("outbox.writable_again", path=str(self.path))
            self.stats.unavailable = False
        self.stats.committed_batches += 1
        for op, res in zip(batch, results, strict=True):
            if op.on_commit is not None:
                op.on_commit()
            if not op.future.done():
                op.future.set_result(res)

    # ---- enqueue

    async def enqueue(self, items: Sequence[NewDelivery]) -> None:
        """Returns once the rows are durable. ``OutboxFull`` / ``OutboxUnavailable`` otherwise."""
        if not items:
            return
        now = self.clock()
        params: list[Sequence[Any]] = []
        size = 0
        for d in items:
            if not isinstance(d.body, bytes):
                raise TypeError(f"delivery {d.message_id}: body must be bytes")
            for name in ("message_id", "endpoint", "url", "workflow", "event_type", "event_id"):
                if not isinstance(getattr(d, name), str):
                    raise TypeError(f"delivery {d.message_id!r}: {name} must be a string")
            if not isinstance(d.not_before, int | float) or (
                d.machine_id is not None and not isinstance(d.machine_id, str)
            ):
                raise TypeError(
                    f"delivery {d.message_id!r}: not_before must be a number, machine_id str|None"
                )
            if "." in d.message_id or not d.message_id:
                raise ValueError(f"delivery message_id {d.message_id!r} must be non-empty without '.'")
            size += len(d.body) + ROW_OVERHEAD
            params.append(
                (
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
            )
        statements: list[tuple[str, list[Sequence[Any]]]] = []
        if not self._fits(len(items), size):
            statements = self._make_room(len(items), size)
        n = len(items)

        def committed() -> None:
            self._rows += n
            self._active += n
            self._used_bytes += size
            self.stats.enqueued += n

        self._queued_rows += n
        self._queued_bytes += size
        try:
            if statements:
                statements.append((_INSERT, params))
                await self._submit(statements, on_commit=committed)
                await self._load_counts()
            else:
                await self._submit([(_INSERT, params)], mergeable=True, on_commit=committed)
        finally:
            self._queued_rows -= n
            self._queued_bytes -= size

    def _fits(self, rows: int, size: int) -> bool:
        return (
            self._rows + self._queued_rows + rows <= self.config.max_rows
            and self._used_bytes + self._queued_bytes + size <= self.config.max_size
        )

    def _make_room(self, rows: int, size: int) -> list[tuple[str, list[Sequence[Any]]]]:
        active_ok = (
            self._active + self._queued_rows + rows <= self.config.max_rows
            and self._active * ROW_OVERHEAD + self._queued_bytes + size <= self.config.max_size
        )
        if self.config.when_full != "drop_delivered" or not active_ok:
            self.stats.rejected_full += 1
            log.error(
                "outbox.full",
                path=str(self.path),
                rows=self._rows,
                bytes=self._used_bytes,
                max_rows=self.config.max_rows,
                max_size=self.config.max_size,
                when_full=self.config.when_full,
            )
            raise OutboxFull(
                f"outbox {self.path} is full ({self._rows} rows, {self._used_bytes} bytes; limits "
                f"{self.config.max_rows} rows, {self.config.max_size} bytes)"
            )
        # Drop the oldest finished history: a tenth of the limit so this is rare, but never more than
        # a few thousand rows, since it runs inside the enqueue transaction and stalls every writer.
        chunk = max(rows, min(self.config.max_rows // 10, MAKE_ROOM_MAX))
        # ``+state``: walk rows in id order and stop at the limit rather than sort every finished row.
        sel = "SELECT id FROM deliveries WHERE +state IN ('delivered', 'cancelled') ORDER BY id LIMIT ?"
        log.warning("outbox.dropping_history", rows=chunk)
        return [
            (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [(chunk,)]),
            (f"DELETE FROM deliveries WHERE id IN ({sel})", [(chunk,)]),
        ]

    # ---- what the dispatcher uses

    async def candidates(self, endpoint: str, now: float, limit: int, fifo: bool) -> Candidates:
        """Rows of one endpoint that may be sent now, and when the next one becomes due."""
        if fifo:
            rows = await self._r.execute_fetchall(
                f"SELECT {_ROW_COLS} FROM deliveries INDEXED BY deliveries_fifo "
                "WHERE state = 'pending' AND endpoint = ? ORDER BY id LIMIT 1",
                (endpoint,),
            )
        else:
            rows = await self._r.execute_fetchall(
                f"SELECT {_ROW_COLS} FROM deliveries INDEXED BY deliveries_due "
                "WHERE state = 'pending' AND endpoint = ? AND due_at <= ? ORDER BY due_at, id LIMIT ?",
                (endpoint, now, limit),
            )
        good: list[Delivery] = []
        corrupt: list[tuple[int, str]] = []
        next_due: float | None = None
        for r in rows:
            try:
                d = _decode_row(r)
            except (ValueError, TypeError) as exc:
                corrupt.append((int(r[0]), str(exc)))
                continue
            if d.due_at <= now:
                good.append(d)
            else:
                next_due = d.due_at
        if not fifo and len(list(rows)) < limit:
            nxt = await self._r.execute_fetchall(
                "SELECT min(due_at) FROM deliveries INDEXED BY deliveries_due "
                "WHERE state = 'pending' AND endpoint = ? AND due_at > ?",
                (endpoint, now),
            )
            value = next(iter(nxt))[0]
            next_due = float(value) if isinstance(value, int | float) else None
        if corrupt:
            self.stats.corrupt_rows += len(corrupt)
            for rid, why in corrupt:
                log.error("outbox.corrupt_row", id=rid, error=why)
        return Candidates(good, corrupt, next_due)

    async def claim(self, ids: Sequence[int]) -> set[int]:
        """Mark rows in flight; returns the ids really claimed (the CLI may have cancelled one)."""
        if not ids:
            return set()
        now = self.clock()
        marks = ",".join("?" * len(ids))
        res = await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'in_flight', updated_at = ? "
                    f"WHERE id IN ({marks}) AND state = 'pending'",
                    [(now, *ids)],
                )
            ]
        )
        if res[0] == len(ids):
            return set(ids)
        rows = await self._r.execute_fetchall(
            f"SELECT id FROM deliveries WHERE id IN ({marks}) AND state = 'in_flight'", tuple(ids)
        )
        return {int(r[0]) for r in rows}

    async def record(self, records: Sequence[AttemptRecord]) -> None:
        upd: list[Sequence[Any]] = []
        ins: list[Sequence[Any]] = []
        finished = 0
        for rec in records:
            d = rec.decision
            if d.state != PENDING:
                finished += 1
            upd.append(
                (d.state, d.due_at, d.attempts, d.throttled, rec.status, rec.error, rec.at, rec.delivery_id)
            )
            ins.append(
                (
                    rec.delivery_id,
                    rec.at,
                    rec.status,
                    rec.latency,
                    rec.error_class,
                    rec.error,
                    rec.response[:RESPONSE_KEEP],
                )
            )

        def committed() -> None:
            self._active -= finished

        await self._submit([(_RECORD, upd), (_ATTEMPT, ins)], mergeable=True, on_commit=committed)

    async def release(self, ids: Sequence[int], error: str) -> None:
        """In-flight rows go back to pending without counting an attempt (shutdown)."""
        now = self.clock()
        await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'pending', last_error = ?, updated_at = ? "
                    "WHERE id = ? AND state = 'in_flight'",
                    [(error, now, i) for i in ids],
                )
            ]
        )

    async def mark_corrupt(self, rows: Sequence[tuple[int, str]]) -> None:
        now = self.clock()
        await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'dead', last_error = ?, updated_at = ? WHERE id = ?",
                    [(f"corrupt row: {why}", now, rid) for rid, why in rows],
                )
            ],
            on_commit=lambda: setattr(self, "_active", self._active - len(rows)),
        )

    async def note_unconfigured(self, configured: Iterable[str]) -> int:
        """Mark pending rows whose endpoint key is no longer configured (they stay pending)."""
        keys = sorted(set(configured))
        marks = ",".join("?" * len(keys))
        where = f"endpoint NOT IN ({marks})" if keys else "1"
        res = await self._submit(
            [
                (
                    "UPDATE deliveries SET last_error = 'endpoint not configured', updated_at = ? "
                    f"WHERE state = 'pending' AND {where} "
                    "AND coalesce(last_error, '') != 'endpoint not configured'",
                    [(self.clock(), *keys)],
                )
            ]
        )
        return res[0]

    async def note_held(self, endpoint: str, error: str) -> None:
        """Say on the pending rows why an endpoint is not being sent to (disabled)."""
        await self._submit(
            [
                (
                    "UPDATE deliveries INDEXED BY deliveries_due SET last_error = ? "
                    "WHERE state = 'pending' AND endpoint = ? "
                    "AND coalesce(last_error, '') != ?",
                    [(error, endpoint, error)],
                )
            ]
        )

    async def disable_endpoint(self, url: str, reason: str) -> None:
        await self._submit(
            [
                (
                    "INSERT OR REPLACE INTO endpoint_state (url, disabled_at, reason) VALUES (?, ?, ?)",
                    [(url, self.clock(), reason)],
                )
            ]
        )

    async def enable_endpoint(self, url: str) -> bool:
        res = await self._submit([("DELETE FROM endpoint_state WHERE url = ?", [(url,)])])
        return res[0] > 0

    async def disabled_endpoints(self) -> dict[str, str]:
        rows = await self._r.execute_fetchall("SELECT url, reason FROM endpoint_state")
        return {str(u): str(r) for u, r in rows}

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
            res = await self._submit(
                [
                    (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [(cutoff, batch)]),
                    (f"DELETE FROM deliveries WHERE id IN ({sel})", [(cutoff, batch)]),
                ]
            )
            total += res[1]
            if res[1] < batch:
                break
        await self._load_counts()
        if total:
            log.info("outbox.pruned", rows=total)
        return total

    async def set_page_limit(self, pages: int) -> int:
        """``PRAGMA max_page_count`` on the writer (the disk-full drill); returns the effective limit."""
        rows = await self._w.execute_fetchall(f"PRAGMA max_page_count = {int(pages)}")
        return int(next(iter(rows))[0])

    # ---- queries for the API and the CLI

    async def list(
        self,
        state: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: int | None = None,
        endpoint: str | None = None,
    ) -> Page:
        """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        where, args = self._filters(state=state, workflow=workflow, since=since, endpoint=endpoint)
        if cursor is not None:
            where.append("id < ?")
            args.append(cursor)
        sql = f"SELECT {_SUMMARY_COLS} FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = list(await self._r.execute_fetchall(sql, (*args, limit + 1)))
        items = [_summary(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    @staticmethod
    def _filters(
        *,
        state: str | None = None,
        workflow: str | None = None,
        since: float | None = None,
        endpoint: str | None = None,
    ) -> tuple[builtins.list[str], builtins.list[Any]]:
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
            # ``+state``: newest-first pages walk ids and stop at the limit; the state index would
            # make SQLite sort every row in that state first.
            where.append("+state = ?")
            args.append(state)
        if workflow is not None:
            where.append("workflow = ?")
            args.append(workflow)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if endpoint is not None:
            where.append("endpoint = ?")
            args.append(endpoint)
        return where, args

    async def get(self, delivery_id: int) -> DeliveryDetail | None:
        rows = list(
            await self._r.execute_fetchall(
                f"SELECT {_SUMMARY_COLS}, body FROM deliveries WHERE id = ?", (delivery_id,)
            )
        )
        if not rows:
            return None
        r = rows[0]
        att = await self._r.execute_fetchall(
            "SELECT at, status, latency, error_class, error, response FROM attempts "
            "WHERE delivery_id = ? ORDER BY id",
            (delivery_id,),
        )
        body = r[16] if isinstance(r[16], bytes) else str(r[16]).encode()
        return DeliveryDetail(
            _summary(r),
            body,
            tuple(
                Attempt(
                    float(a[0]),
                    a[1],
                    a[2],
                    a[3],
                    a[4],
                    a[5] if isinstance(a[5], bytes) else b"",
                )
                for a in att
            ),
        )

    async def retry(self, delivery_id: int) -> bool:
        """Send again now with a fresh attempt budget (any state but in flight)."""
        now = self.clock()
        res = await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'pending', due_at = ?, age_base = ?, attempts = 0, "
                    "throttled = 0, updated_at = ? WHERE id = ? AND state != 'in_flight'",
                    [(now, now, now, delivery_id)],
                )
            ]
        )
        await self._load_counts()
        return res[0] > 0

    async def retry_dead(self) -> int:
        now = self.clock()
        res = await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'pending', due_at = ?, age_base = ?, attempts = 0, "
                    "throttled = 0, updated_at = ? WHERE state = 'dead' AND last_error NOT LIKE 'corrupt row:%'",
                    [(now, now, now)],
                )
            ]
        )
        await self._load_counts()
        return res[0]

    async def cancel(self, delivery_id: int) -> bool:
        res = await self._submit(
            [
                (
                    "UPDATE deliveries SET state = 'cancelled', updated_at = ? "
                    "WHERE id = ? AND state IN ('pending', 'dead')",
                    [(self.clock(), delivery_id)],
                )
            ]
        )
        await self._load_counts()
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
        res = await self._submit(
            [
                (f"DELETE FROM attempts WHERE delivery_id IN ({sel})", [tuple(args)]),
                (f"DELETE FROM deliveries WHERE id IN ({sel})", [tuple(args)]),
            ]
        )
        await self._load_counts()
        return res[1]

    async def counts(self) -> OutboxCounts:
        rows = await self._r.execute_fetchall("SELECT state, count(*) FROM deliveries GROUP BY state")
        by = {str(s): int(n) for s, n in rows}
        oldest = list(
            await self._r.execute_fetchall(
                "SELECT created_at FROM deliveries INDEXED BY deliveries_active_created "
                "WHERE state IN ('pending', 'in_flight') ORDER BY created_at LIMIT 1"
            )
        )
        first = oldest[0][0] if oldest else None
        await self._refresh_used_bytes()
        return OutboxCounts(
            pending=by.get(PENDING, 0),
            in_flight=by.get(IN_FLIGHT, 0),
            delivered=by.get(DELIVERED, 0),
            dead=by.get(DEAD, 0),
            cancelled=by.get(CANCELLED, 0),
            oldest_pending_age=(self.clock() - float(first)) if isinstance(first, int | float) else None,
            bytes=self._used_bytes,
        )

    async def executions(
        self,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> Page:
        """Deliveries grouped by (event, workflow), newest first: the workflow history."""
        where, args = self._filters(workflow=workflow, since=since)
        sql = (
            "SELECT event_id, workflow, min(event_type), min(machine_id), min(created_at), count(*), "
            "sum(state = 'pending'), sum(state = 'in_flight'), sum(state = 'delivered'), "
            "sum(state = 'dead'), sum(state = 'cancelled'), max(last_error), max(id) FROM deliveries"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY event_id, workflow"
        if cursor is not None:
            sql += " HAVING max(id) < ?"
            args.append(cursor)
        sql += " ORDER BY max(id) DESC LIMIT ?"
        rows = list(await self._r.execute_fetchall(sql, (*args, limit + 1)))
        items = []
        for r in rows[:limit]:
            states = dict(zip(STATES, (int(x or 0) for x in r[6:11]), strict=True))
            items.append(
                Execution(
                    event_id=str(r[0]),
                    workflow=str(r[1]),
                    event_type=str(r[2]),
                    machine_id=r[3] if isinstance(r[3], str) else None,
                    created_at=float(r[4]),
                    deliveries=int(r[5]),
                    states={k: v for k, v in states.items() if v},
                    last_error=r[11] if isinstance(r[11], str) else None,
                    cursor=int(r[12]),
                )
            )
        return Page(items, items[-1].cursor if len(rows) > limit else None)

    async def endpoint_summary(self) -> builtins.list[EndpointSummary]:
        rows = await self._r.execute_fetchall(
            "SELECT url, state, count(*) FROM deliveries GROUP BY url, state"
        )
        disabled = await self.disabled_endpoints()
        by: dict[str, dict[str, int]] = {}
        for url, state, n in rows:
            by.setdefault(str(url), {})[str(state)] = int(n)
        for url in disabled:
            by.setdefault(url, {})
        return [EndpointSummary(u, by[u], disabled.get(u)) for u in sorted(by)]


__all__ = [
    "AttemptRecord",
    "Candidates",
    "Delivery",
    "DeliveryDetail",
    "DeliverySummary",
    "Execution",
    "NewDelivery",
    "Outbox",
    "OutboxCounts",
    "OutboxError",
    "OutboxFull",
    "OutboxStats",
    "OutboxUnavailable",
    "Page",
]
