"""What a configuration means for the running parts: which machines a reload removes, adds or
changes, and the endpoints the dispatcher delivers to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from agent.config.agent_file import Config
from agent.config.machines import MachineConfig
from agent.delivery.senders import Destination

log = structlog.get_logger("agent.runtime")


def machine_changes(
    old: Sequence[MachineConfig], new: Sequence[MachineConfig]
) -> tuple[list[str], list[str], list[str]]:
    """Machine ids (removed, added, changed) from one configuration to the next."""
    before = {m.id: m for m in old}
    after = {m.id: m for m in new}
    removed = [mid for mid in before if mid not in after]
    added = [mid for mid in after if mid not in before]
    changed = [mid for mid in after if mid in before and after[mid] != before[mid]]
    return removed, added, changed


def endpoints_of(config: Config) -> Mapping[str, Destination]:
    """Endpoint key → its settings, for the dispatcher: ``<workflow>#<action index>`` of every
    workflow action (webhook or mqtt) and the namespace's ``#uns/state`` and ``#uns/events``."""
    from agent.mqtt.uns import endpoints as uns_endpoints

    found = {ep.key: ep for wf in config.workflows for ep in wf.endpoints}
    found.update((ep.key, ep) for ep in uns_endpoints(config.agent.publish, config.agent.mqtt))
    return found


def reload_report(
    new: Config, added: list[str], removed: list[str], changed: list[str], at: float
) -> dict[str, Any]:
    """What a successful reload answers (and logs): the machines it touched, the workflows it has."""
    log.info("reloaded", added=added, removed=removed, changed=changed, workflows=len(new.workflows))
    return {
        "ok": True,
        "added": added,
        "removed": removed,
        "changed": changed,
        "workflows": len(new.workflows),
        "at": at,
    }
