"""OPC-UA driver: batched polling, one subscription for data and alarm events, recovery after loss.

Reconnecting is left to the collector (it calls ``connect()`` again with backoff when ``state`` is
DISCONNECTED), so asyncua's own auto-reconnect stays off: it would restore subscriptions with the
NodeIds of the previous boot, but a rebooted server may have moved our namespace to another index.
Each ``connect()`` therefore builds a fresh client, resolves ``nsu=`` URIs and re-creates everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.client.ua_session import SessionState
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509

from drivers.base import (
    AlarmNotice,
    AlarmRefresh,
    ConnectionState,
    DriverError,
    Quality,
    Reading,
    Sample,
    Sink,
)
from drivers.opcua.config import AlarmConfig, NodeRef, OpcuaMachineConfig, OpcuaTag
from drivers.opcua.limits import bound_client, oversize

log = structlog.get_logger(__name__)


class _PublishLoopCrash(logging.Filter):
    """asyncua logs "Publish iteration crashed" with a traceback at error level whenever a server
    goes away; the driver reports that loss itself (``opcua_disconnected``, once, with the reason)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Publish iteration crashed")


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_PublishLoopCrash())


def _ns0(ident: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(ident))


EVENT_HANDLE = 0x7FFF0000  # client handle of the alarm-event item; tag handles are their indexes
_CONDITION = _ns0(ObjectIds.ConditionType)
_REFRESH_START = _ns0(ObjectIds.RefreshStartEventType)
_REFRESH_END = _ns0(ObjectIds.RefreshEndEventType)
# OPC 10000-9: (name, type that defines it, browse path). ConditionId has no browse path: it is the
# NodeId attribute of the condition (see _condition_id_operand).
_BASE_FIELDS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("EventId", ObjectIds.BaseEventType, ("EventId",)),
    ("EventType", ObjectIds.BaseEventType, ("EventType",)),
    ("SourceNode", ObjectIds.BaseEventType, ("SourceNode",)),
    ("SourceName", ObjectIds.BaseEventType, ("SourceName",)),
    ("Time", ObjectIds.BaseEventType, ("Time",)),
    ("Message", ObjectIds.BaseEventType, ("Message",)),
    ("Severity", ObjectIds.BaseEventType, ("Severity",)),
)
_CONDITION_FIELDS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("ConditionName", ObjectIds.ConditionType, ("ConditionName",)),
    ("BranchId", ObjectIds.ConditionType, ("BranchId",)),
    ("Retain", ObjectIds.ConditionType, ("Retain",)),
    ("ActiveState/Id", ObjectIds.AlarmConditionType, ("ActiveState", "Id")),
    ("AckedState/Id", ObjectIds.AcknowledgeableConditionType, ("AckedState", "Id")),
)
_SESSION_GONE = {
    StatusCodes.BadSessionIdInvalid,
    StatusCodes.BadSessionClosed,
    StatusCodes.BadSessionNotActivated,
    StatusCodes.BadSecureChannelIdInvalid,
    StatusCodes.BadSecureChannelClosed,
    StatusCodes.BadConnectionClosed,
    StatusCodes.BadServerHalted,
    StatusCodes.BadShutdown,
    StatusCodes.BadCommunicationError,
    StatusCodes.BadTimeout,
    StatusCodes.BadNoSubscription,
    StatusCodes.BadSubscriptionIdInvalid,
}
_TOO_LARGE = {
    StatusCodes.BadRequestTooLarge,
    StatusCodes.BadResponseTooLarge,
    StatusCodes.BadEncodingLimitsExceeded,
}
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


