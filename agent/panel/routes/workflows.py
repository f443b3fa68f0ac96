"""Workflows: each one's last firing, and triggering a manual one (the JSON API's own call)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent.panel.routes.page import CTX, FORM, back, field, render
from agent.panel.session import Session
from agent.pipeline import PipelineError
from agent.workflows.match import in_scope
from agent.workflows.spec import ManualTrigger


async def workflows_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    pipeline = ctx.pipeline
    machines = [pipeline.machines[m] for m in sorted(pipeline.machines)]
    manual = []
    rows = []
    for wf in sorted(pipeline.workflows.values(), key=lambda w: w.name):
        last = pipeline.last_execution(wf.name)
        shown: dict[str, Any] | None
        if last is not None:
            shown = {
                "at": last.at,
                "machine": last.machine_id,
                "state": "queued" if last.durable else "waiting",
            }
        else:
            # Before this run's first firing: the outbox's history (kept across restarts).
            page = await ctx.outbox.executions(workflow=wf.name, limit=1)
            ex = page.items[0] if page.items else None
            shown = (
                None if ex is None else {"at": ex.created_at, "machine": ex.machine_id, "state": "history"}
            )
        rows.append({"wf": wf, "last": shown})
        if isinstance(wf.trigger, ManualTrigger) and wf.enabled:
            manual.append({"wf": wf, "machines": [m for m in machines if in_scope(wf.scope, m)]})
    return render(
        request,
        "workflows.html",
        session,
        manual=manual,
        rows=rows,
        preselect=request.query.get("machine"),
    )


async def trigger(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    form = request[FORM]
    name = request.match_info["name"]
    machine = field(form, "machine", required=True, label="Machine")
    note = field(form, "note")
    operator = session.operator_object(field(form, "operator_name"), field(form, "operator_id"))
    assert machine is not None
    try:
        # The JSON API's own call (same checks: manual, enabled, in scope, throttle).
        execution = await ctx.pipeline.trigger(name, machine, operator, note)
    except PipelineError as exc:
        return back(session, "/panel/workflows", str(exc), error=True)
    state = "queued" if execution.durable else "waiting for the outbox"
    return back(session, "/panel/workflows", f"{name} sent for {machine} ({state}).")
