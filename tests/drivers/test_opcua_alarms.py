"""OPC 10000-9 Alarms & Conditions through the driver into derivation, against three servers: the
bundled simulator's OPC 40502 CncAlarmType conditions, its ExclusiveLimitAlarmType condition, and
node-opcua (an independent implementation from npm).

What the spec says and these tests hold the agent to:
- a condition's identity is its ConditionId, not its message: a raise and its clear ("Back to
  normal") are one alarm, and two conditions stay two alarms whatever their texts (5.5.2);
- ActiveState/Id false ends the alarm (5.8.2);
- ConditionRefresh (5.5.7) resends every retained condition between RefreshStartEvent and
  RefreshEndEvent: an alarm active before the client subscribed is announced once, and one that
  ended while the client was away is missing from the refresh, so it ends.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import structlog.testing

from agent.derive import Categories, MachineDeriver
from agent.events import ALARM_CLEARED, ALARM_TRIGGERED, Event, MachineRef
from drivers.base import Sample
from drivers.opcua.driver import OpcuaDriver
from simulators.model import Alarm, MachineState
from simulators.opcua_server import start_opcua_server
from tests.derive.builders import spec_from
from tests.drivers.conftest import wait_until
from tests.drivers.opcua_fixtures import Recorder, ReferenceServer, machine_config, start_reference_server

NSU = "nsu=urn:edge-agent:simulator;s="
CNC_ALARM_TYPE = "nsu=http://opcfoundation.org/UA/CNC;i=1006"
DERIVE = "timezone: UTC\nstatus: {otherwise: IDLE}\nalarms: {events: true}\n"


@dataclass
class AlarmServer:
    """One way to raise and clear two conditions (1 and 2) on a server, and what the agent reads."""

    name: str
    url: str
    alarms_yaml: str  # the machine file's opcua.alarms
    raise_: Callable[[int, str], Awaitable[None]]
    clear: Callable[[int], Awaitable[None]]
    code: Callable[[int], str]  # the code events carry for condition n
    message_of_raise: Callable[[int, str], str | None]  # None: the server words it itself


@pytest.fixture(scope="module", params=["simulator-40502", "simulator-limit", "node-opcua"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[AlarmServer]:
    kind = request.param
    if kind == "node-opcua":
        ref: ReferenceServer = await start_reference_server()

        async def raise_ref(n: int, text: str) -> None:
            await ref.set_temperature(n, 95.0)

        async def clear_ref(n: int) -> None:
            await ref.set_temperature(n, 20.0)

        yield AlarmServer(
            kind, ref.url, "{}", raise_ref, clear_ref, lambda n: "TemperatureHigh", lambda n, t: None
        )
        await ref.stop()
        return
    sim = await start_opcua_server(
        [MachineState("cnc-1"), MachineState("oven-1"), MachineState("oven-2")],
        limit_alarms=["oven-1", "oven-2"],
    )
    if kind == "simulator-40502":

        async def raise_cnc(n: int, text: str) -> None:
            await sim.raise_alarm("cnc-1", Alarm(700 + n, text, 600))

        async def clear_cnc(n: int) -> None:
            await sim.clear_alarm("cnc-1", 700 + n)

        alarms = f'{{event_type: "{CNC_ALARM_TYPE}", code: AlarmIdentifier, source: "{NSU}cnc-1.Alarms"}}'
        yield AlarmServer(kind, sim.url, alarms, raise_cnc, clear_cnc, lambda n: str(700 + n), lambda n, t: t)
    else:

        async def raise_oven(n: int, text: str) -> None:
            await sim.raise_alarm(f"oven-{n}", Alarm(1, text, 800))

        async def clear_oven(n: int) -> None:
            await sim.clear_alarm(f"oven-{n}", 1)

        # Default event type (AlarmConditionType, so any subtype) and code (ConditionName): both ovens'
        # conditions are named TemperatureLimit, only their ConditionIds differ.
        yield AlarmServer(
            kind, sim.url, "{}", raise_oven, clear_oven, lambda n: "TemperatureLimit", lambda n, t: t
        )
    await sim.stop()


class Agent:
    """The driver feeding a deriver, as the runtime wires them (events collected in order)."""

    def __init__(self, server: AlarmServer) -> None:
        cfg = machine_config(
            f"""id: m1
