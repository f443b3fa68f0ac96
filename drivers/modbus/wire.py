"""The client side of Modbus TCP on an asyncio Protocol: read requests out, replies in.

Why not pymodbus' client: at 500 machines polled once a second, its per-request machinery (a PDU
object per request and reply, a ``wait_for`` timer on top of ours, a transaction manager, a frame
log ring that formats every frame) was most of the poll path's own CPU time in the profile (issue 13).
The four read functions this agent uses are a few lines of framing (MODBUS Messaging on TCP/IP
Implementation Guide 1.0b, 3.1: the MBAP header; MODBUS Application Protocol 1.1b3, 6.1-6.4: the
read functions and 7: exception replies). pymodbus stays the simulator and the reference codec the
tests compare this one against.

One request is outstanding at a time (``Link`` holds a lock around each), so a reply either carries
the transaction id of the request waiting for it or is a late answer to one already given up on,
which is dropped. A frame that breaks the protocol (protocol id not 0, a length no PDU can have, a
reply to another function or unit) ends the connection: nothing after it can be trusted.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
MAX_PDU = 253  # MODBUS Application Protocol 1.1b3, 4.1
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length (unit + PDU), unit id
_REQUEST = struct.Struct(">HHHBBHH")  # MBAP + function, starting address, quantity


class WireError(Exception):
    """The connection broke or carried something no Modbus device may send; it is closed."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Register values (holding, input), bits in whole bytes (coil, discrete; LSB of the first byte
    is the first bit), or the exception code of an exception reply."""

    values: list[int] | list[bool]
    exception_code: int | None = None


def encode_read(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """The ADU of a read request (functions 1-4)."""
    return _REQUEST.pack(tid, 0, 6, unit, function, address, count)


def decode_reply(function: int, pdu: bytes) -> Reply:
    """The PDU of a reply to a read with ``function``; raises ``WireError`` for a malformed one."""
    if not pdu:
        raise WireError("empty reply")
    code = pdu[0]
    if code == function | 0x80:
        return Reply([], pdu[1] if len(pdu) > 1 else 0)
    if code != function:
        raise WireError(f"reply to function {function} carries function {code}")
    if len(pdu) < 2 or len(pdu) != 2 + pdu[1]:
        raise WireError(f"reply to function {function} has a byte count that does not match its length")
    data = pdu[2:]
    if function >= 3:
        if len(data) % 2:
            raise WireError(f"reply to function {function} has an odd number of register bytes")
        return Reply(list(struct.unpack(f">{len(data) // 2}H", data)))
    return Reply([bool(byte >> i & 1) for byte in data for i in range(8)])


def _expire(future: asyncio.Future[Reply]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class ModbusTcpClient(asyncio.Protocol):
    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._tid = 0
        # (transaction id, function, unit, future) of the request waiting for its reply
        self._pending: tuple[int, int, int, asyncio.Future[Reply]] | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self, host: str, port: int) -> None:
        """Open the TCP connection; raises ``OSError`` when refused or unreachable."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    async def read(self, function: int, address: int, count: int, unit: int, within: float) -> Reply:
        """Send one read request and wait for its reply; ``TimeoutError`` after ``within`` seconds.

        The deadline is one timer handle on the reply's future: ``asyncio.timeout`` around the await
        cost a Timeout object, a rescheduled handle and the task's uncancel bookkeeping per read."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise WireError("not connected")
        self._tid = (self._tid + 1) & 0xFFFF
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending = (self._tid, function, unit, future)
        expiry = loop.call_at(loop.time() + within, _expire, future)
        try:
            transport.write(encode_read(self._tid, unit, function, address, count))
            return await future
        finally:
            expiry.cancel()
            self._pending = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it: no isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._buffer.clear()
        self._fail(WireError("connection lost"))
        self._on_lost()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= _MBAP.size:
            tid, protocol, length, unit = _MBAP.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                self._violation(f"a frame with protocol id {protocol} and length {length}")
                return
            end = 6 + length
            if len(buf) < end:
                return  # at most one ADU (260 bytes) waits for the rest
            pdu = bytes(buf[_MBAP.size : end])
            del buf[:end]
            pending = self._pending
            if pending is None or pending[0] != tid or pending[3].done():
                continue  # a late reply to a request already given up on
            if pending[2] != unit:
                self._violation(f"a reply from unit {unit} to a request for unit {pending[2]}")
                return
            try:
                pending[3].set_result(decode_reply(pending[1], pdu))
            except WireError as exc:
                self._violation(str(exc))
                return

    def _violation(self, what: str) -> None:
        self._buffer.clear()
        self._fail(WireError(f"protocol violation: {what}"))
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, exc: WireError) -> None:
        if self._pending is not None and not self._pending[3].done():
            self._pending[3].set_exception(exc)
