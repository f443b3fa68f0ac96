"""The simulated machine: one plain state object that both protocol servers publish.

The scenario player mutates a ``MachineState``; the OPC-UA and Modbus servers only render it, so
both protocols always show the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Execution(IntEnum):
    """MTConnect Execution, as the Modbus map encodes it (holding register 0)."""

    READY = 0
    ACTIVE = 1
    INTERRUPTED = 2
    FEED_HOLD = 3
    STOPPED = 4
    PROGRAM_COMPLETED = 5


class OperationMode(IntEnum):
    """OPC 40501 MachineOperationMode (Modbus holding register 1 uses the same numbers)."""

    MANUAL = 0
    AUTOMATIC = 1
    SETUP = 2
    AUTO_WITH_MANUAL_INTERVENTION = 3
    SERVICE = 4
    OTHER = 5


@dataclass(frozen=True)
class Alarm:
    code: int
    text: str
    severity: int  # 1..1000 as in OPC UA


@dataclass
class MachineState:
    name: str
    powered: bool = True
    execution: Execution = Execution.READY
    mode: OperationMode = OperationMode.AUTOMATIC
    program: str = "O1000"
    part_count: int = 0  # UINT32, wraps like a real counter
    spindle_speed: float = 0.0  # rpm
    spindle_override: float = 100.0  # percent
    feed_override: float = 100.0  # percent
    feedrate: float = 0.0  # mm/min
    spindle_load: float = 0.0  # percent
    axis_temperature: float = 21.5  # degrees C
    position_x_um: int = 0  # signed, micrometres
    power_on_seconds: int = 0
    estop: bool = False
    door_open: bool = False
    alarms: dict[int, Alarm] = field(default_factory=dict)  # active alarms by code, in raise order

    @property
    def alarm_code(self) -> int:
        """The most recently raised active alarm code, 0 when none (Modbus input register 0)."""
        return next(reversed(self.alarms), 0) if self.alarms else 0
