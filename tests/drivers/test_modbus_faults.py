"""Device trouble against the real simulator: exception codes, short replies, silence, loss, restart."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import ConnectionState, DriverError, Quality, Reading
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import Link, LinkDown, LinkPool
from simulators.modbus_server import ModbusSimulator, start_modbus_server
from simulators.model import MachineState
from tests.drivers.conftest import free_port, modbus_config, wait_until


def driver_for(port: int, unit: int, tags: str, pool: LinkPool, timeout: str = "1s") -> ModbusDriver:
    config = modbus_config(
        f"modbus: {{host: 127.0.0.1, port: {port}, unit: {unit}, timeout: {timeout}}}\ntags:\n{tags}"
    )
    return ModbusDriver(config, links=pool)


def by_tag(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


async def test_exception_codes_are_bad_readings_with_the_reason(modbus_sim: ModbusSimulator) -> None:
    pool = LinkPool()
    unit = 5
    driver = driver_for(
        modbus_sim.port,
        unit,
        "  ok: {table: holding, address: 0}\n  missing: {table: holding, address: 100, type: uint32}\n",
        pool,
    )
    ghost = driver_for(modbus_sim.port, 99, "  x: {table: input, address: 0}\n", pool)
    await driver.connect()
    await ghost.connect()
    try:
        first = by_tag(await driver.read())
        assert first["ok"].quality is Quality.GOOD
        assert first["missing"].quality is Quality.BAD
        assert first["missing"].value is None
        assert (
            first["missing"].reason == "exception 2 (illegal data address) reading holding 100..101 (unit 5)"
        )

        modbus_sim.fail(unit, 4)
        failing = await driver.read()
        assert {r.quality for r in failing} == {Quality.BAD}
        assert by_tag(failing)["ok"].reason == "exception 4 (device failure) reading holding 0..0 (unit 5)"

        (x,) = await ghost.read()
        assert (x.quality, x.reason) == (
            Quality.BAD,
            "exception 11 (gateway target failed to respond) reading input 0..0 (unit 99)",
        )
    finally:
        modbus_sim.fail(unit, None)
        await driver.close()
        await ghost.close()
    assert len(pool) == 0  # the last user closed the shared connection


async def test_replies_with_the_wrong_count_are_never_decoded(modbus_sim: ModbusSimulator) -> None:
    pool = LinkPool()
    unit = 6
    driver = driver_for(
        modbus_sim.port,
        unit,
        "  f: {table: holding, address: 0, type: float32}\n"
        "  g: {table: holding, address: 2}\n"
        "  bits: {table: coil, address: 0}\n"
        "  more: {table: coil, address: 8}\n",
        pool,
    )
    await driver.connect()
    modbus_sim.short_replies(unit)
    try:
        readings = by_tag(await driver.read())
        assert {r.quality for r in readings.values()} == {Quality.BAD}
        assert readings["f"].reason == "reply to holding 0..2 (unit 6) has 2 registers, expected 3"
        assert readings["bits"].reason == "reply to coil 0..0 (unit 6) has 0 bytes of bits, expected 1"
        modbus_sim.short_replies(unit, False)
        assert {r.quality for r in await driver.read()} == {Quality.GOOD}
    finally:
        modbus_sim.short_replies(unit, False)
        await driver.close()


async def test_units_behind_one_host_share_one_connection_and_a_hung_unit_times_out(
    modbus_sim: ModbusSimulator,
) -> None:
    pool = LinkPool()
    healthy = driver_for(modbus_sim.port, 7, "  a: {table: holding, address: 0}\n", pool)
    hung = driver_for(
        modbus_sim.port,
        8,
        "  a: {table: holding, address: 0}\n  b: {table: input, address: 0}\n",
        pool,
        "200ms",
    )
    await healthy.connect()
    await hung.connect()
    modbus_sim.hang(8)
    try:
        assert len(pool) == 1
        link = healthy._link
        assert link is not None and link is hung._link and link.connects == 1
        asked = modbus_sim.request_count(8)
        silent = await hung.read()
        assert {r.quality for r in silent} == {Quality.DISCONNECTED}
        assert by_tag(silent)["a"].reason == "no answer within 0.2 s reading holding 0..0 (unit 8)"
        assert by_tag(silent)["b"].reason == by_tag(silent)["a"].reason
        assert modbus_sim.request_count(8) - asked == 1  # the silent unit is not asked twice per cycle
        # One silent unit does not take the shared connection down for the others.
        assert link.state is ConnectionState.CONNECTED
        (a,) = await healthy.read()
        assert a.quality is Quality.GOOD
    finally:
        modbus_sim.hang(8, False)
        await healthy.close()
        await hung.close()


async def test_first_connect_is_retried_on_capped_exponential_backoff() -> None:
    port = free_port()
    now = [1000.0]
    link = Link("127.0.0.1", port, timeout=1.0, clock=lambda: now[0], jitter=lambda: 0.5)
    sim: ModbusSimulator | None = None
    try:
        with pytest.raises(LinkDown, match=f"cannot connect to 127.0.0.1:{port}"):
            await link.connect()
        # Not due yet: refused without touching the network.
        with pytest.raises(LinkDown, match=r"next attempt in 0\.5 s"):
            await link.connect()
        now[0] += 0.5
        with pytest.raises(LinkDown, match="cannot connect"):
            await link.connect()
        with pytest.raises(LinkDown, match=r"next attempt in 1\.0 s"):
            await link.connect()
        for _ in range(10):
            now[0] += 60
            with pytest.raises(LinkDown):
                await link.connect()
        # Capped, so a controller that comes back is read again within 10 s.
        with pytest.raises(LinkDown, match=r"next attempt in 4\.0 s"):
            await link.connect()

        sim = await start_modbus_server({1: MachineState(name="late")}, port=port)
        now[0] += 30
        await link.connect()
        assert link.state is ConnectionState.CONNECTED
        assert await link.read(1, "discrete", 2, 1) == [True]  # powered
    finally:
        await link.close()
        if sim is not None:
            await sim.stop()


async def test_reads_resume_after_the_server_restarts() -> None:
    sim = await start_modbus_server({1: MachineState(name="reboot", part_count=41)})
    pool = LinkPool()
    driver = driver_for(sim.port, 1, "  parts: {table: holding, address: 2, type: uint32}\n", pool)
    try:
        await driver.connect()
        (before,) = await driver.read()
        assert (before.quality, before.value) == (Quality.GOOD, 41)

        await sim.restart()
        await wait_until(lambda: driver.state is ConnectionState.DISCONNECTED)
        (lost,) = await driver.read()
        assert lost.quality is Quality.DISCONNECTED
        assert lost.reason == f"connection to 127.0.0.1:{sim.port} lost"

        sim.machines[1].part_count = 42
        sim.publish(1)
        await driver.connect()  # a lost connection is retried at once, without backoff
        (after,) = await driver.read()
        assert (after.quality, after.value) == (Quality.GOOD, 42)
    finally:
        await driver.close()
        await sim.stop()


async def test_connect_failure_is_a_driver_error_naming_the_address() -> None:
    port = free_port()
    driver = driver_for(port, 1, "  a: {table: holding, address: 0}\n", LinkPool())
    with pytest.raises(DriverError, match=f"127.0.0.1:{port}"):
        await driver.connect()
    (reading,) = await driver.read()
    assert reading.quality is Quality.DISCONNECTED
    assert "cannot connect" in (reading.reason or "")
    await driver.close()


async def test_a_device_that_hangs_up_at_once_is_retried_on_the_backoff_not_in_a_loop() -> None:
    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    now = [0.0]
    link = Link("127.0.0.1", port, clock=lambda: now[0], jitter=lambda: 0.5)
    try:
        await link.connect()  # TCP accepts...
        await wait_until(lambda: link.state is ConnectionState.DISCONNECTED)  # ...and hangs up
        with pytest.raises(LinkDown, match=r"next attempt in 0\.5 s"):
            await link.connect()
        now[0] += 0.5
        await link.connect()
        await wait_until(lambda: link.state is ConnectionState.DISCONNECTED)
        with pytest.raises(LinkDown, match=r"next attempt in 1\.0 s"):  # still doubling
            await link.connect()
        assert link.connects == 2
    finally:
        await link.close()
        server.close()
        await server.wait_closed()


async def test_a_connect_cancelled_halfway_leaves_the_shared_link_ready_to_reconnect(
    modbus_sim: ModbusSimulator,
) -> None:
    """One user of a shared link is stopped while it connects (its agent shuts down): the others still
    poll through the link, so it must not stay CONNECTING, which no poller would ever reconnect."""
    link = Link("127.0.0.1", modbus_sim.port, pause_after_connect=30.0)
    try:
        connecting = asyncio.ensure_future(link.connect())
        await wait_until(lambda: link.state is ConnectionState.CONNECTING)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        assert link.state is ConnectionState.DISCONNECTED
        with pytest.raises(LinkDown):  # the other users see a link that is down, not one "connecting"
            await link.read(1, "holding", 0, 1)
        link.pause_after_connect = 0.0
        await link.connect()
        assert len(await link.read(1, "holding", 0, 2)) == 2
    finally:
        await link.close()
