"""Modbus fixtures (the OPC-UA ones live in tests/drivers/opcua_fixtures.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from agent.config.source import Problems, Section, parse_yaml
from drivers.modbus.config import ModbusMachineConfig, parse
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import MachineState

MODBUS_UNITS = 8


@pytest.fixture(scope="session")
async def modbus_sim() -> AsyncIterator[ModbusSimulator]:
    """One simulator for the session: units 1..8, each test uses its own unit(s)."""
    machines = {u: MachineState(name=f"sim-{u}") for u in range(1, MODBUS_UNITS + 1)}
    sim = await start_modbus_server(machines)
    yield sim
    await sim.stop()


def modbus_config(
    text: str, *, machine_id: str = "m1", file: str = "machines/m1.yaml", poll_interval: float = 1.0
) -> ModbusMachineConfig:
    """A machine config from YAML text holding ``modbus:`` and ``tags:``; fails the test on any problem."""
    config, problems = modbus_config_problems(
        text, machine_id=machine_id, file=file, poll_interval=poll_interval
    )
    assert not problems, "\n".join(problems)
    return config


def modbus_config_problems(
    text: str, *, machine_id: str = "m1", file: str = "machines/m1.yaml", poll_interval: float = 1.0
) -> tuple[ModbusMachineConfig, list[str]]:
    problems = Problems()
    data = parse_yaml(text, file, problems)
    top = Section(data, file=file, path="", problems=problems)
    config = parse(machine_id, top.sub("modbus"), top.sub("tags"), poll_interval)
    return config, [str(p) for p in problems.items]


def free_port() -> int:
    """A port nothing listens on (the OS just handed it out and we closed it again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def wait_until(predicate: Callable[[], object], limit: float = 10.0) -> None:
    """Await a condition that I/O callbacks change, failing the test after ``limit`` seconds."""
    async with asyncio.timeout(limit):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)
