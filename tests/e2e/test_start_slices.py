"""After READY the collectors start a slice at a time, with the event loop running in between: a
fleet's first connects are spread out instead of holding the loop in one turn (issue 13)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import collection
from agent.config.agent_file import load_config
from agent.runtime import Runtime
from simulators.modbus_server import ModbusSimulator, machines_for, start_modbus_server
from tests.e2e.conftest import modbus_machine, watch, with_api_port, write_config

MACHINES = 25
SLICE = 10  # three slices: 10, 10 and 5 machines


async def sliced_rig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], ModbusSimulator, Runtime]:
    """25 machines on the simulator, started 10 per slice over 0.3 s; the runtime is not started."""
    monkeypatch.setattr(collection, "START_SLICE", SLICE)
    monkeypatch.setattr(collection, "START_SPREAD_SECONDS", 0.3)
    ids = [f"m{i:02d}" for i in range(MACHINES)]
    sim = await start_modbus_server(machines_for(ids))
    machines = {mid: modbus_machine(mid, mid, "Bench", sim.port, unit) for unit, mid in enumerate(ids, 1)}
    path = write_config(tmp_path, machines, {})
    return ids, sim, Runtime(with_api_port(load_config(path), 0), config_path=path)


async def test_collectors_start_after_ready_in_slices_and_every_machine_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, sim, runtime = await sliced_rig(tmp_path, monkeypatch)
    started_at_ready: list[int] = []
    runtime.notifier.ready = lambda line: started_at_ready.append(len(runtime.collection.runs))  # type: ignore[method-assign]
    seen: list[int] = []
    done = asyncio.Event()

    async def watch_between_turns() -> None:
        while not done.is_set():
            seen.append(len(runtime.collection.runs))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch_between_turns())
    try:
        await runtime.start()
        done.set()
        await watcher
        assert started_at_ready == [0], "READY comes before any collector"
        assert sorted(set(seen)) == [0, 10, 20], "the loop ran after each slice but the last"
        assert set(runtime.collection.runs) == set(ids), "start() returns with every machine started"

        await watch(runtime).until(
            lambda: all(r.collector.stats.polls >= 1 for r in runtime.collection.runs.values()),
            20,
            "a poll of every machine",
        )
    finally:
        done.set()
        await runtime.stop(grace=1.0)
        await sim.stop()


async def test_a_machine_removed_by_a_reload_during_the_start_is_not_started_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, sim, runtime = await sliced_rig(tmp_path, monkeypatch)
    reloads: list[asyncio.Task[object]] = []

    def sighup_at_ready(line: str) -> None:
        # A SIGHUP right at READY, after the last machine's file was deleted: the reload runs while
        # the slices are still being started. (A reload says READY again when done: no second one.)
        if not reloads:
            (tmp_path / "machines" / f"{ids[-1]}.yaml").unlink()
            reloads.append(asyncio.ensure_future(runtime.reload()))

    runtime.notifier.ready = sighup_at_ready  # type: ignore[method-assign]
    try:
        await runtime.start()
        result = await reloads[0]
        assert isinstance(result, dict) and result["ok"] and result["removed"] == [ids[-1]], result
        assert set(runtime.collection.runs) == set(ids[:-1])
    finally:
        await runtime.stop(grace=1.0)
        await sim.stop()