def status_name(code: ua.StatusCode | int) -> str:
    sc = code if isinstance(code, ua.StatusCode) else ua.StatusCode(ua.UInt32(code))
    try:
        return str(sc.name)
    except Exception:  # an unknown vendor code still gets a readable reason
        return f"status 0x{int(sc.value):08X}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DriverError):
        return str(exc)
    if isinstance(exc, UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class OpcuaDriver:
    """``drivers.base.Driver`` over one asyncua client session."""

    def __init__(self, config: OpcuaMachineConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.machine_id = config.machine_id
        self.config = config
        self.tag_names = config.tag_names  # lets the collector report an outage per tag, as for Modbus
        self._clock = clock
        self._state = ConnectionState.DISCONNECTED
        self._reason = "not connected yet"
        self._client: Client | None = None
        self._generation = 0
        self._namespaces: list[str] = []
        self._node_ids: list[ua.NodeId | None] = []
        self._unresolved: list[str | None] = []  # per tag: why it has no NodeId on this server
        self._poll_nodes: list[ua.NodeId] = []
        self._poll_index: list[int] = []
        self._sink: Sink | None = None
        self._subscription_id: int | None = None
        self._event_fields: tuple[str, ...] = ()
        self._event_source: ua.NodeId | None = None
        self._refresh_keys: set[str] | None = None  # conditions listed since RefreshStartEvent
        self._refresh_supported = True
        self._last_publish = 0.0
        self._stale_after = math.inf
        self._watch_task: asyncio.Task[None] | None = None
        self._teardown_tasks: set[asyncio.Task[None]] = set()
        self._oversized: set[str] = set()  # tags whose last value was over a cap (logged once)

    def __repr__(self) -> str:
        return f"OpcuaDriver({self.machine_id!r}, {self.config.url!r}, {self._state.value})"

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def reason(self) -> str:
        """Why the driver is not connected (plain words; meaningful while DISCONNECTED)."""
        return self._reason

    @property
    def event_filter(self) -> str:
        """``conditions`` (OPC 10000-9 fields), ``plain`` (configured event fields) or ``none``."""
        if not self._event_fields:
            return "none"
        return "conditions" if "ConditionId" in self._event_fields else "plain"

    # -- connection

    async def connect(self) -> None:
        await self._drop_client()
        self._state = ConnectionState.CONNECTING
        self._generation += 1
        generation = self._generation
        cfg = self.config
        client = Client(cfg.url, timeout=cfg.timeout, watchdog_intervall=max(1.0, min(cfg.timeout, 5.0)))
        bound_client(client, cfg.max_message_size)
        client.session_timeout = int(cfg.session_timeout * 1000)
        client.name = client.description = f"edge-agent {self.machine_id}"
        client.application_uri = "urn:edge-agent:client"
        try:
            await self._apply_security(client)
            await asyncio.wait_for(client.connect(), timeout=cfg.timeout * 2)
        except Exception as exc:
            await self._discard(client)
            self._state = ConnectionState.DISCONNECTED
            self._reason = f"cannot connect to {cfg.url}: {_describe(exc)}"
            raise DriverError(self._reason) from None
        self._client = client
        try:
            await self._resolve(client)
            if self._sink is not None:
                await self._create_subscription(client, generation)
        except Exception as exc:
            self._client = None
            await self._discard(client)
            self._state = ConnectionState.DISCONNECTED
            self._reason = f"connected to {cfg.url} but setup failed: {_describe(exc)}"
            raise DriverError(self._reason) from None

        async def on_lost(exc: Exception) -> None:
            self._lost(generation, f"connection to {cfg.url} lost: {_describe(exc)}")

        def on_state(state: UaClientState) -> None:
            if state is UaClientState.DISCONNECTED:
                _stop_publish_loop(client)
                self._lost(generation, f"connection to {cfg.url} lost")

        # A dropped socket is seen synchronously here; the callback covers a server that stops answering.
        client.connection_lost_callback = on_lost
        client.uaclient._add_state_listener(on_state)
        self._state = ConnectionState.CONNECTED
        self._reason = ""
        log.info("opcua_connected", machine=self.machine_id, url=cfg.url, namespaces=len(self._namespaces))

    async def _apply_security(self, client: Client) -> None:
        cfg = self.config
        sec = cfg.security
        if sec.policy != "None":
            if sec.certificate_file is None or sec.private_key_file is None:
                raise DriverError("a security policy needs certificate_file and private_key_file")
            # Servers check that the session's ApplicationUri is the one in our certificate.
            cert = await uacrypto.load_certificate(str(sec.certificate_file))
            uris = _certificate_uris(cert)
            if uris:
                client.application_uri = uris[0]
            await client.set_security(
                _POLICIES[sec.policy],
                certificate=str(sec.certificate_file),
                private_key=str(sec.private_key_file),
                server_certificate=str(sec.server_certificate_file) if sec.server_certificate_file else None,
                mode=ua.MessageSecurityMode.Sign
                if sec.mode == "Sign"
                else ua.MessageSecurityMode.SignAndEncrypt,
            )
        if cfg.username is not None:
            client.set_user(cfg.username)
        if cfg.password is not None:
            client.set_password(cfg.password.reveal())

    async def _resolve(self, client: Client) -> None:
        """Map every configured node to this boot's NodeId (``nsu=`` URIs → current index)."""
        namespaces: list[str] = await client.get_namespace_array()
        self._node_ids, self._unresolved = [], []
        for tag in self.config.tags:
            nid, why = _to_nodeid(tag.node, namespaces)
            self._node_ids.append(nid)
            self._unresolved.append(why)
        self._poll_index = [i for i, nid in enumerate(self._node_ids) if nid is not None]
        self._poll_nodes = [nid for nid in self._node_ids if nid is not None]
        self._namespaces = namespaces

    def _lost(self, generation: int, reason: str) -> None:
        """The session or its subscription died: report DISCONNECTED so the collector reconnects."""
        if generation != self._generation or self._state is not ConnectionState.CONNECTED:
            return
        self._state = ConnectionState.DISCONNECTED
        self._reason = reason
        log.warning("opcua_disconnected", machine=self.machine_id, reason=reason)
        client, self._client = self._client, None
        self._subscription_id = None
        if client is not None:
            task = asyncio.get_running_loop().create_task(self._discard(client))
            self._teardown_tasks.add(task)
            task.add_done_callback(self._teardown_tasks.discard)
        if self._sink is not None and self.config.mode == "subscribe":
            self._sink(self._all(Quality.DISCONNECTED, reason))

    async def _drop_client(self) -> None:
        self._generation += 1  # callbacks of the old client are ignored from here on
        self._subscription_id = None
        watch, self._watch_task = self._watch_task, None
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        client, self._client = self._client, None
        if client is not None:
            await self._discard(client)
        if self._teardown_tasks:
            await asyncio.gather(*self._teardown_tasks, return_exceptions=True)

    @staticmethod
    async def _discard(client: Client) -> None:
        """Close the client; after a loss, without the warnings asyncua logs for an already dead socket."""
        with contextlib.suppress(Exception):
            protocol = client.uaclient.protocol
            if protocol is None or protocol.is_closed:
                _stop_publish_loop(client)
                # Nothing is left to close on the server: mark the session closed so close_session()
                # only stops asyncua's supervisor and renew tasks.
                client.uaclient.session._set_state(SessionState.CLOSED)
                await client.close_session()
                client.disconnect_socket()
            else:
                await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def close(self) -> None:
        self._sink = None
        await self._drop_client()
        self._state = ConnectionState.DISCONNECTED
        self._reason = "closed"

    # -- polling

    def _all(self, quality: Quality, reason: str) -> list[Reading]:
        now = self._clock()
        return [Reading(self.machine_id, t.name, None, quality, now, reason) for t in self.config.tags]

    async def read(self) -> list[Reading]:
        client = self._client
        if client is None or self._state is not ConnectionState.CONNECTED:
            return self._all(Quality.DISCONNECTED, self._reason or "not connected")
        generation = self._generation
        try:
            values: list[ua.DataValue] = []
            if self._poll_nodes:  # one Read request for every resolvable tag
                values = await client.uaclient.read_attributes(self._poll_nodes, AttributeIds.Value)
        except UaStatusCodeError as exc:
            if exc.code in _SESSION_GONE:
                self._lost(generation, f"read failed: {status_name(exc.code)}")
                return self._all(Quality.DISCONNECTED, self._reason)
            if exc.code in _TOO_LARGE:
                # The answer did not fit max_message_size; asyncua has dropped the connection (the
                # loss may already be recorded, as a bare "lost"): say why, once, then reconnect.
                too_large = f"response larger than max_message_size ({self.config.max_message_size} bytes)"
                self._lost(generation, too_large)
                self._reason = too_large
                return self._all(Quality.BAD, too_large)
            return self._all(Quality.BAD, f"read rejected: {status_name(exc.code)}")
        except (ConnectionError, OSError, TimeoutError) as exc:
            self._lost(generation, f"read failed: {_describe(exc)}")
            return self._all(Quality.DISCONNECTED, self._reason)
        now = self._clock()
        tags = self.config.tags
        out: list[Reading | None] = [None] * len(tags)
        for i, why in enumerate(self._unresolved):
            if why is not None:
                out[i] = Reading(self.machine_id, tags[i].name, None, Quality.BAD, now, why)
        if len(values) != len(self._poll_index):
            reason = f"server answered {len(values)} values for {len(self._poll_index)} nodes"
            for i in self._poll_index:
                out[i] = Reading(self.machine_id, tags[i].name, None, Quality.BAD, now, reason)
        else:
            for i, dv in zip(self._poll_index, values, strict=True):
                out[i] = self._reading(tags[i], dv, now)
        return [r for r in out if r is not None]

    def _reading(self, tag: OpcuaTag, dv: ua.DataValue, now: float) -> Reading:
        status = dv.StatusCode
        if status is not None and not status.is_good():
            return Reading(self.machine_id, tag.name, None, Quality.BAD, now, status_name(status))
        variant = dv.Value
        if variant is None or variant.Value is None:
            return Reading(self.machine_id, tag.name, None, Quality.BAD, now, "no value")
        cfg = self.config
        why = oversize(variant.Value, cfg.max_string_length, cfg.max_array_length)
        if why is not None:
            if tag.name not in self._oversized:  # once per episode: the device repeats it every poll
                self._oversized.add(tag.name)
                log.warning("tag_value_too_large", machine_id=self.machine_id, tag=tag.name, reason=why)
            return Reading(self.machine_id, tag.name, None, Quality.BAD, now, why)
        self._oversized.discard(tag.name)
        # The device's SourceTimestamp where the server gives one; else when the agent received it.
        source = dv.SourceTimestamp
        ts = source.timestamp() if isinstance(source, datetime) and source.year > 1601 else now
        return Reading(self.machine_id, tag.name, tag.convert(variant.Value), Quality.GOOD, ts)

    # -- subscriptions

    async def subscribe(self, sink: Sink) -> bool:
        """Push samples to ``sink``: tag changes in ``mode: subscribe``, alarm events if ``alarms:`` is set.

        Returns True only when tag values are pushed (the collector then need not poll). The
        subscription is re-created by every later ``connect()``.
        """
        self._sink = sink
        client = self._client
        if client is not None and self._state is ConnectionState.CONNECTED and self._subscription_id is None:
            try:
                await self._create_subscription(client, self._generation)
            except Exception as exc:
                self._lost(self._generation, f"creating the subscription failed: {_describe(exc)}")
        return self.config.mode == "subscribe"

    def _wants_subscription(self) -> bool:
        return self.config.mode == "subscribe" or self.config.alarms is not None

    async def _create_subscription(self, client: Client, generation: int) -> None:
        if not self._wants_subscription():
            return
        cfg = self.config
        interval_ms = cfg.publishing_interval * 1000
        # Keep-alives about every 5 s whatever the interval: a silent subscription is then a dead one.
        keepalive = max(3, math.ceil(5000 / interval_ms))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms,
            RequestedLifetimeCount=keepalive * 3,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )

        async def on_publish(result: ua.PublishResult) -> None:
            self._on_publish(generation, result)

        created = await client.uaclient.create_subscription(params, on_publish)
        sub_id = created.SubscriptionId
        self._subscription_id = sub_id
        revised_ms = created.RevisedPublishingInterval or interval_ms
        revised_keepalive = created.RevisedMaxKeepAliveCount or keepalive
        self._stale_after = 3 * revised_ms * revised_keepalive / 1000 + cfg.timeout
        self._last_publish = time.monotonic()
        self._refresh_keys = None
        if cfg.mode == "subscribe":
            await self._monitor_tags(client, sub_id)
        if cfg.alarms is not None:
            try:
                await self._monitor_events(client, sub_id)
            except (DriverError, UaStatusCodeError) as exc:
                # Tag values matter more than alarm events: keep collecting and say why events are missing.
                self._event_fields = ()
                log.error("opcua_alarm_events_unavailable", machine=self.machine_id, reason=_describe(exc))
        self._watch_task = asyncio.get_running_loop().create_task(self._watch(generation))
        log.info("opcua_subscribed", machine=self.machine_id, mode=cfg.mode, events=self.event_filter)

    async def _monitor_tags(self, client: Client, sub_id: int) -> None:
        cfg = self.config
        requests = []
        for i in self._poll_index:
            tag = cfg.tags[i]
            flt = None
            if tag.deadband is not None:
                flt = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValue,
                    DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=tag.deadband,
                )
            requests.append(
                ua.MonitoredItemCreateRequest(
                    ItemToMonitor=ua.ReadValueId(NodeId=self._node_ids[i], AttributeId=AttributeIds.Value),
                    MonitoringMode=ua.MonitoringMode.Reporting,
                    RequestedParameters=ua.MonitoringParameters(
                        ClientHandle=i,
                        SamplingInterval=cfg.sampling_interval * 1000,
                        Filter=flt,
                        QueueSize=cfg.queue_size,
                        DiscardOldest=True,
                    ),
                )
            )
        now = self._clock()
        bad = [
            Reading(self.machine_id, cfg.tags[i].name, None, Quality.BAD, now, why)
            for i, why in enumerate(self._unresolved)
            if why is not None
        ]
        if requests:
            results = await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=sub_id,
                    TimestampsToReturn=ua.TimestampsToReturn.Source,
                    ItemsToCreate=requests,
                )
            )
            for req, res in zip(requests, results, strict=True):
                if not res.StatusCode.is_good():
                    tag = cfg.tags[req.RequestedParameters.ClientHandle]
                    bad.append(
                        Reading(
                            self.machine_id, tag.name, None, Quality.BAD, now, status_name(res.StatusCode)
                        )
                    )
        if bad and self._sink is not None:
            self._sink(bad)

    async def _monitor_events(self, client: Client, sub_id: int) -> None:
        alarms = self.config.alarms
        assert alarms is not None
        notifier, why = _to_nodeid(alarms.notifier, self._namespaces)
        if notifier is None:
            raise DriverError(f"alarms.notifier: {why}")
        self._event_source = None
        if alarms.source is not None:
            self._event_source, why = _to_nodeid(alarms.source, self._namespaces)
            if self._event_source is None:
                raise DriverError(f"alarms.source: {why}")
        event_type = _CONDITION if alarms.event_type is None else None
        if alarms.event_type is not None:
            event_type, why = _to_nodeid(alarms.event_type, self._namespaces)
            if event_type is None:
                raise DriverError(f"alarms.event_type: {why}")
        assert event_type is not None
        if alarms.conditions and not await _is_subtype(client, event_type, _CONDITION):
            # Reading a plain event as a condition would mean guessing its code and its clear.
            raise DriverError(
                f"alarms.event_type {alarms.event_type.text if alarms.event_type else ''} is not a "
                "condition type (not a subtype of ConditionType i=2782); for plain events set "
                "alarms.code_field and alarms.active_field"
            )
        names, flt = _event_filter(event_type, alarms)
        request = ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=notifier, AttributeId=AttributeIds.EventNotifier),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=EVENT_HANDLE,
                SamplingInterval=0,
                Filter=flt,
                QueueSize=1000,  # a ConditionRefresh sends every retained condition at once
                DiscardOldest=True,
            ),
        )
        (result,) = await client.uaclient.create_monitored_items(
            ua.CreateMonitoredItemsParameters(SubscriptionId=sub_id, ItemsToCreate=[request])
        )
        rejected = _filter_rejected(result)
        if rejected is not None:
            raise DriverError(f"the server refused alarm events from {alarms.notifier.text}: {rejected}")
        self._event_fields = names
        if alarms.conditions:
            await self._condition_refresh(client, sub_id)

    async def _condition_refresh(self, client: Client, sub_id: int) -> None:
        """Ask for every retained condition (OPC 10000-9 ConditionRefresh): alarms active at connect are
        announced, and the RefreshEndEvent lets derivation clear those that ended while we were away."""
        request = ua.CallMethodRequest(
            ObjectId=_CONDITION,
            MethodId=_ns0(ObjectIds.ConditionType_ConditionRefresh),
            InputArguments=[ua.Variant(sub_id, ua.VariantType.UInt32)],
        )
        (result,) = await client.uaclient.call([request])
        if result.StatusCode.is_good():
            return
        # Servers without it answer BadMethodInvalid, BadNotImplemented, BadNothingToDo...: the alarm
        # events themselves still work, so say it once and carry on.
        if self._refresh_supported:  # once per driver, not per reconnect
            log.warning(
                "opcua_condition_refresh_unsupported",
                machine=self.machine_id,
                status=status_name(result.StatusCode),
                effect="alarms active at connect are not announced; ones that ended while disconnected "
                "stay active until the server clears them",
            )
        self._refresh_supported = False

    async def _watch(self, generation: int) -> None:
        """A subscription that stops publishing (not even keep-alives) counts as a lost connection."""
        period = max(0.5, min(self._stale_after / 3, 5.0))
        while generation == self._generation and self._state is not ConnectionState.DISCONNECTED:
            await asyncio.sleep(period)
            if time.monotonic() - self._last_publish > self._stale_after:
                self._lost(generation, "subscription stopped publishing")
                return

    def _on_publish(self, generation: int, result: ua.PublishResult) -> None:
        if generation != self._generation:
            return
        self._last_publish = time.monotonic()
        data = result.NotificationMessage.NotificationData
        if not data:
            return
        sink = self._sink
        now = self._clock()
        samples: list[Sample] = []
        tags = self.config.tags
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                for item in notif.MonitoredItems:
                    handle = item.ClientHandle
                    if 0 <= handle < len(tags):
                        samples.append(self._reading(tags[handle], item.Value, now))
            elif isinstance(notif, ua.EventNotificationList):
                for ev in notif.Events:
                    if ev.ClientHandle == EVENT_HANDLE:
                        notice = self._alarm(ev.EventFields, now)
                        if notice is not None:
                            samples.append(notice)
            elif isinstance(notif, ua.StatusChangeNotification) and not notif.Status.is_good():
                self._lost(generation, f"subscription ended: {status_name(notif.Status)}")
                return
        if samples and sink is not None:
            sink(samples)

    def _alarm(self, fields: Sequence[ua.Variant], now: float) -> AlarmNotice | AlarmRefresh | None:
        values: dict[str, Any] = {}
        for name, var in zip(self._event_fields, fields, strict=False):
            values[name] = var.Value if var is not None else None
        etype = values.get("EventType")
        if etype == _REFRESH_START:
            self._refresh_keys = set()
            return None
        if etype == _REFRESH_END:
            keys, self._refresh_keys = self._refresh_keys, None
            if keys is None:
                return None  # an end without its start: nothing to reconcile against
            return AlarmRefresh(self.machine_id, frozenset(keys), now)
        if self._event_source is not None and values.get("SourceNode") != self._event_source:
            return None  # another machine's alarm on a shared server
        alarms = self.config.alarms
        assert alarms is not None
        message = values.get("Message")
        text = message.Text if isinstance(message, ua.LocalizedText) else (str(message) if message else "")
        severity = values.get("Severity")
        sev = int(severity) if isinstance(severity, int) else 0
        when = values.get("Time")
        ts = when.timestamp() if isinstance(when, datetime) else now
        if not alarms.conditions:
            raw_code = values.get(alarms.code_field or "")
            if raw_code is None or raw_code == "":
                log.warning(
                    "opcua_alarm_event_without_code", machine=self.machine_id, field=alarms.code_field
                )
                return None
            flag = values.get(alarms.active_field or "")
            return AlarmNotice(self.machine_id, str(raw_code), text or "", sev, bool(flag), ts)
        branch = values.get("BranchId")
        if isinstance(branch, ua.NodeId) and not branch.is_null():
            # A branch is an earlier state kept for acknowledgement (OPC 10000-9 5.5.2), not a new
            # occurrence: node-opcua sends one with every raise. Only the current state (BranchId
            # null) says whether the alarm is active.
            return None
        key = _condition_key(values, self._namespaces)
        cname = values.get("ConditionName")
        chosen: Any = values.get(alarms.code) if alarms.code != "ConditionId" else key
        code: Any = chosen if chosen not in (None, "") else (cname or key)
        # Retain false: the server says the condition is of no further interest (OPC 10000-9 5.5.2).
        active = values.get("ActiveState/Id") is True and values.get("Retain") is not False
        if active and self._refresh_keys is not None and key is not None:
            self._refresh_keys.add(key)
        return AlarmNotice(
            machine_id=self.machine_id,
            code=None if code is None else str(code),
            message=text or "",
            severity=sev,
            active=active,
            timestamp=ts,
            key=key,
        )


