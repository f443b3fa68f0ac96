"""The outbox's only writer: one task, one connection, group commit.

Every write of the outbox (enqueue, attempt results, operator actions, pruning) is a list of
statements handed to ``submit``; the writer task commits whatever is queued when it gets to run in
one transaction, so concurrent callers share one fsync. A run of *mergeable* operations (independent
rows, such as inserts and attempt results) becomes one ``executemany`` per distinct statement.

A *lazy* operation is one whose caller goes on without waiting for it (the outcome of a delivered
row: the next row is already being sent). The writer lets it wait up to ``LAZY_COMMIT_SECONDS`` for
company instead of committing it alone; any other operation ends the wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import structlog

from agent.delivery.records import OutboxError, OutboxStats, OutboxUnavailable

log = structlog.get_logger(__name__)

# Kept free beside the outbox: when the disk fills, deleting it gives SQLite room to checkpoint and
# to record the outcome of what is already in flight (the outbox's own state), not new rows.
RESERVE_BYTES = 2 * 1024 * 1024
RESERVE_SUFFIX = ".reserve"

# A FIFO endpoint delivering one row at a time committed each outcome on its own (0.7 commits per
# delivery on asyncio's loop); waiting this long lets consecutive outcomes share a commit (0.07,
# printed by bench/outbox.py), which cut the process CPU per FIFO delivery by a fifth to a third and
# the fsyncs (flash wear) tenfold. The cost: after a crash, outcomes of up to this long are re-sent.
LAZY_COMMIT_SECONDS = 0.01
# ... or until this many operations are queued.
LAZY_COMMIT_OPS = 64

_RECOVER_IN_FLIGHT = "UPDATE deliveries SET state = 'pending' WHERE state = 'in_flight'"

# (SQL, parameter rows): one parameter row runs ``execute``, several run ``executemany``.
Statements = list[tuple[str, list[Sequence[Any]]]]


@dataclass
class _Op:
    statements: Statements
    future: asyncio.Future[list[int]]
    mergeable: bool = False
    on_commit: Callable[[], None] | None = None


class Writer:
    def __init__(self, conn: aiosqlite.Connection, path: Path, stats: OutboxStats) -> None:
        self.conn = conn
        self.path = path
        self.stats = stats
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._urgent = asyncio.Event()  # a queued operation must not wait for company
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.reserve = path.with_name(path.name + RESERVE_SUFFIX)
        # Rows a dead process left in flight that could not be put back at open (disk full).
        self.recovery_pending = False

    def make_reserve(self) -> bool:
        """Preallocate the reserve file (best effort: False when the space is not there)."""
        if self.reserve.exists() and self.reserve.stat().st_size >= RESERVE_BYTES:
            return True
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve.unlink()
            return False
        return True

    def _release_reserve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.reserve.unlink()
            log.warning("outbox_reserve_released", path=str(self.reserve), bytes=RESERVE_BYTES)

    async def _checkpoint(self) -> None:
        """Fold the WAL into the main file and cut it to zero: after a full disk the WAL had grown
        back into the freed space and was never checkpointed, so the outbox stayed unwritable."""
        with contextlib.suppress(sqlite3.Error):
            # Fetched in the thread: a half-read PRAGMA result would keep a statement in progress
            # and make the next COMMIT fail.
            await in_connection_thread(self.conn, _checkpoint_truncate)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_loop(), name="outbox-writer")

    async def close(self) -> None:
        """Let queued writes finish (they were accepted and their callers wait), then stop."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            done = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(_Op([], done))
            self._urgent.set()
            with contextlib.suppress(OutboxError):
                await done
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.conn.close()

    def submit(
        self,
        statements: Statements,
        *,
        mergeable: bool = False,
        on_commit: Callable[[], None] | None = None,
        lazy: bool = False,
    ) -> asyncio.Future[list[int]]:
        """Queue one operation; the future gets each statement's rowcount once committed.

        ``on_commit`` runs right after the commit, before any caller resumes (counters stay exact).
        ``lazy``: the commit may wait up to ``LAZY_COMMIT_SECONDS`` for other operations."""
        if self._closed:
            raise OutboxError("outbox is closed")
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(statements, fut, mergeable, on_commit))
        if not lazy or self._queue.qsize() >= LAZY_COMMIT_OPS:
            self._urgent.set()
        return fut

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), LAZY_COMMIT_SECONDS)
            self._urgent.clear()
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _commit(self, batch: list[_Op]) -> None:
        if self.stats.unavailable:
            await self._checkpoint()  # before writing again, not after: see _checkpoint
        recovered: int | None = None
        try:
            # The whole transaction is one hop to aiosqlite's thread: each awaited call costs
            # 150-210 µs of hand-off, four of them per commit were most of a FIFO delivery's time.
            recovered, results = await in_connection_thread(
                self.conn, _transaction, batch, self.recovery_pending
            )
        except Exception as exc:  # the writer must survive anything a batch can raise
            self._failed(batch, exc)
            return
        if recovered is not None:
            self.recovery_pending = False
            log.warning("outbox_recovered_in_flight", rows=recovered, deferred=True)
        if self.stats.unavailable:
            log.warning("outbox_writable_again", path=str(self.path))
            self.stats.unavailable = False
            self.make_reserve()
        self.stats.committed_batches += 1
        for op, res in zip(batch, results, strict=True):
            if op.on_commit is not None:
                op.on_commit()
            if not op.future.done():
                op.future.set_result(res)

    def _failed(self, batch: list[_Op], exc: Exception) -> None:
        self.stats.write_errors += 1
        err: OutboxError
        if isinstance(exc, sqlite3.Error):
            if not self.stats.unavailable:
                log.error("outbox_write_failed", path=str(self.path), error=str(exc), ops=len(batch))
            self.stats.unavailable = True
            if "full" in str(exc):
                self._release_reserve()
            err = OutboxUnavailable(f"outbox {self.path} cannot be written: {exc}")
        else:
            log.error("outbox_write_rejected", path=str(self.path), error=repr(exc), ops=len(batch))
            # Other callers share this transaction: for them it is a transient failure.
            err = OutboxUnavailable(f"outbox {self.path} write failed: {type(exc).__name__}: {exc}")
        for op in batch:
            if not op.future.done():
                op.future.set_exception(err)


T = TypeVar("T")


async def in_connection_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(sqlite3_connection, *args)`` in the connection's own thread, in one hand-off.

    aiosqlite (pinned in pyproject) has no public call for this; ``_execute`` is what each of its
    public methods uses, and ``_conn`` is only touched inside that thread."""

    def call() -> T:
        return fn(conn._conn, *args)

    result: T = await conn._execute(call)  # type: ignore[no-untyped-call]
    return result


def _checkpoint_truncate(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _transaction(
    db: sqlite3.Connection, batch: list[_Op], recover: bool
) -> tuple[int | None, list[list[int]]]:
    """One transaction for the whole batch (runs in the connection's thread; touches no loop state:
    the ops' statements are plain data and their futures are set by the caller)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # Same transaction: rows a dead process left in flight are pending again only if this commits.
        recovered = db.execute(_RECOVER_IN_FLIGHT).rowcount if recover else None
        results = _execute(db, batch)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    return recovered, results


def _execute(db: sqlite3.Connection, batch: list[_Op]) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in batch]
    i = 0
    while i < len(batch):
        if not batch[i].mergeable:
            for sql, params in batch[i].statements:
                cur = db.execute(sql, params[0]) if len(params) == 1 else db.executemany(sql, params)
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
            db.executemany(sql, params)
    return results
