"""Every data type and byte order decodes to the value the simulator holds (real pymodbus server)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from agent.config.source import Problems, Section, load_yaml
from drivers.base import Quality
from drivers.modbus.config import ModbusMachineConfig, parse
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.link import LinkPool
from simulators.modbus_server import ModbusSimulator
from simulators.model import Alarm, Execution, OperationMode
from tests.drivers.conftest import modbus_config

FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q"}
FORMATS.update({"float32": "f", "float64": "d"})
VALUES = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 4012345678,
    "int64": -1234567890123456789,
    "uint64": 17234567890123456789,
    "float32": -1234.5,
    "float64": 12345.678901234,
}
ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")


def registers(value: object, type_: str, order: str) -> list[int]:
    """What a device with this byte order puts on the wire, straight from the letters' definition."""
    big = struct.pack(">" + FORMATS[type_], value)
    words = [big[i : i + 2] for i in range(0, len(big), 2)]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    return list(struct.unpack(f">{len(words)}H", b"".join(words)))


def test_byte_order_letters_mean_what_telegraf_says() -> None:
    # 0x11223344 as ABCD; the other orders permute the same four bytes.
    assert registers(0x11223344, "uint32", "ABCD") == [0x1122, 0x3344]
    assert registers(0x11223344, "uint32", "DCBA") == [0x4433, 0x2211]
    assert registers(0x11223344, "uint32", "BADC") == [0x2211, 0x4433]
    assert registers(0x11223344, "uint32", "CDAB") == [0x3344, 0x1122]


async def read_config(config: ModbusMachineConfig) -> dict[str, object]:
    driver = ModbusDriver(config, links=LinkPool())
    await driver.connect()
    try:
        readings = await driver.read()
    finally:
        await driver.close()
    bad = [r for r in readings if r.quality is not Quality.GOOD]
    assert not bad, bad
    assert [r.tag for r in readings] != []
    return {r.tag: r.value for r in readings}


async def read_one(sim: ModbusSimulator, unit: int, tags_yaml: str) -> dict[str, object]:
    return await read_config(
        modbus_config(f"modbus: {{host: 127.0.0.1, port: {sim.port}, unit: {unit}}}\ntags:\n{tags_yaml}")
    )


@pytest.mark.parametrize("order", ORDERS)
async def test_every_numeric_type_in_every_byte_order(modbus_sim: ModbusSimulator, order: str) -> None:
    unit = 1
    address = 0
    lines = []
    for type_, value in VALUES.items():
        regs = registers(value, type_, order)
        modbus_sim.set_raw(unit, "holding", address, regs)
        lines.append(f"  {type_}: {{table: holding, address: {address}, type: {type_}, byte_order: {order}}}")
        address += len(regs)
    values = await read_one(modbus_sim, unit, "\n".join(lines))
    for type_, expected in VALUES.items():
        if type_ == "float32":
            assert values[type_] == pytest.approx(expected, rel=1e-7)
        else:
            assert values[type_] == expected, (type_, order)


