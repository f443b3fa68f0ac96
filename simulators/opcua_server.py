"""OPC-UA side of the simulator: one asyncua server hosting many simulated CNC machines.

The node set (see ``simulators/opcua_nodes.md``) uses string NodeIds under the namespace URI
``urn:edge-agent:simulator`` so ids survive a restart; only the namespace *index* may change, which
``start(shift_namespace=True)`` does on purpose to prove that clients resolve the URI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from simulators.model import Alarm, Execution, MachineState

NAMESPACE_URI = "urn:edge-agent:simulator"
# Registered ahead of the simulator namespace on a "shifted" boot, so the simulator's index moves.
SHIFT_NAMESPACE_URI = "urn:edge-agent:simulator:shift"
EVENT_TYPE = "CncAlarmType"
APPLICATION_URI = "urn:edge-agent:simulator:server"  # a server certificate must carry it as SAN URI  # s= identifier of the event type node

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
        "Spindle1.ActSpeed": float(machine.spindle_speed),
        "Spindle1.ActOverride": float(machine.spindle_override),
        "Production.PartCount": int(machine.part_count) & 0xFFFFFFFF,
        "Alarms.ActiveCode": int(machine.alarm_code),
    }


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
        self._server: Server | None = None
        self._published: dict[str, dict[str, Any]] = {}
        self._event: EventGenerator | None = None

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
        self._server = server
        self._published = {}
        try:
            await self._build_event_type(server)
            for machine in self.machines.values():
                await self._build_machine(server, machine)
            await server.start()
        except BaseException:
            self._server = None
            raise
        if self.port == 0 and server.bserver is not None:
            self.port = server.bserver.port
        await self.publish_all()
        log.info(
            "opcua_simulator_started", url=self.url, machines=len(self.machines), ns=self.namespace_index
        )

    async def stop(self) -> None:
        server, self._server, self._event = self._server, None, None
        if server is not None:
            await server.stop()
            log.info("opcua_simulator_stopped", url=self.url)

    async def _build_event_type(self, server: Server) -> None:
        base = server.get_node(ua.NodeId(ua.ObjectIds.BaseEventType))
        idx = self.namespace_index
        etype = await base.add_object_type(self._nodeid(EVENT_TYPE), ua.QualifiedName(EVENT_TYPE, idx))
        await etype.add_property(
            self._nodeid(f"{EVENT_TYPE}.AlarmIdentifier"),
            ua.QualifiedName("AlarmIdentifier", idx),
            "",
            varianttype=ua.VariantType.String,
        )
        await etype.add_property(
            self._nodeid(f"{EVENT_TYPE}.Active"),
            ua.QualifiedName("Active", idx),
            False,
            varianttype=ua.VariantType.Boolean,
        )
        gen = EventGenerator(server.iserver.isession)
        await gen.init(etype, emitting_node=ua.ObjectIds.Server)
        self._event = gen

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
        await alarms.add_reference(self._nodeid(EVENT_TYPE), ua.ObjectIds.GeneratesEvent)

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
        machine = self.machines[name]
        machine.alarms.pop(alarm.code, None)  # raised again: it becomes the most recent
        machine.alarms[alarm.code] = alarm
        await self.publish(name)
        await self._emit(name, str(alarm.code), alarm.text, alarm.severity, active=True)

    async def clear_alarm(self, name: str, code: int) -> None:
        machine = self.machines[name]
        alarm = machine.alarms.pop(code, None)
        await self.publish(name)
        text = alarm.text if alarm else f"alarm {code}"
        await self._emit(name, str(code), text, alarm.severity if alarm else 1, active=False)

    async def _emit(self, name: str, code: str, message: str, severity: int, *, active: bool) -> None:
        server = self._running_server()
        gen = self._event
        if gen is None:
            raise RuntimeError("the OPC-UA simulator is stopped")
        event = gen.event
        source = self._nodeid(f"{name}.Alarms")
        event.SourceNode = source
        event.SourceName = name
        event.Severity = max(1, min(1000, severity))
        event.AlarmIdentifier = code
        event.Active = active
        event.emitting_node = ua.NodeId(ua.ObjectIds.Server)
        await gen.trigger(message=message)
        # The same event (same EventId) also goes to clients that subscribed on M.Alarms itself.
        event.emitting_node = source
        await server.iserver.subscription_service.trigger_event(event)
        event.emitting_node = ua.NodeId(ua.ObjectIds.Server)


async def start_opcua_server(
    machines: Sequence[MachineState],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    certificate: Path | None = None,
    private_key: Path | None = None,
) -> OpcuaSimulator:
    """Start one server for ``machines``; ``port=0`` picks a free port (see ``.port`` / ``.url``).

    ``certificate`` (DER or PEM) and ``private_key`` (PEM) enable the Basic256Sha256 endpoints too.
    """
    sim = OpcuaSimulator(machines, host, port, certificate, private_key)
    await sim.start()
    return sim
