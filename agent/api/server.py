"""The local operator API: trigger workflows, categorize downtimes, read live state and history.

Every request carries ``Authorization: Bearer <token>`` (compared in constant time); the token's role
must permit the route (``agent.api.roles``: 401 without a known token, 403 when the role is too low).
Paths registered with ``add_session_prefix`` (the operator panel) do their own auth. Errors are JSON
``{"error": {"code", "message", "field"}}`` with a 4xx status for anything the client sent; a 500 only
ever means a bug here, and its body says nothing about internals.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from math import ceil
from typing import Any, cast

import structlog
from aiohttp import web

from agent.api.lockout import Lockout
from agent.api.roles import bearer_token, permits, required_role
from agent.api.settings import ApiConfig, RoleToken
from agent.delivery.outbox import Outbox
from agent.derive.errors import DeriveError, UnknownCategory, UnknownDowntime
from agent.events import iso_utc
from agent.pipeline import (
    NotDurable,
    NotManual,
    OutOfScope,
    Pipeline,
    PipelineError,
    Throttled,
    UnknownMachine,
    UnknownWorkflow,
    WorkflowDisabled,
)
from agent.workflows.spec import Workflow

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline", Pipeline)
OUTBOX: web.AppKey[Outbox] = web.AppKey("outbox", Outbox)
CONFIG: web.AppKey[ApiConfig] = web.AppKey("config", ApiConfig)
# Paths answered without a token: liveness probes (the runtime's /healthz, /readyz); see ``add_public_route``.
PUBLIC: web.AppKey[set[str]] = web.AppKey("public_paths", set)
# Path prefixes that authenticate themselves (the panel: session cookie + CSRF, HTML errors).
SESSION_PREFIXES: web.AppKey[list[tuple[str, bool]]] = web.AppKey("session_prefixes", list)
# Wrong tokens per client address, for the JSON API and the panel's login alike.
LOCKOUT: web.AppKey[Lockout] = web.AppKey("lockout", Lockout)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_TEXT = 2000
# Query integers (cursor, limit): 18 digits always fit SQLite's signed 64-bit INTEGER.
MAX_DIGITS = 18


class ApiError(web.HTTPException):
    """An error answer in the API's JSON shape."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status_code = status
        body = json.dumps({"error": {"code": code, "message": message, "field": field}})
        super().__init__(text=body, content_type="application/json")


# -- auth and error handling


def is_authorized(request: web.Request) -> bool:
    """Whether the request carries the API's token (public routes use it to decide what to reveal)."""
    try:
        return _authenticate(request, request.app[CONFIG]) is not None
    except ApiError:
        return False  # locked out: a public route answers as to anyone


