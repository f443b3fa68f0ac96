"""The agent's one connection to the MQTT broker: connect, birth, Last Will, reconnect with capped backoff.

aiomqtt (over paho-mqtt) speaks the protocol; this module decides *when* to connect and what a dead
connection means for a publish that waits for its PUBACK (it fails at once, so the outbox row is
retried, instead of hanging until a timeout).

Birth and Last Will: on every connect the agent publishes ``online`` (retained, QoS 1) on its status
topic and registers ``offline`` (retained, QoS 1) as its will, so a consumer sees a dead IPC (kill -9,
power cut, cable pulled: the broker publishes the will after 1.5 × keep-alive). A clean stop publishes
``offline`` itself, because the broker discards the will on a normal DISCONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from agent import __version__
from agent.events import iso_utc
from agent.mqtt.settings import MqttConfig

if TYPE_CHECKING:
    import aiomqtt

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
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


def _plain_success(puback: bytes) -> bool:
    """A PUBACK's variable header (after the fixed header) that says success and carries nothing else."""
    n = len(puback)
    return n == 2 or (n == 3 and puback[2] < 0x80) or (n == 4 and puback[2] < 0x80 and puback[3] == 0)


class PublishRefused(Exception):
    """The broker answered, with an error reason code: retrying soon will not help."""


class LinkDown(Exception):
    """Not connected, or the connection died before the broker acknowledged the message."""


def backoff(previous: float, config: MqttConfig, rand: float) -> float:
    """The next reconnect delay: doubled, capped, with ±20 % jitter so a fleet does not reconnect in step."""
    base = config.reconnect_min if previous <= 0 else min(previous * 2, config.reconnect_max)
    return base * (0.8 + 0.4 * rand)


