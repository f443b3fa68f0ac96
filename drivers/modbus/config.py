"""The ``modbus:`` and ``tags:`` sections of a Modbus machine file, read into frozen dataclasses.

Every problem is recorded on the ``Section`` with file, line and key path; nothing here raises for
bad input. Words follow Telegraf's Modbus input (table, type names, ``byte_order: ABCD``), the
vocabulary plant engineers already use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from agent.config.source import Section, as_duration, as_float, as_int, as_str, in_range, one_of
from drivers.modbus.codec import (
    BIT_TABLES,
    BYTE_ORDERS,
    INTEGER_TYPES,
    NUMERIC_TYPES,
    TABLES,
    TYPES,
    register_count,
)

MAX_STRING = 250  # 125 registers, the most one request may read


@dataclass(frozen=True, slots=True)
class ModbusTag:
    name: str
    table: str  # holding | input | coil | discrete
    address: int
    type: str  # one of codec.TYPES
    unit: int
    byte_order: str = "ABCD"
    length: int | None = None  # characters, strings only
    bit: int | None = None  # 0..15, a bit of a register
    scale: float | None = None
    offset: float | None = None
    map: tuple[tuple[Any, str], ...] = ()
    precision: int | None = None  # decimals a person is shown (`read`); the value itself is not rounded

    @property
    def size(self) -> int:
        """Registers (register tables) or bits (coil/discrete) this tag occupies."""
        if self.table in BIT_TABLES:
            return 1
        return register_count(self.type, self.length)


@dataclass(frozen=True, slots=True)
class ModbusMachineConfig:
    machine_id: str
    host: str
    port: int = 502
    unit: int = 1
    timeout: float = 1.0
    pause_after_connect: float = 0.0
    poll_interval: float = 1.0
    tags: tuple[ModbusTag, ...] = field(default_factory=tuple)

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)


_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


def parse(machine_id: str, conn: Section, tags: Section, poll_interval: float | None) -> ModbusMachineConfig:
    host = conn.need("host", as_str)
    port = conn.get("port", in_range(as_int, 1, 65535), 502)
    unit = conn.get("unit", in_range(as_int, 0, 255), 1)
    timeout = conn.get("timeout", in_range(as_duration, 0.001, 600), 1.0)
    pause = conn.get("pause_after_connect", in_range(as_duration, 0, 60), 0.0)
    conn.done()

    parsed: list[ModbusTag] = []
    names = tags.keys()
    if tags.ok and not names:
        tags.error_here("no tags: a Modbus machine needs at least one tag to read")
    for name in names:
        key = _tag_key(name, tags.raw(name), unit)
        tag = _PARSED.get(key) if key is not None else None
        if tag is None:
            tag = _parse_tag(name, tags.sub(name), unit)
            if tag is not None and key is not None:  # parsed without a problem
                if len(_PARSED) >= _PARSED_LIMIT:
                    _PARSED.clear()
                _PARSED[key] = tag
        if tag is not None:
            parsed.append(tag)
    tags.done()
    return ModbusMachineConfig(
        machine_id=machine_id,
        host=host or "",
        port=port,
        unit=unit,
        timeout=timeout,
        pause_after_connect=pause,
        poll_interval=poll_interval or 1.0,
        tags=tuple(parsed),
    )


# Tag definitions repeat from machine file to machine file (a plant's lathes read the same
# registers; a profile's tags are copied into every machine that names it): reading 10,000 tags
# through Section took a third of the start at 500 machines. A definition read without a problem
# is kept and handed out again for the same name, values and default unit (a ModbusTag is
# frozen). A definition with a problem is never kept, so each file that has it gets its own
# messages with its own file and line.
_PARSED: dict[tuple[Any, ...], ModbusTag] = {}
_PARSED_LIMIT = 20_000


def _tag_key(name: str, data: Any, default_unit: int) -> tuple[Any, ...] | None:
    """What a tag's parse depends on, or ``None`` when that is not a flat mapping of scalars.

    Each value goes in with its type: ``1``, ``1.0`` and ``true`` are equal as dict keys, but
    ``address: true`` is an error where ``address: 1`` is not.
    """
    if not isinstance(data, dict):
        return None
    values = tuple(data.values())
    key: tuple[Any, ...] = (name, default_unit, tuple(data), values, tuple(map(type, values)))
    try:
        hash(key)
    except TypeError:  # a map: {raw value: word}; or a list or mapping where a scalar belongs
        parts: list[Any] = [name, default_unit]
        for k, v in data.items():
            if isinstance(v, dict):
                v = tuple((mk, type(mv), mv) for mk, mv in v.items())
            parts.append((k, type(v), v))
        key = tuple(parts)
        try:
            hash(key)
        except TypeError:  # the reader says where
            return None
    return key


def _parse_tag(name: str, t: Section, default_unit: int) -> ModbusTag | None:
    if not t.ok:
        return None
    before = len(t.problems.items)
    table = t.need("table", one_of(*TABLES))
    address = t.need("address", in_range(as_int, 0, 65535))
    bits_table = table in BIT_TABLES
    type_ = t.get("type", one_of(*TYPES), "bit" if bits_table else "uint16")
    if bits_table and type_ != "bit" and t.has("type"):
        t.error("type", f"table {table} holds single bits; the type there can only be bit")
    length = t.opt("length", in_range(as_int, 1, MAX_STRING))
    if type_ == "string" and length is None and not t.has("length"):
        t.error_here("length: required for type string (number of characters)")
    if type_ != "string" and t.has("length"):
        t.error("length", "only a string has a length")
    bit = t.opt("bit", in_range(as_int, 0, 15))
    if type_ == "bit" and not bits_table and bit is None and not t.has("bit"):
        t.error_here("bit: required for type bit on a register (0..15, 0 = least significant)")
    if t.has("bit") and (bits_table or type_ != "bit"):
        t.error("bit", "only type bit on a holding or input register takes a bit number")
    byte_order = t.get("byte_order", one_of(*BYTE_ORDERS), "ABCD")
    if t.has("byte_order") and (bits_table or type_ == "bit"):
        t.error("byte_order", "bits have no byte order")
    if type_ == "string" and byte_order in ("DCBA", "CDAB"):
        t.error("byte_order", "a string is ABCD (high byte first) or BADC (low byte first)")
    numeric = type_ in NUMERIC_TYPES
    scale = t.opt("scale", as_float)
    offset = t.opt("offset", as_float)
    for key in ("scale", "offset"):
        if t.has(key) and not numeric:
            t.error(key, f"only numeric types can be scaled, not {type_}")
    precision = t.opt("precision", in_range(as_int, 0, 12))
    if t.has("precision") and not numeric:
        t.error("precision", f"only numeric types have decimals, not {type_}")
    unit = t.get("unit", in_range(as_int, 0, 255), default_unit)
    mapping = _parse_map(t, type_) if t.raw("map") is not None else ()
    t.done()
    if address is not None and table in TABLES and type_ in TYPES:
        size = 1 if bits_table else register_count(type_, length)
        if address + size - 1 > 65535:
            t.error("address", f"{type_} at {address} runs past the last address 65535")
    if len(t.problems.items) > before:
        return None
    return ModbusTag(
        name=name,
        table=table,
        address=address,
        type=type_,
        unit=unit,
        byte_order=byte_order,
        length=length,
        bit=bit,
        scale=scale,
        offset=offset,
        map=mapping,
        precision=precision,
    )


def _parse_map(t: Section, type_: str) -> tuple[tuple[Any, str], ...]:
    m = t.sub("map")
    out: list[tuple[Any, str]] = []
    keys = m.keys()
    for key in keys:
        word = m.opt(key, _word)
        try:
            raw = _map_key(key, type_)
        except ValueError as exc:
            m.error(key, str(exc))
            continue
        if word is not None:
            out.append((raw, word))
    m.done()
    return tuple(out)


def _word(value: Any) -> str:
    if isinstance(value, bool):
        # YAML 1.1 reads ON, OFF, yes and no as booleans: the word the user meant is gone.
        raise ValueError('YAML read this word as true/false; quote it, e.g. "ON"')
    return as_str(value)


def _map_key(key: str, type_: str) -> Any:
    """YAML map keys arrive as text; turn them into the raw value type the decoder produces."""
    text = key.strip()
    if type_ in INTEGER_TYPES:
        if re.fullmatch(r"[+-]?(0x[0-9a-fA-F]+|\d+)", text):
            return int(text, 0)
        raise ValueError(f"map key {key!r} is not an integer (the raw value of a {type_})")
    if type_ in NUMERIC_TYPES:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"map key {key!r} is not a number (the raw value of a {type_})") from None
    if type_ == "bit":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"map key {key!r} is not a bit value (true/false or 1/0)")
    return key
