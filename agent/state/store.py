"""Each machine's derivation snapshot in SQLite (state directory), so a restart keeps the clocks.

WAL with ``synchronous=FULL``: a snapshot that ``save`` returned for survives a power loss. One
row per machine, replaced on every save; ``save_many`` writes all machines in one transaction
(one commit, one fsync) because per-commit cost dominates. The schema version lives in
``PRAGMA user_version``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import structlog

from agent.derive.errors import DeriveError

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS machine_state (
    machine_id TEXT PRIMARY KEY,
    snapshot   TEXT NOT NULL,
    saved_at   REAL NOT NULL
)
"""


class StoreError(DeriveError):
    """The state database cannot be used; the message names the file and what is wrong."""


class StateStore:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> StateStore:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the state database: {exc}") from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            async with db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: written by a newer edge-agent (schema {version}, this one knows {SCHEMA_VERSION})"
                )
            if version < SCHEMA_VERSION:
                await db.execute(_SCHEMA)
                await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                await db.commit()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise StoreError(f"{path}: not a usable state database: {exc}") from exc
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def save(self, machine_id: str, snapshot: Mapping[str, Any], now: float | None = None) -> None:
        await self.save_many({machine_id: snapshot}, now)

    async def save_many(
        self, snapshots: Mapping[str, Mapping[str, Any] | str], now: float | None = None
    ) -> None:
        """Replace the rows of these machines in one transaction; returns once it is durable. A
        ``str`` value is a snapshot already encoded as JSON (the saver encodes in slices)."""
        if not snapshots:
            return
        saved_at = time.time() if now is None else now
        rows = [
            (mid, snap if isinstance(snap, str) else json.dumps(snap, separators=(",", ":")), saved_at)
            for mid, snap in snapshots.items()
        ]
        try:
            await self._db.executemany(
                "INSERT INTO machine_state (machine_id, snapshot, saved_at) VALUES (?, ?, ?) "
                "ON CONFLICT(machine_id) DO UPDATE SET snapshot = excluded.snapshot, saved_at = excluded.saved_at",
                rows,
            )
            await self._db.commit()
        except sqlite3.Error as exc:
            await self._db.rollback()
            raise StoreError(f"{self.path}: saving derived state failed: {exc}") from exc

    async def load_all(self) -> dict[str, dict[str, Any]]:
        """Every stored snapshot by machine id; an undecodable row is logged and skipped."""
        out: dict[str, dict[str, Any]] = {}
        try:
            async with self._db.execute(
                "SELECT machine_id, snapshot FROM machine_state ORDER BY machine_id"
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading derived state failed: {exc}") from exc
        for machine_id, text in rows:
            try:
                data = json.loads(text)
            except (TypeError, ValueError) as exc:
                log.warning(
                    "derive_state_unreadable", machine=machine_id, path=str(self.path), error=str(exc)
                )
                continue
            if isinstance(data, dict):
                out[str(machine_id)] = data
            else:
                log.warning(
                    "derive_state_unreadable", machine=machine_id, path=str(self.path), error="not an object"
                )
        return out

    async def delete(self, machine_id: str) -> None:
        """Forget a machine (removed from the configuration)."""
        await self._db.execute("DELETE FROM machine_state WHERE machine_id = ?", (machine_id,))
        await self._db.commit()

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
