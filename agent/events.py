"""The one event family that flows from derivation to workflows: stable JSON, sortable ids, UTC times."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MACHINE_STATUS_CHANGED = "machine_status_changed"
ALARM_TRIGGERED = "alarm_triggered"
ALARM_CLEARED = "alarm_cleared"
DOWNTIME_STARTED = "downtime_started"
DOWNTIME_ENDED = "downtime_ended"
DOWNTIME_CATEGORIZED = "downtime_categorized"
DOWNTIME_EXCEEDED = "downtime_exceeded"
PART_COUNT = "part_count"
MANUAL_TRIGGER = "manual_trigger"
SCHEDULED = "scheduled"


@dataclass(frozen=True, slots=True)
class MachineRef:
    id: str
    name: str
    group: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "group": self.group}


@dataclass(frozen=True, slots=True)
class Event:
    """A derived fact. ``data`` holds the type's sections (``downtime``, ``alarm``, ``status``, ...)."""

    id: str
    event: str
    timestamp: float  # Unix seconds, UTC
    machine: MachineRef | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON shape of the seed's sample payload: id, event, timestamp, machine, then sections."""
        out: dict[str, Any] = {"id": self.id, "event": self.event, "timestamp": iso_utc(self.timestamp)}
        if self.machine is not None:
            out["machine"] = self.machine.as_dict()
        out.update(self.data)
        return out


def iso_utc(ts: float) -> str:
    """``2024-01-15T14:32:00Z``; milliseconds only when the time has them."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_event_id(ts: float, entropy: bytes | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters, sorts by time."""
    ms = int(ts * 1000) & ((1 << 48) - 1)
    rand = entropy if entropy is not None else os.urandom(10)
    if len(rand) != 10:
        raise ValueError("ULID entropy must be 10 bytes")
    n = (ms << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return "".join(reversed(chars))
