"""Bounds on what an OPC UA server can make the agent hold: transport limits and value caps.

asyncua's client runs with ``TransportLimits(65535, 65535, 0, 0)``: no limit on a message's size or
chunk count, and it adopts whatever the server's Acknowledge says (0 = unlimited). Worse, a chunk
header announcing a 4 GB body is buffered whole before any check. A broken or hostile server sending
a 30 MB string every poll then grows the agent by gigabytes. Here the client asks for a limit in its
Hello (a compliant server answers Bad_ResponseTooLarge instead), never lets the Acknowledge raise it,
and drops the connection as soon as buffered bytes exceed one chunk.

``oversize`` is the per-reading cap: a string or array past it is a BAD reading with the reason.
"""

from __future__ import annotations

from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClient, UASocketProtocol
from asyncua.common.connection import TransportLimits

from drivers.opcua.config import DEFAULT_MAX_MESSAGE_SIZE

CHUNK_SIZE = 65535
# OPC UA TCP message header (type, chunk type, size) and the secure channel id: part of every chunk.
_HEADER = 12


class PinnedLimits(TransportLimits):
    """TransportLimits that the server's Acknowledge may lower but never raise or turn off."""

    def update_client_limits(self, msg: ua.Acknowledge) -> None:
        ours = (self.max_recv_buffer, self.max_message_size, self.max_chunk_count)
        super().update_client_limits(msg)
        self.max_recv_buffer = _tighter(self.max_recv_buffer, ours[0])
        self.max_message_size = _tighter(self.max_message_size, ours[1])
        self.max_chunk_count = _tighter(self.max_chunk_count, ours[2])


def _tighter(theirs: int, ours: int) -> int:
    return ours if theirs <= 0 else min(theirs, ours)


def transport_limits(max_message_size: int) -> PinnedLimits:
    return PinnedLimits(
        max_recv_buffer=CHUNK_SIZE,
        max_send_buffer=CHUNK_SIZE,
        max_chunk_count=max_message_size // (CHUNK_SIZE - _HEADER) + 1,
        max_message_size=max_message_size,
    )


class _BoundedProtocol(UASocketProtocol):
    """Drops the connection when the bytes waiting for the rest of a chunk exceed one chunk: the
    header's announced size is the server's word, and asyncua would buffer all of it first."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        pending = self.receive_buffer
        if pending is not None and len(pending) > CHUNK_SIZE + _HEADER:
            self.receive_buffer = None
            if self.transport is not None:
                self.transport.abort()  # connection_lost follows: the driver reports and reconnects


class _BoundedUaClient(UaClient):
    limits: PinnedLimits = transport_limits(DEFAULT_MAX_MESSAGE_SIZE)

    def _make_protocol(self) -> UASocketProtocol:
        protocol = super()._make_protocol()
        bounded = _BoundedProtocol(self._timeout, security_policy=self.security_policy, limits=self.limits)
        bounded.pre_request_hook = protocol.pre_request_hook
        bounded.on_connection_lost = protocol.on_connection_lost
        bounded.is_session_closing = protocol.is_session_closing
        self.protocol = bounded
        return bounded


def bound_client(client: Client, max_message_size: int) -> None:
    """Apply the limits to a not yet connected ``Client``."""
    # Asked for in Hello: a compliant server keeps its responses within these.
    client.max_messagesize = max_message_size
    limits = transport_limits(max_message_size)
    client.max_chunkcount = limits.max_chunk_count
    # The client builds its UaClient itself and offers no limits parameter; the subclass only swaps
    # the socket protocol it creates on connect (same state, same methods otherwise).
    client.uaclient.__class__ = _BoundedUaClient
    uaclient: Any = client.uaclient
    uaclient.limits = limits


def oversize(value: Any, max_string: int, max_array: int) -> str | None:
    """Why ``value`` (a decoded OPC UA value) is over the caps, or ``None`` when it is within them."""
    if isinstance(value, str | bytes | bytearray):
        if len(value) > max_string:
            kind = "string" if isinstance(value, str) else "byte string"
            unit = "characters" if isinstance(value, str) else "bytes"
            return f"{kind} of {len(value)} {unit} exceeds max_string_length {max_string}"
        return None
    if isinstance(value, ua.LocalizedText):
        return oversize(value.Text or "", max_string, max_array)
    if isinstance(value, list | tuple):
        if len(value) > max_array:
            return f"array of {len(value)} elements exceeds max_array_length {max_array}"
        for item in value:
            why = oversize(item, max_string, max_array)
            if why is not None:
                return f"array element: {why}"
    return None
