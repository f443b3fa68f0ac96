"""Downtimes: the open and recent ones, and categorizing one (the JSON API's own call)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from agent.derive.errors import DeriveError, UnknownCategory, UnknownDowntime
from agent.panel import views
from agent.panel.routes.page import CTX, FORM, back, field, render
from agent.panel.session import Session


async def downtimes_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    now = ctx.pipeline.now()
    open_rows: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    for mid in sorted(ctx.pipeline.machines):
        deriver = ctx.pipeline.derivers.get(mid)
        if deriver is None:
            continue
        ref = ctx.pipeline.machines[mid]
        if deriver.open_downtime is not None:
            open_rows.append(
                {**views.downtime_view(mid, deriver.open_downtime, now), "machine_name": ref.name}
            )
        for d in deriver.recent_downtimes:
            recent.append({**views.downtime_view(mid, d, now), "machine_name": ref.name})
    recent.sort(key=lambda d: d["started_at"] or 0, reverse=True)
    return render(
        request,
        "downtimes.html",
        session,
        open_rows=open_rows,
        recent=recent[:50],
        categories=ctx.categories(),
        focus=request.query.get("focus"),
    )


async def categorize(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    form = request[FORM]
    downtime_id = request.match_info["id"]
    focused = f"/panel/downtimes?focus={quote(downtime_id, safe='')}"
    category = field(form, "category", required=True, label="Category")
    notes = field(form, "notes")
    operator = session.operator_object(field(form, "operator_name"), field(form, "operator_id"))
    assert category is not None
    try:
        # The JSON API's own call: downtime_categorized workflows fire exactly as they do from there.
        event, executions = await ctx.pipeline.categorize(downtime_id, category, notes, operator)
    except (UnknownDowntime, UnknownCategory, DeriveError) as exc:
        return back(session, focused, str(exc), error=True)
    mid = event.machine.id if event.machine is not None else None
    if mid is not None:
        ctx.feed.observe(mid)
    fired = ", ".join(sorted({e.workflow for e in executions})) or "no workflow"
    return back(session, "/panel/downtimes", f"Categorized as {category}; fired: {fired}.")
