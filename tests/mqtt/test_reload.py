"""``mqtt:`` and ``publish:`` changes applied by a reload, without a restart (real Runtime, real
Mosquitto brokers)."""

from __future__ import annotations

from pathlib import Path

from simulators.modbus_server import ModbusSimulator
from simulators.model import Execution
from tests.mqtt.broker import Broker
from tests.mqtt.subscriber import subscribe
from tests.mqtt.test_agent import run_agent, set_execution, sim, write_config  # noqa: F401 - sim is a fixture

MILL = "acme/plant1/Milling/cell-7/mill-01"
STATUS = "edge-agent/cell-7/status"


async def test_a_new_broker_takes_over_at_a_reload_and_the_old_one_hears_offline(
    tmp_path: Path,
    broker: Broker,
    sim: ModbusSimulator,  # noqa: F811
) -> None:
    other = await Broker(tmp_path / "other").start()
    path = write_config(tmp_path / "cfg", broker.port, sim.port)
    runtime = await run_agent(path)
    try:
        async with subscribe(broker.port, "#") as old_side, subscribe(other.port, "#") as new_side:
            await old_side.wait_for(lambda m: m.topic == f"{MILL}/status")
            path.write_text(path.read_text().replace(f"port: {broker.port}", f"port: {other.port}"))
            assert (await runtime.reload())["ok"]
            # The new broker gets the birth message and the whole retained namespace at once ...
            await new_side.wait_for(lambda m: m.topic == STATUS and m.json()["state"] == "online")
            await new_side.wait_for(lambda m: m.topic == f"{MILL}/status")
            # ... the old one hears the agent leave (a clean stop, not its Last Will) ...
            await old_side.wait_for(lambda m: m.topic == STATUS and m.json()["state"] == "offline")
            # ... and what happens next goes to the new broker only.
            set_execution(sim, 1, Execution.ACTIVE)
            await new_side.wait_for(
                lambda m: (
                    m.topic == "mes/cell-7/mill-01/status-changes" and m.json()["status"]["to"] == "ACTIVE"
                )
            )
        # (It may have had the first status, IDLE, from before the reload.)
        assert not [m for m in old_side.messages if m.topic.startswith("mes/") and b"ACTIVE" in m.payload]
    finally:
        await runtime.stop(grace=1.0)
        await other.stop()


async def test_a_changed_namespace_moves_the_retained_state_and_clears_the_old_topics(
    tmp_path: Path,
    broker: Broker,
    sim: ModbusSimulator,  # noqa: F811
) -> None:
    path = write_config(tmp_path / "cfg", broker.port, sim.port)
    runtime = await run_agent(path)
    try:
        async with subscribe(broker.port, "#") as sub:
            await sub.wait_for(lambda m: m.topic == f"{MILL}/status" and m.payload)
            path.write_text(path.read_text().replace("site: plant1", "site: plant2"))
            assert (await runtime.reload())["ok"]
            await sub.wait_for(lambda m: m.topic == "acme/plant2/Milling/cell-7/mill-01/status" and m.payload)
            await sub.wait_for(lambda m: m.topic == f"{MILL}/status" and not m.payload)
            # Events follow the new namespace too.
            set_execution(sim, 1, Execution.ACTIVE)
            await sub.wait_for(
                lambda m: (
                    m.topic == "acme/plant2/Milling/cell-7/mill-01/status" and m.json()["state"] == "ACTIVE"
                )
            )
        assert not [m for m in sub.messages if m.topic == f"{MILL}/status" and b"ACTIVE" in m.payload]
    finally:
        await runtime.stop(grace=1.0)
