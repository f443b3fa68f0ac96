"""The JSON body a workflow sends, per trigger type. Pure: an event and a workflow in, bytes out.

Every body starts with ``id``, ``event``, ``timestamp`` and carries ``workflow: {name}``; the
downtime shape reproduces the seed's sample payload field for field (``machine``, ``downtime``
with ``duration_seconds``/``category``/``notes``, ``operator``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.events import (
    ALARM_CLEARED,
    ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED,
    DOWNTIME_ENDED,
    DOWNTIME_EXCEEDED,
    DOWNTIME_STARTED,
    MACHINE_STATUS_CHANGED,
    MANUAL_TRIGGER,
    SCHEDULED,
    Event,
    iso_utc,
)
from agent.workflows.spec import Workflow


def _section(event: Event, key: str) -> Mapping[str, Any]:
    value = event.data.get(key)
    return value if isinstance(value, Mapping) else {}


def _time(value: Any) -> Any:
    return iso_utc(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _seconds(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value)
    return None


def _operator(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {"id": value.get("id"), "name": value.get("name")}


def _downtime(event: Event) -> dict[str, Any]:
    d = _section(event, "downtime")
    out: dict[str, Any] = {
        "duration_seconds": _seconds(d.get("duration_seconds")),
        "category": d.get("category"),
        "notes": d.get("notes"),
        # Beyond the seed's three: what a receiver needs to correlate and to categorize back.
        "id": d.get("id"),
        "started_at": _time(d.get("started_at")),
    }
    if event.event == DOWNTIME_EXCEEDED:
        out["threshold_seconds"] = _seconds(d.get("threshold_seconds"))
    if event.event == DOWNTIME_ENDED:
        out["ended_at"] = _time(d.get("ended_at"))
    return out


def _alarm(event: Event) -> dict[str, Any]:
    a = _section(event, "alarm")
    description = a.get("description", a.get("message", a.get("text")))
    out = {"code": a.get("code"), "description": description, "severity": a.get("severity")}
    if event.event == ALARM_CLEARED:
        out["duration_seconds"] = _seconds(a.get("duration_seconds"))
    return out


def _status(event: Event) -> dict[str, Any]:
    s = _section(event, "status")
    return {
        "from": s.get("from"),
        "to": s.get("to"),
        "since": _time(s.get("since")),
        "previous_duration_seconds": _seconds(s.get("previous_duration_seconds")),
    }


def build_payload(workflow: Workflow, event: Event) -> dict[str, Any]:
    body: dict[str, Any] = {"id": event.id, "event": event.event, "timestamp": iso_utc(event.timestamp)}
    if event.machine is not None:
        body["machine"] = event.machine.as_dict()
    kind = event.event
    if kind in (DOWNTIME_CATEGORIZED, DOWNTIME_EXCEEDED, DOWNTIME_STARTED, DOWNTIME_ENDED):
        body["downtime"] = _downtime(event)
        body["operator"] = _operator(event.data.get("operator"))
        body["workflow"] = {"name": workflow.name}
    elif kind in (ALARM_TRIGGERED, ALARM_CLEARED):
        body["alarm"] = _alarm(event)
        body["workflow"] = {"name": workflow.name}
    elif kind == MACHINE_STATUS_CHANGED:
        body["status"] = _status(event)
        body["workflow"] = {"name": workflow.name}
    elif kind == MANUAL_TRIGGER:
        body["operator"] = _operator(event.data.get("operator"))
        body["note"] = event.data.get("note")
        body["workflow"] = {
            "name": workflow.name,
            "description": workflow.trigger.as_dict().get("description"),
        }
    elif kind == SCHEDULED:
        # The seed's "workflow configuration", without anything secret (no URLs, no secrets).
        body["workflow"] = workflow.summary()
        production = _section(event, "production")
        body["production"] = {
            "since": _time(production.get("since")),
            "until": _time(production.get("until")),
            "machines": [dict(m) for m in production.get("machines", ()) if isinstance(m, Mapping)],
        }
    else:
        body.update(event.data)
        body["workflow"] = {"name": workflow.name}
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; key order kept as built (the seed's order), never NaN."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
