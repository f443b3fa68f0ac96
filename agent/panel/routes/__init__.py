"""The operator panel's pages on the API's aiohttp server: board, machine, downtimes, workflows,
deliveries, login, and the Server-Sent Events stream that keeps them live.

Auth: a token from agent.yaml is exchanged once for a session cookie (HttpOnly, SameSite=Strict, Secure
under TLS); ``agent.api.roles.required_role`` decides what each page needs, as for the JSON API. Every
POST carries the session's CSRF token. Categorize and trigger call the same pipeline methods as the
JSON API, so workflows fire the same way. Everything a device or a person wrote goes through Jinja2's
autoescape (or ``textContent`` in the browser): an alarm text ``<script>`` stays text.
"""

from __future__ import annotations

import time

import jinja2
from aiohttp import web

from agent.api.server import add_session_prefix
from agent.panel import views
from agent.panel.routes import board, deliveries, downtimes, login, machine, workflows
from agent.panel.routes.page import CTX, JINJA, SESSIONS, STATIC, TEMPLATES, TILE_CHUNKS, PanelContext, page
from agent.panel.session import Sessions

__all__ = ["PanelContext", "install_panel"]


def install_panel(app: web.Application, ctx: PanelContext) -> None:
    """Add the panel to the API app (before it starts)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every page: device and operator text is rendered inert
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = views.duration_text
    env.filters["url_shown"] = views.url_shown
    env.globals["state_class"] = views.state_class
    env.globals["legend"] = views.STATE_LEGEND
    app[CTX] = ctx
    app[SESSIONS] = Sessions(ctx.api.session_ttl, time.time)
    app[JINJA] = env
    app[TILE_CHUNKS] = {}
    add_session_prefix(app, "/", exact=True)
    add_session_prefix(app, "/panel/")
    r = app.router
    r.add_get("/", login.root)
    r.add_get("/panel/login", login.login_page)
    r.add_post("/panel/login", login.login)
    r.add_post("/panel/logout", page(login.logout))
    r.add_get("/panel/", page(board.board))
    r.add_get("/panel/events", page(board.events))
    r.add_get("/panel/machines/{id}", page(machine.machine_page))
    r.add_get("/panel/machines/{id}/timeline", page(machine.timeline_fragment))
    r.add_get("/panel/downtimes", page(downtimes.downtimes_page))
    r.add_post("/panel/downtimes/{id}/category", page(downtimes.categorize))
    r.add_get("/panel/workflows", page(workflows.workflows_page))
    r.add_post("/panel/workflows/{name}/trigger", page(workflows.trigger))
    r.add_get("/panel/deliveries", page(deliveries.deliveries_page))
    r.add_post("/panel/deliveries/{id}/retry", page(deliveries.retry_delivery))
    r.add_post("/panel/endpoints/enable", page(deliveries.enable_endpoint))
    r.add_static("/panel/static/", STATIC, append_version=False)
