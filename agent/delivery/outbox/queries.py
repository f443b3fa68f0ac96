"""Read-only views of the outbox for operators (API, CLI): history pages, one delivery with its
attempts, counts per state, workflow executions, endpoints. Nothing here writes."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import aiosqlite

from agent.delivery.outbox.occupancy import Occupancy
from agent.delivery.records import (
    SUMMARY_COLS,
    Attempt,
    DeliveryDetail,
    EndpointSummary,
    Execution,
    OutboxCounts,
    Page,
    decode_summary,
)
from agent.delivery.retry import CANCELLED, DEAD, DELIVERED, IN_FLIGHT, PENDING, STATES


def filters(
    *,
    state: str | None = None,
    workflow: str | None = None,
    since: float | None = None,
    endpoint: str | None = None,
) -> tuple[builtins.list[str], builtins.list[Any]]:
    """WHERE clauses and their arguments; ``ValueError`` for an unknown state."""
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


async def disabled_endpoints(reader: aiosqlite.Connection) -> dict[str, str]:
    rows = await reader.execute_fetchall("SELECT url, reason FROM endpoint_state")
    return {str(u): str(r) for u, r in rows}


class History:
    def __init__(
        self, clock: Callable[[], float], reader: aiosqlite.Connection, occupancy: Occupancy
    ) -> None:
        self.clock = clock
        self._r = reader
        self._occ = occupancy

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
        where, args = filters(state=state, workflow=workflow, since=since, endpoint=endpoint)
        if cursor is not None:
            where.append("id < ?")
            args.append(cursor)
        sql = f"SELECT {SUMMARY_COLS} FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = list(await self._r.execute_fetchall(sql, (*args, limit + 1)))
        items = [decode_summary(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    async def get(self, delivery_id: int) -> DeliveryDetail | None:
        rows = list(
            await self._r.execute_fetchall(
                f"SELECT {SUMMARY_COLS}, body FROM deliveries WHERE id = ?", (delivery_id,)
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
            decode_summary(r),
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
        await self._occ.refresh_bytes(self._r)
        return OutboxCounts(
            pending=by.get(PENDING, 0),
            in_flight=by.get(IN_FLIGHT, 0),
            delivered=by.get(DELIVERED, 0),
            dead=by.get(DEAD, 0),
            cancelled=by.get(CANCELLED, 0),
            oldest_pending_age=(self.clock() - float(first)) if isinstance(first, int | float) else None,
            bytes=self._occ.used_bytes,
        )

    async def executions(
        self,
        workflow: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> Page:
        """Deliveries grouped by (event, workflow), newest first: the workflow history."""
        where, args = filters(workflow=workflow, since=since)
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
        disabled = await disabled_endpoints(self._r)
        by: dict[str, dict[str, int]] = {}
        for url, state, n in rows:
            by.setdefault(str(url), {})[str(state)] = int(n)
        for url in disabled:
            by.setdefault(url, {})
        return [EndpointSummary(u, by[u], disabled.get(u)) for u in sorted(by)]
