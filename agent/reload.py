"""Reload (SIGHUP, ``edge-agent reload``, ``POST /api/v1/reload``): a bad configuration is rejected
and the running one stays; a good one replaces machines, workflows, endpoints, the broker connection
(``mqtt:``) and the Unified Namespace (``publish:``) without a restart. Only ``state_dir``,
``api`` and ``event_loop`` need one. Bound to the running ``Runtime`` like ``daemon_routes.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from agent.config.agent_file import Config, collect_config
from agent.config_changes import endpoints_of, machine_changes, reload_report
from agent.mqtt.uns import namespace_of

if TYPE_CHECKING:
    from agent.runtime import Runtime

log = structlog.get_logger("agent.runtime")


async def apply(rt: Runtime) -> dict[str, Any]:
    if rt.config_path is None:
        return {"ok": False, "errors": ["this agent was started without a config file"]}
    new, problems = collect_config(rt.config_path, rt.state_dir_override)
    if new is None:
        errors = [str(p) for p in problems.items]
        for e in errors:
            log.error("reload_rejected", problem=e)
        rt.last_reload = {"ok": False, "errors": errors, "at": rt.clock()}
        return rt.last_reload
    old = rt.config.agent
    if (new.agent.state_dir, new.agent.api, new.agent.event_loop) != (old.state_dir, old.api, old.event_loop):
        log.warning(
            "reload_needs_restart", detail="state_dir, api and event_loop changes take effect after a restart"
        )
    # The namespace's topics depend on publish: and on the agent's name (the default line level).
    renamed = new.agent.publish != old.publish or new.agent.name != old.name
    removed, added, changed = machine_changes(rt.config.machines, new.machines)
    previous = rt.config
    try:
        await _swap(rt, new, removed, added, changed, renamed)
    except Exception as exc:
        log.error("reload_failed", error=repr(exc), exc_info=True)
        rt.config = previous
        rt.last_reload = {"ok": False, "errors": [f"reload failed: {exc!r}"], "at": rt.clock()}
        return rt.last_reload
    finally:
        # Whatever happened above, every configured machine is collecting afterwards.
        for m in rt.config.machines:
            if m.id not in rt.collection:
                rt.collection.start(m)
    # A new broker has none of the namespace yet.
    if added or removed or changed or renamed or new.agent.mqtt != old.mqtt:
        await _republish(rt)
    rt.last_reload = reload_report(new, added, removed, changed, rt.clock())
    return rt.last_reload


async def _swap(
    rt: Runtime, new: Config, removed: list[str], added: list[str], changed: list[str], renamed: bool
) -> None:
    fresh = {m.id: m for m in new.machines}
    # Stopped first so a changed machine's live state is final when its new deriver takes it over;
    # on any failure the caller starts every configured machine again.
    for mid in removed + changed:
        await rt.collection.stop(mid)
    rt.config = new  # new derivers take the new plant categories
    rebuilt = await rt.derivers_for(
        [fresh[mid] for mid in added + changed], after_restart=False, live=rt.pipeline.derivers
    )
    derivers = {mid: d for mid, d in rt.pipeline.derivers.items() if mid in fresh}
    derivers.update(rebuilt)
    rt.pipeline.set_machines({m.id: m.ref for m in new.machines}, derivers)
    rt.pipeline.set_workflows(new.workflows)
    if renamed:
        rt.pipeline.set_namespace(namespace_of(new.agent.publish, new.agent.name))
    # Endpoints carry their broker: the MQTT sender opens the new broker's link, closes the old one.
    rt.dispatcher.set_endpoints(endpoints_of(new))


async def _republish(rt: Runtime) -> None:
    """The namespace after a reload: added machines' state, removed (or moved) machines' topics
    cleared (``mqtt/retained.py``)."""
    try:
        await rt.pipeline.publish_state()
    except Exception as exc:
        log.error("uns_publish_failed", error=repr(exc))
