"""The operator panel's pages on the API's aiohttp server: board, machine, downtimes, workflows,
deliveries, login, and the Server-Sent Events stream that keeps them live.

Auth: a token from agent.yaml is exchanged once for a session cookie (HttpOnly, SameSite=Strict, Secure
under TLS); ``agent.api.roles.required_role`` decides what each page needs, as for the JSON API. Every
POST carries the session's CSRF token. Categorize and trigger call the same pipeline methods as the
JSON API, so workflows fire the same way. Everything a device or a person wrote goes through Jinja2's
autoescape (or ``textContent`` in the browser): an alarm text ``<script>`` stays text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import structlog
from aiohttp import web

from agent.api.roles import ADMIN, OPERATOR, permits, required_role, token_for
from agent.api.server import ApiError, add_session_prefix
from agent.api.settings import ApiConfig
from agent.derive.errors import DeriveError, UnknownCategory, UnknownDowntime
from agent.panel import views
from agent.panel.feed import LiveFeed, Subscriber
from agent.panel.session import COOKIE, Session, Sessions, csrf_ok
from agent.pipeline import PipelineError
from agent.workflows.match import in_scope
from agent.workflows.spec import ManualTrigger

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
STATIC = HERE / "static"
# The SSE stream says something at least this often, so a dead connection is noticed and proxies
# do not time it out.
KEEPALIVE_SECONDS = 15.0
MAX_FIELD = 2000
RECENT_DELIVERIES = 40


@dataclass
class PanelContext:
    """What the panel reads and acts on; callables because a reload replaces configuration."""

    pipeline: Any
    outbox: Any
    dispatcher: Any
    feed: LiveFeed
    api: ApiConfig
    categories: Callable[[], tuple[str, ...]]
    agent_name: Callable[[], str]
    clock: Callable[[], float] = time.time


CTX: web.AppKey[PanelContext] = web.AppKey("panel", PanelContext)
SESSIONS: web.AppKey[Sessions] = web.AppKey("panel_sessions", Sessions)
JINJA: web.AppKey[jinja2.Environment] = web.AppKey("panel_jinja", jinja2.Environment)
FORM: web.RequestKey[Any] = web.RequestKey("panel_form", object)
# (machine, may operate) -> (the tile dict it was rendered from, the SSE message): twenty boards cost
# one render per change, not twenty.
TILE_CHUNKS: web.AppKey[dict[tuple[str, bool], tuple[object, bytes]]] = web.AppKey("panel_tile_chunks", dict)


def install_panel(app: web.Application, ctx: PanelContext) -> None:
    """Add the panel to the API app (before it starts)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
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
    r.add_get("/", _root)
    r.add_get("/panel/login", login_page)
    r.add_post("/panel/login", login)
    r.add_post("/panel/logout", _page(logout))
    r.add_get("/panel/", _page(board))
    r.add_get("/panel/events", _page(events))
    r.add_get("/panel/machines/{id}", _page(machine_page))
    r.add_get("/panel/machines/{id}/timeline", _page(timeline_fragment))
    r.add_get("/panel/downtimes", _page(downtimes_page))
    r.add_post("/panel/downtimes/{id}/category", _page(categorize))
    r.add_get("/panel/workflows", _page(workflows_page))
    r.add_post("/panel/workflows/{name}/trigger", _page(trigger))
    r.add_get("/panel/deliveries", _page(deliveries_page))
    r.add_post("/panel/deliveries/{id}/retry", _page(retry_delivery))
    r.add_post("/panel/endpoints/enable", _page(enable_endpoint))
    r.add_static("/panel/static/", STATIC, append_version=False)


PageHandler = Callable[[web.Request, Session], Any]


class PanelError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def _page(handler: PageHandler) -> Callable[[web.Request], Any]:
    """Session, role and CSRF checks in front of a page; errors become HTML pages."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            session = request.app[SESSIONS].get(request.cookies.get(COOKIE))
            if session is None:
                if request.method == "GET" and request.path != "/panel/events":
                    raise web.HTTPSeeOther("/panel/login?next=" + quote(request.path_qs, safe=""))
                raise PanelError(401, "Log in again", "Your session has ended. Log in again.")
            resource = request.match_info.route.resource
            pattern = resource.canonical if resource is not None else request.path
            need = required_role(request.method, pattern)
            if not permits(session.role, need):
                raise PanelError(
                    403,
                    "Not allowed",
                    f"You are logged in as {session.role} ({session.token_name}); this needs {need}.",
                )
            if request.method == "POST":
                _same_origin(request)
                form = await request.post()
                if not csrf_ok(session, _field(form, "csrf")):
                    raise PanelError(
                        403, "Form expired", "The form's security token is missing or old. Reload the page."
                    )
                request[FORM] = form
            response: web.StreamResponse = await handler(request, session)
            return response
        except PanelError as exc:
            return _render(
                request, "error.html", None, status=exc.status, title=exc.title, message=exc.message
            )
        except ApiError:
            raise
        except web.HTTPException:
            raise
        except Exception:
            log.exception("panel_internal_error", path=request.path)
            return _render(
                request,
                "error.html",
                None,
                status=500,
                title="Error",
                message="Something went wrong in the agent; the agent log has the details.",
            )

    return run


def _same_origin(request: web.Request) -> None:
    """A browser always sends Origin on a POST; one from another site is refused (with the CSRF token,
    a second lock)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return
    if urlsplit(origin).netloc != request.host:
        raise PanelError(403, "Not allowed", "This form was sent from another site.")


