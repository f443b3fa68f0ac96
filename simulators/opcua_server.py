"""OPC-UA side of the simulator: one asyncua server hosting many simulated CNC machines.

The node set (see ``simulators/opcua_nodes.md``) uses string NodeIds under the namespace URI
``urn:edge-agent:simulator`` so ids survive a restart; only the namespace *index* may change, which
``start(shift_namespace=True)`` does on purpose to prove that clients resolve the URI.

Alarms are OPC 10000-9 conditions, as real CNC servers report them:
- a CNC machine's alarms are OPC 40502 ``CncAlarmType`` conditions (``ns=CNC;i=1006``, a subtype of
  DiscreteAlarmType, with the mandatory ``AlarmIdentifier``), one condition node per alarm code under
  ``M.Alarms``;
- a machine named in ``limit_alarms`` instead has one ``ExclusiveLimitAlarmType`` condition on its
  temperature (``M.MachineTool.Temperature``), as generic servers do: "raise" puts it in the High
  limit state, "clear" sends "Back to normal".
Every state change is one event with the condition's ConditionId (the condition node's NodeId),
ActiveState/Id, AckedState/Id and Retain (true while active). ConditionRefresh (i=3875) answers
RefreshStartEvent, every retained condition, RefreshEndEvent to the calling subscription.
asyncua's server evaluates ``OfType`` as "exactly this type"; OPC 10000-4 7.7.3 says "this type or a
subtype", so the simulator installs the standard reading (see ``_standard_of_type``).
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from asyncua import Node, Server, ua, uamethod
from asyncua.common import events
from asyncua.server import monitored_item_service
from asyncua.server.address_space import AddressSpace

from simulators.model import Alarm, Execution, MachineState

NAMESPACE_URI = "urn:edge-agent:simulator"
# Registered ahead of the simulator namespace on a "shifted" boot, so the simulator's index moves.
SHIFT_NAMESPACE_URI = "urn:edge-agent:simulator:shift"
APPLICATION_URI = "urn:edge-agent:simulator:server"  # a server certificate must carry it as SAN URI
# OPC 40502 (CNC Systems): its namespace and the NodeIds its nodeset gives CncAlarmType and the
# type's AlarmIdentifier property.
CNC_NAMESPACE_URI = "http://opcfoundation.org/UA/CNC"
CNC_ALARM_TYPE = 1006
CNC_ALARM_IDENTIFIER = 6865
LIMIT_CONDITION = "TemperatureLimit"  # BrowseName of a limit-alarm machine's condition

log = structlog.get_logger(__name__)

# Execution -> (CncChannelStatus, CncChannelProgramStatus), as documented in docs/architecture.md.
_CHANNEL: dict[Execution, tuple[int, int]] = {
    Execution.ACTIVE: (0, 1),
    Execution.READY: (2, 0),
    Execution.FEED_HOLD: (1, 3),
    Execution.INTERRUPTED: (1, 3),
    Execution.STOPPED: (2, 4),
    Execution.PROGRAM_COMPLETED: (2, 0),
}

_V = ua.VariantType
# (object, variable, variant type) in address-space order.
_VARIABLES: tuple[tuple[str, str, ua.VariantType], ...] = (
    ("Channel1", "ActStatus", _V.Int32),
    ("Channel1", "ActProgramStatus", _V.Int32),
    ("Channel1", "ActProgramName", _V.String),
    ("Channel1", "ActFeedrate", _V.Double),
    ("Channel1", "ActOverride", _V.Double),
    ("MachineTool", "OperationMode", _V.Int32),
    ("MachineTool", "EmergencyStop", _V.Boolean),
    ("MachineTool", "PowerOnDuration", _V.UInt64),
    ("Spindle1", "ActSpeed", _V.Double),
    ("Spindle1", "ActOverride", _V.Double),
    ("MachineTool", "Temperature", _V.Double),
    ("Production", "PartCount", _V.UInt32),
    ("Alarms", "ActiveCode", _V.UInt32),
)


def render(machine: MachineState) -> dict[str, Any]:
    """The value of every variable of one machine, keyed by ``Object.Variable`` (pure)."""
    status, program_status = _CHANNEL[machine.execution]
    return {
        "Channel1.ActStatus": status,
        "Channel1.ActProgramStatus": program_status,
        "Channel1.ActProgramName": machine.program,
        "Channel1.ActFeedrate": float(machine.feedrate),
        "Channel1.ActOverride": float(machine.feed_override),
        "MachineTool.OperationMode": int(machine.mode),
        "MachineTool.EmergencyStop": bool(machine.estop),
        "MachineTool.PowerOnDuration": int(machine.power_on_seconds),
        "MachineTool.Temperature": float(machine.axis_temperature),
        "Spindle1.ActSpeed": float(machine.spindle_speed),
        "Spindle1.ActOverride": float(machine.spindle_override),
        "Production.PartCount": int(machine.part_count) & 0xFFFFFFFF,
        "Alarms.ActiveCode": int(machine.alarm_code),
    }


def _is_subtype(aspace: AddressSpace, type_id: ua.NodeId, base: ua.NodeId) -> bool:
    current: ua.NodeId | None = type_id
    for _ in range(32):
        if current is None:
            return False
        if current == base:
            return True
        node = aspace.get(current)
        refs = [] if node is None else node.references
        current = next(
            (
                r.NodeId
                for r in refs
                if r.ReferenceTypeId.Identifier == ua.ObjectIds.HasSubtype and not r.IsForward
            ),
            None,
        )
    return False


def _standard_of_type() -> None:
    """Make asyncua's where-clause ``OfType`` match subtypes, as OPC 10000-4 7.7.3 defines it."""
    evaluator = monitored_item_service.WhereClauseEvaluator
    if getattr(evaluator, "_edge_agent_of_type", False):
        return
    original = evaluator._eval_el

    def eval_el(self: Any, index: int, event: Any) -> Any:
        el = self.elements[index]
        if el.FilterOperator == ua.FilterOperator.OfType:
            return _is_subtype(self._aspace, event.EventType, self._eval_op(el.FilterOperands[0], event))
        return original(self, index, event)

    evaluator._eval_el = eval_el  # type: ignore[method-assign]
    evaluator._edge_agent_of_type = True  # type: ignore[attr-defined]


