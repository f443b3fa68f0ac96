"""The panel's login and logout: a token from agent.yaml is exchanged once for a session cookie."""

from __future__ import annotations

from math import ceil

from aiohttp import web

from agent.api.roles import token_for
from agent.api.server import LOCKOUT
from agent.panel.routes.page import CTX, SESSIONS, PanelError, log, render, same_origin
from agent.panel.session import COOKIE, Session


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/panel/")


async def login_page(request: web.Request) -> web.StreamResponse:
    return render(request, "login.html", None, next=next_path(request.query.get("next")), error=None)


def next_path(raw: str | None) -> str:
    """Only a path on this server (``//evil`` or ``https://...`` would be an open redirect)."""
    if raw and raw.startswith("/panel/") and not raw.startswith("//"):
        return raw
    return "/panel/"


async def login(request: web.Request) -> web.StreamResponse:
    try:
        same_origin(request)
    except PanelError as exc:
        return render(request, "error.html", None, status=403, title=exc.title, message=exc.message)
    form = await request.post()
    nxt = next_path(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    given = form.get("token")
    lockout, address = request.app[LOCKOUT], request.remote or "unknown"
    wait = lockout.retry_after(address)
    if wait is not None:
        error = f"Too many wrong tokens from this device. Try again in {ceil(wait)} seconds."
        return render(request, "login.html", None, status=429, next=nxt, error=error)
    token = token_for(given, request.app[CTX].api) if isinstance(given, str) else None
    if token is None:
        log.warning("panel_login_refused", remote=address)
        pause = lockout.failed(address)
        if pause is not None:
            log.warning("auth_locked_out", remote=address, seconds=pause, attempts=lockout.attempts)
        return render(request, "login.html", None, status=401, next=nxt, error="That token is not accepted.")
    lockout.succeeded(address)
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
