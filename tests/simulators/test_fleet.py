"""The fleet against real clients: pymodbus and asyncua read what the scenario put on the servers."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from agent.config.source import Problems, parse_yaml
from simulators.cli import main as simulate_main
from simulators.fleet import Fleet, FleetConfig
from simulators.model import Execution
from simulators.scenario import Scenario, load_scenario, parse_scenario

NS = "urn:edge-agent:simulator"


def scenario_of(text: str) -> Scenario:
    problems = Problems()
    scenario = parse_scenario(parse_yaml(text, "t.yaml", problems), file="t.yaml", problems=problems)
    problems.raise_if_any()
    return scenario


ALARM_THEN_REBOOT = scenario_of(
    """
loop: false
steps:
  - {for: 30s, execution: ACTIVE, cycle: 5s, spindle: 5000, program: O4711}
  - {for: 30s, execution: INTERRUPTED, alarm: {code: 1001, text: Spindle overload, severity: 800}}
  - {for: 10s, clear_alarm: 1001, execution: READY}
  - {reboot: 10s}
  - {for: 100s, execution: READY}
"""
)


async def read_holding(port: int, unit: int, count: int) -> list[int] | None:
    """Registers, or None when the server cannot be reached."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        if not await client.connect():
            return None
        rr = await client.read_holding_registers(0, count=count, device_id=unit)
        assert not rr.isError(), rr
        return list(rr.registers)
    finally:
        client.close()


async def read_input(port: int, unit: int) -> list[int]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        rr = await client.read_input_registers(0, count=3, device_id=unit)
        assert not rr.isError(), rr
        return list(rr.registers)
    finally:
        client.close()


async def test_two_machines_on_both_protocols_show_the_scenario() -> None:
    fleet = Fleet(FleetConfig(ALARM_THEN_REBOOT, machines=2, protocol="both", modbus_port=0, opcua_port=0))
    await fleet.start(run_timer=False)
    try:
        assert fleet.modbus is not None and fleet.opcua is not None
        start = fleet.players[0].start
        await fleet.tick(start + 27.0)
        sim2 = fleet.states[1]
        assert sim2.name == "sim-02" and sim2.part_count >= 4

        regs = await read_holding(fleet.modbus.port, unit=2, count=4)
        assert regs is not None
        assert regs[0] == Execution.ACTIVE
        assert (regs[2] << 16) | regs[3] == sim2.part_count

        async with Client(fleet.opcua.url, timeout=5) as client:
            ns = await client.get_namespace_index(NS)
            status = await client.get_node(f"ns={ns};s=sim-02.Channel1.ActStatus").read_value()
            parts = await client.get_node(f"ns={ns};s=sim-02.Production.PartCount").read_value()
            program = await client.get_node(f"ns={ns};s=sim-01.Channel1.ActProgramName").read_value()
            assert (status, parts, program) == (0, sim2.part_count, "O4711")

            await fleet.tick(start + 35.0)
            assert await read_input(fleet.modbus.port, unit=1) == [1001, 800, 1]
            code = await client.get_node(f"ns={ns};s=sim-01.Alarms.ActiveCode").read_value()
            assert code == 1001

            await fleet.tick(start + 65.0)
            assert await read_input(fleet.modbus.port, unit=1) == [0, 0, 0]
            assert await client.get_node(f"ns={ns};s=sim-01.Alarms.ActiveCode").read_value() == 0
    finally:
        await fleet.stop()


async def test_reboot_step_stops_and_restarts_the_server() -> None:
    fleet = Fleet(FleetConfig(ALARM_THEN_REBOOT, machines=1, protocol="modbus", modbus_port=0))
    await fleet.start(run_timer=False)
    try:
        assert fleet.modbus is not None
        port, start = fleet.modbus.port, fleet.players[0].start
        await fleet.tick(start + 65.0)
        parts = fleet.states[0].part_count
        assert parts >= 5

        await fleet.tick(start + 75.0)  # rebooting
        await fleet.settled()
        assert not fleet.server_up("modbus")
        assert await read_holding(port, unit=1, count=4) is None

        await fleet.tick(start + 81.0)  # back
        await fleet.settled()
        assert fleet.server_up("modbus")
        regs = await read_holding(port, unit=1, count=4)
        assert regs is not None
        assert regs[0] == Execution.READY
        assert (regs[2] << 16) | regs[3] == parts  # the counter is retentive
    finally:
        await fleet.stop()


async def test_one_timer_drives_every_machine() -> None:
    fleet = Fleet(
        FleetConfig(
            load_scenario("steady"), machines=3, protocol="modbus", modbus_port=0, speed=400.0, tick=0.02
        )
    )
    progressed = asyncio.Event()
    real_tick = fleet.tick

    async def watched_tick(now: float) -> None:
        await real_tick(now)
        if all(s.part_count >= 2 for s in fleet.states):
            progressed.set()

    fleet.tick = watched_tick  # type: ignore[method-assign]
    await fleet.start()
    try:
        await asyncio.wait_for(progressed.wait(), 10)
        assert fleet.modbus is not None
        regs = await read_holding(fleet.modbus.port, unit=3, count=4)
        assert regs is not None and regs[0] == Execution.ACTIVE and (regs[2] << 16) | regs[3] >= 2
        fleet_tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("fleet-")]
        assert [t.get_name() for t in fleet_tasks] == ["fleet-timer"]
    finally:
        await fleet.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("fleet-")]


async def test_more_than_247_machines_spread_over_modbus_servers() -> None:
    fleet = Fleet(FleetConfig(load_scenario("steady"), machines=250, protocol="modbus", modbus_port=0))
    await fleet.start(run_timer=False)
    try:
        assert len(fleet.modbus_servers) == 2
        await fleet.tick(fleet.players[0].start + 45.0)
        port, unit = fleet.modbus_address(248)
        assert unit == 2 and port == fleet.modbus_servers[1].port != fleet.modbus_servers[0].port
        regs = await read_holding(port, unit=unit, count=4)
        assert regs is not None and regs[0] == Execution.ACTIVE
        assert (regs[2] << 16) | regs[3] == fleet.states[248].part_count >= 2
    finally:
        await fleet.stop()


async def test_a_machine_named_for_limit_alarms_generates_the_standard_limit_alarm_type() -> None:
    fleet = Fleet(
        FleetConfig(
            load_scenario("steady"), machines=2, protocol="opcua", opcua_port=0, limit_alarms=("sim-02",)
        )
    )
    await fleet.start(run_timer=False)
    try:
        assert fleet.opcua is not None
        async with Client(fleet.opcua.url, timeout=5) as client:
            ns = await client.get_namespace_index(NS)

            async def generates(machine: str) -> list[ua.NodeId]:
                node = client.get_node(f"ns={ns};s={machine}.Alarms")
                refs = await node.get_references(refs=ua.ObjectIds.GeneratesEvent)
                return [r.NodeId for r in refs]

            assert await generates("sim-02") == [ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)]
            assert ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType) not in await generates("sim-01")
    finally:
        await fleet.stop()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--machines", "2", "--limit-alarm", "sim-03"],
            "limit alarms named for machines not simulated: ['sim-03']",
        ),
        (["--protocol", "modbus", "--limit-alarm", "sim-01"], "limit alarms are OPC UA conditions"),
    ],
)
def test_simulate_names_a_limit_alarm_machine_it_cannot_serve(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert simulate_main(argv) == 2
    assert message in capsys.readouterr().err
