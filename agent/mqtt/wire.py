"""MQTT wire details that paho makes expensive on the hot path of a QoS 1 publish.

paho-mqtt (pinned in pyproject) builds a generic ``Properties`` object for every PUBLISH and decodes
every PUBACK into ``ReasonCode`` and ``Properties`` objects: together most of the agent's CPU per
message. Here: MQTT 5 user properties packed once (byte-identical to paho's, tested) and a PUBACK
short-cut for the plain success case; anything else takes paho's own code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any

# The MQTT 5 user property that carries the outbox message id (also in every payload as ``id`` or
# ``message_id``): a consumer de-duplicates QoS 1 redelivery on it.
MESSAGE_ID_PROPERTY = "message-id"


def pack_user_properties(pairs: Sequence[tuple[str, str]]) -> bytes:
    """MQTT 5 properties holding only User Properties (§2.2.2: length as a Variable Byte Integer, then
    per property the identifier 0x26 and a UTF-8 string pair, §1.5.7)."""
    body = bytearray()
    for key, value in pairs:
        for text in (key, value):
            raw = text.encode("utf-8")
            if len(raw) > 65535:
                raise ValueError("user property longer than 65535 bytes")
        k, v = key.encode("utf-8"), value.encode("utf-8")
        body += b"\x26" + len(k).to_bytes(2, "big") + k + len(v).to_bytes(2, "big") + v
    n = len(body)
    length = bytearray()
    while True:
        digit, n = n % 128, n // 128
        length.append(digit | (0x80 if n else 0))
        if not n:
            break
    return bytes(length + body)


def message_id_property(message_id: str) -> Any:
    """PUBLISH properties carrying ``message-id``, packed once.

    paho's generic ``Properties`` costs ~150 µs per message (its name tables are rebuilt per instance
    and ``pack`` reflects over every property name): more than half the time of a QoS 1 publish. paho
    only checks the type and calls ``pack()``, so a subclass hands it the bytes directly.
    """
    return _packed_properties_class()(
        pack_user_properties([(MESSAGE_ID_PROPERTY, message_id)]), f"[UserProperty: message-id={message_id}]"
    )


@functools.cache
def _packed_properties_class() -> Any:
    # Built on first use: paho is imported only by agents that have an mqtt: section.
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    class PackedProperties(Properties):
        _packed: bytes
        _shown: str

        def __init__(self, packed: bytes, shown: str) -> None:
            # Neither super().__init__ (that is the cost) nor its validating __setattr__.
            object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
            object.__setattr__(self, "_packed", packed)
            object.__setattr__(self, "_shown", shown)

        def pack(self) -> bytes:
            return self._packed

        def isEmpty(self) -> bool:
            return False

        def __str__(self) -> str:
            return self._shown

        __repr__ = __str__

    return PackedProperties


def plain_success(puback: bytes) -> bool:
    """A PUBACK's variable header (after the fixed header) that says success and carries nothing else."""
    n = len(puback)
    return n == 2 or (n == 3 and puback[2] < 0x80) or (n == 4 and puback[2] < 0x80 and puback[3] == 0)


def fast_puback(paho_client: Any, acks: dict[int, tuple[asyncio.Future[Any], float]]) -> Callable[[str], Any]:
    """paho's PUBACK handler, short-cut for the common case: a success PUBACK without properties for
    one of our publishes. MQTT 3.1.1: remaining length 2. MQTT 5 §3.4.2: a reason code below 0x80
    is a success (Mosquitto 2.0 sends 0x10 "No matching subscribers" when nobody listens), may be
    omitted with no properties (length 2) and is followed by a property length (here 0) or not.

    paho decodes every PUBACK into a ReasonCode and a Properties object and scans its outgoing
    messages: ~40 % of the agent's CPU per QoS 1 message in the sink benchmark. Anything else
    (an error reason code, properties, PUBCOMP, aiomqtt's own publishes) takes paho's own path.
    ``acks``: packet id → (future, deadline) of ``MqttLink.publish``, the same dict for the life of
    the link. The bookkeeping is paho 2.2's ``_do_on_publish`` (pinned; tests/mqtt run both paths)."""
    slow = paho_client._handle_pubackcomp
    from paho.mqtt.client import MQTT_ERR_SUCCESS

    def handle_pubackcomp(cmd: str) -> Any:
        packet = paho_client._in_packet["packet"]
        if cmd != "PUBACK" or not plain_success(packet):
            return slow(cmd)
        mid = (packet[0] << 8) | packet[1]
        waiter = acks.pop(mid, None)
        if waiter is None:
            return slow(cmd)
        rc = MQTT_ERR_SUCCESS
        with paho_client._out_message_mutex:
            msg = paho_client._out_messages.pop(mid, None)
            if msg is not None:
                msg.info._set_as_published()
                paho_client._inflight_messages -= 1
                # Messages paho queued above max_inflight_messages go out now (its scan is
                # skipped when none wait, which is always with the dispatcher's window).
                if len(paho_client._out_messages) > paho_client._inflight_messages:
                    rc = paho_client._update_inflight()
        if not waiter[0].done():
            waiter[0].set_result(None)
        return rc

    return handle_pubackcomp