def _stable(nid: ua.NodeId, namespaces: Sequence[str]) -> str:
    """A NodeId as text that survives a server reboot: the namespace URI, not its index."""
    text = nid.to_string()
    index = nid.NamespaceIndex
    if 0 < index < len(namespaces):
        return f"nsu={namespaces[index]};{text.split(';', 1)[1] if ';' in text else text}"
    return text


def _condition_key(values: dict[str, Any], namespaces: Sequence[str]) -> str | None:
    """A condition's identity: its ConditionId (events of branches never get here)."""
    cid = values.get("ConditionId")
    if isinstance(cid, ua.NodeId) and not cid.is_null():
        key = _stable(cid, namespaces)
    else:
        # A server that cannot select the NodeId attribute: the source and name still tell alarms apart.
        source = values.get("SourceNode")
        name = values.get("ConditionName")
        if name is None:
            return None
        key = f"{_stable(source, namespaces) if isinstance(source, ua.NodeId) else ''}/{name}"
    return key


async def _is_subtype(client: Client, type_id: ua.NodeId, base: ua.NodeId) -> bool:
    """Whether ``type_id`` is ``base`` or one of its subtypes (browsing HasSubtype up to the root)."""
    current: ua.NodeId | None = type_id
    for _ in range(32):
        if current is None:
            return False
        if current == base:
            return True
        parents = await client.get_node(current).get_referenced_nodes(
            refs=ObjectIds.HasSubtype, direction=ua.BrowseDirection.Inverse
        )
        current = parents[0].nodeid if parents else None
    return False


