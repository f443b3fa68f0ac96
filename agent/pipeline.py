"""The shell that joins derivation, workflows and the outbox.

Samples go into each machine's deriver; the events that come out are planned against the workflows
(``workflows.plan``, pure); the rows are saved in the state store's journal together with the
snapshots that produced them (``state.journal``), then enqueued (``holdback``: kept in memory while
the outbox refuses). Timers (debounce, disconnect, downtime_exceeded) and scheduled workflows
(``workflows.schedule``) advance in ``tick``. Nothing here runs in a thread; every method is called
from the one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from agent.derive.errors import DeriveError, UnknownDowntime
from agent.deriver import Deriver, machine_ref
from agent.events import MANUAL_TRIGGER, Event, MachineRef, new_event_id
from agent.holdback import HoldBack, OutboxIntake
from agent.mqtt.retained import publish_retained
from agent.mqtt.tags import TagReporter
from agent.mqtt.uns import Namespace
from agent.refusals import (  # re-exported: the API and the panel import them from here
    NotDurable as NotDurable,
)
from agent.refusals import (
    NotManual as NotManual,
)
from agent.refusals import (
    OutOfScope as OutOfScope,
)
from agent.refusals import (
    PipelineError as PipelineError,
)
from agent.refusals import (
    Throttled as Throttled,
)
from agent.refusals import (
    UnknownMachine as UnknownMachine,
)
from agent.refusals import (
    UnknownWorkflow as UnknownWorkflow,
)
from agent.refusals import (
    WorkflowDisabled as WorkflowDisabled,
)
from agent.state.journal import JOURNAL_KEY, Journal, journal_rows
from agent.state.saver import StateSaver, Store
from agent.workflows.match import exceeded_thresholds, in_scope
from agent.workflows.plan import Firing, Topics, plan, uns_row
from agent.workflows.schedule import Schedules
from agent.workflows.spec import ManualTrigger, Workflow
from agent.workflows.throttle import Throttle

log = structlog.get_logger(__name__)

# Stored beside the machine snapshots; '#' cannot start a machine id, so the keys never collide.
SCHEDULE_STATE_KEY = "#workflow-schedules"


class Pipeline:
    def __init__(
        self,
        machines: Mapping[str, Any],
        derivers: Mapping[str, Deriver],
        workflows: Sequence[Workflow],
        outbox: OutboxIntake,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_enqueued: Callable[[], None] | None = None,
        on_events: Callable[[Sequence[Event]], None] | None = None,
        on_firings: Callable[[Sequence[Firing]], None] | None = None,
        snapshot_interval: float = 5.0,
        max_waiting: int = 100_000,
        namespace: Namespace | None = None,
        agent_name: str = "edge-agent",
    ) -> None:
        self._on_events = on_events
        # Every execution, whatever fired it (readings, timers, schedules, an operator), is counted here.
        self._on_firings = on_firings
        # The Unified Namespace (agent.yaml ``publish:``): retained per-machine state on the broker.
        self.namespace = namespace
        self.agent_name = agent_name
        self._tag_reporters: dict[str, TagReporter] = {}
        self._store = store
        self._clock = clock
        self._throttle = Throttle()
        self._journal = Journal()
        self._holdback = HoldBack(outbox, self._journal, on_enqueued, max_waiting)
        self._saver = StateSaver(
            store,
            self._snapshot_of,
            self._journal,
            lambda: bool(self._holdback.waiting),
            clock,
            snapshot_interval,
        )
        self._schedules = Schedules()
        self._last_firing: dict[str, Firing] = {}
        self.machines: dict[str, MachineRef] = {}
        self.derivers: dict[str, Deriver] = {}
        self.workflows: dict[str, Workflow] = {}
        self.set_machines(machines, derivers)
        self.set_workflows(workflows)

    # -- configuration and reload

    def set_machines(self, machines: Mapping[str, Any], derivers: Mapping[str, Deriver]) -> None:
        self.machines = {mid: machine_ref(m) for mid, m in machines.items()}
        self.derivers = dict(derivers)
        self._push_thresholds()

    def set_namespace(self, namespace: Namespace | None) -> None:
        self.namespace = namespace
        self._tag_reporters = {}  # they hold the old publish.tags settings

    def set_workflows(self, workflows: Iterable[Workflow]) -> None:
        self.workflows = {w.name: w for w in workflows}
        self._throttle.keep_only(self.workflows)
        self._push_thresholds()
        self._schedules.plan(self.workflows.values(), self._clock())

    def _push_thresholds(self) -> None:
        flows = list(self.workflows.values())
        for mid, deriver in self.derivers.items():
            ref = self.machines.get(mid)
            if ref is not None:
                deriver.set_exceeded_after(exceeded_thresholds(flows, ref))

    async def start(self) -> None:
        """Load the durable schedule state and offer the journal to the outbox again."""
        if self._store is None:
            return
        saved = await self._store.load_all()
        self._schedules.restore(saved.get(SCHEDULE_STATE_KEY), self.workflows.values(), self._clock())
        rows = journal_rows(saved.get(JOURNAL_KEY))
        if rows:
            # The process died between saving these and the outbox confirming them; the outbox
            # ignores a message id it already holds.
            log.info("outbox_journal_replayed", rows=len(rows))
            self._journal.restore(rows)
            self._holdback.waiting = rows + self._holdback.waiting
            await self._holdback.enqueue([])

    # -- read-only views for the API

    def now(self) -> float:
        return self._clock()

    def workflow(self, name: str) -> Workflow:
        wf = self.workflows.get(name)
        if wf is None:
            raise UnknownWorkflow(f"no workflow named {name!r}")
        return wf

    def last_execution(self, workflow: str) -> Firing | None:
        return self._last_firing.get(workflow)

    def next_run(self, workflow: str) -> float | None:
        return self._schedules.next_run(workflow)

    @property
    def pending(self) -> int:
        """Rows waiting in memory for the outbox to accept them."""
        return len(self._holdback.waiting)

    @property
    def refusing(self) -> bool:
        """The outbox refused the last write; rows wait in memory."""
        return self._holdback.refusing

    @property
    def rejected(self) -> int:
        """Rows given up because even the memory queue was full."""
        return self._holdback.rejected

    @property
    def max_waiting(self) -> int:
        return self._holdback.max_waiting

    @max_waiting.setter
    def max_waiting(self, value: int) -> None:
        self._holdback.max_waiting = value

    # -- the flow

    def derive(self, machine_id: str, samples: Sequence[Any]) -> list[Event]:
        """A collector's sink calls this for every poll (synchronously); only the rare poll that yields
        events pays for a task that passes them to ``fire``."""
        deriver = self.derivers.get(machine_id)
        if deriver is None:
            log.warning("samples_for_unknown_machine", machine_id=machine_id, count=len(samples))
            return []
        self._saver.before_poll(machine_id)
        events = deriver.ingest(samples, self._clock())
        self._observe_tags(machine_id, samples)
        self._saver.changed(machine_id)
        if events:
            self._saver.unplanned(machine_id, events[0].id)  # until ``fire`` plans them
        return events

    async def fire(self, events: Sequence[Event]) -> list[Firing]:
        """Fire what ``derive`` returned (every list it returns must be passed here once)."""
        batches: dict[str, str] = {}
        for e in events:
            if e.machine is not None:
                batches.setdefault(e.machine.id, e.id)  # the first event keys its batch
        self._saver.planned(batches)
        # _fire plans before its first await, so no snapshot sees these machines unplanned.
        return await self._fire(events, self._clock())

    async def tick(self, now: float | None = None) -> list[Firing]:
        """Advance timers and schedules; retry rows the outbox refused; save changed snapshots."""
        now = self._clock() if now is None else now
        events: list[Event] = []
        for mid, deriver in self.derivers.items():
            ticked = deriver.tick(now)
            if ticked:
                self._saver.changed(mid)
                events.extend(ticked)
        scheduled, ran = self._schedules.run_due(now, self.workflows, self.machines, self.derivers)
        events.extend(scheduled)
        executions = await self._fire(events, now) if events or self._holdback.waiting else []
        if ran:
            await self._save_schedules()
        if self._saver.due(now):
            await self._saver.save(now)
        return executions

    async def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None = None,
        operator: Mapping[str, Any] | None = None,
    ) -> tuple[Event, list[Firing]]:
        """An operator's (or API client's) category for a downtime; fires downtime_categorized workflows.

        Raises ``agent.derive.errors.UnknownDowntime`` / ``UnknownCategory`` / ``InvalidCategorization``.
        """
        now = self._clock()
        owner = self._downtime_owner(downtime_id)
        if owner is None:
            raise UnknownDowntime(f"no open or recent downtime with id {downtime_id!r}")
        event = self.derivers[owner].categorize(downtime_id, category, notes, operator, now)
        self._saver.changed(owner)
        executions = await self._fire([event], now)
        # An operator's word is worth a write of its own: do not wait for the next batch.
        await self._saver.save(now)
        return event, executions

    def _downtime_owner(self, downtime_id: str) -> str | None:
        for mid, deriver in self.derivers.items():
            open_dt = getattr(deriver, "open_downtime", None)
            if open_dt is not None and _downtime_id(open_dt) == downtime_id:
                return mid
            for dt in getattr(deriver, "recent_downtimes", ()):
                if _downtime_id(dt) == downtime_id:
                    return mid
        return None

    async def trigger(
        self,
        workflow: str,
        machine_id: str,
        operator: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> Firing:
        """The manual trigger: an operator presses a workflow's button for one machine."""
        wf = self.workflow(workflow)
        if not isinstance(wf.trigger, ManualTrigger):
            raise NotManual(f"workflow {workflow!r} is triggered by {wf.trigger.type}, not manually")
        ref = self.machines.get(machine_id)
        if ref is None:
            raise UnknownMachine(f"no machine with id {machine_id!r}")
        if not wf.enabled:
            raise WorkflowDisabled(f"workflow {workflow!r} is disabled")
        if not in_scope(wf.scope, ref):
            raise OutOfScope(f"machine {machine_id!r} is not in the scope of workflow {workflow!r}")
        now = self._clock()
        data: dict[str, Any] = {"workflow": {"name": wf.name}, "operator": dict(operator or {}), "note": note}
        event = Event(new_event_id(now), MANUAL_TRIGGER, now, ref, data)
        executions = await self._fire([event], now)
        if not executions:
            raise Throttled(
                f"workflow {workflow!r} fired for {machine_id!r} less than {wf.min_interval:g}s ago"
            )
        firing = executions[0]
        if not firing.durable:
            # An operator's request that only sits in memory would die with the process; the API
            # must never acknowledge it. Take it back and say so: the caller can retry.
            self._holdback.withdraw(set(firing.message_ids))
            self._throttle.forget(wf.name, machine_id, now)
            raise NotDurable(
                "the outbox cannot store deliveries right now (disk full or I/O error); nothing was "
                "queued, try again later"
            )
        return firing

    async def _fire(self, events: Sequence[Event], now: float) -> list[Firing]:
        if events and self._on_events is not None:
            self._on_events(events)
        topics = Topics(self.agent_name, self.namespace, self.derivers)
        planned = plan(events, self.workflows.values(), self._throttle, now, topics)
        for workflow, machine_id, event_id in planned.throttled:
            log.info("workflow_throttled", workflow=workflow, machine_id=machine_id, event_id=event_id)
        if planned.rows:
            self._journal.add(planned.rows)
            # State and the rows it produced become durable together, before the outbox sees them.
            await self._saver.save(now, {e.machine.id for e in events if e.machine is not None})
        durable = await self._holdback.enqueue(planned.rows)
        firings = [f if durable else f.not_durable() for f in planned.firings]
        if firings and self._on_firings is not None:
            self._on_firings(firings)
        for f in firings:
            self._last_firing[f.workflow] = f
            log.info(
                "workflow_fired",
                workflow=f.workflow,
                event_type=f.event_type,
                event_id=f.event_id,
                machine_id=f.machine_id,
                deliveries=len(f.message_ids),
                durable=f.durable,
            )
        return firings

    def _observe_tags(self, machine_id: str, samples: Sequence[Any]) -> None:
        tags = self.namespace.config.tags if self.namespace is not None else None
        if tags is None:
            return
        reporter = self._tag_reporters.get(machine_id)
        if reporter is None:
            reporter = self._tag_reporters[machine_id] = TagReporter(tags)
        reporter.observe(samples)

    async def publish_tags(self, now: float | None = None) -> None:
        """Tag values due on the namespace (``publish.tags``): at most one message per machine and
        interval, only when a value moved past the deadband. Called by the runtime's ticker."""
        if self.namespace is None or not self._tag_reporters:
            return
        now = self._clock() if now is None else now
        report_id = new_event_id(now)
        rows = []
        for mid, reporter in sorted(self._tag_reporters.items()):
            values = reporter.due(now)
            ref = self.machines.get(mid)
            if values is not None and ref is not None:
                rows.append(uns_row(self.namespace.tags(ref, values, now, report_id), "tags", mid, "", now))
        if rows:
            await self._holdback.enqueue(rows)

    async def publish_state(self) -> None:
        """Put every machine's whole retained state on the broker and clear the topics of machines
        no longer configured (at start and after a reload: ``mqtt/retained.py``)."""
        if self.namespace is not None:
            await publish_retained(
                self.namespace,
                self.machines,
                self.derivers,
                self._holdback.enqueue,
                self._store,
                self._clock(),
            )

    # -- durability of derived state

    def _snapshot_of(self, machine_id: str) -> Mapping[str, Any] | None:
        deriver = self.derivers.get(machine_id)
        return deriver.snapshot() if deriver is not None else None

    async def _save_schedules(self) -> None:
        if self._store is None:
            return
        try:
            await self._store.save_many({SCHEDULE_STATE_KEY: self._schedules.state()})
        except DeriveError as exc:
            log.error("schedule_state_not_saved", error=str(exc))

    @property
    def discarded(self) -> int:
        """Rows lost at stop because the outbox refused them to the end."""
        return self._holdback.discarded

    async def close(self) -> None:
        """Last chance to enqueue rows waiting in memory and to save derived state."""
        if self._holdback.waiting:
            await self._holdback.enqueue([])
            self._holdback.discard_waiting()
        await self._saver.save()


def _downtime_id(downtime: Any) -> str | None:
    value = downtime.get("id") if isinstance(downtime, Mapping) else getattr(downtime, "id", None)
    return str(value) if value is not None else None
