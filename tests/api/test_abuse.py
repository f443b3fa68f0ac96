"""The operator API under abusive clients: raw sockets with bad header bytes, slow-loris, idle floods,
hostile bodies and DNS-rebinding Host headers. Every answer is a 4xx in the API's shape, never a 500,
and no client holds a connection (a file descriptor) for long without sending a request."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.api.server import PlaintextRefused, bound_port, create_app, start_api
from agent.api.settings import ApiConfig
from agent.config.source import Secret
from tests.workflows.rig import FakeClock, Rig, hook, make_rig, workflows_from

TOKEN = "t0ken-for-tests-0123456789"
TRIGGER = "/api/v1/workflows/QA/trigger"


@asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[int, Rig]]:
    flows = workflows_from(
        tmp_path, {"qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/qa")}
    )
    rig = await make_rig(tmp_path, flows, FakeClock(time.time() - 86400), dispatch=False)
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "test"), max_body=65536)
    config = replace(config, **overrides)
    runner = await start_api(create_app(rig.pipeline, rig.outbox, config), config)
    try:
        yield bound_port(runner), rig
    finally:
        await runner.cleanup()
        await rig.close()


async def raw(port: int, request: bytes) -> tuple[int, dict[str, Any], bytes]:
    """One request as exact bytes; the status, the JSON body and the raw head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}, head


def post(body: bytes, *, token: bytes = TOKEN.encode(), extra: bytes = b"") -> bytes:
    return (
        b"POST " + TRIGGER.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer "
        + token
        + b"\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a generous bound, so a hang fails the test)."""
    return await asyncio.wait_for(reader.read(), 60)


# -- item 10: input that used to raise inside the handler


@pytest.mark.parametrize("token", [b"\xe4\xf6", b"\xff" * 20, "tök€n".encode(), b"\x80abc"])
async def test_undecodable_bearer_bytes_are_401_not_500(tmp_path: Path, token: bytes) -> None:
    async with serving(tmp_path) as (port, rig):
        status, data, _ = await raw(port, post(b'{"machine": "mill-01"}', token=token))
        assert status == 401, data
        assert data["error"]["code"] == "unauthorized"
        assert (await rig.outbox.list()).items == []


async def test_deeply_nested_body_is_400(tmp_path: Path) -> None:
    async with serving(tmp_path) as (port, _):
        for body in (b"[" * 30000 + b"]" * 30000, b'{"a":' * 10000 + b"1" + b"}" * 10000):
            status, data, _ = await raw(port, post(body))
            assert status == 400, data
            assert data["error"]["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"machine": "mill-01", "note": "\\ud800"}', "note"),
        (b'{"machine": "mill-01", "operator": {"id": "a", "name": "x\\udfff"}}', "operator.name"),
        (b'{"machine": "\\udc00mill"}', "machine"),
    ],
)
async def test_lone_surrogate_is_422_naming_the_field(tmp_path: Path, body: bytes, field: str) -> None:
    async with serving(tmp_path) as (port, rig):
        status, data, _ = await raw(port, post(body))
        assert status == 422, data
        assert data["error"]["field"] == field
        assert (await rig.outbox.list()).items == []


# -- item 11: slow and idle clients


async def test_slow_loris_headers_are_cut_off(tmp_path: Path) -> None:
    async with serving(tmp_path, idle_timeout=1.0) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()

        async def trickle() -> None:
            # One header byte at a time, as slow-loris does, until the server hangs up.
            with pytest.raises((ConnectionError, OSError)):
                for _ in range(600):
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    if reader.at_eof():
                        raise ConnectionResetError

        task = asyncio.ensure_future(trickle())
        assert b"200" not in await closed_by_server(reader)
        task.cancel()
        writer.close()


async def test_idle_connection_without_a_request_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, idle_timeout=1.0) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader) == b""
        writer.close()


async def test_trickled_body_is_408(tmp_path: Path) -> None:
    async with serving(tmp_path, idle_timeout=1.0) as (port, rig):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b'{"machine": "mill-01"}'
        writer.write(post(body)[: -len(body)] + body[:3])  # headers complete, the body never is
        await writer.drain()
        head = await closed_by_server(reader)
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        assert (await rig.outbox.list()).items == []


async def test_connections_over_the_cap_get_503_and_the_cap_frees_up(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=4) as (port, _):
        with capture_logs() as logs:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await asyncio.sleep(0.2)  # let the server register them
            for _ in range(3):
                status, data, head = await raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert status == 503 and data["error"]["code"] == "too_many_connections"
                assert b"Retry-After" in head
            for _, writer in held:
                writer.close()
                await writer.wait_closed()
            await wait_until(lambda: _answers(port))
        reached = [e for e in logs if e["event"] == "api_connection_limit_reached"]
        assert len(reached) == 1, "one warning per episode, not one per refused connection"


async def _answers(port: int) -> bool:
    request = (
        "GET /api/v1/machines HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    status, _, _ = await raw(port, request.encode())
    return status == 200


async def wait_until(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


# -- item 12: plaintext on the network, DNS rebinding


async def test_network_bind_without_tls_is_refused_unless_allowed(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path, {"qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/")}
    )
    rig = await make_rig(tmp_path, flows, FakeClock(time.time()), dispatch=False)
    config = ApiConfig(enabled=True, host="0.0.0.0", port=0, token=Secret(TOKEN, "test"))
    try:
        with pytest.raises(PlaintextRefused, match="allow_plaintext"):
            await start_api(create_app(rig.pipeline, rig.outbox, config), config)
    finally:
        await rig.close()


@pytest.mark.parametrize("host", [b"evil.example", b"evil.example:8787", b"10.0.0.5", b"[fe80::1]:80"])
async def test_foreign_host_header_on_a_loopback_bind_is_refused(tmp_path: Path, host: bytes) -> None:
    async with serving(tmp_path) as (port, _):
        request = b"GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: " + host + b"\r\n\r\n"
        status, data, _ = await raw(port, request)
        assert status == 421 and data["error"]["field"] == "Host"


@pytest.mark.parametrize("host", [b"127.0.0.1", b"localhost:8787", b"[::1]:8787", b"127.0.0.1:1"])
async def test_loopback_host_headers_are_served(tmp_path: Path, host: bytes) -> None:
    async with serving(tmp_path) as (port, _):
        request = (
            b"GET /api/v1/machines HTTP/1.1\r\nConnection: close\r\nHost: " + host + b"\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
        )
        status, data, _ = await raw(port, request)
        assert status == 200, data
