"""Does an event fire a workflow for a machine? Pure: trigger filters and scope, nothing else.

Throttling (``min_interval``) is separate (``throttle.py``) because it needs memory of past fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from agent.events import Event, MachineRef
from agent.workflows.spec import (
    TRIGGER_EVENT,
    AlarmTrigger,
    CategorizedTrigger,
    DowntimeTrigger,
    ExceededTrigger,
    Scope,
    StatusTrigger,
    Workflow,
)

# Thresholds are compared to the millisecond: a 30m workflow and a deriver timer at 1800.0 s agree.
_THRESHOLD_TOLERANCE = 0.001


def in_scope(scope: Scope, machine: MachineRef | None) -> bool:
    if scope.everything:
        return True
    if machine is None:
        return False
    return machine.id in scope.machines or (machine.group is not None and machine.group in scope.groups)


def _section(event: Event, key: str) -> Mapping[str, Any]:
    value = event.data.get(key)
    return value if isinstance(value, Mapping) else {}


def _status_matches(trigger: StatusTrigger, event: Event) -> bool:
    status = _section(event, "status")
    before = str(status.get("from") or "").upper()
    after = str(status.get("to") or "").upper()
    if trigger.from_states and before not in trigger.from_states:
        return False
    return not trigger.to_states or after in trigger.to_states


def _alarm_matches(trigger: AlarmTrigger, event: Event) -> bool:
    alarm = _section(event, "alarm")
    code = alarm.get("code")
    severity = alarm.get("severity")
    if trigger.min_severity and (not isinstance(severity, int | float) or severity < trigger.min_severity):
        return False
    if not trigger.codes and not trigger.code_patterns:
        return True
    if code is None:
        return False
    text = str(code)
    return text in trigger.codes or any(fnmatchcase(text, p) for p in trigger.code_patterns)


def _categorized_matches(trigger: CategorizedTrigger, event: Event) -> bool:
    if not trigger.categories:
        return True
    category = _section(event, "downtime").get("category")
    return isinstance(category, str) and category.casefold() in {c.casefold() for c in trigger.categories}


def _exceeded_matches(trigger: ExceededTrigger, event: Event) -> bool:
    threshold = _section(event, "downtime").get("threshold_seconds")
    if not isinstance(threshold, int | float):
        return False
    return abs(float(threshold) - trigger.after) <= _THRESHOLD_TOLERANCE


def _downtime_matches(trigger: DowntimeTrigger, event: Event) -> bool:
    if not trigger.min_duration:
        return True
    duration = _section(event, "downtime").get("duration_seconds")
    return isinstance(duration, int | float) and duration >= trigger.min_duration


def fires(workflow: Workflow, event: Event) -> bool:
    """True when ``event`` (an event of ``event.machine``) fires ``workflow``.

    Manual and scheduled events name their workflow in ``data["workflow"]["name"]``; they fire that
    workflow only.
    """
    if not workflow.enabled:
        return False
    trigger = workflow.trigger
    if TRIGGER_EVENT[trigger.type] != event.event:
        return False
    if trigger.type in ("manual", "scheduled"):
        return _section(event, "workflow").get("name") == workflow.name and (
            trigger.type == "scheduled" or in_scope(workflow.scope, event.machine)
        )
    if not in_scope(workflow.scope, event.machine):
        return False
    if isinstance(trigger, StatusTrigger):
        return _status_matches(trigger, event)
    if isinstance(trigger, AlarmTrigger):
        return _alarm_matches(trigger, event)
    if isinstance(trigger, CategorizedTrigger):
        return _categorized_matches(trigger, event)
    if isinstance(trigger, ExceededTrigger):
        return _exceeded_matches(trigger, event)
    if isinstance(trigger, DowntimeTrigger):
        return _downtime_matches(trigger, event)
    return False


def exceeded_thresholds(workflows: list[Workflow] | tuple[Workflow, ...], machine: MachineRef) -> list[float]:
    """The ``downtime_exceeded`` thresholds (seconds) the deriver of ``machine`` must time."""
    return sorted(
        {
            w.trigger.after
            for w in workflows
            if w.enabled and isinstance(w.trigger, ExceededTrigger) and in_scope(w.scope, machine)
        }
    )
