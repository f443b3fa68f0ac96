"""Workflow files: ``config/workflows/*.yaml`` or entries of a ``workflows:`` list, as frozen data.

A workflow is a name, a scope (machines and/or groups; empty means every machine), one trigger with
its filters, an optional per-machine ``min_interval`` and one or more webhook actions. Problems are
collected with file, line and key path; unknown keys are errors.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.source import (
    Problems,
    Section,
    as_bool,
    as_duration,
    as_float,
    as_int,
    as_str,
    in_range,
    load_yaml,
    one_of,
)
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
)
from agent.workflows.cron import check_cron, check_timezone

if TYPE_CHECKING:
    from agent.delivery.settings import DeliveryConfig, EndpointConfig
    from agent.mqtt.settings import MqttEndpoint

TRIGGER_TYPES = (
    MACHINE_STATUS_CHANGED,
    ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED,
    DOWNTIME_EXCEEDED,
    "manual",
    "scheduled",
    # Beyond the seed's five: the other derived events a plant wires to dashboards and ERPs.
    ALARM_CLEARED,
    DOWNTIME_STARTED,
    DOWNTIME_ENDED,
)
# The event a trigger type listens to (manual and scheduled events are made by the pipeline itself).
TRIGGER_EVENT = {
    MACHINE_STATUS_CHANGED: MACHINE_STATUS_CHANGED,
    ALARM_TRIGGERED: ALARM_TRIGGERED,
    DOWNTIME_CATEGORIZED: DOWNTIME_CATEGORIZED,
    DOWNTIME_EXCEEDED: DOWNTIME_EXCEEDED,
    "manual": MANUAL_TRIGGER,
    "scheduled": SCHEDULED,
    ALARM_CLEARED: ALARM_CLEARED,
    DOWNTIME_STARTED: DOWNTIME_STARTED,
    DOWNTIME_ENDED: DOWNTIME_ENDED,
}
_NAME = re.compile(r"^[^\x00-\x1f/#]{1,100}$")


@dataclass(frozen=True)
class Scope:
    machines: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.machines and not self.groups

    def as_dict(self) -> dict[str, Any]:
        return {"machines": list(self.machines), "groups": list(self.groups)}


@dataclass(frozen=True)
class StatusTrigger:
    from_states: tuple[str, ...] = ()  # empty: any
    to_states: tuple[str, ...] = ()
    type: str = MACHINE_STATUS_CHANGED

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "from": list(self.from_states), "to": list(self.to_states)}


@dataclass(frozen=True)
class AlarmTrigger:
    codes: tuple[str, ...] = ()
    code_patterns: tuple[str, ...] = ()  # shell-style globs: "20*"
    min_severity: int = 0
    type: str = ALARM_TRIGGERED

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "codes": list(self.codes),
            "code_patterns": list(self.code_patterns),
            "min_severity": self.min_severity,
        }


@dataclass(frozen=True)
class DowntimeTrigger:
    """``downtime_started`` / ``downtime_ended``; an ended downtime shorter than ``min_duration`` is skipped."""

    type: str
    min_duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == DOWNTIME_ENDED:
            out["min_duration_seconds"] = self.min_duration
        return out


@dataclass(frozen=True)
class CategorizedTrigger:
    categories: tuple[str, ...] = ()  # empty: any category
    type: str = DOWNTIME_CATEGORIZED

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "categories": list(self.categories)}


@dataclass(frozen=True)
class ExceededTrigger:
    after: float  # seconds a downtime must last
    type: str = DOWNTIME_EXCEEDED

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "after_seconds": self.after}


@dataclass(frozen=True)
class ManualTrigger:
    description: str | None = None  # shown to operators
    type: str = "manual"

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "description": self.description}


@dataclass(frozen=True)
class ScheduledTrigger:
    cron: str
    timezone: str = "UTC"
    type: str = "scheduled"

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "cron": self.cron, "timezone": self.timezone}


Trigger = (
    StatusTrigger
    | AlarmTrigger
    | CategorizedTrigger
    | ExceededTrigger
    | ManualTrigger
    | ScheduledTrigger
    | DowntimeTrigger
)


@dataclass(frozen=True)
class WebhookAction:
    # key "<workflow name>#<index>"; a webhook (url, secrets, headers, ...) or an mqtt: action (topic).
    endpoint: EndpointConfig | MqttEndpoint

    @property
    def delay(self) -> float:
        """Seconds; becomes the outbox row's ``not_before``, so the hold survives restarts."""
        return self.endpoint.delay


