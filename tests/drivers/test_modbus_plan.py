"""Batching: contiguous tags share a request; the simulator counts what actually went over the wire."""

from __future__ import annotations

from drivers.modbus.config import ModbusTag
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from drivers.modbus.plan import MAX_BITS, MAX_REGISTERS, plan
from simulators.modbus_server import ModbusSimulator
from tests.drivers.conftest import modbus_config


def tag(
    name: str, address: int, type_: str = "uint16", table: str = "holding", unit: int = 1, **kw: int
) -> ModbusTag:
    return ModbusTag(name=name, table=table, address=address, type=type_, unit=unit, **kw)  # type: ignore[arg-type]


def spans(tags: list[ModbusTag]) -> list[tuple[int, str, int, int]]:
    return [(r.unit, r.table, r.address, r.count) for r in plan(tags)]


def test_touching_and_overlapping_tags_share_one_request() -> None:
    tags = [tag("a", 0), tag("b", 1, "float32"), tag("c", 3, "uint64"), tag("d", 4), tag("e", 2, "float32")]
    assert spans(tags) == [(1, "holding", 0, 7)]
    (request,) = plan(tags)
    offsets = {t.name: offset for t, offset in request.tags}
    assert offsets == {"a": 0, "b": 1, "c": 3, "d": 4, "e": 2}


def test_gaps_tables_and_units_split_requests() -> None:
    tags = [
        tag("a", 0),
        tag("b", 2),  # gap at 1: never bridged
        tag("c", 0, table="input"),
        tag("d", 0, unit=2),
        tag("e", 0, "bit", table="coil"),
        tag("f", 1, "bit", table="coil"),
    ]
    assert spans(tags) == [
        (1, "coil", 0, 2),
        (1, "holding", 0, 1),
        (1, "holding", 2, 1),
        (1, "input", 0, 1),
        (2, "holding", 0, 1),
    ]


def test_requests_respect_the_protocol_limits() -> None:
    registers = [tag(f"r{i}", i) for i in range(300)]
    assert [count for *_, count in spans(registers)] == [MAX_REGISTERS, MAX_REGISTERS, 50]
    bits = [tag(f"b{i}", i, "bit", table="discrete") for i in range(4100)]
    assert [count for *_, count in spans(bits)] == [MAX_BITS, MAX_BITS, 100]
    strings = [tag("s1", 0, "string", length=240), tag("s2", 120, "string", length=20)]
    assert spans(strings) == [(1, "holding", 0, 120), (1, "holding", 120, 10)]


async def test_the_simulator_sees_exactly_the_planned_requests(modbus_sim: ModbusSimulator) -> None:
    unit = 4
    lines = "\n".join(f"  r{i}: {{table: holding, address: {i}}}" for i in range(20))
    config = modbus_config(
        f"""modbus: {{host: 127.0.0.1, port: {modbus_sim.port}, unit: {unit}}}
tags:
{lines}
  temp: {{table: holding, address: 40, type: int16}}
  alarm: {{table: input, address: 0}}
  lights: {{table: coil, address: 0}}
  light2: {{table: coil, address: 2}}
"""
    )
    driver = ModbusDriver(config, links=LinkPool())
    assert len(driver.requests) == 5  # holding 0..19, holding 40, input 0, coil 0, coil 2
    await driver.connect()
    try:
        before = modbus_sim.request_count(unit)
        await driver.read()
        await driver.read()
        assert modbus_sim.request_count(unit) - before == 2 * 5
        assert modbus_sim.requests[(unit, "holding")] >= 4
    finally:
        await driver.close()
