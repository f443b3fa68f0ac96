"""A machine's first status is the truth about it, on real Modbus devices (the bundled simulator).

- No status is decided before the first good reading: a device that accepts TCP and never answers
  goes ``null → DISCONNECTED``, never ``null → IDLE → DISCONNECTED`` (a false IDLE webhook).
- A device that answers every request with a Modbus exception (spec: an exception response,
  function code + 0x80) is BAD, with the exception as the reason: it is reachable, not disconnected.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from agent.collector import Collector
from agent.derive import Categories, MachineDeriver
from agent.events import MACHINE_STATUS_CHANGED, Event, MachineRef
from drivers.base import Driver, Sample
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from drivers.opcua.driver import OpcuaDriver
from simulators.modbus_server import ModbusSimulator, start_modbus_server, start_silent_server
from simulators.model import MachineState
from tests.derive.builders import spec_from
from tests.drivers.conftest import modbus_config, wait_until
from tests.drivers.opcua_fixtures import machine_config as opcua_config

DERIVE = """timezone: UTC
status:
  min_state: 0s
  disconnect_after: 1s
  rules: [{when: {execution: 1}, state: ACTIVE}]
  otherwise: IDLE
"""


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ModbusSimulator]:
    server = await start_modbus_server({1: MachineState("ok"), 2: MachineState("hung")})
    yield server
    await server.stop()


async def statuses(port: int, unit: int, address: int = 0, *, opcua: bool = False) -> list[Event]:
    """Collect from the device until the machine has a status; the status events so far."""
    driver: Driver
    if opcua:
        driver = OpcuaDriver(
            opcua_config(
                f'opcua: {{url: "opc.tcp://127.0.0.1:{port}", timeout: 300ms}}\n'
                'tags: {execution: {node: "ns=2;s=m.Channel1.ActStatus"}}\n'
            )
        )
    else:
        config = modbus_config(
            f"modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: 300ms}}\n"
            f"tags: {{execution: {{table: holding, address: {address}}}}}",
        )
        driver = ModbusDriver(config, links=LinkPool())
    counter = itertools.count()
    deriver = MachineDeriver(
        spec_from(DERIVE, tags={"execution"}),
        MachineRef("m1", "M1", "G"),
        Categories.of([]),
        new_id=lambda ts: f"id{next(counter):06d}",
    )
    events: list[Event] = []

    def sink(samples: Sequence[Sample]) -> None:
        events.extend(deriver.ingest(samples, time.time()))

    async def timers() -> None:  # the runtime ticks every machine's timers, readings or not
        while True:
            events.extend(deriver.tick(time.time()))
            await asyncio.sleep(0.05)

    collector = Collector(driver, poll_interval=0.2, sink=sink)
    tasks = [asyncio.create_task(collector.run()), asyncio.create_task(timers())]
    try:
        await wait_until(lambda: deriver.status is not None, limit=20)
        await asyncio.sleep(0.5)  # and a few more polls: nothing else may follow
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [e for e in events if e.event == MACHINE_STATUS_CHANGED]


async def test_a_device_that_answers_is_read_first(sim: ModbusSimulator) -> None:
    (first,) = await statuses(sim.port, 1)
    assert (first.data["status"]["from"], first.data["status"]["to"]) == (None, "IDLE")


async def test_a_hung_device_is_disconnected_first_not_idle(sim: ModbusSimulator) -> None:
    sim.hang(2, True)
    try:
        (first,) = await statuses(sim.port, 2)
    finally:
        sim.hang(2, False)
    status = first.data["status"]
    assert (status["from"], status["to"]) == (None, "DISCONNECTED")
    assert "no answer" in status["reason"]


@pytest.mark.parametrize("protocol", ["modbus", "opcua"])
async def test_a_server_that_accepts_and_never_answers_is_disconnected_first(protocol: str) -> None:
    silent = await start_silent_server()
    try:
        (first,) = await statuses(silent.port, 1, opcua=protocol == "opcua")
    finally:
        await silent.stop()
    assert (first.data["status"]["from"], first.data["status"]["to"]) == (None, "DISCONNECTED")


async def test_a_device_answering_only_exceptions_is_bad_with_the_exception(sim: ModbusSimulator) -> None:
    # Holding 60000 is outside the simulator's register map: exception 2, illegal data address.
    (first,) = await statuses(sim.port, 1, address=60000)
    status = first.data["status"]
    assert (status["from"], status["to"]) == (None, "BAD")
    assert "exception 2" in status["reason"] and "holding 60000" in status["reason"]
