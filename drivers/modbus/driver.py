"""``ModbusDriver``: reads one machine's tags over a shared ``Link`` and decodes them.

The request plan and every tag's decoder are built once, at construction; a poll is then only the
requests themselves plus one small closure call per tag.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from drivers.base import ConnectionState, DriverError, Quality, Reading, Sink
from drivers.modbus.codec import BIT_TABLES, Decoder, bit_decoder, plain_word, raw_decoder, transformed
from drivers.modbus.config import ModbusMachineConfig, ModbusTag
from drivers.modbus.link import BadReply, Link, LinkDown, LinkPool, NoAnswer
from drivers.modbus.plan import Request, plan

_GOOD = Quality.GOOD
# A named tuple's own constructor is a Python function around this call: 20 readings a poll, one
# frame each (3 % of the daemon at 5,000 machines). Same fields, same order, same type.
_new: Callable[[type[Reading], tuple[Any, ...]], Reading] = tuple.__new__
_BAD = Quality.BAD
_DISCONNECTED = Quality.DISCONNECTED


def decoder_for(tag: ModbusTag) -> Decoder:
    base = (
        bit_decoder()
        if tag.table in BIT_TABLES
        else raw_decoder(tag.type, tag.byte_order, tag.length, tag.bit)
    )
    return transformed(base, scale=tag.scale, offset=tag.offset, mapping=dict(tag.map))


class ModbusDriver:
    def __init__(
        self,
        config: ModbusMachineConfig,
        *,
        links: LinkPool | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.machine_id = config.machine_id
        self.tag_names = config.tag_names
        # Without a pool given, this machine has a connection of its own.
        self._pool = links if links is not None else LinkPool()
        self._link: Link | None = None
        self._wall = wall
        self.requests: tuple[Request, ...] = plan(config.tags)
        self._steps: list[tuple[Request, list[tuple[str, Decoder, int]]]] = [
            (req, [(tag.name, decoder_for(tag), offset) for tag, offset in req.tags]) for req in self.requests
        ]

    @property
    def state(self) -> ConnectionState:
        return self._link.state if self._link is not None else ConnectionState.DISCONNECTED

    async def connect(self) -> None:
        if self._link is None:
            c = self.config
            self._link = self._pool.acquire(
                c.host, c.port, timeout=c.timeout, pause_after_connect=c.pause_after_connect
            )
        try:
            await self._link.connect()
        except LinkDown as exc:
            raise DriverError(exc.reason) from None

    async def read(self) -> list[Reading]:
        out: list[Reading] = []
        append = out.append
        machine = self.machine_id
        link = self._link
        timeout = self.config.timeout
        down = "" if link is not None else "not connected"
        silent_units: dict[int, str] = {}
        for req, items in self._steps:
            reason = down or silent_units.get(req.unit, "")
            quality = _DISCONNECTED
            if not reason and link is not None:
                try:
                    values: Any = await link.read(req.unit, req.table, req.address, req.count, timeout)
                except LinkDown as exc:
                    reason = down = exc.reason
                except NoAnswer as exc:
                    # A unit that did not answer is not asked again this cycle: that would only
                    # stretch the cycle by one timeout per request.
                    reason = silent_units[req.unit] = str(exc)
                except BadReply as exc:
                    reason = str(exc)
                    quality = _BAD
                else:
                    ts = self._wall()
                    for name, decode, offset in items:
                        try:
                            value = values[offset] if decode is plain_word else decode(values, offset)
                        except (ValueError, TypeError, ArithmeticError) as exc:
                            append(Reading(machine, name, None, _BAD, ts, f"cannot decode: {exc}"))
                            continue
                        append(_new(Reading, (machine, name, value, _GOOD, ts, None)))
                    continue
            ts = self._wall()
            for name, _decode, _offset in items:
                append(Reading(machine, name, None, quality, ts, reason))
        return out

    async def subscribe(self, sink: Sink) -> bool:
        return False  # Modbus has no push: the collector polls

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await self._pool.release(link)
