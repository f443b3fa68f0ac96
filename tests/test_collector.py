"""The per-machine collection loop: cadence, overruns, reconnects and isolation, on real simulators."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence

import pytest
from structlog.testing import capture_logs

from agent.collector import Collector, next_slot
from agent.wakeups import Wakeups
from drivers.backoff import backoff_delay
from drivers.base import ConnectionState, Quality, Reading, Sample
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from simulators.modbus_server import (
    ModbusSimulator,
    SilentServer,
    machines_for,
    start_modbus_server,
    start_silent_server,
)
from tests.drivers.conftest import free_port, modbus_config, wait_until


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.batches.append([s for s in samples if isinstance(s, Reading)])

    def count(self, quality: Quality) -> int:
        return sum(1 for batch in self.batches if batch and all(r.quality is quality for r in batch))


class CountingDriver(ModbusDriver):
    """The real driver, watched: how many reads of this machine ever ran at the same time."""

    in_flight = 0
    most_in_flight = 0

    async def read(self) -> list[Reading]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().read()
        finally:
            self.in_flight -= 1


def modbus_driver(port: int, unit: int = 1, timeout: str = "1s", machine_id: str = "m1") -> CountingDriver:
    tags = "\n".join(f"  r{i}: {{table: holding, address: {i}}}" for i in range(20))
    config = modbus_config(
        f"modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: {timeout}}}\ntags:\n{tags}",
        machine_id=machine_id,
    )
    return CountingDriver(config, links=LinkPool())


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ModbusSimulator]:
    server = await start_modbus_server(machines_for(["a", "b", "c"]))
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def silent() -> AsyncIterator[SilentServer]:
    server = await start_silent_server()
    yield server
    await server.stop()


# -- the pure parts


def test_next_slot_keeps_the_cadence_and_skips_missed_ticks() -> None:
    assert next_slot(10.0, 10.3, 1.0) == (11.0, 0)
    assert next_slot(10.0, 11.0, 1.0) == (11.0, 0)  # finishing exactly on the tick is on time
    assert next_slot(10.0, 12.5, 1.0) == (13.0, 2)  # ticks 11 and 12 are skipped, not queued
    assert next_slot(10.0, 11.2, 1.0) == (12.0, 1)


def test_backoff_doubles_from_half_a_second_to_thirty_with_jitter() -> None:
    assert [backoff_delay(n, 0.5, 30.0, 0.5) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(1, 0.5, 30.0, 0.0) == 0.375
    assert backoff_delay(1, 0.5, 30.0, 0.999) < 0.625
    assert backoff_delay(10_000, 0.5, 30.0, 1.0) == 30.0


# -- the shell, on real servers


async def test_a_hung_and_a_refusing_machine_do_not_delay_a_healthy_one(
    sim: ModbusSimulator, silent: SilentServer
) -> None:
    healthy, hung, refused = (
        modbus_driver(sim.port, 1, machine_id="healthy"),
        modbus_driver(silent.port, 1, timeout="500ms", machine_id="hung"),
        modbus_driver(free_port(), 1, machine_id="refused"),
    )
    sinks = {name: Recorder() for name in ("healthy", "hung", "refused")}
    collectors = {
        name: Collector(driver, poll_interval=0.2, sink=sinks[name])
        for name, driver in (("healthy", healthy), ("hung", hung), ("refused", refused))
    }
    with capture_logs() as logs:
        tasks = [asyncio.create_task(c.run()) for c in collectors.values()]
        try:
            await wait_until(
                lambda: collectors["healthy"].stats.polls >= 12 and collectors["hung"].stats.polls >= 3
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    good = collectors["healthy"].stats
    assert good.skipped == good.overruns == good.errors == 0
    assert sinks["healthy"].count(Quality.GOOD) == good.polls
    assert all(len(batch) == 20 for batch in sinks["healthy"].batches)

    slow = collectors["hung"].stats
    assert slow.overruns >= 1 and slow.skipped >= slow.overruns  # each 0.5 s read spans ticks
    assert slow.polls < good.polls
    assert hung.most_in_flight == 1 and healthy.most_in_flight == 1  # never two reads of one machine
    assert sinks["hung"].count(Quality.DISCONNECTED) >= 3

    dead = collectors["refused"].stats
    assert dead.polls == 0 and dead.connect_failures >= 1
    assert sinks["refused"].count(Quality.DISCONNECTED) >= 1  # the outage is visible to derivation
    reasons = {r.reason for batch in sinks["refused"].batches for r in batch}
    assert all("cannot connect" in (reason or "") for reason in reasons)

    def logged(event: str, machine: str) -> int:
        return sum(1 for e in logs if e["event"] == event and e.get("machine") == machine)

    # Each change is logged once, not once per cycle.
    assert logged("machine_readings_bad", "hung") == 1
    assert logged("poll_overrun", "hung") == 1
    assert logged("machine_connect_failed", "refused") == 1
    assert logged("machine_readings_bad", "healthy") == logged("poll_overrun", "healthy") == 0


async def test_first_connect_is_retried_until_the_device_appears() -> None:
    port = free_port()
    sink = Recorder()
    collector = Collector(modbus_driver(port), poll_interval=0.1, sink=sink)
    task = asyncio.create_task(collector.run())
    server: ModbusSimulator | None = None
    try:
        # While nothing listens: DISCONNECTED readings once per poll interval, no polls.
        await wait_until(lambda: sink.count(Quality.DISCONNECTED) >= 3)
        assert collector.stats.polls == 0 and collector.stats.connect_failures >= 1
        server = await start_modbus_server(machines_for(["late"]), port=port)
        await wait_until(lambda: sink.count(Quality.GOOD) >= 2, limit=20)
        assert collector.stats.connects == 1
        assert collector.driver.state is ConnectionState.CONNECTED
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if server is not None:
            await server.stop()
    assert collector.driver.state is ConnectionState.DISCONNECTED  # run() closed the driver
    # Every reading handed on is counted by quality (the metrics' readings_total): outages and polls.
    readings = [r for batch in sink.batches for r in batch]
    assert collector.stats.bad == sum(r.quality is not Quality.GOOD for r in readings) > 0
    assert collector.stats.good == sum(r.quality is Quality.GOOD for r in readings) > 0


async def test_a_fast_machine_keeps_its_poll_lags_for_the_metrics_between_their_updates(
    sim: ModbusSimulator,
) -> None:
    # The metrics take the lags every 10 s: a machine polled every 10 ms makes 1,000 by then.
    fast = Collector(modbus_driver(sim.port), poll_interval=0.01, sink=Recorder())
    slow = Collector(modbus_driver(sim.port), poll_interval=5.0, sink=Recorder())
    assert fast.stats.lags.maxlen == 3000
    assert slow.stats.lags.maxlen == 120
    task = asyncio.create_task(fast.run())
    try:
        await wait_until(lambda: fast.stats.polls >= 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(fast.stats.lags) == fast.stats.polls
    assert fast.stats.slowest >= fast.stats.last_poll_duration > 0


async def test_collection_resumes_after_a_server_restart() -> None:
    server = await start_modbus_server(machines_for(["rebooting"]))
    sink = Recorder()
    collector = Collector(modbus_driver(server.port), poll_interval=0.1, sink=sink)
    task = asyncio.create_task(collector.run())
    try:
        await wait_until(lambda: sink.count(Quality.GOOD) >= 2)
        await server.restart()
        await wait_until(lambda: sink.count(Quality.DISCONNECTED) >= 1)
        good_before = sink.count(Quality.GOOD)
        await wait_until(lambda: sink.count(Quality.GOOD) >= good_before + 2)
        assert collector.stats.connects == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()


async def test_a_failing_sink_does_not_stop_collection(sim: ModbusSimulator) -> None:
    calls = []

    def broken(samples: Sequence[Sample]) -> None:
        calls.append(len(samples))
        raise RuntimeError("consumer bug")

    collector = Collector(modbus_driver(sim.port, 2), poll_interval=0.05, sink=broken)
    task = asyncio.create_task(collector.run())
    try:
        await wait_until(lambda: len(calls) >= 3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls[:3] == [20, 20, 20]
    assert collector.stats.errors >= 3


class BrokenReadDriver(ModbusDriver):
    """The real driver whose decoding hits a bug: ``read`` raises although it never should."""

    async def read(self) -> list[Reading]:
        await super().read()
        raise ValueError("decoder bug")


async def test_a_read_that_raises_becomes_bad_readings_not_silence(sim: ModbusSimulator) -> None:
    # Silence would freeze the machine's last status; BAD readings let derivation see the problem.
    config = modbus_config(
        f"modbus: {{host: 127.0.0.1, port: {sim.port}, unit: 3}}\ntags:\n  r0: {{table: holding, address: 0}}",
        machine_id="m3",
    )
    recorder = Recorder()
    collector = Collector(BrokenReadDriver(config, links=LinkPool()), poll_interval=0.05, sink=recorder)
    task = asyncio.create_task(collector.run())
    try:
        await wait_until(lambda: recorder.count(Quality.BAD) >= 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    bad = next(batch for batch in recorder.batches if batch)
    assert [(r.tag, r.value, r.quality) for r in bad] == [("r0", None, Quality.BAD)]
    assert bad[0].reason is not None and "decoder bug" in bad[0].reason
    assert collector.stats.errors >= 2


async def test_a_hung_device_logs_one_line_per_outage_and_one_per_recovery(sim: ModbusSimulator) -> None:
    driver = modbus_driver(sim.port, 3, timeout="200ms", machine_id="hangs")
    sink = Recorder()
    collector = Collector(driver, poll_interval=0.1, sink=sink)
    sim.hang(3, True)
    with capture_logs() as logs:
        task = asyncio.create_task(collector.run())
        try:
            # Several reconnects while it stays hung: each accepts TCP, then nothing answers.
            await wait_until(lambda: collector.stats.connects >= 3, limit=30)
            sim.hang(3, False)
            await wait_until(lambda: sinks_good(sink), limit=15)
        finally:
            sim.hang(3, False)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    lines = [e["event"] for e in logs if e["log_level"] in ("info", "warning", "error")]
    down = [
        e
        for e in lines
        if e
        in ("machine_readings_bad", "machine_connect_failed", "modbus_disconnected", "modbus_connect_failed")
    ]
    assert down.count("machine_readings_bad") + down.count("machine_connect_failed") == 1
    assert down.count("modbus_disconnected") + down.count("modbus_connect_failed") == 1
    assert lines.count("machine_readings_recovered") == 1
    assert lines.count("modbus_connected") == 1  # the recovery, not every TCP connect to a hung device


def sinks_good(sink: Recorder) -> bool:
    return (
        bool(sink.batches)
        and bool(sink.batches[-1])
        and all(r.quality is Quality.GOOD for r in sink.batches[-1])
    )


class ReadingsList(list[Reading]):
    """A list that can be watched with a weak reference (a plain list cannot)."""


class WatchedDriver(ModbusDriver):
    async def read(self) -> list[Reading]:
        return ReadingsList(await super().read())


async def test_machines_sharing_wakeups_keep_their_cadence_and_hold_no_readings_while_waiting(
    sim: ModbusSimulator,
) -> None:
    # The runtime's collectors wait on one Wakeups; between polls a collector holds none of the
    # last poll's readings (held for a whole interval, 5,000 machines' readings reached the oldest
    # generation of the garbage collector and every full collection walked them).
    wakeups = Wakeups()
    delivered: list[weakref.ref[ReadingsList]] = []

    def sink(samples: Sequence[Sample]) -> None:
        assert isinstance(samples, ReadingsList)
        delivered.append(weakref.ref(samples))

    config = modbus_config(
        f"modbus: {{host: 127.0.0.1, port: {sim.port}, unit: 1}}\ntags:\n  r0: {{table: holding, address: 0}}",
        machine_id="watched",
    )
    watched = Collector(WatchedDriver(config, links=LinkPool()), poll_interval=0.5, sink=sink, wakeups=wakeups)
    others = [
        Collector(modbus_driver(sim.port, unit, machine_id=f"shared{unit}"), poll_interval=0.2, sink=Recorder(),
                  wakeups=wakeups)
        for unit in (2, 3)
    ]  # fmt: skip
    tasks = [asyncio.create_task(c.run()) for c in (watched, *others)]
    try:
        await wait_until(lambda: len(delivered) >= 2 and all(c.stats.polls >= 5 for c in others))
        assert [ref() for ref in delivered] == [None] * len(delivered)  # nothing kept them alive
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for c in (watched, *others):
        assert c.stats.skipped == c.stats.overruns == c.stats.errors == 0
        assert c.driver.state is ConnectionState.DISCONNECTED
