"""The agent publishing to a real Mosquitto: Unified Namespace state, workflow mqtt: actions, outages.

The real ``Runtime`` (collectors, derivation, workflows, outbox, dispatcher) in this process against
the bundled Modbus simulator; a plain aiomqtt subscriber plays the plant's consumer (SCADA, MES).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.agent_file import load_config
from agent.runtime import Runtime
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import Execution, MachineState
from tests.e2e.conftest import watch
from tests.mqtt.broker import Broker
from tests.mqtt.subscriber import Seen, subscribe

UNITS = {1: "mill-01", 2: "lathe-02"}


def machine_yaml(machine_id: str, port: int, unit: int, group: str) -> str:
    return (
        f"id: {machine_id}\nname: Test {machine_id}\ngroup: {group}\nprofile: modbus-sim\n"
        f"modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: 1s}}\n"
        "poll_interval: 50ms\nstatus: {min_state: 0s}\n"
    )


def write_config(
    root: Path, broker_port: int, modbus_port: int, *, extra_mqtt: str = "", extra_publish: str = ""
) -> Path:
    (root / "machines").mkdir(parents=True, exist_ok=True)
    (root / "workflows").mkdir(exist_ok=True)
    for unit, mid in UNITS.items():
        group = "Milling" if unit == 1 else "Turning"
        (root / "machines" / f"{mid}.yaml").write_text(machine_yaml(mid, modbus_port, unit, group))
    (root / "workflows" / "status.yaml").write_text(
        "name: Status to MES\n"
        "trigger: {type: machine_status_changed}\n"
        "actions:\n"
        "  - mqtt: {topic: 'mes/{line}/{machine}/status-changes', qos: 1}\n"
    )
    path = root / "agent.yaml"
    path.write_text(
        "agent: {name: cell-7, state_dir: state}\n"
        "log: {level: warning}\n"
        "api: {enabled: false}\n"
        "delivery: {timeout: 5s, retry_schedule: [0s, 200ms, 500ms]}\n"
        "downtime_categories: [Setup]\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, reconnect: {{min: 100ms, max: 500ms}}{extra_mqtt}}}\n"
        f"publish: {{enterprise: acme, site: plant1{extra_publish}}}\n"
    )
    return path


@pytest.fixture
async def sim() -> AsyncIterator[ModbusSimulator]:
    s = await start_modbus_server({u: MachineState(name=n) for u, n in UNITS.items()})
    yield s
    await s.stop()


async def run_agent(path: Path) -> Runtime:
    runtime = Runtime(load_config(path), config_path=path)
    await runtime.start()
    return runtime


def set_execution(sim: ModbusSimulator, unit: int, execution: Execution) -> None:
    sim.machines[unit].execution = execution
    sim.publish(unit)


async def until(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """The outbox has no change signal: look again every 50 ms, bounded by ``within``."""
    deadline = asyncio.get_running_loop().time() + within
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
    return result


def latest(messages: list[Seen], topic: str) -> Seen:
    return [m for m in messages if m.topic == topic][-1]


async def test_status_reaches_the_namespace_retained_and_the_workflow_topic_with_stable_ids(
    tmp_path: Path, broker: Broker, sim: ModbusSimulator
) -> None:
    runtime = await run_agent(write_config(tmp_path, broker.port, sim.port))
    try:
        async with subscribe(broker.port, "#") as sub:
            # At start the agent publishes every machine's whole state (retained).
            await sub.wait_for(lambda m: m.topic == "acme/plant1/Milling/cell-7/mill-01/status")
            set_execution(sim, 1, Execution.ACTIVE)
            await sub.wait_for(
                lambda m: (
                    m.topic == "acme/plant1/Milling/cell-7/mill-01/status" and m.json()["state"] == "ACTIVE"
                )
            )
            [change] = await sub.wait_for(
                lambda m: (
                    m.topic == "mes/cell-7/mill-01/status-changes" and m.json()["status"]["to"] == "ACTIVE"
                )
            )
            # The id a consumer de-duplicates on: in the payload and as an MQTT 5 user property.
            assert change.json()["message_id"] == change.user_properties["message-id"]
            assert change.json()["message_id"].startswith("msg_")
            [event] = await sub.wait_for(
                lambda m: (
                    m.topic == "acme/plant1/Milling/cell-7/mill-01/events"
                    and m.json()["event"] == "machine_status_changed"
                    and m.json()["status"]["to"] == "ACTIVE"
                )
            )
            assert event.json()["machine"]["id"] == "mill-01" and not event.retain
            [online] = await sub.wait_for(lambda m: m.topic == "edge-agent/cell-7/status")
            assert online.json()["state"] == "online"
        # A consumer that connects now gets the current state from the retained messages alone.
        async with subscribe(broker.port, "acme/plant1/+/cell-7/+/+") as late:
            await late.wait_count(8, lambda m: m.retain)
            status = latest(late.messages, "acme/plant1/Milling/cell-7/mill-01/status").json()
            assert status["state"] == "ACTIVE" and status["since"]
            assert (
                latest(late.messages, "acme/plant1/Turning/cell-7/lathe-02/status").json()["state"] == "IDLE"
            )
            assert latest(late.messages, "acme/plant1/Milling/cell-7/mill-01/alarms").json()["active"] == []
            parts = latest(late.messages, "acme/plant1/Milling/cell-7/mill-01/parts").json()
            assert parts["total"] == 0 and parts["day_total"] == 0
            assert not [m for m in late.messages if m.topic.endswith("/events")]
    finally:
        await runtime.stop(grace=1.0)


async def test_broker_down_rows_wait_in_the_outbox_and_arrive_in_order_when_it_returns(
    tmp_path: Path, broker: Broker, sim: ModbusSimulator
) -> None:
    runtime = await run_agent(write_config(tmp_path, broker.port, sim.port))
    try:
        async with subscribe(broker.port, "#") as sub:
            # Each machine's first status went out while the broker was up; only what follows waits.
            await sub.wait_for(lambda m: m.topic == "mes/cell-7/mill-01/status-changes")
        earlier = {r.message_id for r in (await runtime.outbox.list(limit=100)).items}
        await broker.stop()
        changes = watch(runtime)
        # While the broker is away the machine keeps changing: every change becomes outbox rows.
        states = [Execution.ACTIVE, Execution.READY] * 5
        for execution in states:
            set_execution(sim, 1, execution)
            want = "ACTIVE" if execution is Execution.ACTIVE else "IDLE"
            deriver = runtime.pipeline.derivers["mill-01"]
            await changes.until(lambda w=want, d=deriver: d.status == w, 20, f"mill-01 {want}")

        async def all_planned() -> list[Any]:
            # Workflows fire in their own tasks: wait until the last change (to IDLE) has its row.
            page = await runtime.outbox.list(workflow="Status to MES", limit=100)
            rows = sorted(
                (r for r in page.items if r.machine_id == "mill-01" and r.message_id not in earlier),
                key=lambda r: r.id,
            )
            return rows if len(rows) >= len(states) and b'"to":"IDLE"' in await body_of(rows[-1].id) else []

        async def body_of(delivery_id: int) -> bytes:
            detail = await runtime.outbox.get(delivery_id)
            assert detail is not None
            return bytes(detail.body)

        waiting = await until(all_planned, 20, "rows of every status change")
        assert all(r.state == "pending" for r in waiting)
        await broker.start()
        topic = "mes/cell-7/mill-01/status-changes"
        async with subscribe(broker.port, "mes/#") as sub:
            got = await sub.wait_count(len(waiting), lambda m: m.topic == topic)
        ids = [m.json()["message_id"] for m in got]
        # Nothing lost, and in the order the events happened (message ids embed the event's ULID).
        assert set(ids) == {r.message_id for r in waiting}
        assert ids == sorted(ids, key=lambda i: i.split("_")[1])
        order = [m.json()["status"]["to"] for m in got]
        assert order[-1] == "IDLE" and all(a != b for a, b in itertools.pairwise(order))
    finally:
        await runtime.stop(grace=1.0)


ACL = """\
user agent
topic readwrite #

