"""``agent: {event_loop: uvloop}``: the same daemon on libuv's loop, end to end.

uvloop's transports implement asyncio's transport API without subclassing its classes, so code that
checks ``isinstance(transport, asyncio.Transport)`` breaks only there (our Modbus client and the API's
connection cap both did). These tests run the real daemon on uvloop against the Modbus simulator, a
verifying receiver and its own API."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from agent.receiver import start_receiver
from simulators.modbus_server import ModbusSimulator
from simulators.model import Execution, MachineState
from tests.daemon.conftest import EVENT_WITHIN, AgentDir, AgentProcess, NotifySocket

pytestmark = pytest.mark.slow

pytest.importorskip("uvloop", reason="the uvloop extra is installed by make venv")


async def ready_line(agent: AgentProcess) -> dict[str, object]:
    """The ``agent_ready`` log line; it is written just after READY=1 is sent, so wait for it."""
    async with asyncio.timeout(EVENT_WITHIN):
        while True:
            for line in agent.log().splitlines():
                if line.startswith("{"):
                    item = json.loads(line)
                    if item.get("event") == "agent_ready":
                        assert isinstance(item, dict)
                        return item
            await asyncio.sleep(0.05)


def status_to(body: object) -> object:
    return body.get("status", {}).get("to") if isinstance(body, dict) else None


async def refused_with_503(port: int) -> bytes:
    # Nothing sent: the cap answers before reading (a request left unread would turn its close into
    # a reset that may overtake the answer).
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = await asyncio.wait_for(reader.read(), EVENT_WITHIN)
    writer.close()
    return head


async def test_the_daemon_on_uvloop_polls_derives_signs_delivers_and_caps_connections(
    modbus: ModbusSimulator, tmp_path: Path, short_dir: Path
) -> None:
    files = AgentDir(tmp_path, agent_extra=", event_loop: uvloop", api_extra=", max_connections: 2")
    receiver = await start_receiver(files.secret)
    files.machine("mill-01", modbus.port, 1)
    files.workflow("Status feed", "{type: machine_status_changed}", [(receiver.url + "status", "")])
    notify = NotifySocket(short_dir / "notify.sock")
    notify.start()
    agent = AgentProcess(files, notify)
    await agent.start()
    try:
        await agent.wait_ready()
        assert (await ready_line(agent))["event_loop"] == "uvloop"
        # Polled over the Modbus client on uvloop's transport: the first status, then a change.
        await receiver.wait_for(1, within=EVENT_WITHIN)
        modbus.machines[1].execution = Execution.ACTIVE
        modbus.publish(1)
        async with asyncio.timeout(EVENT_WITHIN):
            while not any(r.valid and status_to(r.json()) == "ACTIVE" for r in receiver.received):
                await receiver.wait_for(len(receiver.received) + 1, within=EVENT_WITHIN)
        assert all(r.valid for r in receiver.received), [r.error for r in receiver.received]
        # Over the API's connection cap, uvloop's transport gets the 503 too (not a traceback).
        held = [await asyncio.open_connection("127.0.0.1", files.api_port) for _ in range(2)]
        await asyncio.sleep(0.2)
        head = await refused_with_503(files.api_port)
        assert head.startswith(b"HTTP/1.1 503"), head
        for _, writer in held:
            writer.close()
        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 0
        assert "Traceback" not in agent.log() and "Exception in callback" not in agent.log()
    finally:
        modbus.machines[1] = MachineState(name="m1")
        modbus.publish(1)
        await agent.stop()
        await notify.close()
        await receiver.stop()