opcua: {{url: "{server.url}", publishing_interval: 20ms, timeout: 2s, alarms: {server.alarms_yaml}}}
tags: {{}}
"""
        )
        self.driver = OpcuaDriver(cfg)
        counter = itertools.count()
        self.deriver = MachineDeriver(
            spec_from(DERIVE, tags=()),
            MachineRef("m1", "M1", "G"),
            Categories.of([]),
            new_id=lambda ts: f"id{next(counter):06d}",
        )
        self.events: list[Event] = []

    def _sink(self, samples: list[Sample] | Any) -> None:
        self.events.extend(self.deriver.ingest(samples, time.time()))

    async def connect(self) -> None:
        await self.driver.connect()
        await self.driver.subscribe(self._sink)

    async def disconnect(self) -> None:
        await self.driver.close()

    def alarms(self, kind: str) -> list[dict[str, Any]]:
        return [e.data["alarm"] for e in self.events if e.event == kind]

    async def wait(self, triggered: int, cleared: int) -> None:
        await wait_until(
            lambda: (
                len(self.alarms(ALARM_TRIGGERED)) >= triggered and len(self.alarms(ALARM_CLEARED)) >= cleared
            )
        )


@pytest.fixture
async def agent(server: AlarmServer) -> AsyncIterator[Agent]:
    a = Agent(server)
    yield a
    await a.disconnect()
    for n in (1, 2):  # leave the server without active alarms for the next test
        await server.clear(n)


async def test_raise_clear_raise_clear_is_two_alarms_with_one_code(server: AlarmServer, agent: Agent) -> None:
    await agent.connect()
    for round_ in (1, 2):
        await server.raise_(1, "Overtemperature")
        await agent.wait(round_, round_ - 1)
        await server.clear(1)
        await agent.wait(round_, round_)
    triggered, cleared = agent.alarms(ALARM_TRIGGERED), agent.alarms(ALARM_CLEARED)
    assert len(triggered) == len(cleared) == 2
    assert {a["code"] for a in triggered + cleared} == {server.code(1)}
    for t in triggered:
        expected = server.message_of_raise(1, "Overtemperature")
        assert t["description"] == expected if expected is not None else t["description"]
        assert 1 <= t["severity"] <= 1000
    assert all(c["duration_seconds"] >= 0 and c["cleared_by"] == "event" for c in cleared)
    assert agent.deriver.active_alarms == ()


async def test_an_alarm_active_before_connecting_is_announced_once(server: AlarmServer, agent: Agent) -> None:
    await server.raise_(1, "Already hot")
    await agent.connect()
    await agent.wait(1, 0)
    # A second refresh (reconnect) lists it again: still one alarm, not a second raise.
    await agent.disconnect()
    await agent.connect()
    await wait_until(lambda: agent.driver.event_filter == "conditions")
    await server.clear(1)
    await agent.wait(1, 1)
    assert [a["code"] for a in agent.alarms(ALARM_TRIGGERED)] == [server.code(1)]
    assert [a["cleared_by"] for a in agent.alarms(ALARM_CLEARED)] == ["event"]


async def test_an_alarm_cleared_while_disconnected_ends_after_the_refresh(
    server: AlarmServer, agent: Agent
) -> None:
    await agent.connect()
    await server.raise_(1, "Overtemperature")
    await agent.wait(1, 0)
    await agent.disconnect()
    await server.clear(1)
    await agent.connect()
    await agent.wait(1, 1)
    (cleared,) = agent.alarms(ALARM_CLEARED)
    # A server that still retains it (inactive but unacknowledged: node-opcua) lists its inactive
    # state in the refresh; one that does not retain it (the simulator's self-clearing alarms) leaves
    # it out of the refresh. Either way it ends once, after the reconnect.
    assert cleared["code"] == server.code(1)
    assert cleared["cleared_by"] == ("event" if server.name == "node-opcua" else "refresh")
    assert agent.deriver.active_alarms == ()


async def test_two_conditions_with_the_same_text_stay_two_alarms(server: AlarmServer, agent: Agent) -> None:
    await agent.connect()
    await server.raise_(1, "Overtemperature")
    await server.raise_(2, "Overtemperature")
    await agent.wait(2, 0)
    await server.clear(1)
    await agent.wait(2, 1)
    assert len(agent.deriver.active_alarms) == 1  # the other condition is still active
    (still,) = agent.deriver.active_alarms
    assert still.code == server.code(2)
    await server.clear(2)
    await agent.wait(2, 2)
    assert agent.deriver.active_alarms == ()


async def test_a_server_without_condition_refresh_still_delivers_alarms_and_says_so_once() -> None:
    sim = await start_opcua_server([MachineState("cnc-1")], condition_refresh=False)
    cfg = machine_config(
        f"""id: m1
opcua: {{url: "{sim.url}", publishing_interval: 20ms, alarms: {{event_type: "{CNC_ALARM_TYPE}", code: AlarmIdentifier}}}}
tags: {{}}
"""
    )
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(2):  # a reconnect does not repeat the warning
                await driver.connect()
                await driver.subscribe(sink)
        assert driver.event_filter == "conditions"
        await sim.raise_alarm("cnc-1", Alarm(1001, "Spindle overload", 700))
        await sink.wait_for(lambda s: len(s.alarms) >= 1)
        assert [(n.code, n.active) for n in sink.alarms] == [("1001", True)]
    finally:
        await driver.close()
        await sim.stop()
    warned = [e for e in logs if e["event"] == "opcua_condition_refresh_unsupported"]
    assert len(warned) == 1 and warned[0]["status"].startswith("Bad")
