"""Registers and bits to values: data types, byte orders, scale/offset and value maps (pure).

Byte orders use Telegraf's letters for a 32-bit value whose big-endian bytes are A B C D:
``ABCD`` big-endian, ``DCBA`` little-endian, ``BADC`` bytes swapped inside each register, ``CDAB``
registers swapped. 16- and 64-bit values follow the same rule (word order and byte order inside a
word), so one "word swapped" device setting means the same for every width.

Decoders are compiled once per tag into small closures over precompiled ``struct.Struct`` objects:
the poll loop calls them for every reading of every machine every second.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

INTEGER_TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64")
FLOAT_TYPES = ("float32", "float64")
NUMERIC_TYPES = INTEGER_TYPES + FLOAT_TYPES
TYPES = (*NUMERIC_TYPES, "string", "bit")
BYTE_ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")
REGISTER_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")
TABLES = REGISTER_TABLES + BIT_TABLES

_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4}
_WIDTH.update({"float32": 2, "float64": 4, "bit": 1})
_FORMAT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q"}
_FORMAT.update({"float32": "f", "float64": "d"})

# A register-level decoder: (words of one reply, offset of the tag in them) -> raw value.
RawDecoder = Callable[[Sequence[int], int], Any]
Decoder = Callable[[Sequence[Any], int], Any]


def register_count(type_: str, length: int | None = None) -> int:
    """How many registers a value of this type occupies (a string: 2 characters per register)."""
    if type_ == "string":
        return ((length or 0) + 1) // 2
    return _WIDTH[type_]


def swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def raw_decoder(
    type_: str, byte_order: str = "ABCD", length: int | None = None, bit: int | None = None
) -> RawDecoder:
    """A function reading one value of ``type_`` from a list of 16-bit registers at an offset."""
    if type_ == "bit":
        mask = 1 << (bit or 0)
        return lambda words, i: (words[i] & mask) != 0
    if type_ == "string":
        return _string_decoder(length or 0, swapped=byte_order in ("BADC", "DCBA"))
    width = _WIDTH[type_]
    words_reversed = byte_order in ("BADC", "CDAB")
    little = byte_order in ("DCBA", "BADC")
    if width == 1:
        # One register: only the byte order inside it matters.
        signed = type_ == "int16"
        if little:
            if signed:
                return lambda words, i: _signed16(swap_bytes(words[i]))
            return lambda words, i: swap_bytes(words[i])
        if signed:
            return lambda words, i: _signed16(words[i])
        return plain_word
    unpack = struct.Struct(("<" if little else ">") + _FORMAT[type_]).unpack
    pack = struct.Struct(f">{width}H").pack
    if width == 2:
        if words_reversed:
            return lambda words, i: unpack(pack(words[i + 1], words[i]))[0]
        return lambda words, i: unpack(pack(words[i], words[i + 1]))[0]
    if words_reversed:
        return lambda words, i: unpack(pack(words[i + 3], words[i + 2], words[i + 1], words[i]))[0]
    return lambda words, i: unpack(pack(*words[i : i + 4]))[0]


def plain_word(words: Sequence[Any], i: int) -> Any:
    """An unsigned 16-bit register as it is: the driver indexes such tags itself (no call per poll)."""
    return words[i]


def _signed16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def _string_decoder(length: int, *, swapped: bool) -> RawDecoder:
    count = (length + 1) // 2
    pack = struct.Struct(f">{count}H").pack

    def decode(words: Sequence[int], i: int) -> str:
        block = words[i : i + count]
        if swapped:
            block = [swap_bytes(w) for w in block]
        raw = pack(*block)[:length]
        return raw.split(b"\0", 1)[0].decode("ascii", "replace").rstrip()

    return decode


def bit_decoder() -> Decoder:
    return lambda bits, i: bool(bits[i])


def transformed(
    decode: Decoder,
    *,
    scale: float | None = None,
    offset: float | None = None,
    mapping: Mapping[Any, str] | None = None,
) -> Decoder:
    """Wrap a decoder with ``map`` (raw value -> word) and then ``value * scale + offset``.

    A raw value the map does not name is scaled and passed on: an unknown state code stays visible.
    """
    has_scale = scale is not None or offset is not None
    if not has_scale and not mapping:
        return decode
    k = 1.0 if scale is None else scale
    d = 0.0 if offset is None else offset
    if not mapping:
        return lambda words, i: decode(words, i) * k + d
    table = dict(mapping)
    if not has_scale:

        def mapped(words: Sequence[Any], i: int) -> Any:
            raw = decode(words, i)
            return table.get(raw, raw)

        return mapped

    def mapped_scaled(words: Sequence[Any], i: int) -> Any:
        raw = decode(words, i)
        word = table.get(raw)
        return word if word is not None else raw * k + d

    return mapped_scaled
