"""The daemon's own routes beside the operator API and the panel: /metrics, /healthz, /readyz and
the reload request, bound to the running ``Runtime``."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = structlog.get_logger("agent.runtime")


async def start_daemon_api(rt: Runtime) -> tuple[web.AppRunner, str] | None:
    from agent.api.server import add_public_route, bound_port, create_app, start_api

    api = rt.config.agent.api
    if not api.enabled:
        log.warning("api_disabled", detail="no api: section; manual triggers, /metrics and /readyz are off")
        return None
    app = create_app(rt.pipeline, rt.outbox, api)
    app.router.add_get("/metrics", partial(_metrics, rt))
    app.router.add_post("/api/v1/reload", partial(_reload, rt))
    add_public_route(app, "GET", "/healthz", partial(_healthz, rt))
    add_public_route(app, "GET", "/readyz", partial(_readyz, rt))
    if rt.feed is not None:
        from agent.panel.routes import PanelContext, install_panel

        install_panel(
            app,
            PanelContext(
                pipeline=rt.pipeline,
                outbox=rt.outbox,
                dispatcher=rt.dispatcher,
                feed=rt.feed,
                api=api,
                categories=lambda: rt.config.agent.categories.names,
                agent_name=lambda: rt.config.agent.name,
            ),
        )
    runner = await start_api(app, api)
    host = api.base_url.rsplit(":", 1)[0]
    return runner, f"{host}:{bound_port(runner)}"


async def _metrics(rt: Runtime, request: web.Request) -> web.StreamResponse:
    await rt.update_metrics()
    # Built and sent a slice of machines at a time with the loop running in between: in one go it
    # blocked the loop for 0.6 s at 2,000 machines (agent/metrics_text.py says why not a thread);
    # joined, encoded and written at the end, the text of 5,000 machines was one more long turn.
    resp = web.StreamResponse()
    resp.content_type = "text/plain"
    resp.charset = "utf-8"
    await resp.prepare(request)
    try:
        for part in rt.metrics.render_slices():
            await resp.write(part.encode())
            await asyncio.sleep(0)  # write() returns at once while the socket takes it
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the scraper went away mid-text: nobody is left to answer, nothing went wrong here
    return resp


async def _healthz(rt: Runtime, request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "uptime_seconds": round(rt.clock() - rt.started_at, 1)})


async def _readyz(rt: Runtime, request: web.Request) -> web.Response:
    from agent.api.server import is_authorized

    h = rt.health()
    body: dict[str, Any] = {"status": "ready" if h.ok else "degraded", "reasons": h.reasons}
    if h.detail and is_authorized(request):
        body["detail"] = h.detail
    return web.json_response(body, status=200 if h.ok else 503)


async def _reload(rt: Runtime, request: web.Request) -> web.Response:
    result = await rt.reload()
    return web.json_response(result, status=200 if result["ok"] else 422)
