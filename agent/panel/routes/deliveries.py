"""Deliveries: recent executions with their attempts, retrying a delivery, re-enabling an endpoint."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.panel.routes.page import CTX, FORM, PanelError, back, field, log, render
from agent.panel.session import Session

RECENT_DELIVERIES = 40


async def deliveries_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    counts = await ctx.outbox.counts()
    endpoints = await ctx.outbox.endpoint_summary()
    open_keys = ctx.dispatcher.open_breakers if ctx.dispatcher is not None else frozenset()
    urls_open = {
        ep.url for wf in ctx.pipeline.workflows.values() for ep in wf.endpoints if ep.key in open_keys
    }
    page = await ctx.outbox.list(limit=RECENT_DELIVERIES)
    executions: dict[tuple[str, str], dict[str, Any]] = {}
    for row in page.items:
        detail = await ctx.outbox.get(row.id)
        ex = executions.setdefault(
            (row.event_id, row.workflow),
            {
                "workflow": row.workflow,
                "event": row.event_type,
                "machine": row.machine_id,
                "at": row.created_at,
                "deliveries": [],
            },
        )
        ex["deliveries"].append({"row": row, "attempts": detail.attempts if detail is not None else ()})
    return render(
        request,
        "deliveries.html",
        session,
        counts=counts,
        endpoints=endpoints,
        urls_open=urls_open,
        executions=list(executions.values()),
    )


async def retry_delivery(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise PanelError(404, "No such delivery", f"There is no delivery {raw!r}.")
    ok = await ctx.outbox.retry(int(raw))
    if ctx.dispatcher is not None:
        ctx.dispatcher.wake()
    log.info("panel_delivery_retry", delivery=int(raw), by=session.token_name, ok=ok)
    msg = f"Delivery {raw} will be sent again." if ok else f"Delivery {raw} cannot be retried now."
    return back(session, "/panel/deliveries", msg, error=not ok)


async def enable_endpoint(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    url = field(request[FORM], "url", required=True, label="Endpoint")
    assert url is not None
    ok = await ctx.outbox.enable_endpoint(url)
    if ctx.dispatcher is not None:
        ctx.dispatcher.recheck()  # its held rows go out now, not at the next maintenance
    log.info("panel_endpoint_enabled", by=session.token_name, ok=ok)
    return back(
        session,
        "/panel/deliveries",
        "Endpoint enabled." if ok else "That endpoint was not disabled.",
        error=not ok,
    )
