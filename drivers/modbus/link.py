"""One Modbus TCP connection per host:port, shared by every unit id behind it.

PLCs and gateways accept only a few connections, and Modbus TCP devices answer one request at a
time, so a ``Link`` owns a single client (``wire.ModbusTcpClient``) and lets one request out at a
time (an ``asyncio.Lock``). Every request has its own deadline; a reply with an exception code or with the
wrong number of registers/bits becomes ``BadReply`` with a reason a plant engineer can act on.

Reconnecting is ours: when the transport drops, the next ``connect()`` opens a new one on our
capped exponential backoff, which also covers the very first connect.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import structlog

from drivers.backoff import backoff_delay
from drivers.base import ConnectionState
from drivers.modbus.wire import FUNCTION, ModbusTcpClient, WireError

log = structlog.get_logger(__name__)

# After this many unanswered requests in a row the connection is presumed dead (a half-open socket,
# or transaction ids out of step) and is replaced; a reply from any unit resets the count.
MAX_SILENT_REQUESTS = 3

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class LinkError(Exception):
    """A request got no usable reply; ``str()`` says why in plain words."""


class LinkDown(LinkError):
    """Not connected, or the connection was lost: nothing can be read now.

    ``reason`` is the outage's cause without the retry countdown, so what readings, status and
    metrics show stays the same through one outage.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class NoAnswer(LinkError):
    """The device did not answer in time (the connection itself may still be fine)."""


class BadReply(LinkError):
    """The device answered, but not with the requested values."""


