"""OpcuaDriver against the real asyncua simulator on 127.0.0.1: polling, subscriptions, alarm events, isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import structlog.testing

from drivers.base import ConnectionState, Driver, DriverError, Quality
from drivers.opcua.driver import OpcuaDriver
from simulators.model import Alarm, Execution, OperationMode
from simulators.opcua_server import OpcuaSimulator
from tests.drivers import opcua_fixtures
from tests.drivers.opcua_fixtures import Recorder, machine_config

opcua_sim = opcua_fixtures.opcua_sim  # session fixtures shared with other OPC-UA modules
opcua_pki = opcua_fixtures.opcua_pki

NSU = "nsu=urn:edge-agent:simulator;s="
CNC_ALARM_TYPE = "nsu=http://opcfoundation.org/UA/CNC;i=1006"  # OPC 40502 CncAlarmType


def poll_yaml(url: str, extra_tags: str = "") -> str:
    return f"""id: lathe-01
opcua: {{url: "{url}", prefix: "lathe-01.", timeout: 2s}}
tags:
  channel_status: {{node: "{NSU}{{prefix}}Channel1.ActStatus", map: {{0: ACTIVE, 1: INTERRUPTED, 2: RESET}}}}
  program: {{node: "{NSU}{{prefix}}Channel1.ActProgramName"}}
  spindle_krpm: {{node: "{NSU}{{prefix}}Spindle1.ActSpeed", scale: 0.001}}
  mode: {{node: "{NSU}{{prefix}}MachineTool.OperationMode", map: {{0: MANUAL, 1: AUTOMATIC, 2: SETUP}}}}
  estop: {{node: "{NSU}{{prefix}}MachineTool.EmergencyStop", map: {{true: TRIGGERED, false: ARMED}}}}
  part_count: {{node: "{NSU}{{prefix}}Production.PartCount"}}
{extra_tags}"""


@pytest.fixture
async def poller(opcua_sim: OpcuaSimulator) -> AsyncIterator[OpcuaDriver]:
    driver: Driver = OpcuaDriver(machine_config(poll_yaml(opcua_sim.url)))  # satisfies the shared protocol
    await driver.connect()
    assert isinstance(driver, OpcuaDriver)
    yield driver
    await driver.close()


async def test_poll_reads_decode_with_map_and_scale(opcua_sim: OpcuaSimulator, poller: OpcuaDriver) -> None:
    m = opcua_sim.machines["lathe-01"]
    m.execution, m.program, m.spindle_speed, m.mode, m.estop, m.part_count = (
        Execution.ACTIVE,
        "O4711",
        1250.0,
        OperationMode.SETUP,
        True,
        42,
    )
    await opcua_sim.publish("lathe-01")
    readings = await poller.read()
    assert poller.state is ConnectionState.CONNECTED
    assert {r.tag: r.value for r in readings} == {
        "channel_status": "ACTIVE",
        "program": "O4711",
        "spindle_krpm": pytest.approx(1.25),
        "mode": "SETUP",
        "estop": "TRIGGERED",
        "part_count": 42,
    }
    assert all(r.quality is Quality.GOOD and r.machine_id == "lathe-01" for r in readings)


async def test_readings_carry_the_servers_source_timestamp(opcua_sim: OpcuaSimulator) -> None:
    # The agent's clock is stopped at 0 here: any other time can only be the server's SourceTimestamp.
    driver = OpcuaDriver(machine_config(poll_yaml(opcua_sim.url)), clock=lambda: 0.0)
    opcua_sim.machines["lathe-01"].part_count += 1
    before = time.time()
    await opcua_sim.publish("lathe-01")
    after = time.time()
    await driver.connect()
    try:
        readings = {r.tag: r for r in await driver.read()}
    finally:
        await driver.close()
    assert before - 1 <= readings["part_count"].timestamp <= after + 1


async def test_nsu_and_ns_index_address_the_same_node(opcua_sim: OpcuaSimulator) -> None:
    opcua_sim.machines["mill-07"].part_count = 99
    await opcua_sim.publish("mill-07")
    ns = opcua_sim.namespace_index
    cfg = machine_config(
        f"""opcua: {{url: "{opcua_sim.url}"}}
tags:
  by_uri: {{node: "{NSU}mill-07.Production.PartCount"}}
  by_index: {{node: "ns={ns};s=mill-07.Production.PartCount"}}
"""
    )
    driver = OpcuaDriver(cfg)
    await driver.connect()
    try:
        readings = await driver.read()
    finally:
        await driver.close()
    assert [(r.tag, r.value, r.quality) for r in readings] == [
        ("by_uri", 99, Quality.GOOD),
        ("by_index", 99, Quality.GOOD),
    ]


async def test_unknown_node_is_a_bad_reading_and_others_stay_good(opcua_sim: OpcuaSimulator) -> None:
    extra = f"""  ghost: {{node: "{NSU}lathe-01.Channel9.Nothing"}}
  other_ns: {{node: "nsu=urn:not-on-this-server;s=x"}}
