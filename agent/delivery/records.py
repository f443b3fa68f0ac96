"""What the outbox stores and returns: plain values, the column lists, and the row decoder.

Shared by every part of the outbox, the dispatcher and the workflow planner (which builds
``NewDelivery`` rows); plain data and pure functions only, so the functional core can import it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.delivery.retry import Decision

# Bytes of a receiver's response kept with an attempt (enough for an error message, not a page).
RESPONSE_KEEP = 1024
# Rough per-row cost beyond the body (columns, index entries), for the size check before a write.
ROW_OVERHEAD = 256


class OutboxError(Exception):
    pass


class OutboxFull(OutboxError):
    """The configured size limit is reached and ``when_full`` forbids making room."""


class OutboxUnavailable(OutboxError):
    """The database cannot be written (disk full, I/O error); keep the items and try again later."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    body: bytes
    not_before: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """A row the dispatcher may send."""

    id: int
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    body: bytes
    created_at: float
    age_base: float
    due_at: float
    attempts: int
    throttled: int


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    id: int
    message_id: str
    endpoint: str
    url: str
    workflow: str
    event_type: str
    machine_id: str | None
    event_id: str
    state: str
    attempts: int
    created_at: float
    due_at: float
    updated_at: float
    last_status: int | None
    last_error: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status: int | None
    latency: float | None
    error_class: str | None
    error: str | None
    response: bytes


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    summary: DeliverySummary
    body: bytes
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class Execution:
    """One event handled by one workflow: the deliveries it produced."""

    event_id: str
    workflow: str
    event_type: str
    machine_id: str | None
    created_at: float
    deliveries: int
    states: dict[str, int]
    last_error: str | None
    cursor: int


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    pending: int
    in_flight: int
    delivered: int
    dead: int
    cancelled: int
    oldest_pending_age: float | None
    bytes: int


@dataclass(frozen=True, slots=True)
class EndpointSummary:
    url: str
    counts: dict[str, int]
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished HTTP attempt and the row's next state."""

    delivery_id: int
    at: float
    status: int | None
    latency: float | None
    error_class: str | None
    error: str | None
    response: bytes
    decision: Decision


@dataclass(frozen=True, slots=True)
class Candidates:
    rows: list[Delivery]
    corrupt: list[tuple[int, str]]
    next_due: float | None


@dataclass
class OutboxStats:
    """Counters for /metrics and logs."""

    committed_batches: int = 0
    enqueued: int = 0
    rejected_full: int = 0
    write_errors: int = 0
    corrupt_rows: int = 0
    unavailable: bool = False


ROW_COLS = (
    "id, message_id, endpoint, url, workflow, event_type, machine_id, event_id, body, checksum, "
    "created_at, age_base, due_at, attempts, throttled"
)
SUMMARY_COLS = (
    "id, message_id, endpoint, url, workflow, event_type, machine_id, event_id, state, attempts, "
    "created_at, due_at, updated_at, last_status, last_error, length(body)"
)


def checksum(body: bytes) -> int:
    return zlib.crc32(body)


def decode_row(r: Sequence[Any]) -> Delivery:
    """A row as written by ``enqueue``; ``ValueError`` for anything else (damage, foreign writes)."""
    (rid, msg_id, endpoint, url, workflow, event_type, machine_id, event_id, body, crc) = r[:10]
    created_at, age_base, due_at, attempts, throttled = r[10:]
    if not isinstance(body, bytes):
        raise ValueError(f"body is {type(body).__name__}, not bytes")
    if not isinstance(crc, int) or checksum(body) != crc:
        raise ValueError("body checksum mismatch")
    for name, v in (("message_id", msg_id), ("endpoint", endpoint), ("url", url), ("workflow", workflow)):
        if not isinstance(v, str) or not v:
            raise ValueError(f"{name} is not a non-empty string")
    if "." in msg_id:
        raise ValueError("message_id contains '.'")
    for name, v in (("created_at", created_at), ("age_base", age_base), ("due_at", due_at)):
        if not isinstance(v, int | float):
            raise ValueError(f"{name} is not a number")
    if not isinstance(attempts, int) or not isinstance(throttled, int) or attempts < 0:
        raise ValueError("attempt counters are not integers")
    return Delivery(
        id=rid,
        message_id=msg_id,
        endpoint=endpoint,
        url=url,
        workflow=workflow,
        event_type=str(event_type),
        machine_id=machine_id if isinstance(machine_id, str) else None,
        event_id=str(event_id),
        body=body,
        created_at=float(created_at),
        age_base=float(age_base),
        due_at=float(due_at),
        attempts=attempts,
        throttled=throttled,
    )


def decode_summary(r: Sequence[Any]) -> DeliverySummary:
    return DeliverySummary(
        id=int(r[0]),
        message_id=str(r[1]),
        endpoint=str(r[2]),
        url=str(r[3]),
        workflow=str(r[4]),
        event_type=str(r[5]),
        machine_id=r[6] if isinstance(r[6], str) else None,
        event_id=str(r[7]),
        state=str(r[8]),
        attempts=r[9] if isinstance(r[9], int) else 0,
        created_at=float(r[10]) if isinstance(r[10], int | float) else 0.0,
        due_at=float(r[11]) if isinstance(r[11], int | float) else 0.0,
        updated_at=float(r[12]) if isinstance(r[12], int | float) else 0.0,
        last_status=r[13] if isinstance(r[13], int) else None,
        last_error=r[14] if isinstance(r[14], str) else None,
        size=int(r[15] or 0),
    )