@dataclass(frozen=True)
class Workflow:
    name: str
    trigger: Trigger
    actions: tuple[WebhookAction, ...] = ()
    description: str | None = None
    enabled: bool = True
    scope: Scope = Scope()
    min_interval: float = 0.0
    file: str = ""

    @property
    def endpoints(self) -> tuple[EndpointConfig | MqttEndpoint, ...]:
        return tuple(a.endpoint for a in self.actions)

    def summary(self) -> dict[str, Any]:
        """What the API and the scheduled payload show of the configuration (no secrets, no URLs)."""
        return {
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "scope": self.scope.as_dict(),
            "trigger": self.trigger.as_dict(),
            "min_interval_seconds": self.min_interval,
            "actions": len(self.actions),
        }


def endpoint_key(workflow_name: str, index: int) -> str:
    return f"{workflow_name}#{index}"


def _code(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"expected an alarm code, got {value!r}")
    return as_str(value).strip()


def _state(value: Any) -> str:
    # The rule machine files follow (status rules reject `active`): state words are written as the
    # derivation reports them, upper-case. Upper-casing here silently would make the two disagree.
    word = as_str(value).strip()
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", word):
        raise ValueError(f"state {word!r} must be an upper-case word like ACTIVE, IDLE, ALARM, SETUP")
    return word


def _pattern(value: Any) -> str:
    text = as_str(value).strip()
    if not any(c in text for c in "*?["):
        raise ValueError(f"pattern {text!r} has no wildcard (*, ?, [..]); list exact codes under codes")
    return text


def _parse_trigger(sec: Section) -> Trigger | None:
    kind = sec.need("type", one_of(*TRIGGER_TYPES))
    trigger: Trigger | None = None
    if kind == MACHINE_STATUS_CHANGED:
        trigger = StatusTrigger(tuple(sec.list_of("from", _state)), tuple(sec.list_of("to", _state)))
    elif kind in (ALARM_TRIGGERED, ALARM_CLEARED):
        trigger = AlarmTrigger(
            codes=tuple(sec.list_of("codes", _code)),
            code_patterns=tuple(sec.list_of("code_patterns", _pattern)),
            min_severity=sec.get("min_severity", in_range(as_int, 0, 1000), 0),
            type=kind,
        )
    elif kind == DOWNTIME_STARTED:
        trigger = DowntimeTrigger(kind)
    elif kind == DOWNTIME_ENDED:
        trigger = DowntimeTrigger(kind, sec.get("min_duration", as_duration, 0.0))
    elif kind == DOWNTIME_CATEGORIZED:
        trigger = CategorizedTrigger(tuple(sec.list_of("categories", as_str)))
    elif kind == DOWNTIME_EXCEEDED:
        after = sec.opt("after", in_range(as_duration, 1))
        minutes = sec.opt("minutes", in_range(as_float, 1 / 60))
        if after is not None and minutes is not None:
            sec.error("minutes", "give either after (a duration like 30m) or minutes, not both")
        elif after is None and minutes is None:
            if sec.ok:
                sec.error_here("downtime_exceeded needs after (a duration like 30m) or minutes")
        else:
            trigger = ExceededTrigger(after if after is not None else (minutes or 0.0) * 60.0)
    elif kind == "manual":
        trigger = ManualTrigger(sec.opt("description", as_str))
    elif kind == "scheduled":
        cron = sec.need("cron", check_cron)
        tz = sec.get("timezone", check_timezone, "UTC")
        if cron is not None:
            trigger = ScheduledTrigger(cron, tz)
    sec.done()
    return trigger


def _parse_action(
    sec: Section, name: str, index: int, delivery: DeliveryConfig | None
) -> WebhookAction | None:
    from agent.delivery.settings import DeliveryConfig, parse_webhook

    kinds = [k for k in ("webhook", "mqtt") if sec.has(k)]
    if not kinds and sec.ok:
        sec.error_here("an action needs a webhook: or an mqtt: mapping")
    if len(kinds) > 1:
        sec.error("mqtt", "one action is either webhook: or mqtt:; write two actions for both")
    hook = sec.sub("webhook")
    pub = sec.sub("mqtt")
    sec.done()
    if len(kinds) != 1:
        return None
    if kinds[0] == "mqtt":
        from agent.mqtt.settings import parse_mqtt_action

        return WebhookAction(endpoint=parse_mqtt_action(pub, endpoint_key(name, index)))
    endpoint = parse_webhook(hook, endpoint_key(name, index), delivery or DeliveryConfig())
    return WebhookAction(endpoint=endpoint)


