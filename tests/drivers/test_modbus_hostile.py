"""A hostile Modbus TCP "device": what it can make the agent hold is bounded by the protocol.

A Modbus PDU is at most 253 bytes (the spec, MODBUS Application Protocol 1.1b3, 4.1), so a frame
announcing 65,535 bytes can only come from something that is not a Modbus device: the client
(drivers/modbus/wire.py) closes the connection at once, keeps nothing of it and decodes nothing.
This test floods the client with megabytes of junk behind such a frame and measures what the agent
allocated meanwhile: at most a socket read or two, independent of how much the device sends.
"""

from __future__ import annotations

import asyncio
import sys
import tracemalloc

from drivers.base import Quality
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from tests.drivers.conftest import modbus_config

FLOOD = 24 * 1024 * 1024
# asyncio reads up to 256 KiB at a time; the buffer keeps at most one ADU (260 bytes) beyond it.
BOUND = 2 * 256 * 1024 + 256 * 1024


# The device runs in its own process, so that what is measured below is the agent's memory only.
DEVICE = """
import socket, struct, sys
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
request = conn.recv(260)
sent = 0
try:
    # MBAP announcing the 16-bit maximum, then a read-holding-registers reply that never ends.
    conn.sendall(request[:2] + b"\\0\\0" + struct.pack(">H", 0xFFFF) + b"\\x01\\x03\\xfa")
    block = bytes(range(256)) * 256
    while sent < int(sys.argv[1]):
        conn.sendall(block)
        sent += len(block)
except OSError:
    pass
print(sent, flush=True)
"""


async def test_a_flood_of_junk_is_never_buffered_or_decoded() -> None:
    device = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DEVICE, str(FLOOD), stdout=asyncio.subprocess.PIPE
    )
    assert device.stdout is not None
    port = int(await asyncio.wait_for(device.stdout.readline(), 30))
    config = modbus_config(
        f"modbus: {{host: 127.0.0.1, port: {port}, unit: 1, timeout: 2s}}\n"
        "tags:\n  name: {table: holding, address: 0, type: string, length: 4}\n"
    )
    driver = ModbusDriver(config, links=LinkPool())
    await driver.connect()
    tracemalloc.start()
    try:
        (reading,) = await driver.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await driver.close()
    sent = int(await asyncio.wait_for(device.stdout.readline(), 30))
    await device.wait()
    assert reading.quality is not Quality.GOOD and reading.value is None
    assert "protocol violation" in (reading.reason or ""), reading.reason
    # The client hung up instead of reading the flood: the device could not push it all (the kernel's
    # socket buffers hold a few MiB at most), and how much it did push is the race between its
    # sendall and our close; what the agent allocated meanwhile is bounded either way.
    assert sent < FLOOD, "the client kept reading a stream no Modbus device may send"
    assert peak < BOUND, f"{peak} bytes allocated while {sent} bytes of junk were sent"
