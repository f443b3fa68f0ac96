"""A hostile (or broken) OPC UA server: huge strings and arrays, and messages past the transport limit.

The server here is a plain asyncua ``Server`` with variables whose values are whatever a bad device
might hold. What the agent may keep of them is bounded: over ``max_string_length`` or
``max_array_length`` a reading is BAD with the reason (logged once per episode), and a response
over ``max_message_size`` is refused on the wire, never buffered whole.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from asyncua import Server, ua
from asyncua.common.connection import TransportLimits
from structlog.testing import capture_logs

from drivers.base import ConnectionState, Quality
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.limits import PinnedLimits, oversize, transport_limits
from tests.drivers.opcua_fixtures import machine_config

NS = "urn:hostile-device"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hostile:
    server: Server
    url: str
    code: object  # the asyncua Node of the alarm-code string
    axes: object  # an Int32 array


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    url = f"opc.tcp://127.0.0.1:{free_port()}/hostile"
    server = Server()
    await server.init()
    server.set_endpoint(url)
    idx = await server.register_namespace(NS)
    obj = await server.nodes.objects.add_object(idx, "Cnc")
    code = await obj.add_variable(ua.NodeId("AlarmCode", idx), "AlarmCode", "E100", ua.VariantType.String)
    axes = await obj.add_variable(ua.NodeId("Axes", idx), "Axes", [1, 2, 3], ua.VariantType.Int32)
    await server.start()
    try:
        yield Hostile(server, url, code, axes)
    finally:
        await server.stop()


def driver_for(h: Hostile, extra: str = "") -> OpcuaDriver:
    cfg = machine_config(
        f"opcua: {{url: '{h.url}', timeout: 2s{extra}}}\n"
        f"tags:\n  alarm_code: {{node: 'nsu={NS};s=AlarmCode'}}\n  axes: {{node: 'nsu={NS};s=Axes'}}\n"
    )
    return OpcuaDriver(cfg)


async def set_value(node: object, value: object, vtype: ua.VariantType) -> None:
    await node.write_value(ua.DataValue(ua.Variant(value, vtype)))  # type: ignore[attr-defined]


async def test_oversized_string_and_array_are_bad_with_the_reason_logged_once(hostile: Hostile) -> None:
    driver = driver_for(hostile, ", max_string_length: 64, max_array_length: 10")
    await driver.connect()
    try:
        await set_value(hostile.code, "E" * 100_000, ua.VariantType.String)
        await set_value(hostile.axes, list(range(50)), ua.VariantType.Int32)
        with capture_logs() as logs:
            for _ in range(3):
                got = {r.tag: r for r in await driver.read()}
        assert got["alarm_code"].quality is Quality.BAD and got["alarm_code"].value is None
        assert got["alarm_code"].reason == "string of 100000 characters exceeds max_string_length 64"
        assert got["axes"].quality is Quality.BAD
        assert got["axes"].reason == "array of 50 elements exceeds max_array_length 10"
        warned = [e for e in logs if e["event"] == "tag_value_too_large"]
        assert sorted(e["tag"] for e in warned) == ["alarm_code", "axes"], "once per tag, not per poll"

        await set_value(hostile.code, "E200", ua.VariantType.String)
        await set_value(hostile.axes, [4, 5], ua.VariantType.Int32)
        got = {r.tag: r for r in await driver.read()}
        assert (got["alarm_code"].quality, got["alarm_code"].value) == (Quality.GOOD, "E200")
        assert got["axes"].value == [4, 5]
        # A new episode is logged again.
        await set_value(hostile.code, "E" * 100, ua.VariantType.String)
        with capture_logs() as logs:
            await driver.read()
        assert [e["tag"] for e in logs if e["event"] == "tag_value_too_large"] == ["alarm_code"]
    finally:
        await driver.close()


async def test_a_response_over_max_message_size_is_refused_not_buffered(hostile: Hostile) -> None:
    """8 MB in one string, with the client's limit at 1 MiB: the read fails, the connection is dropped
    (the collector reconnects with backoff), and the agent never holds the 8 MB."""
    await set_value(hostile.code, "X" * (8 * 1024 * 1024), ua.VariantType.String)
    driver = driver_for(hostile, ", max_message_size: 1MiB")
    await driver.connect()
    try:
        readings = await driver.read()
        assert {r.quality for r in readings} != {Quality.GOOD}
        assert all(r.value is None for r in readings)
        assert any("max_message_size" in (r.reason or "") for r in readings), readings
        assert driver.state is ConnectionState.DISCONNECTED
        # The device comes back to its senses: a reconnect reads normally again.
        await set_value(hostile.code, "E300", ua.VariantType.String)
        await driver.connect()
        got = {r.tag: r for r in await driver.read()}
        assert got["alarm_code"].value == "E300"
    finally:
        await driver.close()


def test_the_servers_acknowledge_cannot_raise_or_remove_our_limits() -> None:
    ours = transport_limits(1024 * 1024)
    ack = ua.Acknowledge()
    ack.ReceiveBufferSize = ack.SendBufferSize = 2**31
    ack.MaxMessageSize = 0  # "no limit"
    ack.MaxChunkCount = 0
    ours.update_client_limits(ack)
    assert ours.max_message_size == 1024 * 1024
    assert 0 < ours.max_chunk_count <= 1024 * 1024 // 65000 + 1
    assert ours.max_recv_buffer == 65535
    smaller = ua.Acknowledge()
    smaller.ReceiveBufferSize = smaller.SendBufferSize = 8192
    smaller.MaxMessageSize, smaller.MaxChunkCount = 65536, 8
    ours.update_client_limits(smaller)
    assert (ours.max_message_size, ours.max_chunk_count, ours.max_recv_buffer) == (65536, 8, 8192)
    # asyncua's own class adopts the server's word, which is the gap this closes.
    plain = TransportLimits(65535, 65535, 16, 1024 * 1024)
    plain.update_client_limits(ack)
    assert plain.max_message_size == 0
    assert isinstance(ours, PinnedLimits)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x" * 11, "string of 11 characters exceeds max_string_length 10"),
        (b"x" * 11, "byte string of 11 bytes exceeds max_string_length 10"),
        (list(range(6)), "array of 6 elements exceeds max_array_length 5"),
        (["ok", "x" * 11], "array element: string of 11 characters exceeds max_string_length 10"),
        (ua.LocalizedText("x" * 11), "string of 11 characters exceeds max_string_length 10"),
        ("x" * 10, None),
        (list(range(5)), None),
        (3.5, None),
    ],
)
def test_oversize_reasons(value: object, reason: str | None) -> None:
    assert oversize(value, 10, 5) == reason


async def test_a_chunk_header_announcing_gigabytes_is_cut_off_after_one_chunk() -> None:
    """A raw TCP "server" that acknowledges the Hello, then answers OpenSecureChannel with a chunk
    header claiming 1 GiB and streams bytes. asyncua alone would buffer it all before any check."""
    import asyncio
    import struct

    from asyncua.ua.ua_binary import uatcp_to_binary

    sent = 0
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        try:
            await reader.read(65536)  # the client's Hello
            ack = ua.Acknowledge()
            ack.ReceiveBufferSize = ack.SendBufferSize = 65535
            ack.MaxMessageSize, ack.MaxChunkCount = 0, 0
            writer.write(uatcp_to_binary(ua.MessageType.Acknowledge, ack))
            await reader.read(65536)  # OpenSecureChannel request
            writer.write(b"OPNF" + struct.pack("<I", 2**30) + struct.pack("<I", 0))
            block = b"\0" * 65536
            while sent < 2**30:
                writer.write(block)
                await writer.drain()
                sent += len(block)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = machine_config(
        f"opcua: {{url: 'opc.tcp://127.0.0.1:{port}', timeout: 10s}}\ntags: {{t: {{node: 'i=2258'}}}}\n"
    )
    driver = OpcuaDriver(cfg)
    try:
        with pytest.raises(Exception):  # noqa: B017 - DriverError; the point is what happens on the wire
            await driver.connect()
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
    # The client hung up after about one chunk, plus what sat in the socket buffers on both sides.
    assert sent < 16 * 1024 * 1024, f"{sent} bytes were accepted before the client hung up"