def parse_workflow(
    section: Section,
    delivery_defaults: DeliveryConfig | None = None,
    *,
    machine_ids: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
) -> Workflow | None:
    """One workflow; ``None`` when it has problems (they are in ``section.problems``).

    ``machine_ids``, ``groups`` and ``categories`` (when given) let the scope and the category filter
    be checked against what is configured, so a typo is an error instead of a workflow that never fires.
    """
    before = len(section.problems.items)
    name = section.need("name", as_str)
    if name is not None and not _NAME.match(name):
        section.error(
            "name", "a workflow name must be 1-100 characters without '/', '#' or control characters"
        )
    description = section.opt("description", as_str)
    enabled = section.get("enabled", as_bool, True)
    scope_sec = section.sub("scope")
    scope = Scope(tuple(scope_sec.list_of("machines", as_str)), tuple(scope_sec.list_of("groups", as_str)))
    if machine_ids is not None:
        known = set(machine_ids)
        for i, (path, line, item) in enumerate(scope_sec.list("machines")):
            if isinstance(item, str) and item not in known:
                section.problems.add(section.file, line, path, f"unknown machine {item!r} (scope item {i})")
    if groups is not None:
        known_groups = set(groups)
        for path, line, item in scope_sec.list("groups"):
            if isinstance(item, str) and item not in known_groups:
                section.problems.add(section.file, line, path, f"no machine is in group {item!r}")
    scope_sec.done()
    trigger = _parse_trigger(section.sub("trigger", required=True))
    if isinstance(trigger, CategorizedTrigger) and categories is not None:
        allowed = set(categories)
        folded = {" ".join(c.split()).casefold() for c in allowed}
        trig_sec = section.sub("trigger")
        for path, line, item in trig_sec.list("categories"):
            if isinstance(item, str) and " ".join(item.split()).casefold() not in folded:
                section.problems.add(
                    section.file,
                    line,
                    path,
                    f"unknown category {item!r}; expected one of {', '.join(sorted(allowed))}",
                )
    min_interval = section.get("min_interval", as_duration, 0.0)
    actions: list[WebhookAction] = []
    action_secs = section.sections("actions", required=True)
    if section.has("actions") and not action_secs:
        section.error("actions", "a workflow needs at least one action")
    for i, action_sec in enumerate(action_secs):
        action = _parse_action(action_sec, name or "?", i, delivery_defaults)
        if action is not None:
            actions.append(action)
    section.done()
    if len(section.problems.items) > before or name is None or trigger is None:
        return None
    return Workflow(
        name=name,
        trigger=trigger,
        actions=tuple(actions),
        description=description,
        enabled=enabled,
        scope=scope,
        min_interval=min_interval,
        file=section.file,
    )


def _category_names(categories: Any) -> list[str] | None:
    if categories is None:
        return None
    names = getattr(categories, "names", categories)
    try:
        return [str(n) for n in names]
    except TypeError:
        return None


def load_workflows(
    folder: Path | None,
    *,
    inline: Sequence[Section] = (),
    delivery: DeliveryConfig | None,
    problems: Problems,
    display_root: Path | None = None,
    machine_ids: Iterable[str] | None = None,
    groups: Iterable[str] | None = None,
    categories: Any = None,
    base_dir: Path | None = None,
) -> list[Workflow]:
    """Every ``*.yaml`` in ``folder`` (absent folder: none) plus the inline ``workflows:`` entries.

    Relative paths (``secret_file``) resolve against ``base_dir``, the directory of agent.yaml, so
    every file of a config names ``secrets/x.secret`` the same way.

    Names must be unique: they key endpoints, throttles, schedules and the API.
    """
    ids = set(machine_ids) if machine_ids is not None else None
    grp = set(groups) if groups is not None else None
    cats = _category_names(categories)
    sections: list[Section] = []
    if folder is not None and folder.is_dir():
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            shown = str(path)
            if display_root is not None:
                with contextlib.suppress(ValueError):
                    shown = str(path.relative_to(display_root))
            before = len(problems.items)
            data = load_yaml(path, problems, shown)
            if data is None:
                if len(problems.items) == before:  # no syntax error: nothing but comments, or `~`
                    problems.add(shown, None, "", "file is empty")
                continue
            sections.append(
                Section(data, file=shown, path="", problems=problems, base_dir=base_dir or path.parent)
            )
    sections.extend(inline)
    out: list[Workflow] = []
    seen: dict[str, str] = {}
    for sec in sections:
        if not sec.ok:
            continue
        wf = parse_workflow(sec, delivery, machine_ids=ids, groups=grp, categories=cats)
        if wf is None:
            continue
        if wf.name in seen:
            sec.error("name", f"duplicate workflow name {wf.name!r}: also defined in {seen[wf.name]}")
            continue
        seen[wf.name] = f"{sec.file}:{sec.line_of('name')}"
        out.append(wf)
    return out
