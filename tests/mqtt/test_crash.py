"""``kill -9`` of a real ``python -m agent run`` publishing to a real Mosquitto.

Every message the outbox accepted reaches the broker, a duplicate only ever carries the same id (and
the same payload), the broker publishes the agent's Last Will, and after the restart the retained
state matches the machines, including a change made while the agent was dead.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.delivery.settings import OUTBOX_FILE
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import Execution, MachineState
from tests.daemon.conftest import AgentDir, AgentProcess, NotifySocket
from tests.mqtt.broker import Broker
from tests.mqtt.subscriber import Seen, subscribe
from tests.mqtt.test_agent import until

pytestmark = pytest.mark.slow

UNITS = range(1, 9)


@pytest.fixture
async def fleet() -> AsyncIterator[ModbusSimulator]:
    sim = await start_modbus_server({u: MachineState(name=f"m{u}") for u in UNITS})
    yield sim
    await sim.stop()


@pytest.fixture
async def notify() -> AsyncIterator[NotifySocket]:
    with tempfile.TemporaryDirectory(prefix="ea-") as d:
        sock = NotifySocket(Path(d) / "notify.sock")
        sock.start()
        yield sock
        await sock.close()


def configure(files: AgentDir, broker: Broker, sim: ModbusSimulator) -> None:
    files.agent_yaml.write_text(
        files.agent_yaml.read_text()
        + f"mqtt: {{host: 127.0.0.1, port: {broker.port}, keepalive: 5s, reconnect: {{min: 100ms, max: 500ms}}}}\n"
        + "publish: {enterprise: acme, site: plant1, area: cell}\n"
    )
    for u in UNITS:
        (files.config_dir / "machines" / f"m{u}.yaml").write_text(
            f"id: m{u}\nname: M{u}\ngroup: G\nprofile: modbus-sim\n"
            f"modbus: {{host: 127.0.0.1, port: {sim.port}, unit: {u}, timeout: 1s}}\n"
            "poll_interval: 50ms\nstatus: {min_state: 0s}\n"
        )
    (files.config_dir / "workflows" / "mes.yaml").write_text(
        "name: MES\ntrigger: {type: machine_status_changed}\n"
        "actions:\n  - mqtt: {topic: 'mes/{machine}/status', qos: 1}\n"
    )


def outbox_rows(files: AgentDir) -> dict[str, str]:
    """message id → state, read from the SQLite file the dead (or stopped) agent left."""
    with sqlite3.connect(files.state_dir / OUTBOX_FILE) as db:
        return dict(db.execute("SELECT message_id, state FROM deliveries").fetchall())


def set_all(sim: ModbusSimulator, execution: Execution) -> None:
    for u in UNITS:
        sim.machines[u].execution = execution
        sim.publish(u)


async def test_kill_9_mid_burst_loses_nothing_and_the_will_and_retained_state_are_right(
    tmp_path: Path, broker: Broker, fleet: ModbusSimulator, notify: NotifySocket
) -> None:
    files = AgentDir(tmp_path)
    configure(files, broker, fleet)
    got: list[Seen] = []
    async with subscribe(broker.port, "#") as sub:
        agent = AgentProcess(files, notify)
        await agent.start()
        try:
            await agent.wait_ready()
            await sub.wait_for(
                lambda m: m.topic == "edge-agent/test-cell/status" and m.json()["state"] == "online"
            )
            # A burst: eight machines change together, twice; the kill lands while rows are in flight.
            set_all(fleet, Execution.ACTIVE)
            await sub.wait_for(lambda m: m.topic == "mes/m1/status")
            set_all(fleet, Execution.READY)
            await sub.wait_for(lambda m: m.topic.startswith("mes/") and m.json()["status"]["to"] == "IDLE")
            agent.signal(signal.SIGKILL)
            await agent.wait()
            # The Last Will, published by the broker for the dead agent.
            await sub.wait_for(
                lambda m: m.topic == "edge-agent/test-cell/status" and m.json()["state"] == "offline"
            )
            # While the agent is dead, m1 starts a cycle: the restarted agent must find out and say so.
            fleet.machines[1].execution = Execution.ACTIVE
            fleet.publish(1)
            mark = len(sub.messages)
            agent2 = AgentProcess(files, notify)
            await agent2.start()
            await agent2.wait_ready(count=2)
            expected = {f"m{u}": ("ACTIVE" if u == 1 else "IDLE") for u in UNITS}

            def settled() -> bool:
                # What the restarted agent itself said last about each machine's status.
                latest = {}
                for m in sub.messages[mark:]:
                    if m.topic.startswith("acme/") and m.topic.endswith("/status"):
                        latest[m.topic.split("/")[4]] = m.json()["state"]
                return latest == expected

            await sub.wait_until(settled)

            async def drained() -> bool:
                await asyncio.sleep(0)
                rows = outbox_rows(files)
                return bool(rows) and all(s == "delivered" for s in rows.values())

            await until(drained, 30, "every outbox row delivered")
            assert await agent2.stop() == 0
        finally:
            for a in ("agent", "agent2"):
                proc = locals().get(a)
                if isinstance(proc, AgentProcess):
                    await proc.stop()
        accepted = outbox_rows(files)
        await sub.wait_count(
            1, lambda m: m.topic == "edge-agent/test-cell/status" and m.json()["state"] == "offline"
        )
        got = list(sub.messages)
    by_id: dict[str, list[Seen]] = defaultdict(list)
    for m in got:
        if not m.topic.startswith("edge-agent/"):
            by_id[m.json()["message_id"]].append(m)
    # Every accepted message arrived; nothing arrived that the outbox did not hold.
    assert set(accepted) == set(by_id)
    # A QoS 1 redelivery after the crash is the same message: same id, topic and payload.
    for copies in by_id.values():
        assert len({(c.topic, c.payload) for c in copies}) == 1
    assert any(m.topic == "mes/m1/status" and m.json()["status"]["to"] == "ACTIVE" for m in got)
    # A newcomer after the restart reads the current state from the retained messages alone.
    async with subscribe(broker.port, "acme/plant1/cell/test-cell/+/status") as late:
        seen = await late.wait_count(len(UNITS), lambda m: m.retain)
        states = {m.topic.split("/")[4]: m.json()["state"] for m in seen}
    assert states == expected