def _field(
    form: Mapping[str, Any], key: str, *, required: bool = False, label: str | None = None
) -> str | None:
    value = form.get(key)
    if not isinstance(value, str) or not value.strip():
        if required:
            raise PanelError(422, "Missing field", f"{label or key} is required.")
        return None
    if len(value) > MAX_FIELD:
        raise PanelError(422, "Too long", f"{label or key} is longer than {MAX_FIELD} characters.")
    return value.strip()


def _render(
    request: web.Request, template: str, session: Session | None, *, status: int = 200, **values: Any
) -> web.Response:
    ctx = request.app[CTX]
    env = request.app[JINJA]
    flash = None
    if session is not None:
        flash, session.flash = session.flash, None
    html = env.get_template(template).render(
        session=session,
        agent_name=ctx.agent_name(),
        path=request.path,
        kiosk=request.query.get("kiosk") == "1",
        can_operate=session is not None and permits(session.role, OPERATOR),
        can_admin=session is not None and permits(session.role, ADMIN),
        flash=flash,
        now=ctx.pipeline.now(),
        **values,
    )
    resp = web.Response(text=html, content_type="text/html", charset="utf-8", status=status)
    # A 500-machine board is ~400 KB of near-identical tiles and ~25 KB gzipped: the page-weight
    # budget (150 KB on first load) holds on the wire.
    resp.enable_compression()
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    )
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def _back(session: Session, location: str, message: str, *, error: bool = False) -> web.StreamResponse:
    session.flash = {"text": message, "error": error}
    raise web.HTTPSeeOther(location)


# -- login


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/panel/")


async def login_page(request: web.Request) -> web.StreamResponse:
    return _render(request, "login.html", None, next=_next(request.query.get("next")), error=None)


def _next(raw: str | None) -> str:
    """Only a path on this server (``//evil`` or ``https://...`` would be an open redirect)."""
    if raw and raw.startswith("/panel/") and not raw.startswith("//"):
        return raw
    return "/panel/"


async def login(request: web.Request) -> web.StreamResponse:
    try:
        _same_origin(request)
    except PanelError as exc:
        return _render(request, "error.html", None, status=403, title=exc.title, message=exc.message)
    form = await request.post()
    nxt = _next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    given = form.get("token")
    token = token_for(given, request.app[CTX].api) if isinstance(given, str) else None
    if token is None:
        log.warning("panel_login_refused", remote=request.remote)
        return _render(request, "login.html", None, status=401, next=nxt, error="That token is not accepted.")
    operator = {}
    for key in ("id", "name"):
        value = form.get(f"operator_{key}")
        if isinstance(value, str) and value.strip():
            operator[key] = value.strip()[:200]
    session = request.app[SESSIONS].open(token, operator)
    log.info("panel_login", token=token.name, role=token.role)
    resp = web.HTTPSeeOther(nxt)
    resp.set_cookie(
        COOKIE,
        session.id,
        httponly=True,
        samesite="Strict",
        secure=request.app[CTX].api.tls,
        path="/",
        max_age=int(request.app[CTX].api.session_ttl),
    )
    raise resp


