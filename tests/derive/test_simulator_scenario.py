"""Integration: the Modbus simulator → the real Modbus driver (modbus-sim profile) → MachineDeriver.

The scenario cycle → alarm → downtime → recover yields exactly the expected event sequence. The
device and the wire are real; only the derivation clock is injected, so no test waits for time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.config.machines import MachineConfig, parse_machine
from agent.config.source import Problems, parse_yaml
from agent.derive import MachineDeriver
from agent.events import Event
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import Alarm, Execution, MachineState

from .builders import CATEGORIES

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ModbusSimulator]:
    simulator = await start_modbus_server({1: MachineState(name="mill-01")})
    yield simulator
    await simulator.stop()


def machine_for(port: int) -> MachineConfig:
    text = f"""
id: mill-01
name: CNC Mill 01
group: Milling
profile: modbus-sim
modbus: {{host: 127.0.0.1, port: {port}, unit: 1, timeout: 1s}}
downtime:
  categorize:
    - {{when: {{alarm_code: [1001]}}, category: Maintenance Required}}
"""
    problems = Problems()
    machine = parse_machine(
        parse_yaml(text, "machines/mill-01.yaml", problems), "machines/mill-01.yaml", problems
    )
    assert machine is not None, [str(p) for p in problems.items]
    return machine


def summary(e: Event) -> tuple[Any, ...]:
    body = e.payload()
    if e.event == "machine_status_changed":
        return (e.event, body["status"]["from"], body["status"]["to"])
    if e.event.startswith("alarm_"):
        return (e.event, body["alarm"]["code"], body["alarm"]["description"])
    if e.event.startswith("downtime_"):
        return (e.event, body["downtime"]["category"], body["downtime"]["duration_seconds"])
    return (e.event, body["parts"]["delta"], body["parts"]["total"])


async def test_cycle_alarm_downtime_recover(sim: ModbusSimulator) -> None:
    machine = machine_for(sim.port)
    deriver = MachineDeriver(machine.derivation, machine.ref, CATEGORIES, exceeded_after=[1800])
    driver = ModbusDriver(machine.connection, links=LinkPool())  # type: ignore[arg-type]
    state = sim.machines[1]
    events: list[Event] = []

    async def poll(now: float) -> None:
        sim.publish(1)
        readings = await driver.read()
        assert all(r.quality == "good" for r in readings), [r.reason for r in readings if r.reason]
        events.extend(deriver.ingest(readings, now))

    await driver.connect()
    try:
        state.execution, state.part_count = Execution.ACTIVE, 41
        for s in range(0, 20):  # in cycle, a part every 4 s
            if s % 4 == 3:
                state.part_count += 1
            await poll(T0 + s)
        state.alarms[1001] = Alarm(1001, "Spindle overload", 800)
        state.execution = Execution.INTERRUPTED
        for s in range(20, 200, 10):  # alarm, then a downtime past the micro-stop
            await poll(T0 + s)
        events.extend(deriver.tick(T0 + 2000))  # nobody reads: the clock alone crosses 30 min
        state.alarms.clear()
        state.execution = Execution.ACTIVE
        for s in range(2010, 2020):  # recovered
            await poll(T0 + s)
    finally:
        await driver.close()

    assert [summary(e) for e in events] == [
        ("part_count", 1, 1),  # at 3 s, before the 5 s debounce confirmed the first status
        ("machine_status_changed", None, "ACTIVE"),
        ("part_count", 1, 2),
        ("part_count", 1, 3),
        ("part_count", 1, 4),
        ("part_count", 1, 5),
        ("alarm_triggered", "1001", "Spindle overload"),
        ("machine_status_changed", "ACTIVE", "ALARM"),
        ("downtime_started", "Maintenance Required", 120.0),
        ("downtime_categorized", "Maintenance Required", 120.0),
        ("downtime_exceeded", "Maintenance Required", 1980.0),
        ("alarm_cleared", "1001", "Spindle overload"),
        ("machine_status_changed", "ALARM", "ACTIVE"),
        ("downtime_ended", "Maintenance Required", 1990.0),
    ]
    triggered = next(e for e in events if e.event == "alarm_triggered").payload()["alarm"]
    assert triggered["severity"] == 800  # from the severity register
    assert deriver.status == "ACTIVE" and deriver.open_downtime is None