async def test_strings_bits_scale_offset_and_map(modbus_sim: ModbusSimulator) -> None:
    unit = 2
    modbus_sim.set_raw(unit, "holding", 0, list(struct.unpack(">4H", b"AB12CD\0\0")))
    modbus_sim.set_raw(unit, "holding", 4, list(struct.unpack(">4H", b"BA21DC\0\0")))  # low byte first
    modbus_sim.set_raw(unit, "holding", 8, [0b1010_0000_0000_0001, 65413, 3, 7])
    modbus_sim.set_raw(unit, "input", 0, [250])
    modbus_sim.set_raw(unit, "coil", 0, [1, 0, 1])
    modbus_sim.set_raw(unit, "discrete", 5, [1])
    values = await read_one(
        modbus_sim,
        unit,
        """
  name:      {table: holding, address: 0, type: string, length: 8}
  name_badc: {table: holding, address: 4, type: string, length: 7, byte_order: BADC}
  bit0:      {table: holding, address: 8, type: bit, bit: 0}
  bit1:      {table: holding, address: 8, type: bit, bit: 1}
  bit15:     {table: holding, address: 8, type: bit, bit: 15}
  temp:      {table: holding, address: 9, type: int16, scale: 0.1}
  state:     {table: holding, address: 10, map: {3: FEED_HOLD}}
  unmapped:  {table: holding, address: 11, map: {3: FEED_HOLD}}
  kelvin:    {table: input, address: 0, scale: 0.1, offset: 273.15}
  c0:        {table: coil, address: 0}
  c1:        {table: coil, address: 1, map: {true: "ON", false: "OFF"}}
  c2:        {table: coil, address: 2}
  d5:        {table: discrete, address: 5}
""",
    )
    assert values["name"] == "AB12CD"
    assert values["name_badc"] == "AB12CD"
    assert (values["bit0"], values["bit1"], values["bit15"]) == (True, False, True)
    assert values["temp"] == pytest.approx(-12.3)
    assert values["state"] == "FEED_HOLD"
    assert values["unmapped"] == 7
    assert values["kelvin"] == pytest.approx(298.15)
    assert (values["c0"], values["c1"], values["c2"], values["d5"]) == (True, "OFF", True, True)


async def test_sample_machine_file_reads_the_rendered_map(modbus_sim: ModbusSimulator) -> None:
    unit = 3
    state = modbus_sim.machines[unit]
    state.execution = Execution.FEED_HOLD
    state.mode = OperationMode.SETUP
    state.part_count = 4_000_000_123
    state.spindle_speed = 8123.5
    state.spindle_override = 95
    state.feed_override = 110
    state.axis_temperature = -12.3
    state.position_x_um = -250_000
    state.power_on_seconds = 9_876_543_210
    state.feedrate = 1234.567
    state.spindle_load = 42.25
    state.program = "O4711-FLANGE"
    state.door_open = True
    state.alarms = {1001: Alarm(1001, "Spindle overload", 700)}
    modbus_sim.publish(unit)

    problems = Problems()
    path = Path(__file__).parents[2] / "drivers" / "modbus" / "sample.yaml"
    data = load_yaml(path, problems)
    data["modbus"].update(port=modbus_sim.port, unit=unit)
    top = Section(data, file=str(path), path="", problems=problems)
    for key in ("id", "name", "group", "poll_interval"):
        top.raw(key)
    config = parse("sim-mill-01", top.sub("modbus"), top.sub("tags"), 1.0)
    top.done()
    assert not problems, problems.items
    assert len(ModbusDriver(config).requests) == 5  # as the sample file's comment promises
    values = await read_config(config)

    assert set(values) == set(config.tag_names)
    assert values["execution"] == "FEED_HOLD"
    assert values["mode"] == "SETUP"
    assert values["part_count"] == 4_000_000_123
    assert values["spindle_rpm"] == values["spindle_rpm_swapped"] == pytest.approx(8123.5)
    assert (values["spindle_override"], values["feed_override"]) == (95, 110)
    assert values["axis_temperature"] == pytest.approx(-12.3)
    assert values["position_x_um"] == -250_000
    assert values["power_on_seconds"] == 9_876_543_210
    assert math.isclose(values["feedrate"], 1234.567)  # type: ignore[arg-type]
    assert values["spindle_load"] == values["spindle_load_badc"] == pytest.approx(42.25)
    assert values["program"] == "O4711-FLANGE"
    assert (values["alarm_code"], values["alarm_severity"], values["alarm_count"]) == (1001, 700, 1)
    assert (values["estop_alarm"], values["door_alarm"]) == (False, True)
    assert (values["light_green"], values["light_yellow"], values["light_red"]) == (False, False, True)
    assert (values["estop"], values["door_open"], values["powered"]) == (False, True, True)
