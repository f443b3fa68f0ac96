"""The one small interface every driver implements, and the plain data it produces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol


class Quality(StrEnum):
    GOOD = "good"
    BAD = "bad"  # the device answered, but not with a usable value (exception code, wrong length, ...)
    DISCONNECTED = "disconnected"  # the agent could not talk to the device at all


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class Reading(NamedTuple):
    """One tag value as read from a machine. ``timestamp`` is Unix seconds (UTC).

    A named tuple, not a frozen dataclass: every poll makes one per tag (20 000 a second at 1,000
    machines), and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) was the
    largest single item of the daemon's profile (15 % at 1,000 machines); a tuple is built in one C
    call and stays immutable."""

    machine_id: str
    tag: str
    value: Any
    quality: Quality
    timestamp: float
    reason: str | None = None  # why the quality is not GOOD, in words a plant engineer understands


@dataclass(frozen=True, slots=True)
class AlarmNotice:
    """An alarm reported by the device itself (an OPC-UA alarm/condition event), not derived from a tag.

    ``active=False`` with ``code=None`` clears every alarm of the machine (MTConnect's NORMAL without a code).
    """

    machine_id: str
    code: str | None
    message: str
    severity: int
    active: bool
    timestamp: float  # the device's time of the change (OPC UA ``Time``), else when it was received
    # Which alarm this is: an OPC UA condition's ConditionId (plus BranchId), so a raise and its clear
    # pair up whatever their messages say. ``None``: the code is the identity.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmRefresh:
    """The device just listed every alarm it still retains (an OPC UA ConditionRefresh ended).

    Alarms from this device whose key is not in ``keys`` ended while nobody was listening.
    """

    machine_id: str
    keys: frozenset[str]
    timestamp: float


Sample = Reading | AlarmNotice | AlarmRefresh
Sink = Callable[[Sequence[Sample]], None]


class DriverError(Exception):
    """Connecting failed; the message says why in plain words (never contains secrets)."""


class Driver(Protocol):
    """What the collector needs from a protocol driver.

    ``read`` never raises for device trouble: a failed request yields readings with quality BAD or
    DISCONNECTED and a reason. ``connect`` raises ``DriverError``; the collector retries with backoff.
    """

    machine_id: str

    @property
    def state(self) -> ConnectionState: ...

    async def connect(self) -> None: ...

    async def read(self) -> list[Reading]: ...

    async def subscribe(self, sink: Sink) -> bool:
        """Start pushing samples to ``sink``; False if this driver (or its config) only polls."""
        ...

    async def close(self) -> None: ...
