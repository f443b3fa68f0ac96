"""A machine's page: its tile, live tags and today's timeline of states, downtimes and alarms."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from aiohttp import web

from agent.panel import views
from agent.panel.routes.page import CTX, JINJA, PanelContext, PanelError, render
from agent.panel.session import Session


def machine_ref(ctx: PanelContext, machine_id: str) -> Any:
    ref = ctx.pipeline.machines.get(machine_id)
    if ref is None:
        raise PanelError(404, "No such machine", f"There is no machine with id {machine_id!r}.")
    return ref


def _timeline(ctx: PanelContext, machine_id: str) -> dict[str, Any]:
    deriver = ctx.pipeline.derivers.get(machine_id)
    now = ctx.pipeline.now()
    tz = getattr(getattr(deriver, "spec", None), "timezone", None) or UTC
    day, start = views.day_of(now, tz)
    hist = ctx.feed.history(machine_id)
    downtimes: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = list(hist.alarms)
    if deriver is not None:
        downtimes = [views.downtime_view(machine_id, d, now) for d in deriver.recent_downtimes]
        if deriver.open_downtime is not None:
            downtimes.append(views.downtime_view(machine_id, deriver.open_downtime, now))
        alarms += [views.alarm_view(a) for a in deriver.active_alarms]
    return {
        "day": day,
        "states": views.lanes(views.status_segments(list(hist.status), start, now), start, now, tz=tz),
        "downtimes": views.lanes(views.downtime_segments(downtimes, start, now), start, now, tz=tz),
        "alarms": views.lanes(views.alarm_segments(alarms, start, now), start, now, tz=tz),
        "ticks": views.hour_ticks(start, now),
        "downtime_list": sorted(downtimes, key=lambda d: d["started_at"] or 0, reverse=True),
        "alarm_list": sorted(alarms, key=lambda a: a["since"] or 0, reverse=True),
    }


async def machine_page(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    mid = request.match_info["id"]
    ref = machine_ref(ctx, mid)
    return render(
        request,
        "machine.html",
        session,
        ref=ref,
        tile=ctx.feed.tile(mid),
        tags=ctx.feed.tags(mid),
        tl=_timeline(ctx, mid),
        categories=ctx.categories(),
        since=ctx.feed.published,  # after the tile above: changes from here on reach the page's stream
    )


async def timeline_fragment(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    mid = request.match_info["id"]
    machine_ref(ctx, mid)
    html = request.app[JINJA].get_template("_timeline.html").render(tl=_timeline(ctx, mid))
    return web.Response(
        text=html, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
    )
