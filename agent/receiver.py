"""The webhook inspector: an HTTP endpoint that verifies every delivery and shows it readably.

``edge-agent receive`` runs it for people; tests use ``start_receiver(...)``, which records every
request and can be told to fail, hang, answer 410/429/500 or go away.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from aiohttp import web

from agent.config.source import Secret
from agent.delivery.signing import InvalidSignature, verify

_HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
# Set by every HTTP client; shown, they bury the webhook-* headers a reader is looking for.
_TRANSPORT_HEADERS = frozenset({"accept", "accept-encoding", "connection", "content-length", "host"})


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    valid: bool
    error: str | None
    status: int
    at: float

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    hang: bool = False


class Receiver:
    def __init__(
        self,
        secrets: Sequence[str],
        host: str,
        port: int,
        *,
        status: int = 200,
        fail_rate: float = 0.0,
        hang: bool = False,
        tolerance: float = 300,
        now: Callable[[], float] = time.time,
        out: TextIO | None = None,
        rng: random.Random | None = None,
        keep: int | None = None,
        max_body: int = 16 * 2**20,
    ) -> None:
        self.keep = keep
        self.max_body = max_body
        self.secrets = list(secrets)
        self.host = host
        self.port = port
        self.status = status
        self.fail_rate = fail_rate
        self.hang = hang
        self.tolerance = tolerance
        self.now = now
        self.out = out
        self.rng = rng or random.Random()
        self.received: list[Received] = []
        self.script: deque[Reply] = deque()
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def reply(self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        """The next ``times`` requests get this answer (then the default again)."""
        for _ in range(times):
            self.script.append(Reply(status, dict(headers or {})))

    def reply_hang(self, times: int = 1) -> None:
        for _ in range(times):
            self.script.append(Reply(hang=True))

    @property
    def valid(self) -> list[Received]:
        return [r for r in self.received if r.valid]

    async def wait_for(self, count: int, within: float = 10.0, *, valid_only: bool = False) -> list[Received]:
        """Wait until at least ``count`` requests (or valid ones) arrived; ``TimeoutError`` after
        ``within`` seconds (a bound for tests, not a pacing mechanism)."""

        def enough() -> bool:
            return len(self.valid if valid_only else self.received) >= count

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(enough)
        return list(self.received)

    async def start(self) -> None:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Go away: close the port (hanging requests are released first)."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        valid, error = True, None
        if self.secrets:
            try:
                verify(self.secrets, headers, body, self.now(), self.tolerance)
            except InvalidSignature as exc:
                valid, error = False, str(exc)
        reply = self.script.popleft() if self.script else None
        if reply is None:
            hang = self.hang
            status = self.status
            if status < 300 and self.fail_rate and self.rng.random() < self.fail_rate:
                status = 500
            reply = Reply(status, hang=hang)
        if not valid and reply.status < 300 and not reply.hang:
            reply = Reply(401, body="invalid signature")
        record = Received(request.path, headers, body, valid, error, reply.status, time.time())
        async with self._changed:
            self.received.append(record)
            if self.keep is not None and len(self.received) > self.keep:
                del self.received[: len(self.received) - self.keep]
            self._changed.notify_all()
        if self.out is not None:
            self.out.write(render(record, hang=reply.hang))
            self.out.flush()
        if reply.hang:
            await self._release.wait()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


def render(rec: Received, *, hang: bool = False) -> str:
    """A delivery as a person wants to read it: verdict, headers, pretty JSON."""
    mark = "VALID  " if rec.valid else f"INVALID ({printable(rec.error or '')})"
    stamp = time.strftime("%H:%M:%S", time.localtime(rec.at))
    answer = "hanging" if hang else str(rec.status)
    lines = [f"── {stamp} {mark} POST {printable(rec.path)} → {answer}"]
    for name in sorted(rec.headers):
        if name in _TRANSPORT_HEADERS:
            continue
        value = "<hidden>" if name in _HIDDEN_HEADERS else rec.headers[name]
        lines.append(f"   {printable(name)}: {printable(value)}")
    try:
        pretty = json.dumps(json.loads(rec.body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        pretty = rec.body[:2048].decode("utf-8", "replace")
    lines.extend("   " + printable(line) for line in pretty.split("\n"))
    return "\n".join(lines) + "\n\n"


def printable(text: str) -> str:
    """``text`` safe for a terminal: anything not printable (ESC, C1 controls such as U+009B CSI,
    bidi overrides, line separators) becomes a visible escape. The sender is not trusted: raw, an
    OSC or CSI sequence in a path or body could retitle, recolour or rewrite the operator's screen."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


async def start_receiver(
    secret: str | Secret | Sequence[str | Secret] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    status: int = 200,
    fail_rate: float = 0.0,
    hang: bool = False,
    tolerance: float = 300,
    now: Callable[[], float] = time.time,
    out: TextIO | None = None,
    rng: random.Random | None = None,
    keep: int | None = None,
    max_body: int = 16 * 2**20,
) -> Receiver:
    """Start a receiver (port 0: a free port, see ``.port``/``.url``); without a secret nothing is verified."""
    if secret is None:
        items: list[str | Secret] = []
    elif isinstance(secret, str | Secret):
        items = [secret]
    else:
        items = list(secret)
    plain = [s.reveal() if isinstance(s, Secret) else s for s in items]
    rec = Receiver(
        plain,
        host,
        port,
        status=status,
        fail_rate=fail_rate,
        hang=hang,
        tolerance=tolerance,
        now=now,
        out=out,
        rng=rng,
        keep=keep,
        max_body=max_body,
    )
    await rec.start()
    return rec


async def serve_forever(receiver: Receiver) -> None:
    print(f"edge-agent receiver listening on {receiver.url} (Ctrl-C to stop)", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await receiver.stop()
