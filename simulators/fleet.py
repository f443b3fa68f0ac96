"""Runs N simulated machines: one Modbus server and/or one OPC-UA server, one timer for the whole fleet.

Every tick the timer advances each machine's ``Player`` and shows the result on the servers.
Modbus allows 247 unit ids per server, so machines 248.. go to a second server on the next port, and
so on. A reboot step takes down the servers that host the machine (every machine on such a server
goes dark with it) and brings them back when none of their machines is rebooting any more.
Server stops and starts run in a background task per server so a slow OPC-UA boot (~1.5 s) does
not stall the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from simulators.model import Alarm, MachineState
from simulators.scenario import Change, Player, Scenario

log = structlog.get_logger(__name__)

Protocols = Literal["modbus", "opcua", "both"]
MAX_MODBUS_UNITS = 247
QUIET_ABOVE = 20  # machines; above this, step changes log at debug level


class ModbusServer(Protocol):
    """What the fleet uses of ``simulators.modbus_server.ModbusSimulator``."""

    port: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def publish(self, unit: int) -> None: ...


class OpcuaServer(Protocol):
    """What the fleet uses of ``simulators.opcua_server.OpcuaSimulator``."""

    @property
    def url(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, name: str) -> None: ...
    async def raise_alarm(self, name: str, alarm: Alarm) -> None: ...
    async def clear_alarm(self, name: str, code: int) -> None: ...


def _server_module(name: str) -> Any:
    # Imported by name at start: each server module loads its protocol library (tens of MB), and
    # the fleet only needs the one(s) asked for. The Protocols above are the typed contract.
    return importlib.import_module(f"simulators.{name}")


@dataclass(frozen=True)
class FleetConfig:
    scenario: Scenario
    machines: int = 1
    protocol: Protocols = "both"
    host: str = "127.0.0.1"
    modbus_port: int = 5020
    opcua_port: int = 4840
    speed: float = 1.0
    seed: int = 0
    offset_seconds: float = 0.0  # machine i starts i * offset_seconds into the scenario
    tick: float = 0.2  # wall seconds between timer ticks
    # OPC UA machines whose alarm is one standard ExclusiveLimitAlarmType condition (a temperature
    # limit, as an independent server has it) instead of OPC 40502 CncAlarmType conditions.
    limit_alarms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.machines < 1:
            raise ValueError("machines must be at least 1")
        unknown = sorted(set(self.limit_alarms) - set(self.names))
        if unknown:
            raise ValueError(
                f"limit alarms named for machines not simulated: {unknown} (machines: {self.names})"
            )
        if self.limit_alarms and self.protocol == "modbus":
            raise ValueError("limit alarms are OPC UA conditions: use --protocol opcua or both")
        last_port = self.modbus_port + self.modbus_servers - 1
        if self.protocol in ("modbus", "both") and self.modbus_port and last_port > 65535:
            raise ValueError(f"{self.machines} machines need Modbus ports up to {last_port}")
        if self.speed <= 0 or self.tick <= 0:
            raise ValueError("speed and tick must be positive")

    @property
    def modbus_servers(self) -> int:
        return -(-self.machines // MAX_MODBUS_UNITS)

    def modbus_slot(self, index: int) -> tuple[int, int]:
        """(server number, unit id) of machine ``index`` (0-based)."""
        server, unit = divmod(index, MAX_MODBUS_UNITS)
        return server, unit + 1

    @property
    def names(self) -> list[str]:
        width = max(2, len(str(self.machines)))
        return [f"sim-{i:0{width}d}" for i in range(1, self.machines + 1)]


@dataclass
class _Slot:
    """One server's desired and actual availability; ``down_for`` names the machines rebooting."""

    name: str
    kind: Literal["modbus", "opcua"]
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]
    up: bool = True
    down_for: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Fleet:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.states = [MachineState(name=name) for name in config.names]
        self.players: list[Player] = []
        self.modbus_servers: list[ModbusServer] = []
        self.opcua: OpcuaServer | None = None
        self._slots: list[_Slot] = []
        self._hosts: dict[str, list[_Slot]] = {name: [] for name in config.names}
        self._timer: asyncio.Task[None] | None = None

    @property
    def modbus(self) -> ModbusServer | None:
        """The first Modbus server (the only one up to 247 machines)."""
        return self.modbus_servers[0] if self.modbus_servers else None

    def modbus_address(self, index: int) -> tuple[int, int]:
        """(port, unit id) where machine ``index`` (0-based) answers."""
        server, unit = self.config.modbus_slot(index)
        return self.modbus_servers[server].port, unit

    # -- lifecycle

    async def start(self, *, run_timer: bool = True) -> None:
        """Put every machine at its scenario start, start the servers, then the timer."""
        cfg = self.config
        now = asyncio.get_running_loop().time()
        self.players = [
            Player(
                cfg.scenario,
                state,
                seed=cfg.seed * 1000 + i,
                speed=cfg.speed,
                start=now,
                offset=i * cfg.offset_seconds,
            )
            for i, state in enumerate(self.states)
        ]
        for player in self.players:
            player.advance(now)
        try:
            if cfg.protocol in ("modbus", "both"):
                module = _server_module("modbus_server")
                for k in range(cfg.modbus_servers):
                    hosted = self.states[k * MAX_MODBUS_UNITS : (k + 1) * MAX_MODBUS_UNITS]
                    units: Mapping[int, MachineState] = {u + 1: st for u, st in enumerate(hosted)}
                    port = cfg.modbus_port + k if cfg.modbus_port else 0
                    modbus: ModbusServer = await module.start_modbus_server(units, cfg.host, port)
                    self.modbus_servers.append(modbus)
                    self._add_slot(_Slot(f"modbus-{k + 1}", "modbus", modbus.stop, modbus.start), hosted)
            if cfg.protocol in ("opcua", "both"):
                machines: Sequence[MachineState] = self.states
                opcua: OpcuaServer = await _server_module("opcua_server").start_opcua_server(
                    machines, cfg.host, cfg.opcua_port, limit_alarms=cfg.limit_alarms
                )
                self.opcua = opcua
                self._add_slot(_Slot("opcua", "opcua", opcua.stop, opcua.start), self.states)
        except BaseException:
            await self.stop()
            raise
        for player in self.players:
            if player.rebooting:
                self._power(player.state.name, on=False)
        if run_timer:
            self._timer = asyncio.create_task(self._run(), name="fleet-timer")
        log.info("fleet_started", machines=cfg.machines, protocol=cfg.protocol, scenario=cfg.scenario.name)

    async def stop(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        for slot in self._slots:
            if slot.task is not None:
                slot.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slot.task
        self._slots.clear()
        if self.opcua is not None:
            await self.opcua.stop()
        for modbus in self.modbus_servers:
            await modbus.stop()
        log.info("fleet_stopped")

    def _add_slot(self, slot: _Slot, hosted: Sequence[MachineState]) -> None:
        self._slots.append(slot)
        for state in hosted:
            self._hosts[state.name].append(slot)

    async def settled(self) -> None:
        """Wait until no server is in the middle of going down or coming back."""
        while tasks := [s.task for s in self._slots if s.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    def server_up(self, kind: Literal["modbus", "opcua"], machine: int = 0) -> bool:
        """Whether the ``kind`` server hosting machine ``machine`` (0-based) is serving."""
        return any(s.up for s in self._hosts[self.states[machine].name] if s.kind == kind)

    # -- the timer

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await self.tick(loop.time())
            due += self.config.tick
            # An overrun tick is not made up for: the next one just starts late.
            due = max(due, loop.time())
            await asyncio.sleep(due - loop.time())

    async def tick(self, now: float) -> None:
        """Advance every machine to ``now`` and show what changed."""
        for index, player in enumerate(self.players):
            changes = player.advance(now)
            if changes:
                await self._show(index, player, changes)

    async def _show(self, index: int, player: Player, changes: list[Change]) -> None:
        name = player.state.name
        opcua_up = self.opcua is not None and self.server_up("opcua", index)
        try:
            for change in changes:
                if change.kind == "power_off":
                    self._power(name, on=False)
                    opcua_up = False
                elif change.kind == "power_on":
                    self._power(name, on=True)
                elif change.kind == "alarm_raised" and change.alarm is not None and opcua_up:
                    assert self.opcua is not None
                    await self.opcua.raise_alarm(name, change.alarm)
                elif change.kind == "alarm_cleared" and opcua_up:
                    assert self.opcua is not None
                    await self.opcua.clear_alarm(name, change.code)
                elif change.kind == "state":
                    st = player.state
                    # A step line per machine reads well for a handful of machines, floods for hundreds.
                    emit = log.info if len(self.players) <= QUIET_ABOVE else log.debug
                    emit(
                        "sim_step",
                        machine=name,
                        step=player.step.label or player.step_index,
                        execution=st.execution.name,
                        mode=st.mode.name,
                        parts=st.part_count,
                        alarm=st.alarm_code,
                        estop=st.estop,
                    )
            if self.modbus_servers:
                # Registers persist while the server is down; clients see them when it is back.
                server, unit = self.config.modbus_slot(index)
                self.modbus_servers[server].publish(unit)
            if opcua_up and self.opcua is not None:
                await self.opcua.publish(name)
        except Exception as exc:  # one machine's publish problem must not stop the fleet's timer
            log.warning("sim_publish_failed", machine=name, error=str(exc))

    # -- reboots

    def _power(self, machine: str, *, on: bool) -> None:
        for slot in self._hosts[machine]:
            if on:
                slot.down_for.discard(machine)
            else:
                slot.down_for.add(machine)
            if slot.task is None and slot.up != (not slot.down_for):
                slot.task = asyncio.create_task(self._reconcile(slot), name=f"fleet-{slot.name}-power")

    async def _reconcile(self, slot: _Slot) -> None:
        try:
            while slot.up != (not slot.down_for):
                if slot.up:
                    slot.up = False
                    await slot.stop()
                    log.info("sim_server_down", server=slot.name, rebooting=sorted(slot.down_for))
                else:
                    await slot.start()  # both servers show the current state as they come up
                    slot.up = True
                    log.info("sim_server_up", server=slot.name)
        except Exception as exc:
            log.error("sim_server_power_failed", server=slot.name, error=str(exc))
        finally:
            slot.task = None