def _authenticate(request: web.Request, config: ApiConfig) -> RoleToken | None:
    """The request's token; wrong ones are counted per client address (``agent.api.lockout``)."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None  # no guess: nothing to count
    lockout, address = request.app[LOCKOUT], request.remote or "unknown"
    wait = lockout.retry_after(address)
    if wait is not None:
        err = ApiError(
            429, "locked_out", f"too many wrong tokens from {address}; try again in {ceil(wait)} s"
        )
        err.headers["Retry-After"] = str(ceil(wait))
        raise err
    token = bearer_token(header, config)
    if token is not None:
        lockout.succeeded(address)
        return token
    pause = lockout.failed(address)
    if pause is not None:
        log.warning("auth_locked_out", remote=address, seconds=pause, attempts=lockout.attempts)
    return None


def _host_allowed(request: web.Request, config: ApiConfig) -> bool:
    """On a loopback bind only a loopback ``Host`` is ours: any other name means a browser was pointed
    at us through DNS rebinding (``evil.example`` resolving to 127.0.0.1)."""
    if not config.loopback:
        return True
    raw = request.headers.get("Host")
    if raw is None:
        return True  # HTTP/1.0 clients (curl -0, probes) send none; browsers always do
    host = raw.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_role(request: web.Request, config: ApiConfig) -> None:
    """401 without a known bearer token, 403 when its role may not use this route."""
    token = _authenticate(request, config)
    if token is None:
        err = ApiError(401, "unauthorized", "missing or wrong bearer token")
        err.headers["WWW-Authenticate"] = 'Bearer realm="edge-agent"'
        raise err
    route = request.match_info.route.resource
    pattern = route.canonical if route is not None else request.path
    need = required_role(request.method, pattern)
    if not permits(token.role, need):
        raise ApiError(403, "forbidden", f"token {token.name!r} has role {token.role}; this needs {need}")


def _self_guarded(request: web.Request) -> bool:
    path = request.path
    return any(path == p or (not exact and path.startswith(p)) for p, exact in request.app[SESSION_PREFIXES])


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[CONFIG]
    if not _host_allowed(request, config):
        # Before anything else, the panel's pages included: a browser sent here by DNS rebinding
        # would carry the panel's session cookie.
        raise ApiError(421, "wrong_host", "this API answers only to a loopback Host header", "Host")
    if _self_guarded(request):
        return await handler(request)
    try:
        if request.path not in request.app[PUBLIC]:
            _check_role(request, config)
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        # aiohttp's own answers (unknown route 404, wrong method 405, body too large 413) in our shape.
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        err = ApiError(exc.status, code, exc.reason)
        if exc.status == 405:
            err.headers["Allow"] = exc.headers.get("Allow", "")
        raise err from None
    except Exception:
        log.exception("api_internal_error", path=request.path, method=request.method)
        raise ApiError(500, "internal_error", "internal error; see the agent log") from None


# -- request reading


async def _json_body(request: web.Request) -> dict[str, Any]:
    max_body = request.app[CONFIG].max_body
    if request.content_length is not None and request.content_length > max_body:
        raise ApiError(413, "body_too_large", f"request body is larger than {max_body} bytes")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    try:
        # A body trickled in byte by byte must not hold the connection (and its descriptor) for ever.
        async with asyncio.timeout(request.app[CONFIG].idle_timeout):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"request body is larger than {max_body} bytes") from None
    except TimeoutError:
        raise ApiError(408, "body_timeout", "the request body did not arrive in time") from None
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # A body of nested [[[[... within max_body exhausts the parser's stack; no request needs it.
        raise ApiError(400, "malformed_json", "body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object")
    return data


def _text(
    data: Mapping[str, Any], key: str, *, required: bool = False, path: str | None = None
) -> str | None:
    name = path or key
    value = data.get(key)
    if value is None:
        if required:
            raise ApiError(422, "missing_field", f"{name} is required", name)
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ApiError(422, "invalid_field", f"{name} must be a non-empty string", name)
    if len(value) > MAX_TEXT:
        raise ApiError(422, "invalid_field", f"{name} is longer than {MAX_TEXT} characters", name)
    if not _encodable(value):
        # JSON's \ud800 escape decodes to a lone surrogate that no UTF-8 payload can carry.
        raise ApiError(422, "invalid_field", f"{name} is not valid Unicode text (lone surrogate)", name)
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _only(data: Mapping[str, Any], allowed: Sequence[str], prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            name = f"{prefix}{key}"
            raise ApiError(422, "unknown_field", f"unknown field {name}; expected {', '.join(allowed)}", name)


def _operator(data: Mapping[str, Any]) -> dict[str, Any] | None:
    value = data.get("operator")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_field", "operator must be an object {id, name}", "operator")
    _only(value, ("id", "name"), "operator.")
    return {
        "id": _text(value, "id", path="operator.id"),
        "name": _text(value, "name", path="operator.name"),
    }


def _small_int(raw: str) -> int | None:
    """A non-negative integer of ASCII digits that fits SQLite's 64-bit INTEGER, else ``None``.

    ``str.isdigit`` alone accepts "²" or "١" and any length: int() then raises, or SQLite overflows.
    """
    if not raw or len(raw) > MAX_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    return int(raw)


def _paging(request: web.Request) -> tuple[int, int | None]:
    raw_limit = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        value = _small_int(raw_limit)
        if value is None or not 1 <= value <= MAX_LIMIT:
            raise ApiError(422, "invalid_field", f"limit must be an integer 1-{MAX_LIMIT}", "limit")
        limit = value
    raw_cursor = request.query.get("cursor")
    cursor = None
    if raw_cursor:
        cursor = _small_int(raw_cursor)
        if cursor is None:
            raise ApiError(422, "invalid_field", "cursor must be a value from next_cursor", "cursor")
    return limit, cursor


def _page(items: Sequence[Any], limit: int, cursor: int | None) -> tuple[list[Any], str | None]:
    """Offset paging for the small in-memory lists (machines, workflows, downtimes)."""
    start = cursor or 0
    chunk = list(items[start : start + limit])
    nxt = start + limit if start + limit < len(items) else None
    return chunk, (str(nxt) if nxt is not None else None)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


# -- views of live state


def _ts(value: Any) -> Any:
    return iso_utc(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _downtime_view(machine_id: str, downtime: Any, now: float) -> dict[str, Any]:
    started = getattr(downtime, "started_at", None)
    ended = getattr(downtime, "ended_at", None)
    duration = None
    if isinstance(started, int | float):
        duration = round(max(0.0, (ended if isinstance(ended, int | float) else now) - started), 3)
    return {
        "id": getattr(downtime, "id", None),
        "machine_id": machine_id,
        "started_at": _ts(started),
        "ended_at": _ts(ended),
        "duration_seconds": duration,
        "category": getattr(downtime, "category", None),
        "notes": getattr(downtime, "notes", None),
        "operator": getattr(downtime, "operator", None),
        "categorized_by": getattr(downtime, "categorized_by", None),
    }


def _machine_view(pipeline: Pipeline, machine_id: str, *, detail: bool = False) -> dict[str, Any]:
    ref = pipeline.machines[machine_id]
    deriver: Any = pipeline.derivers.get(machine_id)
    out: dict[str, Any] = ref.as_dict()
    if deriver is None:
        return out
    now = pipeline.now()
    out["status"] = deriver.status
    out["status_since"] = _ts(deriver.status_since)
    out["status_reason"] = getattr(deriver, "status_reason", None)
    open_dt = deriver.open_downtime
    out["open_downtime"] = _downtime_view(machine_id, open_dt, now) if open_dt is not None else None
    out["active_alarms"] = [_alarm_view(a) for a in deriver.active_alarms]
    if detail:
        out["recent_downtimes"] = [
            _downtime_view(machine_id, d, now) for d in reversed(deriver.recent_downtimes)
        ]
        out["parts_total"] = deriver.part_total
        day = datetime.fromtimestamp(now, tz=getattr(deriver.spec, "timezone", None) or UTC).date()
        out["parts_today"] = deriver.part_totals(day)
    return out


def _alarm_view(alarm: Any) -> dict[str, Any]:
    return {
        "code": getattr(alarm, "code", None),
        "description": getattr(alarm, "description", None),
        "severity": getattr(alarm, "severity", None),
        "since": _ts(getattr(alarm, "since", None)),
        "source": getattr(alarm, "source", None),
        "unknown": getattr(alarm, "unknown", False),
        "held": getattr(alarm, "held", False),
    }


def _workflow_view(pipeline: Pipeline, wf: Workflow) -> dict[str, Any]:
    out = wf.summary()
    out["actions"] = [
        {"endpoint": a.endpoint.key, "url": a.endpoint.url, "delay_seconds": a.delay} for a in wf.actions
    ]
    last = pipeline.last_execution(wf.name)
    out["last_execution"] = last.as_dict() if last is not None else None
    nxt = pipeline.next_run(wf.name)
    out["next_run"] = _ts(nxt) if nxt is not None else None
    return out


# -- handlers


async def list_machines(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    limit, cursor = _paging(request)
    ids, nxt = _page(sorted(pipeline.machines), limit, cursor)
    return _json({"items": [_machine_view(pipeline, mid) for mid in ids], "next_cursor": nxt})


async def get_machine(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    machine_id = request.match_info["id"]
    if machine_id not in pipeline.machines:
        raise ApiError(404, "unknown_machine", f"no machine with id {machine_id!r}", "id")
    return _json(_machine_view(pipeline, machine_id, detail=True))


async def list_downtimes(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    state = request.query.get("state", "open")
    if state not in ("open", "recent", "all"):
        raise ApiError(422, "invalid_field", "state must be open, recent or all", "state")
    machine_filter = request.query.get("machine")
    if machine_filter is not None and machine_filter not in pipeline.machines:
        raise ApiError(404, "unknown_machine", f"no machine with id {machine_filter!r}", "machine")
    limit, cursor = _paging(request)
    now = pipeline.now()
    items: list[dict[str, Any]] = []
    for mid in sorted(pipeline.machines):
        if machine_filter is not None and mid != machine_filter:
            continue
        deriver: Any = pipeline.derivers.get(mid)
        if deriver is None:
            continue
        open_dt = deriver.open_downtime
        if state in ("open", "all") and open_dt is not None:
            items.append(_downtime_view(mid, open_dt, now))
        if state in ("recent", "all"):
            items.extend(_downtime_view(mid, d, now) for d in deriver.recent_downtimes)
    items.sort(key=lambda d: str(d.get("started_at") or ""), reverse=True)
    page, nxt = _page(items, limit, cursor)
    return _json({"items": page, "next_cursor": nxt})


async def list_workflows(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    limit, cursor = _paging(request)
    flows, nxt = _page(sorted(pipeline.workflows.values(), key=lambda w: w.name), limit, cursor)
    return _json({"items": [_workflow_view(pipeline, w) for w in flows], "next_cursor": nxt})


async def list_executions(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    outbox = request.app[OUTBOX]
    workflow = request.query.get("workflow") or None
    if workflow is not None and workflow not in pipeline.workflows:
        # History of a removed workflow is still history: only refuse names never seen at all.
        probe = await outbox.executions(workflow=workflow, limit=1)
        if not probe.items:
            raise ApiError(404, "unknown_workflow", f"no workflow named {workflow!r}", "workflow")
    limit, cursor = _paging(request)
    page = await outbox.executions(workflow=workflow, limit=limit, cursor=cursor)
    items = []
    for ex in page.items:
        rows = await outbox.list(workflow=ex.workflow, cursor=ex.cursor + 1, limit=max(ex.deliveries, 1))
        deliveries = []
        for row in rows.items:
            if row.event_id != ex.event_id:
                continue
            detail = await outbox.get(row.id)
            attempts = detail.attempts if detail is not None else ()
            deliveries.append(
                {
                    "id": row.id,
                    "message_id": row.message_id,
                    "endpoint": row.endpoint,
                    "url": row.url,
                    "state": row.state,
                    "attempts": [
                        {
                            "at": iso_utc(a.at),
                            "status": a.status,
                            "latency_seconds": a.latency,
                            "error_class": a.error_class,
                            "error": a.error,
                        }
                        for a in attempts
                    ],
                    "due_at": iso_utc(row.due_at),
                    "last_status": row.last_status,
                    "last_error": row.last_error,
                }
            )
        items.append(
            {
                "event_id": ex.event_id,
                "workflow": ex.workflow,
                "event": ex.event_type,
                "machine": ex.machine_id,
                "at": iso_utc(ex.created_at),
                "states": ex.states,
                "last_error": ex.last_error,
                "deliveries": deliveries,
            }
        )
    nxt = str(page.next_cursor) if page.next_cursor is not None else None
    return _json({"items": items, "next_cursor": nxt})


_PIPELINE_STATUS: Mapping[type[PipelineError], tuple[int, str]] = {
    UnknownWorkflow: (404, "unknown_workflow"),
    UnknownMachine: (404, "unknown_machine"),
    WorkflowDisabled: (409, "workflow_disabled"),
    NotManual: (409, "not_manual"),
    OutOfScope: (409, "machine_not_in_scope"),
    Throttled: (429, "throttled"),
    NotDurable: (503, "not_durable"),
}
# When a client may try a trigger again that the outbox could not store (disk full).
NOT_DURABLE_RETRY_AFTER = 30


async def trigger_workflow(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    name = request.match_info["name"]
    if name not in pipeline.workflows:
        raise ApiError(404, "unknown_workflow", f"no workflow named {name!r}", "name")
    data = await _json_body(request)
    _only(data, ("machine", "operator", "note"))
    machine = _text(data, "machine", required=True)
    operator = _operator(data)
    note = _text(data, "note")
    assert machine is not None
    try:
        execution = await pipeline.trigger(name, machine, operator, note)
    except PipelineError as exc:
        status, code = _PIPELINE_STATUS.get(type(exc), (409, "refused"))
        err = ApiError(status, code, str(exc), exc.field)
        if isinstance(exc, NotDurable):
            err.headers["Retry-After"] = str(NOT_DURABLE_RETRY_AFTER)
        raise err from None
    return _json({"execution": execution.as_dict()}, status=202)


async def categorize_downtime(request: web.Request) -> web.Response:
    pipeline = request.app[PIPELINE]
    downtime_id = request.match_info["id"]
    data = await _json_body(request)
    _only(data, ("category", "notes", "operator"))
    category = _text(data, "category", required=True)
    notes = _text(data, "notes")
    operator = _operator(data)
    assert category is not None
    try:
        event, executions = await pipeline.categorize(downtime_id, category, notes, operator)
    except UnknownDowntime as exc:
        raise ApiError(404, "unknown_downtime", str(exc), "id") from None
    except UnknownCategory as exc:
        raise ApiError(422, "unknown_category", str(exc), "category") from None
    except DeriveError as exc:
        raise ApiError(422, "invalid_categorization", str(exc), None) from None
    return _json({"event": event.payload(), "executions": [e.as_dict() for e in executions]})


def create_app(pipeline: Pipeline, outbox: Outbox, config: ApiConfig) -> web.Application:
    """The API application. Add more routes (``/metrics``, ``/healthz``) before it starts, through
    ``app.router`` (token required) or ``add_public_route`` (no token)."""
    app = web.Application(middlewares=[_guard], client_max_size=config.max_body)
    app[PIPELINE] = pipeline
    app[OUTBOX] = outbox
    app[CONFIG] = config
    app[PUBLIC] = set(PUBLIC_PATHS)
    app[SESSION_PREFIXES] = []
    app[LOCKOUT] = Lockout()
    app.router.add_get("/api/v1/machines", list_machines)
    app.router.add_get("/api/v1/machines/{id}", get_machine)
    app.router.add_get("/api/v1/downtimes", list_downtimes)
    app.router.add_post("/api/v1/downtimes/{id}/category", categorize_downtime)
    app.router.add_get("/api/v1/workflows", list_workflows)
    app.router.add_post("/api/v1/workflows/{name}/trigger", trigger_workflow)
    app.router.add_get("/api/v1/executions", list_executions)
    return app


def add_public_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """A route answered without a token (liveness probes). Keep what it reveals harmless."""
    app.router.add_route(method, path, handler)
    app[PUBLIC].add(path)


class PlaintextRefused(ValueError):
    """A non-loopback bind without TLS and without ``allow_plaintext: true``."""


_BUSY_BODY = json.dumps(
    {"error": {"code": "too_many_connections", "message": "connection limit reached", "field": None}}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Refuse(asyncio.Protocol):
    """The answer to a connection over the cap: one 503 and close, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports implement WriteTransport without subclassing it.
        write = cast(asyncio.WriteTransport, transport)
        write.write(_BUSY)
        write.close()


