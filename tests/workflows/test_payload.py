"""Bodies per trigger type; the seed's sample downtime payload comes out field for field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent.events import (
    ALARM_CLEARED,
    ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED,
    DOWNTIME_ENDED,
    DOWNTIME_EXCEEDED,
    MACHINE_STATUS_CHANGED,
    MANUAL_TRIGGER,
    SCHEDULED,
    Event,
    MachineRef,
)
from agent.workflows.payload import build_payload, encode
from agent.workflows.spec import (
    AlarmTrigger,
    CategorizedTrigger,
    DowntimeTrigger,
    ExceededTrigger,
    ManualTrigger,
    ScheduledTrigger,
    Scope,
    StatusTrigger,
    Workflow,
)

SEED_SAMPLE = {
    "event": "downtime_categorized",
    "timestamp": "2024-01-15T14:32:00Z",
    "machine": {"id": "abc123", "name": "CNC Mill 01", "group": "Milling"},
    "downtime": {
        "duration_seconds": 1800,
        "category": "Maintenance Required",
        "notes": "Spindle bearing noise detected",
    },
    "operator": {"id": "op456", "name": "John Smith"},
}
T = datetime(2024, 1, 15, 14, 32, tzinfo=UTC).timestamp()
MILL = MachineRef("abc123", "CNC Mill 01", "Milling")


def test_seed_sample_downtime_payload_field_for_field() -> None:
    event = Event(
        "01HM8Z5E00AAAAAAAAAAAAAAAA",
        DOWNTIME_CATEGORIZED,
        T,
        MILL,
        {
            "downtime": {
                "id": "dt-1",
                "started_at": "2024-01-15T14:02:00Z",
                "ended_at": None,
                "duration_seconds": 1800.0,
                "category": "Maintenance Required",
                "category_code": None,
                "notes": "Spindle bearing noise detected",
            },
            "operator": {"id": "op456", "name": "John Smith"},
        },
    )
    workflow = Workflow("Maintenance alert", CategorizedTrigger(("Maintenance Required",)))
    body = json.loads(encode(build_payload(workflow, event)))
    # Every field of the seed's sample, with the same value and type, in the same order.
    for key, value in SEED_SAMPLE.items():
        if isinstance(value, dict):
            assert {k: body[key][k] for k in value} == value
            assert list(body[key])[: len(value)] == list(value)
        else:
            assert body[key] == value
    assert isinstance(body["downtime"]["duration_seconds"], int)
    seed_order = [k for k in body if k in SEED_SAMPLE]
    assert seed_order == list(SEED_SAMPLE)
    # Beyond the seed: the id and workflow at the top level, nothing else.
    assert set(body) == set(SEED_SAMPLE) | {"id", "workflow"}
    assert body["id"] == "01HM8Z5E00AAAAAAAAAAAAAAAA"
    assert body["workflow"] == {"name": "Maintenance alert"}


def test_downtime_exceeded_carries_threshold_and_null_operator() -> None:
    event = Event(
        "E1",
        DOWNTIME_EXCEEDED,
        T,
        MILL,
        {
            "downtime": {
                "id": "dt-1",
                "duration_seconds": 1800.4,
                "category": None,
                "notes": None,
                "threshold_seconds": 1800.0,
                "started_at": "2024-01-15T14:02:00Z",
            }
        },
    )
    body = build_payload(Workflow("Supervisor", ExceededTrigger(1800.0)), event)
    assert body["downtime"]["duration_seconds"] == 1800
    assert body["downtime"]["threshold_seconds"] == 1800
    assert body["operator"] is None
    assert body["workflow"] == {"name": "Supervisor"}


def test_alarm_payload() -> None:
    event = Event(
        "E2",
        ALARM_TRIGGERED,
        T,
        MILL,
        {"alarm": {"code": "1001", "description": "Spindle overload", "severity": 800, "source": "tag"}},
    )
    body = build_payload(Workflow("Critical", AlarmTrigger()), event)
    assert body == {
        "id": "E2",
        "event": "alarm_triggered",
        "timestamp": "2024-01-15T14:32:00Z",
        "machine": MILL.as_dict(),
        "alarm": {"code": "1001", "description": "Spindle overload", "severity": 800},
        "workflow": {"name": "Critical"},
    }


def test_status_payload() -> None:
    event = Event(
        "E3",
        MACHINE_STATUS_CHANGED,
        T,
        MILL,
        {"status": {"from": "ACTIVE", "to": "IDLE", "since": T, "previous_duration_seconds": 60.0}},
    )
    body = build_payload(Workflow("Stopped", StatusTrigger()), event)
    assert body["status"] == {
        "from": "ACTIVE",
        "to": "IDLE",
        "since": "2024-01-15T14:32:00Z",
        "previous_duration_seconds": 60,
    }
    assert body["machine"] == MILL.as_dict()


def test_manual_payload_names_machine_operator_and_workflow() -> None:
    event = Event(
        "E4",
        MANUAL_TRIGGER,
        T,
        MILL,
        {
            "workflow": {"name": "Quality inspection"},
            "operator": {"id": "op1", "name": "Ann"},
            "note": "burr",
        },
    )
    wf = Workflow("Quality inspection", ManualTrigger("Request Quality Inspection"))
    body = build_payload(wf, event)
    assert body["event"] == "manual_trigger"
    assert body["machine"] == MILL.as_dict()
    assert body["operator"] == {"id": "op1", "name": "Ann"}
    assert body["note"] == "burr"
    assert body["workflow"] == {"name": "Quality inspection", "description": "Request Quality Inspection"}


def test_scheduled_payload_has_configuration_and_counts_but_no_secrets() -> None:
    event = Event(
        "E5",
        SCHEDULED,
        T,
        None,
        {
            "workflow": {"name": "Daily"},
            "production": {
                "since": T - 86400,
                "until": T,
                "machines": [{"machine": MILL.as_dict(), "parts": 42}],
            },
        },
    )
    wf = Workflow(
        "Daily",
        ScheduledTrigger("0 23 * * *", "Europe/Berlin"),
        scope=Scope(groups=("Milling",)),
        description="nightly",
    )
    body = build_payload(wf, event)
    assert "machine" not in body
    assert body["timestamp"] == "2024-01-15T14:32:00Z"
    assert body["workflow"]["name"] == "Daily"
    assert body["workflow"]["trigger"] == {
        "type": "scheduled",
        "cron": "0 23 * * *",
        "timezone": "Europe/Berlin",
    }
    assert body["workflow"]["scope"] == {"machines": [], "groups": ["Milling"]}
    assert body["production"] == {
        "since": "2024-01-14T14:32:00Z",
        "until": "2024-01-15T14:32:00Z",
        "machines": [{"machine": MILL.as_dict(), "parts": 42}],
    }


def test_encode_is_compact_utf8() -> None:
    assert encode({"a": "Müller", "b": [1]}) == '{"a":"Müller","b":[1]}'.encode()


def test_downtime_ended_and_alarm_cleared_payloads_carry_their_durations() -> None:
    ended = Event(
        "E9",
        DOWNTIME_ENDED,
        T,
        MILL,
        {
            "downtime": {
                "id": "dt-7",
                "started_at": T - 600,
                "ended_at": T,
                "duration_seconds": 600.4,
                "category": "Tooling",
                "notes": None,
            }
        },
    )
    body = build_payload(Workflow("Downtime log", DowntimeTrigger(DOWNTIME_ENDED)), ended)
    assert body["event"] == "downtime_ended"
    assert body["downtime"] == {
        "duration_seconds": 600,
        "category": "Tooling",
        "notes": None,
        "id": "dt-7",
        "started_at": "2024-01-15T14:22:00Z",
        "ended_at": "2024-01-15T14:32:00Z",
    }
    cleared = Event(
        "E10",
        ALARM_CLEARED,
        T,
        MILL,
        {
            "alarm": {
                "code": "1001",
                "description": "Spindle overload",
                "severity": 800,
                "duration_seconds": 42.2,
            }
        },
    )
    body = build_payload(Workflow("Alarm log", AlarmTrigger(type=ALARM_CLEARED)), cleared)
    assert body["alarm"] == {
        "code": "1001",
        "description": "Spindle overload",
        "severity": 800,
        "duration_seconds": 42,
    }
