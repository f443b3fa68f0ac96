"""The Unified Namespace: which MQTT messages an event (or a start of the agent) puts on the broker.

Pure code over plain data. Per machine, under its root topic (ISA-95 style by default,
``{enterprise}/{site}/{area}/{line}/{machine}``):

| topic | retained | content |
|---|---|---|
| ``<root>/status`` | yes | ``{"state", "since"}`` |
| ``<root>/alarms`` | yes | ``{"active": [alarm, ...]}`` |
| ``<root>/downtime`` | yes | ``{"open": downtime or null}`` |
| ``<root>/parts`` | yes | ``{"total", "day", "day_total"}`` |
| ``<root>/events`` | no | every event's payload, as the webhooks carry it |

Every message has ``message_id`` (also the MQTT 5 user property ``message-id``) and ``updated_at``.
Retained state messages go to one FIFO destination (``#uns/state``) so the last retained value on a
topic is always the newest; events go to another (``#uns/events``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent.events import (
    ALARM_CLEARED,
    ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED,
    DOWNTIME_ENDED,
    DOWNTIME_EXCEEDED,
    DOWNTIME_STARTED,
    MACHINE_STATUS_CHANGED,
    PART_COUNT,
    Event,
    MachineRef,
    iso_utc,
)
from agent.mqtt.settings import MqttConfig, MqttEndpoint, MqttTarget, PublishConfig
from agent.mqtt.topics import render

STATE_ENDPOINT = "#uns/state"
EVENTS_ENDPOINT = "#uns/events"
TAGS_ENDPOINT = "#uns/tags"
# Fixed per kind so a message id is the same every time the same event is planned (crash replay).
_KIND_INDEX = {"events": 0, "status": 1, "alarms": 2, "downtime": 3, "parts": 4, "tags": 5}
_DOWNTIME_EVENTS = (DOWNTIME_STARTED, DOWNTIME_ENDED, DOWNTIME_CATEGORIZED, DOWNTIME_EXCEEDED)


class MachineView(Protocol):
    """What the namespace reads of a machine's derived state (``MachineDeriver`` has all of it)."""

    @property
    def status(self) -> str | None: ...
    @property
    def status_since(self) -> float | None: ...
    @property
    def active_alarms(self) -> tuple[Any, ...]: ...
    @property
    def open_downtime(self) -> Any: ...
    @property
    def part_total(self) -> int: ...
    def parts_today(self, now: float) -> tuple[str, int]: ...


# The retained topics under a machine's root (``events`` is not retained).
RETAINED_KINDS = ("status", "alarms", "downtime", "parts", "tags")


@dataclass(frozen=True)
class UnsMessage:
    endpoint: str  # STATE_ENDPOINT (retained) or EVENTS_ENDPOINT
    topic: str
    body: dict[str, Any] | None  # None: an empty payload (clears the topic's retained message)
    message_id: str


def uns_message_id(event_id: str, kind: str) -> str:
    digest = hashlib.sha256(b"#uns").hexdigest()[:12]
    return f"msg_{event_id}_{digest}_{_KIND_INDEX[kind]}"