def _certificate_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)]


def _stop_publish_loop(client: Client) -> None:
    # asyncua 2.1 keeps the session "activated" after the socket dropped, and its publish loop then logs
    # a traceback every second until someone closes the session. Stop it before it wakes up.
    task = getattr(client.uaclient.session, "_publish_task", None)
    if task is not None and not task.done():
        task.cancel()


def _to_nodeid(ref: NodeRef, namespaces: Sequence[str]) -> tuple[ua.NodeId | None, str | None]:
    index = ref.namespace_index
    if ref.namespace_uri is not None:
        if ref.namespace_uri not in namespaces:
            return None, f"namespace {ref.namespace_uri} not on this server (BadNamespaceUnknown)"
        index = namespaces.index(ref.namespace_uri)
    ident: Any = ref.identifier
    if ref.kind == "i":
        ident = int(ident)
    elif ref.kind == "g":
        ident = uuid.UUID(ident)
    elif ref.kind == "b":
        ident = base64.b64decode(ident)
    return ua.NodeId(ident, ua.Int16(index)), None


def _operand(path: Sequence[ua.QualifiedName], type_id: ua.NodeId) -> ua.SimpleAttributeOperand:
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=type_id, BrowsePath=list(path), AttributeId=AttributeIds.Value, IndexRange=None
    )