"""
    driver = OpcuaDriver(machine_config(poll_yaml(opcua_sim.url, extra)))
    await driver.connect()
    try:
        readings = {r.tag: r for r in await driver.read()}
    finally:
        await driver.close()
    assert readings["ghost"].quality is Quality.BAD
    assert readings["ghost"].reason == "BadNodeIdUnknown"
    assert readings["other_ns"].quality is Quality.BAD
    assert "urn:not-on-this-server" in (readings["other_ns"].reason or "")
    good = [r for t, r in readings.items() if t not in ("ghost", "other_ns")]
    assert len(good) == 6 and all(r.quality is Quality.GOOD for r in good)


async def test_subscription_pushes_changes_with_deadband(opcua_sim: OpcuaSimulator) -> None:
    cfg = machine_config(
        f"""opcua: {{url: "{opcua_sim.url}", mode: subscribe, publishing_interval: 20ms, prefix: "mill-07."}}
tags:
  rpm: {{node: "{NSU}{{prefix}}Spindle1.ActSpeed", deadband: 10}}
  program: {{node: "{NSU}{{prefix}}Channel1.ActProgramName"}}
  missing: {{node: "{NSU}{{prefix}}Nope"}}
"""
    )
    m = opcua_sim.machines["mill-07"]
    m.spindle_speed = 1000.0
    await opcua_sim.publish("mill-07")
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    await driver.connect()
    try:
        assert await driver.subscribe(sink) is True
        # Initial values arrive on their own, and the unknown node is reported once as BAD.
        await sink.wait_for(lambda s: s.last("rpm") is not None and s.last("program") is not None)
        await sink.wait_for(lambda s: s.last("missing") is not None)
        missing = sink.last("missing")
        assert missing is not None and missing.quality is Quality.BAD and missing.reason == "BadNodeIdUnknown"
        m.spindle_speed = 1004.0  # inside the deadband: not reported
        await opcua_sim.publish("mill-07")
        m.spindle_speed = 1500.0
        m.program = "O9000"
        await opcua_sim.publish("mill-07")
        await sink.wait_for(lambda s: (r := s.last("rpm")) is not None and r.value == 1500.0)
        await sink.wait_for(lambda s: (r := s.last("program")) is not None and r.value == "O9000")
        assert [r.value for r in sink.readings if r.tag == "rpm"] == [1000.0, 1500.0]
    finally:
        await driver.close()


@pytest.mark.parametrize("notifier", ["i=2253", f"{NSU}lathe-01.Alarms"])
async def test_alarm_raise_and_clear_arrive_as_alarm_notices(
    opcua_sim: OpcuaSimulator, notifier: str
) -> None:
    cfg = machine_config(
        f"""id: lathe-01
opcua:
  url: "{opcua_sim.url}"
  publishing_interval: 20ms
  prefix: "lathe-01."
  alarms: {{notifier: "{notifier}", source: "{NSU}{{prefix}}Alarms", event_type: "{CNC_ALARM_TYPE}", code: AlarmIdentifier}}
tags: {{code: {{node: "{NSU}lathe-01.Alarms.ActiveCode"}}}}
"""
    )
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    await driver.connect()
    try:
        assert await driver.subscribe(sink) is False  # poll mode: values still come from read()
        assert driver.event_filter == "conditions"
        # Another machine's alarm on the same server comes first and must not reach this machine.
        await opcua_sim.raise_alarm("mill-07", Alarm(7, "Other machine", 100))
        await opcua_sim.raise_alarm("lathe-01", Alarm(1001, "Spindle overload", 700))
        await sink.wait_for(lambda s: len(s.alarms) >= 1)
        raised = sink.alarms[0]
        assert (raised.machine_id, raised.code, raised.message, raised.severity, raised.active) == (
            "lathe-01",
            "1001",
            "Spindle overload",
            700,
            True,
        )
        assert [r.value for r in await driver.read()] == [1001]
        await opcua_sim.clear_alarm("lathe-01", 1001)
        await sink.wait_for(lambda s: len(s.alarms) >= 2)
        cleared = sink.alarms[1]
        assert (cleared.code, cleared.active) == ("1001", False)
        assert cleared.key == raised.key is not None  # the same condition (ConditionId)
        assert len(sink.alarms) == 2  # one notice per event, not one per notifier path
    finally:
        await driver.close()
        await opcua_sim.clear_alarm("mill-07", 7)


@pytest.mark.parametrize(
    ("event_type", "why"),
    [
        ("nsu=urn:vendor:cnc;i=1006", "not on this server"),
        ("i=2041", "is not a condition type"),  # BaseEventType: reading it as a condition means guessing
    ],
)
async def test_an_alarm_type_that_is_no_condition_here_costs_alarms_not_data(
    opcua_sim: OpcuaSimulator, event_type: str, why: str
) -> None:
    cfg = machine_config(
        f"""opcua:
  url: "{opcua_sim.url}"
  publishing_interval: 20ms
  alarms: {{event_type: "{event_type}"}}
