"""The agent's Modbus TCP framing (drivers/modbus/wire.py) against pymodbus as the reference codec:
the same request bytes, the same values out of the replies pymodbus' server side would send."""

from __future__ import annotations

import pytest
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from drivers.modbus.wire import FUNCTION, WireError, decode_reply, encode_read

FRAMER = FramerSocket(DecodePDU(False))
REQUESTS = {
    "holding": ReadHoldingRegistersRequest,
    "input": ReadInputRegistersRequest,
    "coil": ReadCoilsRequest,
    "discrete": ReadDiscreteInputsRequest,
}


@pytest.mark.parametrize("table", sorted(FUNCTION))
@pytest.mark.parametrize(("tid", "unit", "address", "count"), [(1, 1, 0, 20), (65535, 247, 65500, 125)])
def test_read_requests_are_the_bytes_pymodbus_sends(
    table: str, tid: int, unit: int, address: int, count: int
) -> None:
    reference = REQUESTS[table](address=address, count=count, dev_id=unit, transaction_id=tid)
    assert encode_read(tid, unit, FUNCTION[table], address, count) == FRAMER.buildFrame(reference)


def _pdu(frame: bytes) -> bytes:
    return frame[7:]  # MBAP header (7 bytes, with the unit id) off


@pytest.mark.parametrize("response", [ReadHoldingRegistersResponse, ReadInputRegistersResponse])
def test_register_replies_decode_to_the_registers_sent(response: type) -> None:
    values = [0, 1, 0x7FFF, 0x8000, 0xFFFF]
    frame = FRAMER.buildFrame(response(registers=values, dev_id=3, transaction_id=4))
    function = 3 if response is ReadHoldingRegistersResponse else 4
    assert decode_reply(function, _pdu(frame)).values == values


@pytest.mark.parametrize("response", [ReadCoilsResponse, ReadDiscreteInputsResponse])
def test_bit_replies_decode_in_whole_bytes_lowest_bit_first(response: type) -> None:
    bits = [
        True,
        False,
        True,
        True,
        False,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
    ]
    frame = FRAMER.buildFrame(response(bits=bits, dev_id=1, transaction_id=1))
    function = 1 if response is ReadCoilsResponse else 2
    assert decode_reply(function, _pdu(frame)).values == bits


def test_an_exception_reply_gives_its_code_and_no_values() -> None:
    reply = ExceptionResponse(3, 2)
    reply.dev_id, reply.transaction_id = 1, 1
    got = decode_reply(3, _pdu(FRAMER.buildFrame(reply)))
    assert got.exception_code == 2 and got.values == []


@pytest.mark.parametrize(
    ("function", "pdu"),
    [
        (3, b""),  # nothing
        (3, b"\x04\x02\x00\x01"),  # a reply to another function
        (3, b"\x03\x04\x00\x01"),  # byte count 4, two bytes
        (3, b"\x03\x03\x00\x01\x02"),  # an odd number of register bytes
    ],
)
def test_malformed_replies_are_wire_errors(function: int, pdu: bytes) -> None:
    with pytest.raises(WireError):
        decode_reply(function, pdu)