user reader
topic read acme/#

user turning
topic read acme/plant1/Turning/#
"""


async def test_password_auth_and_a_subscriber_denied_by_acl_does_not_block_the_others(
    tmp_path: Path, sim: ModbusSimulator
) -> None:
    users = {"agent": "agent-pw-1", "reader": "reader-pw-2", "turning": "turning-pw-3"}
    broker = await Broker(tmp_path / "broker", users=users, acl=ACL).start()
    (tmp_path / "mqtt.pw").write_text("agent-pw-1\n")
    path = write_config(
        tmp_path / "cfg", broker.port, sim.port, extra_mqtt=", username: agent, password_file: ../mqtt.pw"
    )
    runtime = await run_agent(path)
    try:
        async with (
            subscribe(broker.port, "acme/#", username="turning", password="turning-pw-3") as turning,
            subscribe(broker.port, "acme/#", username="reader", password="reader-pw-2") as reader,
        ):
            set_execution(sim, 1, Execution.ACTIVE)
            set_execution(sim, 2, Execution.ACTIVE)
            for sub in (reader, turning):
                await sub.wait_for(
                    lambda m: (
                        m.topic == "acme/plant1/Turning/cell-7/lathe-02/status"
                        and m.json()["state"] == "ACTIVE"
                    )
                )
            await reader.wait_for(
                lambda m: (
                    m.topic == "acme/plant1/Milling/cell-7/mill-01/status" and m.json()["state"] == "ACTIVE"
                )
            )

            async def all_delivered() -> bool:
                counts = await runtime.outbox.counts()
                return counts.pending == 0 and counts.in_flight == 0 and counts.delivered > 0

            await until(all_delivered, 20, "every row delivered")
            # The broker filtered what "turning" may not read; the agent and "reader" never noticed.
            assert turning.messages and all("/Turning/" in m.topic for m in turning.messages)
            assert any("/Milling/" in m.topic for m in reader.messages)
    finally:
        await runtime.stop(grace=1.0)
        await broker.stop()


async def test_tag_values_are_retained_on_the_namespace_past_their_deadband(
    tmp_path: Path, broker: Broker, sim: ModbusSimulator
) -> None:
    tags = ", tags: {interval: 1s, deadband: 50, only: [spindle_rpm, program]}"
    runtime = await run_agent(write_config(tmp_path, broker.port, sim.port, extra_publish=tags))
    topic = "acme/plant1/Milling/cell-7/mill-01/tags"
    try:
        async with subscribe(broker.port, topic) as sub:
            await sub.wait_for(lambda m: m.json()["values"].get("program") == "O1000")
            sim.machines[1].spindle_speed = 8000.0
            sim.publish(1)
            [fast] = await sub.wait_for(lambda m: m.json()["values"].get("spindle_rpm") == 8000.0)
            assert set(fast.json()["values"]) == {"spindle_rpm", "program"}
        async with subscribe(broker.port, topic) as late:
            [kept] = await late.wait_for(lambda m: m.retain)
            assert kept.json()["values"] == {"spindle_rpm": 8000.0, "program": "O1000"}
    finally:
        await runtime.stop(grace=1.0)
