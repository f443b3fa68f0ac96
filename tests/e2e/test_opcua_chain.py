"""OPC-UA end to end: the simulator's 40502 nodes and CncAlarmType events → the opc40502 profile in
subscribe mode → Runtime → status and alarm webhooks at a verifying receiver.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.receiver import Receiver
from simulators.model import Alarm, Execution, MachineState
from simulators.opcua_server import OpcuaSimulator, start_opcua_server

from .conftest import at_path, past_clock, payload, start_agent, wait_at, webhook

LATHE = {"id": "lathe-02", "name": "CNC Lathe 02", "group": "Turning"}
# A code the profile has no text for, and OPC-UA has no severity register: description and severity
# can only come from the alarm event itself.
HYDRAULICS = Alarm(2077, "Hydraulic pressure low", 650)


@pytest.fixture(scope="module")
async def opcua_sim() -> AsyncIterator[OpcuaSimulator]:
    sim = await start_opcua_server([MachineState(name="sim-lathe")])
    yield sim
    await sim.stop()


def lathe_file(sim: OpcuaSimulator) -> str:
    return f"""\
id: lathe-02
name: CNC Lathe 02
group: Turning
profile: opc40502
opcua:
  url: "{sim.url}"
  prefix: "sim-lathe."
  mode: subscribe
  publishing_interval: 50ms
status: {{min_state: 0s}}
downtime:
  micro_stop: 1s
"""


async def test_status_and_alarm_events_arrive_as_webhooks(
    tmp_path: Path, opcua_sim: OpcuaSimulator, receiver: Receiver
) -> None:
    flows = {
        "status": "name: Status feed\ntrigger: {type: machine_status_changed}\n"
        + webhook(receiver.url + "status"),
        "alarms": "name: Hydraulics\n"
        "trigger: {type: alarm_triggered, code_patterns: ['20*'], min_severity: 600}\n"
        + webhook(receiver.url + "alarm"),
    }
    state = opcua_sim.machines["sim-lathe"]
    state.execution, state.alarms = Execution.READY, {}
    await opcua_sim.publish("sim-lathe")
    agent = await start_agent(tmp_path, {"lathe-02": lathe_file(opcua_sim)}, flows, past_clock())
    deriver = agent.deriver("lathe-02")
    try:
        await agent.wait_status("lathe-02", "IDLE")  # READY: ActStatus 2 (Reset), ProgramStatus 0
        state.execution = Execution.ACTIVE
        await opcua_sim.publish("sim-lathe")
        await agent.wait_status("lathe-02", "ACTIVE")

        state.execution = Execution.INTERRUPTED
        await opcua_sim.raise_alarm("sim-lathe", HYDRAULICS)  # publishes the nodes, then the event
        (alarm,) = await wait_at(receiver, "/alarm", 1)
        await agent.wait_status("lathe-02", "ALARM")

        state.execution = Execution.READY
        await opcua_sim.clear_alarm("sim-lathe", HYDRAULICS.code)
        await agent.wait_status("lathe-02", "IDLE")
        await agent.wait_until(lambda: not deriver.active_alarms, "the alarm to clear")
        feed = await wait_at(receiver, "/status", 4)
        status, metrics = await agent.metrics()
    finally:
        await agent.stop()

    body = payload(alarm)
    assert body["event"] == "alarm_triggered"
    assert body["machine"] == LATHE
    assert body["alarm"] == {"code": "2077", "description": "Hydraulic pressure low", "severity": 650}

    bodies = sorted((payload(r) for r in feed), key=lambda b: b["id"])
    assert [(b["status"]["from"], b["status"]["to"]) for b in bodies] == [
        (None, "IDLE"),
        ("IDLE", "ACTIVE"),
        ("ACTIVE", "ALARM"),
        ("ALARM", "IDLE"),
    ]
    assert all(b["machine"] == LATHE for b in bodies)
    # No workflow trigger listens to alarm_cleared; the agent's event counter shows it was derived.
    assert status == 200
    counted = dict(re.findall(r'^edge_agent_events_total\{type="(\w+)"\} (\S+)$', metrics, re.M))
    assert float(counted["alarm_triggered"]) == 1.0
    assert float(counted["alarm_cleared"]) == 1.0
    assert at_path(receiver, "/alarm") == [alarm]


async def test_alarm_register_seen_before_its_event_still_gets_the_events_severity(
    tmp_path: Path, opcua_sim: OpcuaSimulator, receiver: Receiver
) -> None:
    """A server may publish ActiveCode and the alarm event in different publish responses, in either
    order. A severity-filtered workflow must fire whichever arrives first."""
    flows = {
        "alarms": "name: Hydraulics\n"
        "trigger: {type: alarm_triggered, code_patterns: ['20*'], min_severity: 600}\n"
        + webhook(receiver.url + "alarm"),
    }
    state = opcua_sim.machines["sim-lathe"]
    state.execution, state.alarms = Execution.READY, {}
    await opcua_sim.publish("sim-lathe")
    agent = await start_agent(tmp_path, {"lathe-02": lathe_file(opcua_sim)}, flows, past_clock())
    deriver = agent.deriver("lathe-02")
    try:
        await agent.wait_status("lathe-02", "IDLE")
        state.alarms[HYDRAULICS.code] = HYDRAULICS
        await opcua_sim.publish("sim-lathe")  # ActiveCode 2077 now, the event a moment later
        await agent.wait_until(lambda: deriver.active_alarms, "the register's alarm")
        await opcua_sim.raise_alarm("sim-lathe", HYDRAULICS)
        (alarm,) = await wait_at(receiver, "/alarm", 1, limit=2)
    finally:
        await agent.stop()
        await opcua_sim.clear_alarm("sim-lathe", HYDRAULICS.code)
    assert payload(alarm)["alarm"] == {
        "code": "2077",
        "description": "Hydraulic pressure low",
        "severity": 650,
    }
