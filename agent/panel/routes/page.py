"""The frame every panel page runs in: the context it reads, the session/role/CSRF checks in front of it,
form fields, rendering with the security headers, and the redirect back with a message."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import structlog
from aiohttp import web

from agent.api.roles import ADMIN, OPERATOR, permits, required_role
from agent.api.server import ApiError
from agent.api.settings import ApiConfig
from agent.panel.feed import LiveFeed
from agent.panel.session import COOKIE, Session, Sessions, csrf_ok

# One logger name for every page module: the panel's log lines keep the name they had as one module.
log = structlog.get_logger("agent.panel.routes")

PANEL = Path(__file__).resolve().parent.parent
STATIC = PANEL / "static"
TEMPLATES = PANEL / "templates"
MAX_FIELD = 2000


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


PageHandler = Callable[[web.Request, Session], Any]


class PanelError(Exception):
    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def page(handler: PageHandler) -> Callable[[web.Request], Any]:
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
                same_origin(request)
                form = await request.post()
                if not csrf_ok(session, field(form, "csrf")):
                    raise PanelError(
                        403, "Form expired", "The form's security token is missing or old. Reload the page."
                    )
                request[FORM] = form
            response: web.StreamResponse = await handler(request, session)
            return response
        except PanelError as exc:
            return render(
                request, "error.html", None, status=exc.status, title=exc.title, message=exc.message
            )
        except ApiError:
            raise
        except web.HTTPException:
            raise
        except Exception:
            log.exception("panel_internal_error", path=request.path)
            return render(
                request,
                "error.html",
                None,
                status=500,
                title="Error",
                message="Something went wrong in the agent; the agent log has the details.",
            )

    return run


def same_origin(request: web.Request) -> None:
    """A browser always sends Origin on a POST; one from another site is refused (with the CSRF token,
    a second lock)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return
    if urlsplit(origin).netloc != request.host:
        raise PanelError(403, "Not allowed", "This form was sent from another site.")


def field(
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


def render(
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


def back(session: Session, location: str, message: str, *, error: bool = False) -> web.StreamResponse:
    session.flash = {"text": message, "error": error}
    raise web.HTTPSeeOther(location)