class ConnectionCap:
    """The protocol factory for the listening socket: aiohttp's handler while fewer than ``limit``
    connections are open, else ``_Refuse``. Checked at accept time, so one accept burst can exceed
    the limit by at most the listen backlog; both together stay far below the descriptor budget."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self.limit = limit
        self.refused = 0
        self._over = False

    @property
    def open(self) -> int:
        return len(self._server.connections)

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open < self.limit:
            if self._over:
                self._over = False
                log.info("api_connection_limit_cleared", limit=self.limit, refused=self.refused)
            return self._server()
        self.refused += 1
        if not self._over:
            self._over = True  # logged once per episode: a flood must not flood the journal too
            log.warning("api_connection_limit_reached", limit=self.limit)
        return _Refuse()


class _CappedSite(web.BaseSite):
    """``web.TCPSite`` with ``ConnectionCap`` in front of aiohttp's protocol factory."""

    def __init__(self, runner: web.AppRunner, config: ApiConfig) -> None:
        super().__init__(runner, ssl_context=config.ssl_context(), backlog=64)
        self._host = config.host
        self._port = config.port
        self._limit = config.max_connections
        self.cap: ConnectionCap | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self.cap = ConnectionCap(server, self._limit)
        self._server = await asyncio.get_running_loop().create_server(
            self.cap, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog, reuse_address=True
        )


