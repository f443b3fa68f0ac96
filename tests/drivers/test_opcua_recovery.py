"""A rebooting OPC-UA server: readings turn DISCONNECTED, then polling, data and alarm subscriptions resume
on the same driver objects, even though the reboot moved the simulator's namespace to another index."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from drivers.base import AlarmRefresh, ConnectionState, Quality
from drivers.opcua.driver import OpcuaDriver
from simulators.model import Alarm, MachineState
from simulators.opcua_server import OpcuaSimulator, start_opcua_server
from tests.drivers.opcua_fixtures import Recorder, machine_config

NSU = "nsu=urn:edge-agent:simulator;s="


@pytest.fixture(scope="module")
async def rebooting_sim() -> AsyncIterator[OpcuaSimulator]:
    # Its own server: stopping it must not disturb the session simulator other modules share.
    sim = await start_opcua_server([MachineState("press-03")])
    yield sim
    await sim.stop()


def config_yaml(url: str, mode: str) -> str:
    return f"""id: press-03
opcua:
  url: "{url}"
  mode: {mode}
  publishing_interval: 20ms
  timeout: 1s
  prefix: "press-03."
  alarms: {{source: "{NSU}{{prefix}}Alarms", event_type: "nsu=http://opcfoundation.org/UA/CNC;i=1006", code: AlarmIdentifier}}
tags:
  parts: {{node: "{NSU}{{prefix}}Production.PartCount"}}
  rpm: {{node: "{NSU}{{prefix}}Spindle1.ActSpeed"}}
"""


async def test_reboot_disconnects_then_everything_resumes(rebooting_sim: OpcuaSimulator) -> None:
    sim = rebooting_sim
    machine = sim.machines["press-03"]
    poller = OpcuaDriver(machine_config(config_yaml(sim.url, "poll")))
    pusher = OpcuaDriver(machine_config(config_yaml(sim.url, "subscribe")))
    sink = Recorder()
    await poller.connect()
    await pusher.connect()
    try:
        assert await pusher.subscribe(sink) is True
        machine.part_count = 5
        await sim.publish("press-03")
        await sink.wait_for(lambda s: (r := s.last("parts")) is not None and r.value == 5)
        first_ns = sim.namespace_index

        await sim.stop()
        # The subscribed driver notices on its own and says so through the sink.
        await sink.wait_for(
            lambda s: (r := s.last("parts")) is not None and r.quality is Quality.DISCONNECTED
        )
        assert pusher.state is ConnectionState.DISCONNECTED
        readings = await poller.read()
        assert {r.quality for r in readings} == {Quality.DISCONNECTED}
        assert poller.state is ConnectionState.DISCONNECTED
        assert "lost" in (readings[0].reason or "") or "failed" in (readings[0].reason or "")

        machine.part_count = 6
        await sim.start(shift_namespace=True)
        assert sim.namespace_index != first_ns  # the reboot really moved the namespace

        # What the collector does when it sees DISCONNECTED: connect() again on the same objects.
        await poller.connect()
        await pusher.connect()
        assert {(r.tag, r.value, r.quality) for r in await poller.read()} == {
            ("parts", 6, Quality.GOOD),
            ("rpm", 0.0, Quality.GOOD),
        }
        await sink.wait_for(lambda s: (r := s.last("parts")) is not None and r.value == 6)
        machine.part_count = 7
        await sim.publish("press-03")
        await sink.wait_for(lambda s: (r := s.last("parts")) is not None and r.value == 7)
        assert sink.last("parts").quality is Quality.GOOD  # type: ignore[union-attr]

        await sim.raise_alarm("press-03", Alarm(3300, "Hydraulic pressure low", 800))
        await sink.wait_for(lambda s: len(s.alarms) >= 1)
        assert (sink.alarms[0].code, sink.alarms[0].active, sink.alarms[0].severity) == ("3300", True, 800)
    finally:
        await poller.close()
        await pusher.close()


async def test_alarm_events_resume_for_a_poll_mode_driver(rebooting_sim: OpcuaSimulator) -> None:
    sim = rebooting_sim
    await sim.raise_alarm("press-03", Alarm(3300, "Hydraulic pressure low", 800))
    driver = OpcuaDriver(machine_config(config_yaml(sim.url, "poll")))
    sink = Recorder()
    await driver.connect()
    try:
        assert await driver.subscribe(sink) is False
        await sink.wait_for(lambda s: any(isinstance(x, AlarmRefresh) for x in s.samples))
        (key,) = {n.key for n in sink.alarms}
        await sim.stop()
        assert {r.quality for r in await driver.read()} == {Quality.DISCONNECTED}
        assert driver.state is ConnectionState.DISCONNECTED
        await sim.start()
        sink.samples.clear()
        await driver.connect()
        # The rebooted controller still has the alarm: the refresh lists it under the same identity.
        await sink.wait_for(lambda s: any(isinstance(x, AlarmRefresh) for x in s.samples))
        refresh = next(x for x in sink.samples if isinstance(x, AlarmRefresh))
        assert refresh.keys == {key}
        assert [(n.code, n.active, n.key) for n in sink.alarms] == [("3300", True, key)]
        await sim.clear_alarm("press-03", 3300)
        await sink.wait_for(lambda s: len(s.alarms) >= 2)
        assert [(n.code, n.active, n.key) for n in sink.alarms[1:]] == [("3300", False, key)]
        assert all(r.quality is Quality.GOOD for r in await driver.read())
    finally:
        await driver.close()