def _quiet_asyncua() -> None:
    # asyncua warns at WARNING about every unencrypted endpoint and revised timeout: noise for a simulator.
    for name in ("asyncua.server", "asyncua.common", "asyncua.uaprotocol"):
        logging.getLogger(name).setLevel(logging.ERROR)


class OpcuaSimulator:
    """A running (or stopped) simulator server; create it with :func:`start_opcua_server`."""

    def __init__(
        self,
        machines: Sequence[MachineState],
        host: str,
        port: int,
        certificate: Path | None = None,
        private_key: Path | None = None,
        limit_alarms: Collection[str] = (),
        condition_refresh: bool = True,
    ) -> None:
        names = [m.name for m in machines]
        if len(set(names)) != len(names):
            raise ValueError("machine names must be unique on one OPC-UA simulator")
        self.machines: dict[str, MachineState] = {m.name: m for m in machines}
        self.host = host
        self.port = port
        # With a certificate the server also offers Basic256Sha256 (Sign, SignAndEncrypt) next to None.
        self.certificate = certificate
        self.private_key = private_key
        self.namespace_index = 0
        self.cnc_namespace_index = 0
        self.limit_alarms = frozenset(limit_alarms)
        # False plays a server without ConditionRefresh (the method exists, calling it does nothing).
        self.condition_refresh = condition_refresh
        unknown = self.limit_alarms - set(names)
        if unknown:
            raise ValueError(f"limit_alarms names machines not on this simulator: {sorted(unknown)}")
        self._server: Server | None = None
        self._published: dict[str, dict[str, Any]] = {}
        self._templates: dict[ua.NodeId, Any] = {}  # event type -> an event object to copy per change
        # Retained conditions by ConditionId: the last event of each (what ConditionRefresh repeats).
        self.conditions: dict[ua.NodeId, Any] = {}
        self._condition_nodes: set[ua.NodeId] = set()

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    def _nodeid(self, ident: str) -> ua.NodeId:
        return ua.NodeId(ident, self.namespace_index)

    async def start(self, *, shift_namespace: bool = False) -> None:
        """Boot the server (again): a fresh address space and no sessions, like a rebooted CNC.

        The port stays the one of the first boot, so clients reconnect to the same URL.
        """
        if self._server is not None:
            raise RuntimeError("the OPC-UA simulator is already running")
        _quiet_asyncua()
        _standard_of_type()
        server = Server()
        await server.init()
        server.disable_clock()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("edge-agent CNC simulator")
        await server.set_application_uri(APPLICATION_URI)
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)
        if shift_namespace:
            await server.register_namespace(SHIFT_NAMESPACE_URI)
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        self.cnc_namespace_index = await server.register_namespace(CNC_NAMESPACE_URI)
        self._server = server
        self._published = {}
        self._templates = {}
        self.conditions = {}  # a reboot forgets every condition, like a restarted controller
        self._condition_nodes = set()
        try:
            await self._build_types(server)
            for machine in self.machines.values():
                await self._build_machine(server, machine)
            await server.start()
        except BaseException:
            self._server = None
            raise
        if self.port == 0 and server.bserver is not None:
            self.port = server.bserver.port
        await self.publish_all()
        # A controller that boots with alarms active has them as retained conditions from the start.
        for machine in self.machines.values():
            for alarm in machine.alarms.values():
                await self._change(machine.name, alarm.code, alarm.text, alarm.severity, active=True)
        log.info(
            "opcua_simulator_started", url=self.url, machines=len(self.machines), ns=self.namespace_index
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
            log.info("opcua_simulator_stopped", url=self.url)

    @property
    def cnc_alarm_type(self) -> ua.NodeId:
        return ua.NodeId(CNC_ALARM_TYPE, self.cnc_namespace_index)

    async def _build_types(self, server: Server) -> None:
        """OPC 40502 CncAlarmType (as its nodeset defines it) and the ConditionRefresh method."""
        discrete = server.get_node(ua.NodeId(ua.ObjectIds.DiscreteAlarmType))
        cnc = self.cnc_namespace_index
        etype = await discrete.add_object_type(self.cnc_alarm_type, ua.QualifiedName("CncAlarmType", cnc))
        await etype.add_property(
            ua.NodeId(CNC_ALARM_IDENTIFIER, cnc),
            ua.QualifiedName("AlarmIdentifier", cnc),
            "",
            varianttype=ua.VariantType.String,
        )
        isession = server.iserver.isession
        for type_id in (self.cnc_alarm_type, ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)):
            ev = await events.get_event_obj_from_type_node(Node(isession, type_id))
            ev.add_property("NodeId", None, ua.VariantType.NodeId)  # the ConditionId (no browse path)
            self._templates[type_id] = ev
        for type_id in (ua.ObjectIds.RefreshStartEventType, ua.ObjectIds.RefreshEndEventType):
            node = Node(isession, ua.NodeId(type_id))
            self._templates[node.nodeid] = await events.get_event_obj_from_type_node(node)
        if self.condition_refresh:
            refresh = uamethod(self._condition_refresh)
            isession.add_method_callback(ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh), refresh)

    async def _condition_refresh(self, parent: Any, subscription_id: int) -> ua.StatusCode | None:
        """OPC 10000-9 5.5.7: RefreshStartEvent, every retained condition, RefreshEndEvent, to every
        event item of the calling subscription."""
        server = self._running_server()
        subs = server.iserver.subscription_service.subscriptions
        sub = subs.get(subscription_id)
        if sub is None:
            return ua.StatusCode(ua.StatusCodes.BadSubscriptionIdInvalid)
        items = sub.monitored_item_srv
        for notifier in list(items._monitored_events):
            await items.trigger_event(self._bracket(ua.ObjectIds.RefreshStartEventType, notifier))
            for event in list(self.conditions.values()):
                if notifier in (ua.NodeId(ua.ObjectIds.Server), self._alarm_folder(event.SourceName)):
                    ev = copy.copy(event)
                    ev.emitting_node = notifier
                    await items.trigger_event(ev)
            await items.trigger_event(self._bracket(ua.ObjectIds.RefreshEndEventType, notifier))
        return None

    def _bracket(self, type_id: int, notifier: ua.NodeId) -> Any:
        ev = copy.deepcopy(self._templates[ua.NodeId(type_id)])
        ev.EventId = uuid.uuid4().bytes
        ev.Time = ev.ReceiveTime = datetime.now(UTC)
        ev.SourceNode = ua.NodeId(ua.ObjectIds.Server)
        ev.SourceName = "Server"
        ev.Severity = 1
        ev.Message = ua.LocalizedText("ConditionRefresh")
        ev.emitting_node = notifier
        return ev

    def _alarm_folder(self, machine: str) -> ua.NodeId:
        return self._nodeid(f"{machine}.Alarms")

    async def _build_machine(self, server: Server, machine: MachineState) -> None:
        idx, name = self.namespace_index, machine.name
        folder = await server.nodes.objects.add_folder(self._nodeid(name), ua.QualifiedName(name, idx))
        objects: dict[str, Node] = {}
        for obj, var, vtype in _VARIABLES:
            if obj not in objects:
                objects[obj] = await folder.add_object(
                    self._nodeid(f"{name}.{obj}"), ua.QualifiedName(obj, idx)
                )
            default = ua.get_default_value(vtype)
            await objects[obj].add_variable(
                self._nodeid(f"{name}.{obj}.{var}"), ua.QualifiedName(var, idx), default, varianttype=vtype
            )
        alarms = objects["Alarms"]
        await alarms.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        # Alarms is an event source of the Server object, so events also reach Server subscribers.
        await server.nodes.server.add_reference(alarms.nodeid, ua.ObjectIds.HasEventSource)
        if name in self.limit_alarms:
            await alarms.add_reference(
                ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType), ua.ObjectIds.GeneratesEvent
            )
        else:
            await alarms.add_reference(self.cnc_alarm_type, ua.ObjectIds.GeneratesEvent)

    def _running_server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the OPC-UA simulator is stopped")
        return self._server

    async def publish(self, name: str) -> None:
        """Write one machine's state into its variables (only the values that changed)."""
        server = self._running_server()
        machine = self.machines[name]
        last = self._published.setdefault(name, {})
        for key, value in render(machine).items():
            if key in last and last[key] == value:
                continue
            vtype = next(t for o, v, t in _VARIABLES if f"{o}.{v}" == key)
            await server.write_attribute_value(
                self._nodeid(f"{name}.{key}"),
                ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=datetime.now(UTC)),
            )
            last[key] = value

    async def publish_all(self) -> None:
        for name in self.machines:
            await self.publish(name)

    async def raise_alarm(self, name: str, alarm: Alarm) -> None:
        """The alarm becomes active: its condition's state changes (one event), like a CNC raising it.

        On a limit-alarm machine the one temperature condition goes to its High state whatever the code.
        """
        machine = self.machines[name]
        machine.alarms.pop(alarm.code, None)  # raised again: it becomes the most recent
        machine.alarms[alarm.code] = alarm
        await self.publish(name)
        await self._change(name, alarm.code, alarm.text, alarm.severity, active=True)

    async def clear_alarm(self, name: str, code: int) -> None:
        machine = self.machines[name]
        alarm = machine.alarms.pop(code, None)
        await self.publish(name)
        # "Back to normal" is what generic servers say when a limit alarm returns to normal.
        text = alarm.text if alarm else f"alarm {code}"
        text = "Back to normal" if name in self.limit_alarms else text
        await self._change(name, code, text, alarm.severity if alarm else 1, active=False)

    async def _condition_node(self, name: str, code: int) -> tuple[ua.NodeId, str, ua.NodeId]:
        """The condition's NodeId (its ConditionId), ConditionName and SourceNode; created on first use."""
        server = self._running_server()
        if name in self.limit_alarms:
            source = self._nodeid(f"{name}.MachineTool.Temperature")
            cid = self._nodeid(f"{name}.MachineTool.Temperature.{LIMIT_CONDITION}")
            cname, parent, type_id = LIMIT_CONDITION, source, ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
        else:
            source = self._alarm_folder(name)
            cid = self._nodeid(f"{name}.Alarms.{code}")
            cname, parent, type_id = f"Alarm{code}", source, self.cnc_alarm_type
        if cid not in self._condition_nodes:
            # A plain object typed by the condition type: a ConditionId that browses to a real node.
            node = server.get_node(parent)
            await node.add_object(
                cid,
                ua.QualifiedName(cname, self.namespace_index),
                objecttype=type_id,
                instantiate_optional=False,
            )
            self._condition_nodes.add(cid)
        return cid, cname, source

    async def _change(self, name: str, code: int, message: str, severity: int, *, active: bool) -> None:
        server = self._running_server()
        cid, cname, source = await self._condition_node(name, code)
        limit = name in self.limit_alarms
        type_id = ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType) if limit else self.cnc_alarm_type
        ev = copy.deepcopy(self._templates[type_id])
        now = datetime.now(UTC)
        ev.EventId = uuid.uuid4().bytes
        ev.EventType = type_id
        ev.Time = ev.ReceiveTime = now
        ev.SourceNode = source
        ev.SourceName = name
        ev.Message = ua.LocalizedText(message)
        ev.Severity = max(1, min(1000, severity))
        ev.NodeId = cid
        ev.ConditionName = cname
        ev.BranchId = ua.NodeId()
        ev.Retain = active
        setattr(ev, "EnabledState/Id", True)
        ev.EnabledState = ua.LocalizedText("Enabled")
        setattr(ev, "ActiveState/Id", active)
        ev.ActiveState = ua.LocalizedText("Active" if active else "Inactive")
        # Self-clearing, like most CNC alarms: acknowledged when it returns to normal, so not retained.
        setattr(ev, "AckedState/Id", not active)
        ev.AckedState = ua.LocalizedText("Unacknowledged" if active else "Acknowledged")
        if limit:
            ev.HighLimit = 80.0
            setattr(ev, "LimitState/CurrentState", ua.LocalizedText("High" if active else ""))
        else:
            ev.AlarmIdentifier = str(code)
        if active:
            self.conditions[cid] = ev
        else:
            self.conditions.pop(cid, None)
        ev.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        await server.iserver.subscription_service.trigger_event(ev)
        # The same event (same EventId) also goes to clients that subscribed on M.Alarms itself.
        folder = copy.copy(ev)
        folder.emitting_node = self._alarm_folder(name)
        await server.iserver.subscription_service.trigger_event(folder)


async def start_opcua_server(
    machines: Sequence[MachineState],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
    limit_alarms: Collection[str] = (),
    condition_refresh: bool = True,
) -> OpcuaSimulator:
    """Start one server for ``machines``; ``port=0`` picks a free port (see ``.port`` / ``.url``).

    ``certificate`` (DER or PEM) and ``private_key`` (PEM) enable the Basic256Sha256 endpoints too.
    ``limit_alarms``: machines whose alarms are one ExclusiveLimitAlarmType on their temperature.
    ``condition_refresh=False`` plays a server that does not implement ConditionRefresh.
    """
    sim = OpcuaSimulator(machines, host, port, certificate, private_key, limit_alarms, condition_refresh)
    await sim.start()
    return sim