def add_session_prefix(app: web.Application, prefix: str, *, exact: bool = False) -> None:
    """Requests under ``prefix`` (or for exactly that path) skip the bearer check and the JSON error
    shape: the handlers there authenticate with their own session."""
    app[SESSION_PREFIXES].append((prefix, exact))


async def start_api(app: web.Application, config: ApiConfig) -> web.AppRunner:
    """Serve ``app`` on ``config``'s bind address (with TLS when configured); ``await runner.cleanup()``.

    Refuses (``PlaintextRefused``) a non-loopback bind without TLS unless ``allow_plaintext`` is set.
    """
    if config.exposed_plaintext and not config.allow_plaintext:
        raise PlaintextRefused(
            f"api: refusing to serve {config.host}:{config.port} without TLS; give tls_cert_file and "
            "tls_key_file, bind 127.0.0.1, or set allow_plaintext: true"
        )
    # keepalive_timeout runs from accept and from each response: it closes a connection that is idle
    # or still sending its request line and headers (aiohttp's default is an hour).
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
        keepalive_timeout=config.idle_timeout,
    )
    await runner.setup()
    site = _CappedSite(runner, config)
    await site.start()
    port = bound_port(runner)
    if config.exposed_plaintext:
        log.warning("api_exposed_without_tls", host=config.host, port=port, allowed_by="allow_plaintext")
    log.info("api_listening", host=config.host, port=port, tls=config.tls)
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (``port: 0`` in tests picks a free one)."""
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("API runner has no bound socket")
