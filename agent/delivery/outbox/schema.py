"""The outbox file: its tables and indexes, migrations between versions, and how a connection is set up.

``outbox.sqlite3`` holds three tables: ``deliveries`` (one row per message and endpoint),
``attempts`` (one row per finished attempt) and ``endpoint_state`` (endpoints disabled after 410).
The version is ``PRAGMA user_version``; each migration runs in its own transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import structlog

from agent.delivery.outbox.writer import RESERVE_SUFFIX
from agent.delivery.records import OutboxError, OutboxUnavailable

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 3

MIGRATIONS: tuple[str, ...] = (
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


def _move_aside(path: Path, aside: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(aside.with_name(aside.name + suffix))


async def connect(path: Path) -> aiosqlite.Connection:
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


async def open_writer(path: Path, clock: Callable[[], float]) -> aiosqlite.Connection:
    """The one connection that writes: the file created or migrated, a damaged file moved aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        w = await _connect_with_reserve(path)
    except sqlite3.DatabaseError as exc:
        if "not a database" not in str(exc) and "malformed" not in str(exc):
            raise OutboxUnavailable(f"{path}: {exc}") from exc
        aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
        # Keep the damaged file for forensics; a fresh outbox lets the agent keep working.
        log.error("outbox_corrupt_file", path=str(path), moved_to=str(aside), error=str(exc))
        _move_aside(path, aside)
        w = await connect(path)
    try:
        await migrate(w, path)
    except BaseException:
        await w.close()
        raise
    return w


async def _connect_with_reserve(path: Path) -> aiosqlite.Connection:
    """On a full disk SQLite cannot even create its -shm/-wal files ("disk I/O error"): give it the
    reserve kept beside the outbox for this (see writer.RESERVE_BYTES) and try once more."""
    try:
        return await connect(path)
    except sqlite3.OperationalError as exc:
        reserve = path.with_name(path.name + RESERVE_SUFFIX)
        if not reserve.exists():
            raise
        reserve.unlink()
        log.warning("outbox_reserve_released", path=str(reserve), reason=str(exc))
        return await connect(path)


async def recover_in_flight(w: aiosqlite.Connection, path: Path) -> bool:
    """Put rows a dead process left in flight back to pending. False when the disk is full (or the
    file cannot be written): the agent starts anyway, degraded, and the writer retries it."""
    try:
        cur = await w.execute("UPDATE deliveries SET state = 'pending' WHERE state = 'in_flight'")
    except sqlite3.OperationalError as exc:
        log.error("outbox_recovery_deferred", path=str(path), error=str(exc))
        return False
    if cur.rowcount:
        log.warning("outbox_recovered_in_flight", rows=cur.rowcount)
    return True


async def migrate(conn: aiosqlite.Connection, path: Path) -> None:
    rows = await conn.execute_fetchall("PRAGMA user_version")
    version = int(next(iter(rows))[0])
    if version > len(MIGRATIONS):
        raise OutboxError(
            f"{path}: schema version {version} is newer than this edge-agent understands "
            f"({len(MIGRATIONS)}); upgrade edge-agent or move the file aside"
        )
    for target in range(version + 1, len(MIGRATIONS) + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[target - 1].split(";"):
                if stmt.strip():
                    await conn.execute(stmt)
            await conn.execute(f"PRAGMA user_version = {target}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("outbox_migrated", path=str(path), version=target)