class Link:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 1.0,
        pause_after_connect: float = 0.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 4.0,  # see agent/collector.py BACKOFF_CAP: back within 10 s
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.pause_after_connect = pause_after_connect
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        self._jitter = jitter
        self._client: ModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._state = ConnectionState.DISCONNECTED
        self._failures = 0
        self._next_attempt = 0.0
        self._silent = 0
        self._answered = False
        self._down_logged = False  # the current outage has had its log line
        self.reason = "not connected yet"
        self.connects = 0  # successful connects, for metrics and tests

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def state(self) -> ConnectionState:
        return self._state

    def _connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    async def connect(self) -> None:
        """Connect unless connected; raise ``LinkDown`` on failure or while a retry is not yet due."""
        if self._connected():
            return
        async with self._lock:
            if self._connected():
                return
            now = self._clock()
            if now < self._next_attempt:
                raise LinkDown(
                    f"{self.reason}; next attempt in {self._next_attempt - now:.1f} s", self.reason
                )
            self._state = ConnectionState.CONNECTING
            if self._client is not None:
                self._client.close()
            client = self._client = ModbusTcpClient(lambda: self._on_lost(client))
            try:
                await self._open(client)
            except BaseException:
                if self._state is ConnectionState.CONNECTING:
                    # Cancelled mid-connect (the agent stopping one user of a shared link): a link
                    # left CONNECTING would never be reconnected by the users still polling it.
                    client.close()
                    self._state = ConnectionState.DISCONNECTED
                    self.reason = self.reason or f"connecting to {self.name} was interrupted"
                raise
            self._state = ConnectionState.CONNECTED
            self._silent = 0
            self._answered = False
            self.connects += 1
            self.reason = ""
            # Not yet "up": a hung device accepts TCP and never answers. The first reply is the news.
            log.debug("modbus_tcp_connected", link=self.name)

    async def _open(self, client: ModbusTcpClient) -> None:
        reason = ""
        try:
            async with asyncio.timeout(self.timeout):
                await client.connect(self.host, self.port)
        except TimeoutError:
            reason = f"no TCP connection to {self.name} within {self.timeout:g} s"
        except OSError:
            reason = f"cannot connect to {self.name} (refused or unreachable)"
        if reason or not client.connected:
            reason = reason or f"{self.name} closed the connection right after connecting"
            client.close()
            self._failed(reason)
            raise LinkDown(reason)
        if self.pause_after_connect:
            # Some devices drop the first request sent right after the TCP handshake.
            await asyncio.sleep(self.pause_after_connect)
            if not client.connected:
                self._failed(f"{self.name} closed the connection right after connecting")
                raise LinkDown(self.reason)

    def _outage(self, event: str, reason: str) -> None:
        """One log line per outage, whatever the retries in it say."""
        if not self._down_logged:
            self._down_logged = True
            log.warning(event, link=self.name, reason=reason)

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self._state = ConnectionState.DISCONNECTED
        self._next_attempt = self._clock() + backoff_delay(
            self._failures, self.backoff_base, self.backoff_cap, self._jitter()
        )
        self._outage("modbus_connect_failed", reason)
        self.reason = reason

    def _on_lost(self, client: ModbusTcpClient) -> None:
        if client is self._client and self._connected():
            self._drop(f"connection to {self.name} lost")

    def _drop(self, reason: str) -> None:
        """Forget the connection; the next ``connect()`` makes a new one.

        A connection that carried at least one reply is retried at once. One that was dropped before
        any reply counts as a failed connect, so a device that accepts and hangs up at once is retried
        on the backoff rather than in a tight loop.
        """
        if self._client is not None:
            self._client.close()
        if self._answered:
            self._state = ConnectionState.DISCONNECTED
            self._failures = 0
            self._next_attempt = 0.0
            self.reason = reason
        else:
            self._failed(reason)
        self._outage("modbus_disconnected", reason)

    async def read(
        self, unit: int, table: str, address: int, count: int, deadline: float | None = None
    ) -> list[int] | list[bool]:
        """Read ``count`` registers or bits; raises ``LinkDown``, ``NoAnswer`` or ``BadReply``."""
        what = f"{table} {address}..{address + count - 1}"
        deadline = deadline or self.timeout
        async with self._lock:
            client = self._client
            if self._state is not ConnectionState.CONNECTED or client is None:
                raise LinkDown(self.reason or f"not connected to {self.name}")
            try:
                reply = await client.read(FUNCTION[table], address, count, unit, deadline)
            except TimeoutError:
                self._silent += 1
                if self._silent >= MAX_SILENT_REQUESTS:
                    self._drop(f"no answer to {self._silent} requests in a row from {self.name}")
                if self._state is not ConnectionState.CONNECTED:
                    raise LinkDown(self.reason) from None
                raise NoAnswer(f"no answer within {deadline:g} s reading {what} (unit {unit})") from None
            except WireError as exc:
                if client is self._client and self._connected():
                    self._drop(f"connection to {self.name} failed: {exc}")
                raise LinkDown(self.reason or f"connection to {self.name} failed: {exc}") from None
            self._silent = 0
            if not self._answered:
                self._answered = True
                self._failures = 0  # the backoff resets only once the device really answered
                if self._down_logged or self.connects == 1:
                    self._down_logged = False
                    log.info("modbus_connected", link=self.name)
        if reply.exception_code is not None:
            code = reply.exception_code
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise BadReply(f"exception {code} ({name}) reading {what} (unit {unit})")
        if table in ("holding", "input"):
            values: list[Any] = reply.values
            if len(values) != count:
                raise BadReply(f"reply to {what} (unit {unit}) has {len(values)} registers, expected {count}")
            return values
        bits: list[Any] = reply.values
        # Bits travel in whole bytes: a correct reply carries count rounded up to a multiple of 8.
        if len(bits) != (count + 7) // 8 * 8:
            raise BadReply(
                f"reply to {what} (unit {unit}) has {len(bits) // 8} bytes of bits, expected {(count + 7) // 8}"
            )
        return bits[:count]

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._state = ConnectionState.DISCONNECTED
            self.reason = "closed"


class LinkPool:
    """Hands out one shared ``Link`` per host:port and closes it when its last user is done."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, int], tuple[Link, int]] = {}

    def acquire(
        self, host: str, port: int, *, timeout: float = 1.0, pause_after_connect: float = 0.0
    ) -> Link:
        key = (host, port)
        entry = self._links.get(key)
        if entry is None:
            link = Link(host, port, timeout=timeout, pause_after_connect=pause_after_connect)
            self._links[key] = (link, 1)
            return link
        link, users = entry
        # Per-request deadlines stay per machine; connect timeout and pause are per connection.
        link.timeout = max(link.timeout, timeout)
        link.pause_after_connect = max(link.pause_after_connect, pause_after_connect)
        self._links[key] = (link, users + 1)
        return link

    async def release(self, link: Link) -> None:
        key = (link.host, link.port)
        entry = self._links.get(key)
        if entry is None or entry[0] is not link:
            return
        users = entry[1] - 1
        if users > 0:
            self._links[key] = (link, users)
            return
        del self._links[key]
        await link.close()

    def __len__(self) -> int:
        return len(self._links)
