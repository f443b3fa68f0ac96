"""Planning: events + workflows + throttle state → outbox rows and firings. Pure: no I/O, ``now`` given.

Every firing of a workflow for an event becomes one row per action. Message ids are deterministic
(event id, workflow, action index), so a plan repeated after a crash collapses in the outbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.delivery.records import NewDelivery
from agent.events import Event, iso_utc, new_event_id
from agent.mqtt.settings import MqttEndpoint
from agent.mqtt.topics import URL_PREFIX, render
from agent.mqtt.uns import Namespace, UnsMessage
from agent.workflows.match import fires
from agent.workflows.payload import build_payload, encode
from agent.workflows.spec import Workflow
from agent.workflows.throttle import Throttle


@dataclass(frozen=True)
class Firing:
    """One firing of one workflow: the event and the outbox rows it produced."""

    workflow: str
    event_id: str
    event_type: str
    machine_id: str | None
    at: float
    message_ids: tuple[str, ...]
    durable: bool  # False while the outbox refuses and the rows wait in memory

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "event_id": self.event_id,
            "event": self.event_type,
            "machine": self.machine_id,
            "at": iso_utc(self.at),
            "message_ids": list(self.message_ids),
            "durable": self.durable,
        }

    def not_durable(self) -> Firing:
        return replace(self, durable=False)


@dataclass
class Plan:
    rows: list[NewDelivery] = field(default_factory=list)
    firings: list[Firing] = field(default_factory=list)
    # (workflow, machine id, event id) held back by ``min_interval``: the shell logs them.
    throttled: list[tuple[str, str | None, str]] = field(default_factory=list)


def message_id(event_id: str, workflow: str, action: int) -> str:
    """Unique per (event, workflow, action) and the same every time: the outbox and receivers dedupe on it.

    No dots (Standard Webhooks signs ``{id}.{timestamp}.{body}``).
    """
    digest = hashlib.sha256(workflow.encode("utf-8")).hexdigest()[:12]
    return f"msg_{event_id}_{digest}_{action}"


def scheduled_event_id(workflow: str, fire_time: float) -> str:
    """Deterministic, so a run repeated after a crash before its bookkeeping collapses in the outbox."""
    entropy = hashlib.sha256(f"{workflow}\0{fire_time!r}".encode()).digest()[:10]
    return new_event_id(fire_time, entropy)


@dataclass(frozen=True)
class Topics:
    """What MQTT rows need besides the event: the agent's name for topics, the Unified Namespace
    (agent.yaml ``publish:``) and each machine's derived state for its retained messages."""

    agent: str = "edge-agent"
    namespace: Namespace | None = None
    views: Mapping[str, Any] = field(default_factory=dict)

    def fields(self, event: Event, workflow: str) -> dict[str, str]:
        out = {"agent": self.agent, "event": event.event, "workflow": workflow}
        ref = event.machine
        if ref is not None and self.namespace is not None:
            out.update(self.namespace.fields(ref))
        elif ref is not None:
            out.update({"machine": ref.id, "group": ref.group or ""})
        return out


def plan(
    events: Sequence[Event],
    workflows: Iterable[Workflow],
    throttle: Throttle,
    now: float,
    topics: Topics | None = None,
) -> Plan:
    """The rows and firings for ``events``; ``throttle`` remembers the firings (``min_interval``).
    With a namespace in ``topics``, each machine event also updates its retained state topics."""
    topics = topics or Topics()
    out = Plan()
    flows = list(workflows)
    for event in events:
        machine_id = event.machine.id if event.machine is not None else None
        for wf in flows:
            if not fires(wf, event):
                continue
            if not throttle.allow(wf.name, machine_id, wf.min_interval, now):
                out.throttled.append((wf.name, machine_id, event.id))
                continue
            rows = _rows(wf, event, machine_id, now, topics)
            out.rows.extend(rows)
            ids = tuple(r.message_id for r in rows)
            out.firings.append(Firing(wf.name, event.id, event.event, machine_id, now, ids, durable=True))
        if topics.namespace is not None and machine_id is not None:
            for m in topics.namespace.for_event(event, topics.views.get(machine_id)):
                out.rows.append(uns_row(m, event.event, machine_id, event.id, now))
    return out


def uns_row(m: UnsMessage, event_type: str, machine_id: str | None, event_id: str, now: float) -> NewDelivery:
    return NewDelivery(
        message_id=m.message_id,
        endpoint=m.endpoint,
        url=URL_PREFIX + m.topic,
        workflow=m.endpoint,
        event_type=event_type,
        machine_id=machine_id,
        event_id=event_id,
        body=b"" if m.body is None else encode(m.body),
        not_before=now,
    )


def _rows(
    wf: Workflow, event: Event, machine_id: str | None, now: float, topics: Topics
) -> list[NewDelivery]:
    payload = build_payload(wf, event)
    body = encode(payload)
    rows = []
    for index, action in enumerate(wf.actions):
        mid = message_id(event.id, wf.name, index)
        url, row_body = action.endpoint.url, body
        if isinstance(action.endpoint, MqttEndpoint):
            # The topic is rendered now and kept in the row: a reload cannot re-route what was
            # accepted. The id rides in the payload too (MQTT 3.1.1 has no user properties).
            url = URL_PREFIX + render(action.endpoint.target.topic, topics.fields(event, wf.name))
            row_body = encode({**payload, "message_id": mid})
        rows.append(
            NewDelivery(
                message_id=mid,
                endpoint=action.endpoint.key,
                url=url,
                workflow=wf.name,
                event_type=event.event,
                machine_id=machine_id,
                event_id=event.id,
                body=row_body,
                not_before=now + action.delay,
            )
        )
    return rows
