"""Simulated CNC machines on Modbus TCP: one pymodbus server, one unit id per machine.

The register map is fixed in docs/architecture.md (and explained for users in simulators/modbus_map.md).
Rendering is done here with plain ``struct`` on purpose: the driver's codec must not be used to
produce what the driver's tests then decode.

Built on pymodbus' new ``SimDevice``/``SimData`` datastore (the old ``ModbusServerContext`` is
deprecated and shifts every address by one). Registers are written straight into the runtime lists
the server reads from, so ``publish`` is a cheap synchronous call and hundreds of machines fit in one
process. Test hooks (request counting, hanging a unit, exception codes, short replies) ride on the
server's ``trace_pdu`` hook and the device ``action`` hook, both public pymodbus API.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.model import Execution, MachineState

TABLES = ("holding", "input", "coil", "discrete")
HOLDING_SIZE = 64
INPUT_SIZE = 16
BITS_SIZE = 16
PROGRAM_ADDRESS = 30
PROGRAM_CHARS = 32

# Function codes of reads and writes, by table (what the request counter files each request under).
_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding"}
_FC_TABLE.update({22: "holding", 23: "holding", 4: "input"})
_BLOCK = {"coil": "c", "discrete": "d", "holding": "h", "input": "i"}


def render(state: MachineState) -> dict[str, list[int]]:
    """The register/bit values of one machine, by table, as the documented map lays them out."""
    holding = [0] * HOLDING_SIZE
    holding[0] = int(state.execution)
    holding[1] = int(state.mode)
    holding[2:4] = _words(">I", state.part_count & 0xFFFFFFFF)
    holding[4:6] = _words(">f", state.spindle_speed)
    holding[6:8] = _words(">f", state.spindle_speed)[::-1]  # CDAB: word swapped
    holding[8] = _u16(round(state.spindle_override))
    holding[9] = _u16(round(state.feed_override))
    holding[10] = _u16(round(state.axis_temperature * 10))
    holding[11:13] = _words(">i", state.position_x_um)
    holding[13:17] = _words(">Q", state.power_on_seconds & 0xFFFFFFFFFFFFFFFF)
    holding[17:21] = _words(">d", state.feedrate)
    holding[21:23] = _words("<f", state.spindle_load)  # DCBA: all four bytes reversed
    badc = struct.pack(">f", state.spindle_load)
    holding[23:25] = _words(">HH", *struct.unpack("<HH", badc))  # BADC: bytes swapped in each word
    name = state.program.encode("ascii", "replace")[:PROGRAM_CHARS].ljust(PROGRAM_CHARS, b"\0")
    holding[PROGRAM_ADDRESS : PROGRAM_ADDRESS + PROGRAM_CHARS // 2] = list(
        struct.unpack(f">{PROGRAM_CHARS // 2}H", name)
    )
    code = state.alarm_code
    inputs = [0] * INPUT_SIZE
    inputs[0] = code & 0xFFFF
    inputs[1] = state.alarms[code].severity if code else 0
    inputs[2] = len(state.alarms)
    inputs[3] = (1 if state.estop else 0) | (2 if state.door_open else 0)
    red = state.estop or bool(state.alarms)
    green = not red and state.execution == Execution.ACTIVE
    yellow = state.powered and not red and not green
    coils = [int(green), int(yellow), int(red)] + [0] * (BITS_SIZE - 3)
    discrete = [int(state.estop), int(state.door_open), int(state.powered)] + [0] * (BITS_SIZE - 3)
    return {"holding": holding, "input": inputs, "coil": coils, "discrete": discrete}


def _words(fmt: str, *values: Any) -> list[int]:
    raw = struct.pack(fmt, *values)
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


def _u16(value: int) -> int:
    return value & 0xFFFF


def _device(unit: int, action: Any) -> SimDevice:
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * BITS_SIZE, datatype=DataType.BITS)],
            [SimData(0, values=[False] * BITS_SIZE, datatype=DataType.BITS)],
            [SimData(0, count=HOLDING_SIZE, datatype=DataType.REGISTERS)],
            [SimData(0, count=INPUT_SIZE, datatype=DataType.REGISTERS)],
        ),
        action=action,
    )


async def _no_such_unit(*_args: Any) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class ModbusSimulator:
    """A running simulator; build it with ``start_modbus_server``."""

    def __init__(self, machines: Mapping[int, MachineState], host: str, port: int) -> None:
        for unit in machines:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} out of range 1..247")
        self.machines: dict[int, MachineState] = dict(machines)
        self.host = host
        self.port = port
        self.requests: Counter[tuple[int, str]] = Counter()  # (unit, table) -> requests received
        self._hung: set[int] = set()
        self._short: set[int] = set()
        self._fail: dict[int, int] = {}
        self._devices = [_device(unit, partial(self._action, unit)) for unit in self.machines]
        # Unit 0 catches every unit id nobody simulates: answer like a gateway whose target is silent
        # (exception 11) instead of pymodbus' logged traceback and "device failure".
        self._devices.append(_device(0, _no_such_unit))
        self._server: ModbusTcpServer | None = None
        self._context: Any = None

    # -- lifecycle

    async def start(self) -> None:
        server = ModbusTcpServer(self._devices, address=(self.host, self.port), trace_pdu=self._trace)
        if self._context is not None:
            server.context = self._context  # keep every register across a restart
        await server.serve_forever(background=True)
        self._server = server
        if self._context is None:
            self._context = server.context
            self.publish_all()
        if self.port == 0:
            self.port = cast(Any, server.transport).sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            await cast(Any, self._server).shutdown()  # untyped in pymodbus
            self._server = None

    async def restart(self) -> None:
        """Go away (dropping every client connection) and come back on the same port."""
        await self.stop()
        await self.start()

    # -- content

    def publish(self, unit: int) -> None:
        for table, values in render(self.machines[unit]).items():
            self.set_raw(unit, table, 0, values)

    def publish_all(self) -> None:
        for unit in self.machines:
            self.publish(unit)

    def set_raw(self, unit: int, table: str, address: int, values: Sequence[int | bool]) -> None:
        """Write registers (0..65535) or bits (0/1) of one unit, bypassing the map."""
        start, size, regs, _flags = self._context.devices[unit].block[_BLOCK[table]]
        if table in ("holding", "input"):
            if address < start or address + len(values) > start + size - 1:
                raise ValueError(f"{table} {address}..{address + len(values) - 1} outside the simulated map")
            regs[address - start : address - start + len(values)] = [int(v) & 0xFFFF for v in values]
            return
        if address + len(values) > BITS_SIZE:
            raise ValueError(f"{table} {address}..{address + len(values) - 1} outside the simulated map")
        for i, bit in enumerate(values):
            word, pos = divmod(address + i, 16)
            if bit:
                regs[word] |= 1 << pos
            else:
                regs[word] &= ~(1 << pos)

    # -- faults, for tests

    def hang(self, unit: int, on: bool = True) -> None:
        """The unit still accepts requests but never answers them."""
        (self._hung.add if on else self._hung.discard)(unit)

    def fail(self, unit: int, code: int | None) -> None:
        """Answer every request of the unit with this Modbus exception code (None: stop failing)."""
        if code is None:
            self._fail.pop(unit, None)
        else:
            self._fail[unit] = code

    def short_replies(self, unit: int, on: bool = True) -> None:
        """Answer register reads with one register too few, bit reads with one byte too few."""
        (self._short.add if on else self._short.discard)(unit)

    def request_count(self, unit: int | None = None, table: str | None = None) -> int:
        return sum(
            n
            for (u, t), n in self.requests.items()
            if (unit is None or u == unit) and (table is None or t == table)
        )

    async def _action(self, unit: int, *_args: Any) -> ExcCodes | None:
        code = self._fail.get(unit)
        return ExcCodes(code) if code is not None else None

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests[(pdu.dev_id, _FC_TABLE.get(pdu.function_code, "other"))] += 1
            if pdu.dev_id in self._hung:
                return None  # type: ignore[return-value]  # pymodbus skips a request whose PDU is None
            return pdu
        if pdu.dev_id in self._short and not pdu.isError():
            if pdu.registers:
                pdu.registers = pdu.registers[:-1]
            elif pdu.bits:
                pdu.bits = pdu.bits[:-8] if len(pdu.bits) > 8 else []
        return pdu


async def start_modbus_server(
    machines: Mapping[int, MachineState], host: str = "127.0.0.1", port: int = 0
) -> ModbusSimulator:
    """Serve ``machines`` (unit id -> state) on ``host:port``; port 0 picks a free port (see ``.port``)."""
    sim = ModbusSimulator(machines, host, port)
    await sim.start()
    return sim


class SilentServer:
    """Accepts TCP connections and never answers: a hung device, for isolation tests and benchmarks."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._swallow, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


async def start_silent_server(host: str = "127.0.0.1", port: int = 0) -> SilentServer:
    server = SilentServer()
    await server.start(host, port)
    return server


def machines_for(names: Iterable[str], first_unit: int = 1) -> dict[int, MachineState]:
    """Consecutive unit ids for a list of machine names (a convenience for fleets and benchmarks)."""
    return {first_unit + i: MachineState(name=name) for i, name in enumerate(names)}