def _condition_id_operand() -> ua.SimpleAttributeOperand:
    # OPC 10000-9 5.5.2: the ConditionId is selected as the NodeId attribute of ConditionType with an
    # empty browse path.
    return ua.SimpleAttributeOperand(
        TypeDefinitionId=_CONDITION, BrowsePath=[], AttributeId=AttributeIds.NodeId, IndexRange=None
    )


def _browse_path(text: str, default_ns: int) -> list[ua.QualifiedName]:
    """``Name`` or ``Name/Sub``; an element written ``0:Name`` is in that namespace (``0``: the
    standard's), any other in the event type's."""
    path = []
    for part in text.split("/"):
        ns, sep, name = part.partition(":")
        if sep and ns.isdigit():
            path.append(ua.QualifiedName(name, int(ns)))
        else:
            path.append(ua.QualifiedName(part, default_ns))
    return path


def _of_type(type_id: ua.NodeId) -> ua.ContentFilterElement:
    return ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.OfType, FilterOperands=[ua.LiteralOperand(Value=ua.Variant(type_id))]
    )


def _or(left: int, right: int) -> ua.ContentFilterElement:
    return ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.Or,
        FilterOperands=[ua.ElementOperand(Index=left), ua.ElementOperand(Index=right)],
    )


def _event_filter(event_type: ua.NodeId, alarms: AlarmConfig) -> tuple[tuple[str, ...], ua.EventFilter]:
    """The select clauses (and the names of their fields, in order) and the where clause."""
    names: list[str] = []
    select: list[ua.SimpleAttributeOperand] = []
    for name, type_id, path in _BASE_FIELDS:
        names.append(name)
        select.append(_operand([ua.QualifiedName(p, 0) for p in path], _ns0(type_id)))
    ns = event_type.NamespaceIndex
    if alarms.conditions:
        for name, type_id, path in _CONDITION_FIELDS:
            names.append(name)
            select.append(_operand([ua.QualifiedName(p, 0) for p in path], _ns0(type_id)))
        names.append("ConditionId")
        select.append(_condition_id_operand())
        if alarms.code == "AlarmIdentifier":  # OPC 40502 CncAlarmType: a property in the type's namespace
            names.append("AlarmIdentifier")
            select.append(_operand([ua.QualifiedName("AlarmIdentifier", ns)], event_type))
        # OfType matches subtypes too; the refresh brackets are not conditions, so they are let through
        # explicitly (a server applies the where clause to them as well).
        elements = [
            _or(1, 2),
            _of_type(event_type),
            _or(3, 4),
            _of_type(_REFRESH_START),
            _of_type(_REFRESH_END),
        ]
    else:
        for field_name in (alarms.code_field, alarms.active_field):
            assert field_name is not None
            names.append(field_name)
            select.append(_operand(_browse_path(field_name, ns), event_type))
        elements = [_of_type(event_type)]
    return tuple(names), ua.EventFilter(SelectClauses=select, WhereClause=ua.ContentFilter(Elements=elements))


def _filter_rejected(result: ua.MonitoredItemCreateResult) -> str | None:
    if not result.StatusCode.is_good():
        return status_name(result.StatusCode)
    body = result.FilterResult
    if isinstance(body, ua.EventFilterResult):
        for el in body.WhereClauseResult.ElementResults or []:
            if not el.StatusCode.is_good():
                return f"where clause: {status_name(el.StatusCode)}"
    return None