tags: {{code: {{node: "{NSU}mill-07.Alarms.ActiveCode"}}}}
"""
    )
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    await driver.connect()
    try:
        with structlog.testing.capture_logs() as logs:
            await driver.subscribe(sink)
        assert driver.event_filter == "none"
        assert driver.state is ConnectionState.CONNECTED
        assert [r.quality for r in await driver.read()] == [Quality.GOOD]
    finally:
        await driver.close()
    (entry,) = [e for e in logs if e["event"] == "opcua_alarm_events_unavailable"]
    assert entry["log_level"] == "error" and why in entry["reason"]


async def test_plain_events_are_read_from_the_fields_the_machine_file_names(
    opcua_sim: OpcuaSimulator,
) -> None:
    cfg = machine_config(
        f"""opcua:
  url: "{opcua_sim.url}"
  publishing_interval: 20ms
  alarms:
    event_type: "{CNC_ALARM_TYPE}"
    source: "{NSU}mill-07.Alarms"
    code_field: AlarmIdentifier
    active_field: "0:ActiveState/0:Id"
tags: {{code: {{node: "{NSU}mill-07.Alarms.ActiveCode"}}}}
"""
    )
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    await driver.connect()
    try:
        await driver.subscribe(sink)
        assert driver.event_filter == "plain"
        await opcua_sim.raise_alarm("mill-07", Alarm(2040, "E2040 coolant low", 300))
        await opcua_sim.clear_alarm("mill-07", 2040)
        await sink.wait_for(lambda s: len(s.alarms) >= 2)
        assert [(n.code, n.message, n.severity, n.active, n.key) for n in sink.alarms] == [
            ("2040", "E2040 coolant low", 300, True, None),
            ("2040", "E2040 coolant low", 300, False, None),
        ]
    finally:
        await driver.close()


async def test_refused_connection_is_a_driver_error_and_reads_are_disconnected() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    driver = OpcuaDriver(machine_config(poll_yaml(f"opc.tcp://127.0.0.1:{port}")))
    with pytest.raises(DriverError, match="connection refused"):
        await driver.connect()
    assert driver.state is ConnectionState.DISCONNECTED
    readings = await driver.read()
    assert len(readings) == 6 and {r.quality for r in readings} == {Quality.DISCONNECTED}
    assert "connection refused" in (readings[0].reason or "")


async def test_hung_server_does_not_delay_another_machines_reads(
    opcua_sim: OpcuaSimulator,
    poller: OpcuaDriver,
) -> None:
    # Accepts TCP and never answers, like a wedged controller.
    held: list[asyncio.StreamWriter] = []
    hung = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    stuck = OpcuaDriver(
        machine_config(f"""opcua: {{url: "opc.tcp://127.0.0.1:{port}", timeout: 300ms}}
tags: {{a: {{node: "ns=2;i=1"}}}}
""")
    )
    order: list[str] = []

    async def connect_stuck() -> None:
        with pytest.raises(DriverError, match="no answer"):
            await stuck.connect()
        order.append("stuck gave up")

    async def read_good() -> None:
        for _ in range(5):
            readings = await poller.read()
            assert all(r.quality is Quality.GOOD for r in readings)
            order.append("good read")

    try:
        await asyncio.gather(connect_stuck(), read_good())
    finally:
        for w in held:
            w.close()
        hung.close()
        await hung.wait_closed()
    assert order == ["good read"] * 5 + ["stuck gave up"]


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_certificates(
    opcua_sim: OpcuaSimulator, opcua_pki: opcua_fixtures.Pki, mode: str
) -> None:
    opcua_sim.machines["mill-07"].program = "O7777"
    await opcua_sim.publish("mill-07")
    cfg = machine_config(
        f"""opcua:
  url: "{opcua_sim.url}"
  security: Basic256Sha256
  security_mode: {mode}
  certificate_file: {opcua_pki.client_cert}
  private_key_file: {opcua_pki.client_key}
tags: {{program: {{node: "{NSU}mill-07.Channel1.ActProgramName"}}}}
"""
    )
    driver = OpcuaDriver(cfg)
    await driver.connect()
    try:
        (reading,) = await driver.read()
    finally:
        await driver.close()
    assert (reading.value, reading.quality) == ("O7777", Quality.GOOD)


async def test_a_node_that_is_no_event_notifier_costs_alarms_not_data(opcua_sim: OpcuaSimulator) -> None:
    cfg = machine_config(
        f"""opcua:
  url: "{opcua_sim.url}"
  mode: subscribe
  publishing_interval: 20ms
  alarms: {{notifier: "{NSU}lathe-01.Channel1.ActStatus"}}
tags: {{program: {{node: "{NSU}lathe-01.Channel1.ActProgramName"}}}}
"""
    )
    driver = OpcuaDriver(cfg)
    sink = Recorder()
    await driver.connect()
    try:
        assert await driver.subscribe(sink) is True
        assert driver.event_filter == "none"
        assert driver.state is ConnectionState.CONNECTED
        await sink.wait_for(lambda s: (r := s.last("program")) is not None and r.quality is Quality.GOOD)
    finally:
        await driver.close()