def status_payload(state: str, config: MqttConfig, now: float | None) -> bytes:
    """``now`` None for the will: it is registered at connect time, so it cannot know when it fires."""
    return json.dumps(
        {
            "state": state,
            "agent": config.agent,
            "client_id": config.client_id,
            "since": None if now is None else iso_utc(now),
            "version": __version__,
        },
        separators=(",", ":"),
    ).encode()


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(config.tls.ca_file) if config.tls.ca_file else None)
    if config.tls.cert_file is not None and config.tls.key_file is not None:
        ctx.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    if not config.tls.verify_hostname:
        # The certificate chain is still verified; only the name check is off (brokers reached by IP).
        ctx.check_hostname = False
    return ctx


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        *,
        on_state: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._on_state = on_state
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._client: aiomqtt.Client | None = None
        # Packet id → (future of the PUBACK's reason code, loop-time deadline), in publish order. One
        # timer for all of them (``_expire``) instead of a timeout per message: that cost ~15 µs each.
        self._acks: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._expiry: asyncio.TimerHandle | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ssl = tls_context(config)
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-link")

    async def wait_connected(self, within: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), within)
        return self._up.is_set()

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            # A normal DISCONNECT discards the will: say offline ourselves.
            with contextlib.suppress(Exception):
                await client.publish(
                    self.config.status,
                    status_payload("offline", self.config, self._clock()),
                    qos=1,
                    retain=True,
                    timeout=min(2.0, self.config.publish_timeout),
                )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, message_id: str | None = None
    ) -> None:
        """Returns when the broker has the message (PUBACK for QoS 1, written to the socket for QoS 0).

        ``PublishRefused`` when an MQTT 5 broker answers with an error reason code (e.g. 0x87 Not
        authorized: its ACL forbids the topic); an MQTT 3.1.1 broker drops such a message silently.
        """
        client = self._client
        if client is None:
            raise LinkDown(self.last_error or "not connected to the broker")
        import paho.mqtt.client as paho

        props = None
        if message_id is not None and self.config.protocol == "5":
            props = message_id_property(message_id)
        # paho directly rather than aiomqtt's publish: aiomqtt drops the PUBACK's reason code (so an
        # ACL refusal would count as delivered) and scans all pending calls on every publish.
        info = client._client.publish(topic, payload, qos, retain, props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise LinkDown(f"cannot publish: {paho.error_string(info.rc)}")
        if qos == 0 or info.is_published():
            return
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[Any] = loop.create_future()
        # Failed by ``_down`` at once when the connection dies, by ``_expire`` after publish_timeout.
        self._acks[info.mid] = (acked, loop.time() + self.config.publish_timeout)
        if self._expiry is None:
            self._expiry = loop.call_at(loop.time() + self.config.publish_timeout, self._expire)
        try:
            reason = await acked
        finally:
            self._acks.pop(info.mid, None)
        if reason is not None and getattr(reason, "is_failure", False):
            raise PublishRefused(f"the broker refused the message: {reason} (0x{int(reason.value):02X})")

    def _expire(self) -> None:
        """Fail the publishes whose PUBACK is overdue; come back at the next deadline."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for mid, (acked, deadline) in list(self._acks.items()):
            if deadline > now:  # deadlines grow in publish order: the rest are later still
                self._expiry = loop.call_at(deadline, self._expire)
                return
            del self._acks[mid]
            if not acked.done():
                acked.set_exception(LinkDown(f"no PUBACK within {self.config.publish_timeout:g} s"))

    def _fail_waiting(self, why: str) -> None:
        acks, self._acks = self._acks, {}
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for acked, _ in acks.values():
            if not acked.done():
                acked.set_exception(LinkDown(why))

    def _on_publish(self, original: Any) -> Any:
        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            waiter = self._acks.pop(mid, None)
            if waiter is not None and not waiter[0].done():
                waiter[0].set_result(reason)
            original(client, userdata, mid, reason, properties)  # aiomqtt's own (birth, offline)

        return on_publish

    def _fast_puback(self, paho_client: Any) -> Callable[[str], Any]:
        """paho's PUBACK handler, short-cut for the common case: a success PUBACK without properties for
        one of our publishes. MQTT 3.1.1: remaining length 2. MQTT 5 §3.4.2: a reason code below 0x80
        is a success (Mosquitto 2.0 sends 0x10 "No matching subscribers" when nobody listens), may be
        omitted with no properties (length 2) and is followed by a property length (here 0) or not.

        paho decodes every PUBACK into a ReasonCode and a Properties object and scans its outgoing
        messages: ~40 % of the agent's CPU per QoS 1 message in the sink benchmark. Anything else
        (an error reason code, properties, PUBCOMP, aiomqtt's own publishes) takes paho's own path.
        The bookkeeping is paho 2.2's ``_do_on_publish`` (pinned; tests/mqtt run both paths)."""
        slow = paho_client._handle_pubackcomp
        from paho.mqtt.client import MQTT_ERR_SUCCESS

        def handle_pubackcomp(cmd: str) -> Any:
            packet = paho_client._in_packet["packet"]
            if cmd != "PUBACK" or not _plain_success(packet):
                return slow(cmd)
            mid = (packet[0] << 8) | packet[1]
            waiter = self._acks.pop(mid, None)
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

    # ---- the connection loop

    def _client_for(self) -> aiomqtt.Client:
        import aiomqtt

        cfg = self.config
        will = aiomqtt.Will(cfg.status, status_payload("offline", cfg, None), qos=1, retain=True)
        protocol = aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311
        kwargs: dict[str, Any] = {}
        if cfg.protocol == "5":
            import paho.mqtt.client as paho

            # MQTT 5 has clean_start instead of clean_session; a persistent session also needs an expiry.
            kwargs["clean_start"] = paho.MQTT_CLEAN_START_FIRST_ONLY if cfg.clean_session else False
            if not cfg.clean_session:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 7 * 86400
                kwargs["properties"] = props
        else:
            kwargs["clean_session"] = cfg.clean_session
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password.reveal() if cfg.password is not None else None,
            identifier=cfg.client_id,
            protocol=protocol,
            will=will,
            # aiomqtt's default timeout bounds the wait for CONNACK (a TLS 1.3 refusal arrives only
            # after the handshake); publishes pass their own.
            timeout=cfg.connect_timeout,
            keepalive=max(1, round(cfg.keepalive)),
            max_inflight_messages=cfg.in_flight,
            tls_context=self._ssl,
            **kwargs,
        )
        # aiomqtt warns above 10 pending publishes; a full in-flight window is normal here.
        client.pending_calls_threshold = cfg.in_flight + 16
        client._client.connect_timeout = cfg.connect_timeout
        client._client.on_publish = self._on_publish(client._client.on_publish)
        # On this one paho instance (not the class): see _fast_puback.
        client._client._handle_pubackcomp = self._fast_puback(client._client)  # type: ignore[method-assign,assignment]
        return client

    async def _run(self) -> None:
        from aiomqtt import MqttError

        delay = 0.0
        while not self._stopping:
            client = self._client_for()
            try:
                async with client:
                    await client.publish(
                        self.config.status,
                        status_payload("online", self.config, self._clock()),
                        qos=1,
                        retain=True,
                    )
                    self._up_with(client)
                    delay = 0.0
                    # No subscriptions: the iterator only ends, with MqttError, when the connection dies.
                    async for _ in client.messages:
                        pass
            except MqttError as exc:
                self._down(str(exc) or type(exc).__name__)
            except OSError as exc:
                self._down(f"{type(exc).__name__}: {exc}")
            except asyncio.CancelledError:
                self._down("stopped")
                raise
            except Exception as exc:
                # A bug (ours or the client's) must not end publishing for good: report, back off, retry.
                log.error("mqtt_link_failed", error=repr(exc), exc_info=True)
                self._down(f"internal error: {type(exc).__name__}")
            if self._stopping:
                break
            delay = backoff(delay, self.config, self._rand())
            self.next_attempt_at = self._clock() + delay
            await self._sleep(delay)

    def _up_with(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._up.set()
        self.connects += 1
        self.last_error = None
        self.next_attempt_at = None
        log.info(
            "mqtt_connected", host=self.config.host, port=self.config.port, client_id=self.config.client_id
        )
        if self._on_state is not None:
            self._on_state(True)

    def _down(self, error: str) -> None:
        was_up = self._client is not None
        self._client = None
        self._up.clear()
        self._fail_waiting("connection lost before the broker acknowledged the message")
        self.last_error = f"broker {self.config.host}:{self.config.port}: {error}"
        if was_up:
            log.warning("mqtt_disconnected", error=self.last_error)
            if self._on_state is not None:
                self._on_state(False)
        elif error != "stopped":
            log.warning("mqtt_connect_failed", error=self.last_error)
