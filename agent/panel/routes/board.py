"""The board of machine tiles and the Server-Sent Events stream that keeps the panel's pages live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import jinja2
from aiohttp import web

from agent.api.roles import OPERATOR, permits
from agent.panel.feed import Subscriber
from agent.panel.routes.page import CTX, JINJA, SESSIONS, TILE_CHUNKS, PanelError, log, render
from agent.panel.session import Session

# The SSE stream says something at least this often, so a dead connection is noticed and proxies
# do not time it out.
KEEPALIVE_SECONDS = 15.0


def tile_html(env: jinja2.Environment, tile: Mapping[str, Any], can_operate: bool, now: float) -> str:
    return env.get_template("_tile.html").render(t=tile, can_operate=can_operate, now=now)


async def board(request: web.Request, session: Session) -> web.StreamResponse:
    ctx = request.app[CTX]
    tiles = ctx.feed.tiles()
    groups: dict[str, int] = {}
    for t in tiles:
        key = str(t.get("status") or "UNKNOWN")
        groups[key] = groups.get(key, 0) + 1
    return render(request, "board.html", session, tiles=tiles, counts=groups, since=ctx.feed.published)


async def events(request: web.Request, session: Session) -> web.StreamResponse:
    """Server-Sent Events: ``tile`` (a tile's new HTML), ``tags`` (the machine page's tag rows).

    ``since`` is the feed's count the page was rendered at (0 or absent: every tile is sent first)."""
    ctx = request.app[CTX]
    env = request.app[JINJA]
    machine = request.query.get("machine") or None
    since_text = request.query.get("since", "0")
    if not since_text.isdigit() or len(since_text) > 18:
        raise PanelError(400, "Bad request", "The query parameter since must be a whole number.")
    can_operate = permits(session.role, OPERATOR)
    if machine is not None and not can_operate:
        raise PanelError(403, "Not allowed", "Viewers see the board only.")
    sub = Subscriber(machine=machine, wake=asyncio.Event())
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    ctx.feed.subscribe(sub, int(since_text))
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
