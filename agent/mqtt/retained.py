"""The namespace's retained picture on the broker, put there whole at start and after a reload.

Every machine's retained state is published again (the broker may hold values from before a crash
or a config change, or nothing at all), and the roots of machines no longer configured (removed, or
moved by a changed topic template) get empty retained messages, so the Unified Namespace shows no
ghost machine forever. Which roots were published is kept in the state store (``#uns-roots``); it
is replaced only once the rows that clear the others are durable in the outbox, so a crash in
between clears them again at the next start (an empty retained message twice is harmless).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from agent.delivery.records import NewDelivery
from agent.events import MachineRef, new_event_id
from agent.mqtt.uns import Namespace, clearing
from agent.state.saver import Store
from agent.workflows.plan import uns_row

log = structlog.get_logger("agent.pipeline")

ROOTS_KEY = "#uns-roots"


async def publish_retained(
    namespace: Namespace,
    machines: Mapping[str, MachineRef],
    views: Mapping[str, Any],
    enqueue: Callable[[list[NewDelivery]], Awaitable[bool]],
    store: Store | None,
    now: float,
) -> None:
    """``views``: each machine's deriver (what ``Namespace.snapshot`` reads)."""
    snapshot_id = new_event_id(now)
    current = [(machines[mid], d) for mid, d in sorted(views.items()) if mid in machines]
    roots = sorted({namespace.root(ref) for ref in machines.values()})
    gone = sorted(set(await _published_roots(store)) - set(roots))
    messages = clearing(gone, snapshot_id) + namespace.snapshot(current, now, snapshot_id)
    durable = await enqueue([uns_row(m, "state", None, "", now) for m in messages])
    if gone:
        log.info("uns_machines_cleared", roots=gone, durable=durable)
    if durable and store is not None:
        await store.save_many({ROOTS_KEY: {"roots": roots}})


async def _published_roots(store: Store | None) -> Sequence[str]:
    if store is None:
        return []
    saved = (await store.load_all()).get(ROOTS_KEY)
    roots = saved.get("roots") if isinstance(saved, Mapping) else None
    return [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []
