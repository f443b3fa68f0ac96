"""Which events fire which workflows: trigger filters and scope, pure."""

from __future__ import annotations

from typing import Any

import pytest

from agent.events import (
    ALARM_CLEARED,
    ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED,
    DOWNTIME_ENDED,
    DOWNTIME_EXCEEDED,
    DOWNTIME_STARTED,
    MACHINE_STATUS_CHANGED,
    MANUAL_TRIGGER,
    Event,
    MachineRef,
)
from agent.workflows.match import exceeded_thresholds, fires, in_scope
from agent.workflows.spec import (
    AlarmTrigger,
    CategorizedTrigger,
    DowntimeTrigger,
    ExceededTrigger,
    ManualTrigger,
    Scope,
    StatusTrigger,
    Workflow,
)

MILL = MachineRef("mill-01", "CNC Mill 01", "Milling")
LATHE = MachineRef("lathe-02", "CNC Lathe 02", "Turning")
LOOSE = MachineRef("saw-03", "Saw 03", None)


def ev(kind: str, machine: MachineRef | None = MILL, **data: Any) -> Event:
    return Event("01HZZZZZZZZZZZZZZZZZZZZZZZ", kind, 1_700_000_000.0, machine, data)


ANY = Scope()


def wf(trigger: Any, scope: Scope = ANY, enabled: bool = True, name: str = "w") -> Workflow:
    return Workflow(name=name, trigger=trigger, enabled=enabled, scope=scope)


def status(frm: str, to: str) -> Event:
    return ev(MACHINE_STATUS_CHANGED, status={"from": frm, "to": to})


def alarm(code: str, severity: int) -> Event:
    return ev(ALARM_TRIGGERED, alarm={"code": code, "description": "x", "severity": severity})


@pytest.mark.parametrize(
    ("trigger", "event", "expected"),
    [
        (StatusTrigger(), status("ACTIVE", "IDLE"), True),
        (StatusTrigger(("ACTIVE",), ()), status("ACTIVE", "ALARM"), True),
        (StatusTrigger(("ACTIVE",), ()), status("IDLE", "ALARM"), False),
        (StatusTrigger((), ("ALARM", "IDLE")), status("ACTIVE", "IDLE"), True),
        (StatusTrigger((), ("ALARM",)), status("ACTIVE", "SETUP"), False),
        (StatusTrigger(("ACTIVE",), ("IDLE",)), status("active", "idle"), True),
        (AlarmTrigger(), alarm("1001", 10), True),
        (AlarmTrigger(codes=("1001",)), alarm("1001", 10), True),
        (AlarmTrigger(codes=("1001",)), alarm("1002", 10), False),
        (AlarmTrigger(code_patterns=("20*",)), alarm("2040", 10), True),
        (AlarmTrigger(code_patterns=("20*",)), alarm("1200", 10), False),
        (AlarmTrigger(codes=("1001",), code_patterns=("20*",)), alarm("2001", 10), True),
        (AlarmTrigger(min_severity=500), alarm("1", 499), False),
        (AlarmTrigger(min_severity=500), alarm("1", 500), True),
        (AlarmTrigger(codes=("1001",), min_severity=500), alarm("1001", 100), False),
        (CategorizedTrigger(), ev(DOWNTIME_CATEGORIZED, downtime={"category": "Setup"}), True),
        (
            CategorizedTrigger(("Maintenance Required",)),
            ev(DOWNTIME_CATEGORIZED, downtime={"category": "Maintenance Required"}),
            True,
        ),
        (
            CategorizedTrigger(("Maintenance Required",)),
            ev(DOWNTIME_CATEGORIZED, downtime={"category": "Setup"}),
            False,
        ),
        (ExceededTrigger(1800.0), ev(DOWNTIME_EXCEEDED, downtime={"threshold_seconds": 1800.0}), True),
        (ExceededTrigger(1800.0), ev(DOWNTIME_EXCEEDED, downtime={"threshold_seconds": 3600.0}), False),
        (DowntimeTrigger(DOWNTIME_STARTED), ev(DOWNTIME_STARTED, downtime={"duration_seconds": 0}), True),
        (
            DowntimeTrigger(DOWNTIME_ENDED, 300.0),
            ev(DOWNTIME_ENDED, downtime={"duration_seconds": 299}),
            False,
        ),
        (
            DowntimeTrigger(DOWNTIME_ENDED, 300.0),
            ev(DOWNTIME_ENDED, downtime={"duration_seconds": 300}),
            True,
        ),
        (DowntimeTrigger(DOWNTIME_ENDED), ev(DOWNTIME_STARTED, downtime={"duration_seconds": 900}), False),
        (
            AlarmTrigger(codes=("1001",), type=ALARM_CLEARED),
            ev(ALARM_CLEARED, alarm={"code": "1001", "severity": 800}),
            True,
        ),
        (AlarmTrigger(codes=("1001",), type=ALARM_CLEARED), alarm("1001", 800), False),
        (AlarmTrigger(codes=("1001",)), ev(ALARM_CLEARED, alarm={"code": "1001", "severity": 800}), False),
        # Wrong event type for the trigger never fires.
        (CategorizedTrigger(), ev(DOWNTIME_STARTED, downtime={"category": None}), False),
        (StatusTrigger(), alarm("1", 1), False),
    ],
)
def test_trigger_filters(trigger: Any, event: Event, expected: bool) -> None:
    assert fires(wf(trigger), event) is expected


def test_disabled_never_fires() -> None:
    assert not fires(wf(AlarmTrigger(), enabled=False), alarm("1001", 900))


@pytest.mark.parametrize(
    ("scope", "machine", "expected"),
    [
        (Scope(), LOOSE, True),
        (Scope(machines=("mill-01",)), MILL, True),
        (Scope(machines=("mill-01",)), LATHE, False),
        (Scope(groups=("Turning",)), LATHE, True),
        (Scope(groups=("Turning",)), MILL, False),
        (Scope(groups=("Turning",)), LOOSE, False),
        (Scope(machines=("saw-03",), groups=("Turning",)), LOOSE, True),
    ],
)
def test_scope_by_machine_and_group(scope: Scope, machine: MachineRef, expected: bool) -> None:
    assert in_scope(scope, machine) is expected
    assert fires(wf(AlarmTrigger(), scope), ev(ALARM_TRIGGERED, machine, alarm={"code": "1"})) is expected


def test_manual_event_fires_only_its_workflow() -> None:
    event = ev(MANUAL_TRIGGER, workflow={"name": "QA"})
    assert fires(wf(ManualTrigger(), name="QA"), event)
    assert not fires(wf(ManualTrigger(), name="Other"), event)


def test_exceeded_thresholds_for_a_machine() -> None:
    flows = [
        wf(ExceededTrigger(1800.0), name="a"),
        wf(ExceededTrigger(600.0), Scope(groups=("Turning",)), name="b"),
        wf(ExceededTrigger(900.0), enabled=False, name="c"),
        wf(ExceededTrigger(1800.0), Scope(machines=("mill-01",)), name="d"),
        wf(AlarmTrigger(), name="e"),
    ]
    assert exceeded_thresholds(flows, MILL) == [1800.0]
    assert exceeded_thresholds(flows, LATHE) == [600.0, 1800.0]
