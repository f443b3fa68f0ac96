"""Whether the agent is healthy, and the one-line status for systemd: pure judgements over facts the
runtime gathers (``/readyz``, ``STATUS=``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.derive.spec import UNREADABLE

# A pending delivery older than this means the outbox is not draining.
NOT_DRAINING_AGE = 600.0


@dataclass
class Health:
    """``reasons`` are safe for anyone who can reach the port; ``detail`` (internal error text, file
    paths) only for callers with the API token."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    disk_error: str | None = None  # the last outbox read failed
    outbox_unavailable: bool = False  # the outbox's last write failed
    recovery_pending: bool = False  # rows left in flight by the last run wait for disk space
    waiting: int = 0  # deliveries held in memory because the outbox refuses them
    rejected: int = 0  # deliveries given up since start
    counts: Any = None  # the last ``OutboxCounts`` read (None: not read yet)
    statuses: Sequence[str] = ()  # each machine's status
    # Per MQTT broker link: (host:port, connected, last error or None); the error never holds a secret.
    mqtt: Sequence[tuple[str, bool, str | None]] = ()


def judge(f: Facts) -> Health:
    reasons: list[str] = []
    detail: dict[str, str] = {}
    if f.disk_error:
        reasons.append("outbox unavailable: it cannot be read (see the agent log)")
        detail["outbox_error"] = f.disk_error
    if f.outbox_unavailable:
        reasons.append("outbox cannot be written (disk full or I/O error); new deliveries wait in memory")
    if f.recovery_pending:
        reasons.append("deliveries left in flight by the last run wait for disk space to be retried")
    if f.waiting:
        reasons.append(f"{f.waiting} deliveries waiting in memory: the outbox refuses writes")
    if f.rejected:
        reasons.append(f"{f.rejected} deliveries rejected since start: outbox and memory full")
    c = f.counts
    if c is not None and c.pending and (c.oldest_pending_age or 0.0) > NOT_DRAINING_AGE:
        reasons.append(f"outbox not draining: oldest pending delivery is {c.oldest_pending_age:.0f}s old")
    if f.statuses and all(s == "DISCONNECTED" for s in f.statuses):
        reasons.append("every machine is disconnected")
    elif f.statuses and all(s in UNREADABLE for s in f.statuses):
        reasons.append("no machine can be read: each is disconnected or answers only with errors")
    for broker, up, error in f.mqtt:
        if not up:
            reasons.append(f"MQTT broker {broker} not connected: its messages wait in the outbox")
            detail[f"mqtt {broker}"] = error or "connecting"
    return Health(ok=not reasons, reasons=reasons, detail=detail)


def status_line(statuses: Sequence[str], counts: Any, mqtt: Sequence[tuple[str, bool]] = ()) -> str:
    """``ACTIVE=3 IDLE=1; outbox pending=0 dead=0; mqtt 10.0.0.5:1883 up`` (systemd ``STATUS=``)."""
    by = Counter(statuses)
    machines = " ".join(f"{k}={v}" for k, v in sorted(by.items())) or "no machines"
    outbox = f"outbox pending={counts.pending} dead={counts.dead}" if counts is not None else "outbox ?"
    links = "".join(f"; mqtt {broker} {'up' if up else 'down'}" for broker, up in mqtt)
    return f"{machines}; {outbox}{links}"