class Namespace:
    def __init__(self, config: PublishConfig, agent: str) -> None:
        self.config = config
        self.agent = agent

    def fields(self, machine: MachineRef) -> dict[str, str]:
        c = self.config
        return {
            "enterprise": c.enterprise,
            "site": c.site,
            "area": c.area or machine.group or "_",
            "line": c.line or self.agent,
            "machine": machine.id,
            "group": machine.group or "_",
            "agent": self.agent,
        }

    def root(self, machine: MachineRef) -> str:
        return render(self.config.topic, self.fields(machine))

    def for_event(self, event: Event, view: MachineView | None) -> list[UnsMessage]:
        if event.machine is None:
            return []
        root = self.root(event.machine)
        at = iso_utc(event.timestamp)
        out: list[UnsMessage] = []

        def add(kind: str, body: dict[str, Any], endpoint: str = STATE_ENDPOINT) -> None:
            mid = uns_message_id(event.id, kind)
            out.append(UnsMessage(endpoint, f"{root}/{kind}", {"message_id": mid, **body}, mid))

        if self.config.events:
            add("events", event.payload(), EVENTS_ENDPOINT)
        data = event.data
        if event.event == MACHINE_STATUS_CHANGED:
            st = data.get("status", {})
            add("status", {"state": st.get("to"), "since": st.get("since"), "updated_at": at})
        elif event.event in (ALARM_TRIGGERED, ALARM_CLEARED):
            alarms = _alarms(view) if view is not None else None
            if alarms is not None:
                add("alarms", {"active": alarms, "updated_at": at})
        elif event.event in _DOWNTIME_EVENTS:
            dt = data.get("downtime", {})
            add("downtime", {"open": None if dt.get("ended_at") else dict(dt), "updated_at": at})
        elif event.event == PART_COUNT:
            p = data.get("parts", {})
            add(
                "parts",
                {
                    "total": p.get("total"),
                    "day": p.get("day"),
                    "day_total": p.get("day_total"),
                    "updated_at": at,
                },
            )
        return out

    def tags(self, machine: MachineRef, values: Mapping[str, Any], now: float, report_id: str) -> UnsMessage:
        """A machine's tag values (retained; every value, as last published)."""
        mid = uns_message_id(f"{report_id}_{machine.id}", "tags")
        body = {"message_id": mid, "values": dict(values), "updated_at": iso_utc(now)}
        return UnsMessage(TAGS_ENDPOINT, f"{self.root(machine)}/tags", body, mid)

    def snapshot(
        self, machines: Iterable[tuple[MachineRef, MachineView]], now: float, snapshot_id: str
    ) -> list[UnsMessage]:
        """The whole retained state of every machine, as the agent knows it at start (or reload)."""
        at = iso_utc(now)
        out: list[UnsMessage] = []
        for ref, view in machines:
            root = self.root(ref)

            def add(kind: str, body: dict[str, Any], root: str = root, mid_base: str = ref.id) -> None:
                mid = uns_message_id(f"{snapshot_id}_{mid_base}", kind)
                out.append(UnsMessage(STATE_ENDPOINT, f"{root}/{kind}", {"message_id": mid, **body}, mid))

            since = view.status_since
            if view.status is not None:
                # Not known yet (a restarted agent before its first good reading): the broker keeps the
                # last state it has; the first reading's status change publishes the truth.
                add(
                    "status",
                    {
                        "state": view.status,
                        "since": None if since is None else iso_utc(since),
                        "updated_at": at,
                    },
                )
            add("alarms", {"active": _alarms(view) or [], "updated_at": at})
            add("downtime", {"open": _open_downtime(view.open_downtime), "updated_at": at})
            day, day_total = view.parts_today(now)
            add("parts", {"total": view.part_total, "day": day, "day_total": day_total, "updated_at": at})
        return out


def namespace_of(config: PublishConfig | None, agent: str) -> Namespace | None:
    return Namespace(config, agent) if config is not None else None


def clearing(roots: Iterable[str], snapshot_id: str) -> list[UnsMessage]:
    """Empty retained messages on every retained topic under these roots (machines no longer
    configured): MQTT 3.1.1 §3.3.1.3 / MQTT 5 §3.3.1.3, a retained PUBLISH with a zero-length payload
    removes the retained message, so a late subscriber no longer sees a ghost machine."""
    out: list[UnsMessage] = []
    for root in sorted(roots):
        ref = hashlib.sha256(root.encode()).hexdigest()[:16]
        for kind in RETAINED_KINDS:
            mid = uns_message_id(f"{snapshot_id}_{ref}", kind)
            out.append(UnsMessage(STATE_ENDPOINT, f"{root}/{kind}", None, mid))
    return out


def endpoints(config: PublishConfig | None, broker: MqttConfig | None) -> list[MqttEndpoint]:
    """The namespace's outbox destinations: state (retained), events, and tags when configured
    (the rows carry their topics)."""
    if config is None:
        return []
    t, q = config.topic, config.qos
    out = [
        MqttEndpoint(STATE_ENDPOINT, f"mqtt:{t}/+", MqttTarget(t, q, retain=True), broker),
        MqttEndpoint(EVENTS_ENDPOINT, f"mqtt:{t}/events", MqttTarget(t, q), broker),
    ]
    if config.tags is not None:
        out.append(MqttEndpoint(TAGS_ENDPOINT, f"mqtt:{t}/tags", MqttTarget(t, q, retain=True), broker))
    return out


def _alarms(view: MachineView) -> list[dict[str, Any]] | None:
    try:
        active = view.active_alarms
    except AttributeError:
        return None
    # Held alarms are not announced yet (no alarm_triggered): the namespace must agree with the events.
    return [a.section() for a in active if not getattr(a, "held", False)]


def _open_downtime(dt: Any) -> Mapping[str, Any] | None:
    if dt is None:
        return None
    return {
        "id": dt.id,
        "started_at": iso_utc(dt.started_at),
        "ended_at": None,
        "category": dt.category,
        "notes": dt.notes,
    }
