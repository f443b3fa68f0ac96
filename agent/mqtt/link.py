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
import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from agent import __version__
from agent.events import iso_utc
from agent.mqtt.settings import MqttConfig
from agent.mqtt.wire import MESSAGE_ID_PROPERTY as MESSAGE_ID_PROPERTY
from agent.mqtt.wire import fast_puback, message_id_property

if TYPE_CHECKING:
    import aiomqtt

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


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


def _honour_receive_maximum(original: Any, window: int) -> Any:
    """MQTT 5 §3.2.2.3.3: the broker's CONNACK may limit the unacknowledged QoS 1 PUBLISHes it takes
    (Receive Maximum; Mosquitto announces its max_inflight_messages, 20 by default, HiveMQ and EMQX
    their own) and may disconnect a client that sends more (0x93). paho does not apply it by
    itself: the rest of the window waits in paho's queue and goes out as PUBACKs come back."""

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        limit = getattr(properties, "ReceiveMaximum", None)
        # The attribute, not the setter: paho refuses a change once connected, for fear of a switch
        # between 0 (unlimited) and a limit. Here both are limits, and nothing is in flight yet (each
        # connection is a new client; the birth message goes out after this).
        client._max_inflight_messages = limit if isinstance(limit, int) and 0 < limit < window else window
        original(client, userdata, flags, reason, properties)

    return on_connect


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
        self.open()

    def open(self) -> None:
        """Start connecting (in the background: ``wait_connected`` waits for it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="mqtt-link")

    @property
    def broker(self) -> str:
        """How metrics and health name the broker: host:port (never the user or password)."""
        return f"{self.config.host}:{self.config.port}"

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        return max(0, self.connects - 1)

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
        acks = list(self._acks.values())
        self._acks.clear()  # in place: the PUBACK short-cut holds this dict
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for acked, _ in acks:
            if not acked.done():
                acked.set_exception(LinkDown(why))

    def _on_publish(self, original: Any) -> Any:
        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
            waiter = self._acks.pop(mid, None)
            if waiter is not None and not waiter[0].done():
                waiter[0].set_result(reason)
            original(client, userdata, mid, reason, properties)  # aiomqtt's own (birth, offline)

        return on_publish

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
        client._client.on_connect = _honour_receive_maximum(client._client.on_connect, cfg.in_flight)
        # On this one paho instance (not the class): see _fast_puback.
        client._client._handle_pubackcomp = fast_puback(client._client, self._acks)  # type: ignore[method-assign,assignment]
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
