"""Retained topics of a machine removed from the configuration are cleared, the MQTT way.

MQTT 3.1.1 and 5 §3.3.1.3: a retained PUBLISH with a zero-length payload removes the topic's retained
message, and later subscribers get none. The real ``Runtime`` against a real Mosquitto: the agent
publishes two machines' state, loses one from its configuration (at a restart, or a reload), and a
consumer that subscribes afterwards sees only the machine still configured.
"""

from __future__ import annotations

from pathlib import Path

import aiomqtt

from simulators.modbus_server import ModbusSimulator
from tests.mqtt.broker import Broker
from tests.mqtt.subscriber import Seen, subscribe
from tests.mqtt.test_agent import run_agent, sim, write_config  # noqa: F401 - sim is a fixture

MILL = "acme/plant1/Milling/cell-7/mill-01"
LATHE = "acme/plant1/Turning/cell-7/lathe-02"
KINDS = ("status", "alarms", "downtime", "parts")


async def retained(port: int) -> dict[str, Seen]:
    """What a consumer that connects now learns from retained messages alone, topic → message.

    The broker sends the retained messages while it handles the SUBSCRIBE; a message published after
    the SUBACK reaches the subscriber after them, so once it is there, every retained one is too."""
    async with subscribe(port, "acme/#") as sub:
        async with aiomqtt.Client("127.0.0.1", port) as probe:
            await probe.publish("acme/end-of-retained", b"", qos=1)
        await sub.wait_for(lambda m: m.topic == "acme/end-of-retained")
        return {m.topic: m for m in sub.messages if m.retain and m.payload}


async def both_machines_published(port: int) -> None:
    want = {f"{root}/{kind}" for root in (MILL, LATHE) for kind in KINDS}
    async with subscribe(port, "acme/#") as sub:
        # Retained if the agent was quicker than this subscriber, live otherwise.
        await sub.wait_until(lambda: want <= {m.topic for m in sub.messages if m.payload})


async def test_a_machine_removed_before_a_restart_leaves_no_retained_topics(
    tmp_path: Path,
    broker: Broker,
    sim: ModbusSimulator,  # noqa: F811
) -> None:
    path = write_config(tmp_path, broker.port, sim.port)
    runtime = await run_agent(path)
    try:
        await both_machines_published(broker.port)
    finally:
        await runtime.stop(grace=1.0)
    before = await retained(broker.port)
    assert {f"{LATHE}/{k}" for k in KINDS} <= set(before)

    (tmp_path / "machines" / "lathe-02.yaml").unlink()
    async with subscribe(broker.port, f"{LATHE}/#") as sub:
        runtime = await run_agent(path)
        try:
            # Current subscribers get the empty payloads too: the machine is gone.
            await sub.wait_count(len(KINDS), lambda m: not m.payload)
            after = await retained(broker.port)
            assert not [t for t in after if t.startswith(LATHE)]
            assert {f"{MILL}/{k}" for k in KINDS} <= set(after)
        finally:
            await runtime.stop(grace=1.0)

    # Cleared once: the next start has nothing of the lathe left to clear.
    async with subscribe(broker.port, "acme/#") as sub:
        runtime = await run_agent(path)
        try:
            # Clearing rows would go first, on the same FIFO destination as the state after them.
            await sub.wait_for(lambda m: m.topic == f"{MILL}/status" and not m.retain)
            assert not [m for m in sub.messages if m.topic.startswith(LATHE)]
        finally:
            await runtime.stop(grace=1.0)


async def test_a_machine_removed_by_a_reload_leaves_no_retained_topics(
    tmp_path: Path,
    broker: Broker,
    sim: ModbusSimulator,  # noqa: F811
) -> None:
    path = write_config(tmp_path, broker.port, sim.port)
    runtime = await run_agent(path)
    try:
        await both_machines_published(broker.port)
        (tmp_path / "machines" / "lathe-02.yaml").unlink()
        async with subscribe(broker.port, f"{LATHE}/#") as sub:
            result = await runtime.reload()
            assert result["ok"] and result["removed"] == ["lathe-02"]
            await sub.wait_count(len(KINDS), lambda m: not m.payload)
        after = await retained(broker.port)
        assert not [t for t in after if t.startswith(LATHE)]
        assert f"{MILL}/status" in after
    finally:
        await runtime.stop(grace=1.0)


def test_clearing_is_an_empty_retained_message_on_every_retained_topic_of_a_root() -> None:
    from agent.mqtt.uns import RETAINED_KINDS, STATE_ENDPOINT, clearing
    from agent.workflows.plan import uns_row

    messages = clearing([LATHE], "01SNAPSHOT")
    assert [m.topic for m in messages] == [f"{LATHE}/{k}" for k in RETAINED_KINDS]
    rows = [uns_row(m, "state", None, "", 0.0) for m in messages]
    # The namespace's state destination publishes retained; a zero-length body is what clears.
    assert {r.endpoint for r in rows} == {STATE_ENDPOINT} and {r.body for r in rows} == {b""}
    # Planned again (a crash before the outbox confirmed them) they keep their ids: no duplicates.
    assert [m.message_id for m in clearing([LATHE], "01SNAPSHOT")] == [m.message_id for m in messages]
    assert len({m.message_id for m in messages}) == len(RETAINED_KINDS)


class View:
    def __init__(self, status: str | None) -> None:
        self.status, self.status_since = status, None if status is None else 1_000.0
        self.active_alarms, self.open_downtime, self.part_total = (), None, 0

    def parts_today(self, now: float) -> tuple[str, int]:
        return "1970-01-01", 0


def test_a_status_not_known_yet_is_not_published_over_the_last_retained_one() -> None:
    from agent.events import MachineRef
    from agent.mqtt.settings import PublishConfig
    from agent.mqtt.uns import Namespace

    ns = Namespace(PublishConfig(enterprise="acme", site="plant1"), "cell-1")
    known, restarted = MachineRef("mill-01", "Mill", "Milling"), MachineRef("lathe-02", "Lathe", "Turning")
    topics = [m.topic for m in ns.snapshot([(known, View("IDLE")), (restarted, View(None))], 2_000.0, "01S")]
    assert "acme/plant1/Milling/cell-1/mill-01/status" in topics
    assert "acme/plant1/Turning/cell-1/lathe-02/status" not in topics
    assert "acme/plant1/Turning/cell-1/lathe-02/alarms" in topics, "what is known is still published"