async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    request.app[SESSIONS].close(session.id)
    resp = web.HTTPSeeOther("/panel/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


# -- board and live feed


def tile_html(env: jinja2.Environment, tile: Mapping[str, Any], can_operate: bool, now: float) -> str:
    return env.get_template("_tile.html").render(t=tile, can_operate=can_operate, now=now)


async def board(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    tiles = ctx.feed.tiles()
    groups: dict[str, int] = {}
    for t in tiles:
        key = str(t.get("status") or "UNKNOWN")
        groups[key] = groups.get(key, 0) + 1
    return _render(request, "board.html", session, tiles=tiles, counts=groups)


async def events(request: web.Request, session: Session) -> web.StreamResponse:
    """Server-Sent Events: ``tile`` (a tile's new HTML), ``tags`` (the machine page's tag rows)."""
    ctx = request.app[CTX]
    env = request.app[JINJA]
    machine = request.query.get("machine") or None
    can_operate = permits(session.role, OPERATOR)
    if machine is not None and not can_operate:
        raise PanelError(403, "Not allowed", "Viewers see the board only.")
    sub = Subscriber(machine=machine, wake=asyncio.Event())
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    ctx.feed.subscribe(sub)
    try:
        await resp.write(_sse("hello", {"now": ctx.pipeline.now()}))
        while True:
            try:
                await asyncio.wait_for(sub.wake.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if ctx.feed.closed:
                break
            if request.app[SESSIONS].get(session.id) is None:
                await resp.write(_sse("logout", {}))
                break
            tiles, tags = sub.take()
            now = ctx.pipeline.now()
            chunks = [
                _tile_chunk(request.app, env, mid, tile, can_operate, now) for mid, tile in tiles.items()
            ]
            if tags and machine is not None:  # formatted once per wake, however many polls came
                rows = env.get_template("_tags.html").render(tags=ctx.feed.tags(machine))
                chunks.append(_sse("tags", {"now": now, "html": rows}))
            await resp.write(b"".join(chunks))
    except ConnectionResetError:
        pass  # the page was closed
    except Exception:
        # The response has started: no error page can follow. The browser reconnects.
        log.exception("panel_stream_failed")
    finally:
        ctx.feed.unsubscribe(sub)
    return resp


def _tile_chunk(
    app: web.Application,
    env: jinja2.Environment,
    mid: str,
    tile: Mapping[str, Any],
    can_operate: bool,
    now: float,
) -> bytes:
    cache = app[TILE_CHUNKS]
    hit = cache.get((mid, can_operate))
    if hit is not None and hit[0] is tile:
        return hit[1]
    chunk = _sse("tile", {"id": mid, "now": now, "html": tile_html(env, tile, can_operate, now)})
    cache[(mid, can_operate)] = (tile, chunk)
    return chunk


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- machine


def _machine(ctx: PanelContext, machine_id: str) -> Any:
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
    ref = _machine(ctx, mid)
    return _render(
        request,
        "machine.html",
        session,
        ref=ref,
        tile=ctx.feed.tile(mid),
        tags=ctx.feed.tags(mid),
        tl=_timeline(ctx, mid),
        categories=ctx.categories(),
    )


async def timeline_fragment(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    mid = request.match_info["id"]
    _machine(ctx, mid)
    html = request.app[JINJA].get_template("_timeline.html").render(tl=_timeline(ctx, mid))
    return web.Response(
        text=html, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
    )


# -- downtimes


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
    return _render(
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
    back = f"/panel/downtimes?focus={quote(downtime_id, safe='')}"
    category = _field(form, "category", required=True, label="Category")
    notes = _field(form, "notes")
    operator = session.operator_object(_field(form, "operator_name"), _field(form, "operator_id"))
    assert category is not None
    try:
        # The JSON API's own call: downtime_categorized workflows fire exactly as they do from there.
        event, executions = await ctx.pipeline.categorize(downtime_id, category, notes, operator)
    except (UnknownDowntime, UnknownCategory, DeriveError) as exc:
        return _back(session, back, str(exc), error=True)
    mid = event.machine.id if event.machine is not None else None
    if mid is not None:
        ctx.feed.observe(mid)
    fired = ", ".join(sorted({e.workflow for e in executions})) or "no workflow"
    return _back(session, "/panel/downtimes", f"Categorized as {category}; fired: {fired}.")


# -- workflows


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
    return _render(
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
    machine = _field(form, "machine", required=True, label="Machine")
    note = _field(form, "note")
    operator = session.operator_object(_field(form, "operator_name"), _field(form, "operator_id"))
    assert machine is not None
    try:
        # The JSON API's own call (same checks: manual, enabled, in scope, throttle).
        execution = await ctx.pipeline.trigger(name, machine, operator, note)
    except PipelineError as exc:
        return _back(session, "/panel/workflows", str(exc), error=True)
    state = "queued" if execution.durable else "waiting for the outbox"
    return _back(session, "/panel/workflows", f"{name} sent for {machine} ({state}).")


# -- deliveries


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
    return _render(
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
    return _back(session, "/panel/deliveries", msg, error=not ok)


async def enable_endpoint(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    url = _field(request[FORM], "url", required=True, label="Endpoint")
    assert url is not None
    ok = await ctx.outbox.enable_endpoint(url)
    if ctx.dispatcher is not None:
        ctx.dispatcher.recheck()  # its held rows go out now, not at the next maintenance
    log.info("panel_endpoint_enabled", by=session.token_name, ok=ok)
    return _back(
        session,
        "/panel/deliveries",
        "Endpoint enabled." if ok else "That endpoint was not disabled.",
        error=not ok,
    )
