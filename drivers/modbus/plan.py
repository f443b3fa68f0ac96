"""Which Modbus requests read a machine's tags: as few as possible (pure).

Tags of one unit id and table whose ranges touch or overlap are read by one request, up to the
protocol's limit (125 registers or 2000 bits). Gaps are never bridged: many devices answer a read
that covers an unmapped address with exception 2, which would spoil every tag in the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drivers.modbus.codec import BIT_TABLES
from drivers.modbus.config import ModbusTag

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class Request:
    unit: int
    table: str
    address: int
    count: int
    tags: tuple[tuple[ModbusTag, int], ...]  # each tag with its offset inside the reply

    def describe(self) -> str:
        """``holding 0..19 (unit 3)`` — how errors name the request."""
        return f"{self.table} {self.address}..{self.address + self.count - 1} (unit {self.unit})"


def plan(tags: Iterable[ModbusTag]) -> tuple[Request, ...]:
    groups: dict[tuple[int, str], list[ModbusTag]] = {}
    for tag in tags:
        groups.setdefault((tag.unit, tag.table), []).append(tag)
    out: list[Request] = []
    for (unit, table), members in sorted(groups.items()):
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        members.sort(key=lambda t: (t.address, t.size))
        start = members[0].address
        end = start + members[0].size  # exclusive
        batch = [members[0]]
        for tag in members[1:]:
            tag_end = tag.address + tag.size
            if tag.address <= end and max(end, tag_end) - start <= limit:
                batch.append(tag)
                end = max(end, tag_end)
                continue
            out.append(_request(unit, table, start, end, batch))
            start, end, batch = tag.address, tag_end, [tag]
        out.append(_request(unit, table, start, end, batch))
    return tuple(out)


def _request(unit: int, table: str, start: int, end: int, batch: list[ModbusTag]) -> Request:
    return Request(unit, table, start, end - start, tuple((t, t.address - start) for t in batch))
