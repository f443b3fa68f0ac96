"""The shell that joins derivation, workflows and the outbox.

Samples go into each machine's deriver; the events that come out are matched against the workflows;
every firing becomes one outbox row per action, and each batch is enqueued with one call (the outbox
group-commits). Before the outbox sees rows, they are saved in the state store together with the
snapshots that produced them (``JOURNAL_KEY``), so a kill -9 between the two files neither loses an
event nor derives it again under a new id. Timers (debounce, disconnect, downtime_exceeded) and cron schedules advance in
``tick``. Nothing here runs in a thread; every method is called from the one event loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from agent.delivery.outbox import NewDelivery, OutboxFull, OutboxUnavailable
from agent.derive.errors import DeriveError, UnknownDowntime
from agent.events import MANUAL_TRIGGER, SCHEDULED, Event, MachineRef, iso_utc, new_event_id
from agent.workflows.match import exceeded_thresholds, fires, in_scope
from agent.workflows.payload import build_payload, encode
from agent.workflows.schedule import next_fire, previous_fire
from agent.workflows.spec import ManualTrigger, ScheduledTrigger, Workflow
from agent.workflows.throttle import Throttle

log = structlog.get_logger(__name__)

# Stored beside the machine snapshots; '#' cannot start a machine id, so the keys never collide.
SCHEDULE_STATE_KEY = "#workflow-schedules"
# Rows planned but not yet confirmed by the outbox, saved in the same transaction as the snapshots
# that produced them: a kill -9 between the two files neither loses them nor derives them again.
JOURNAL_KEY = "#outbox-journal"


class PipelineError(Exception):
    """A refused operator request; ``field`` names the request field at fault (for the API)."""

    field: str | None = None


class UnknownWorkflow(PipelineError):
    field = "workflow"


class UnknownMachine(PipelineError):
    field = "machine"


class WorkflowDisabled(PipelineError):
    field = "workflow"


class NotManual(PipelineError):
    field = "workflow"


class OutOfScope(PipelineError):
    field = "machine"


class Throttled(PipelineError):
    field = "workflow"


class Deriver(Protocol):
    """What the pipeline uses of ``agent.derive.machine.MachineDeriver``."""

    def ingest(self, samples: Sequence[Any], now: float) -> list[Event]: ...
    def tick(self, now: float) -> list[Event]: ...
    def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None,
        operator: Mapping[str, Any] | None,
        now: float,
    ) -> Event: ...
    def snapshot(self) -> dict[str, Any]: ...
    def parts_since(self, ts: float) -> int: ...
    @property
    def part_total(self) -> int: ...
    def set_exceeded_after(self, thresholds: Sequence[float]) -> None: ...


class Store(Protocol):
    """What the pipeline uses of ``agent.derive.store.DeriveStore``."""

    async def save_many(
        self, snapshots: Mapping[str, Mapping[str, Any]], now: float | None = None
    ) -> None: ...
    async def load_all(self) -> Mapping[str, Any]: ...


class Outbox(Protocol):
    async def enqueue(self, items: Sequence[NewDelivery]) -> None: ...


@dataclass(frozen=True)
class Execution:
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


@dataclass
class _Schedule:
    workflow: str
    cron: str
    timezone: str
    next_due: float
    last_run: float | None
    # Each machine's running part total at the last run: "since the last run" is then exact.
    totals: dict[str, int] = field(default_factory=dict)


@dataclass
class _Plan:
    rows: list[NewDelivery] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)


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


def _ref(machine: Any) -> MachineRef:
    if isinstance(machine, MachineRef):
        return machine
    ref = getattr(machine, "ref", None)
    if isinstance(ref, MachineRef):
        return ref
    raise TypeError(f"expected a MachineRef or an object with .ref, got {type(machine).__name__}")


class Pipeline:
    def __init__(
        self,
        machines: Mapping[str, Any],
        derivers: Mapping[str, Deriver],
        workflows: Sequence[Workflow],
        outbox: Outbox,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_enqueued: Callable[[], None] | None = None,
        on_events: Callable[[Sequence[Event]], None] | None = None,
        snapshot_interval: float = 5.0,
        max_waiting: int = 100_000,
    ) -> None:
        self._on_events = on_events
        self._outbox = outbox
        self._store = store
        self._clock = clock
        self._on_enqueued = on_enqueued
        self._snapshot_interval = snapshot_interval
        self._throttle = Throttle()
        self._pending: list[NewDelivery] = []
        self.max_waiting = max_waiting
        self.refusing = False  # the outbox refused the last write; rows wait in memory
        self.rejected = 0  # rows given up because even the memory queue was full
        self._dirty: set[str] = set()
        self._journal: dict[str, NewDelivery] = {}
        self._journal_dirty = False
        # Machines whose derived events a task has still to plan: their snapshot would be ahead of
        # the journal, so it waits.
        self._unplanned: Counter[str] = Counter()
        self._saving: asyncio.Event | None = None
        self._save_all = False  # a waiting write must take every changed machine
        self._save_some: set[str] = set()  # ... or at least these
        self._save_asked = 0
        self._save_done = 0
        self._last_save = clock()
        self._schedules: dict[str, _Schedule] = {}
        self._stored_runs: dict[str, float] = {}
        self._stored_totals: dict[str, dict[str, int]] = {}
        self._last_execution: dict[str, Execution] = {}
        self.machines: dict[str, MachineRef] = {}
        self.derivers: dict[str, Deriver] = {}
        self.workflows: dict[str, Workflow] = {}
        self.set_machines(machines, derivers)
        self.set_workflows(workflows)

    # -- configuration and reload

    def set_machines(self, machines: Mapping[str, Any], derivers: Mapping[str, Deriver]) -> None:
        self.machines = {mid: _ref(m) for mid, m in machines.items()}
        self.derivers = dict(derivers)
        self._push_thresholds()

    def set_workflows(self, workflows: Iterable[Workflow]) -> None:
        self.workflows = {w.name: w for w in workflows}
        self._throttle.keep_only(self.workflows)
        self._push_thresholds()
        self._plan_schedules(self._clock())

    def _push_thresholds(self) -> None:
        flows = list(self.workflows.values())
        for mid, deriver in self.derivers.items():
            ref = self.machines.get(mid)
            if ref is not None:
                deriver.set_exceeded_after(exceeded_thresholds(flows, ref))

    def _plan_schedules(self, now: float) -> None:
        old = self._schedules
        self._schedules = {}
        for wf in self.workflows.values():
            trig = wf.trigger
            if not wf.enabled or not isinstance(trig, ScheduledTrigger):
                continue
            prev = old.get(wf.name)
            last = prev.last_run if prev is not None else self._stored_runs.get(wf.name)
            totals = dict(prev.totals) if prev is not None else dict(self._stored_totals.get(wf.name, {}))
            # Without any record the first run waits for the next cron time (never fires for the past);
            # with one, a run missed while the agent was down fires once at the next tick.
            due = next_fire(trig.cron, trig.timezone, last if last is not None else now)
            self._schedules[wf.name] = _Schedule(wf.name, trig.cron, trig.timezone, due, last, totals)

    async def start(self) -> None:
        """Load the durable schedule state (last run of each scheduled workflow)."""
        if self._store is None:
            return
        saved = await self._store.load_all()
        state = saved.get(SCHEDULE_STATE_KEY)
        state = state if isinstance(state, Mapping) else {}
        runs = state.get("last_run")
        if isinstance(runs, Mapping):
            self._stored_runs = {str(k): float(v) for k, v in runs.items() if isinstance(v, int | float)}
        totals = state.get("totals")
        if isinstance(totals, Mapping):
            self._stored_totals = {
                str(wf): {
                    str(m): int(n) for m, n in per.items() if isinstance(n, int) and not isinstance(n, bool)
                }
                for wf, per in totals.items()
                if isinstance(per, Mapping)
            }
        # Forget what was planned from nothing: the stored runs decide now.
        self._schedules = {}
        self._plan_schedules(self._clock())
        rows = journal_rows(saved.get(JOURNAL_KEY))
        if rows:
            # The process died between saving these and the outbox confirming them; the outbox
            # ignores a message id it already holds.
            log.info("outbox_journal_replayed", rows=len(rows))
            self._journal.update((r.message_id, r) for r in rows)
            self._pending = rows + self._pending
            await self._enqueue([])

    # -- read-only views for the API

    def now(self) -> float:
        return self._clock()

    def workflow(self, name: str) -> Workflow:
        wf = self.workflows.get(name)
        if wf is None:
            raise UnknownWorkflow(f"no workflow named {name!r}")
        return wf

    def last_execution(self, workflow: str) -> Execution | None:
        return self._last_execution.get(workflow)

    def next_run(self, workflow: str) -> float | None:
        sched = self._schedules.get(workflow)
        return sched.next_due if sched is not None else None

    @property
    def pending(self) -> int:
        """Rows waiting in memory for the outbox to accept them."""
        return len(self._pending)

    # -- the flow

    async def on_samples(self, machine_id: str, samples: Sequence[Any]) -> list[Execution]:
        events = self.derive(machine_id, samples)
        return await self.fire(events) if events else []

    def derive(self, machine_id: str, samples: Sequence[Any]) -> list[Event]:
        """The synchronous half of ``on_samples``: a collector's sink calls it for every poll, and only
        the rare poll that yields events pays for a task that fires them."""
        deriver = self.derivers.get(machine_id)
        if deriver is None:
            log.warning("samples_for_unknown_machine", machine_id=machine_id, count=len(samples))
            return []
        events = deriver.ingest(samples, self._clock())
        self._dirty.add(machine_id)
        if events:
            self._unplanned[machine_id] += 1  # until ``fire`` plans them
        return events

    async def fire(self, events: Sequence[Event]) -> list[Execution]:
        """Fire what ``derive`` returned (every list it returns must be passed here once)."""
        for mid in {e.machine.id for e in events if e.machine is not None}:
            self._unplanned[mid] -= 1
            if self._unplanned[mid] <= 0:
                del self._unplanned[mid]
        # _fire plans before its first await, so no snapshot sees these machines unplanned.
        return await self._fire(events, self._clock())

    async def tick(self, now: float | None = None) -> list[Execution]:
        """Advance timers and schedules; retry rows the outbox refused; save changed snapshots."""
        now = self._clock() if now is None else now
        events: list[Event] = []
        for mid, deriver in self.derivers.items():
            ticked = deriver.tick(now)
            if ticked:
                self._dirty.add(mid)
                events.extend(ticked)
        ran: list[tuple[_Schedule, float]] = []
        for sched in self._schedules.values():
            if sched.next_due <= now:
                event = self._scheduled_event(sched, now)
                if event is not None:
                    events.append(event)
                    ran.append((sched, sched.next_due))
                sched.last_run = sched.next_due
                sched.next_due = next_fire(sched.cron, sched.timezone, max(sched.next_due, now))
        executions = await self._fire(events, now) if events or self._pending else []
        if ran:
            await self._save_schedules()
        if (self._dirty or self._journal_dirty) and now - self._last_save >= self._snapshot_interval:
            await self.save_snapshots(now)
        return executions

    async def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None = None,
        operator: Mapping[str, Any] | None = None,
    ) -> tuple[Event, list[Execution]]:
        """An operator's (or API client's) category for a downtime; fires downtime_categorized workflows.

        Raises ``agent.derive.errors.UnknownDowntime`` / ``UnknownCategory`` / ``InvalidCategorization``.
        """
        now = self._clock()
        owner = self._downtime_owner(downtime_id)
        if owner is None:
            raise UnknownDowntime(f"no open or recent downtime with id {downtime_id!r}")
        event = self.derivers[owner].categorize(downtime_id, category, notes, operator, now)
        self._dirty.add(owner)
        executions = await self._fire([event], now)
        # An operator's word is worth a write of its own: do not wait for the next batch.
        await self.save_snapshots(now)
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
    ) -> Execution:
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
        return executions[0]

    def _scheduled_event(self, sched: _Schedule, now: float) -> Event | None:
        wf = self.workflows.get(sched.workflow)
        if wf is None or not isinstance(wf.trigger, ScheduledTrigger):
            return None
        fire_time = sched.next_due
        since = sched.last_run
        if since is None:
            since = previous_fire(sched.cron, sched.timezone, fire_time)
        machines = []
        totals: dict[str, int] = {}
        for mid in sorted(self.machines):
            ref = self.machines[mid]
            deriver = self.derivers.get(mid)
            if deriver is None or not in_scope(wf.scope, ref):
                continue
            total = deriver.part_total
            base = sched.totals.get(mid)
            # The counter total is exact; minute buckets (parts_since) only serve a first run or a
            # machine added since the last one.
            parts = total - base if base is not None and total >= base else deriver.parts_since(since)
            totals[mid] = total
            machines.append({"machine": ref.as_dict(), "parts": parts})
        sched.totals = totals
        data = {
            "workflow": {"name": wf.name},
            "production": {"since": since, "until": now, "machines": machines},
        }
        return Event(scheduled_event_id(wf.name, fire_time), SCHEDULED, fire_time, None, data)

    def _plan(self, events: Sequence[Event], now: float) -> _Plan:
        plan = _Plan()
        for event in events:
            machine_id = event.machine.id if event.machine is not None else None
            for wf in self.workflows.values():
                if not fires(wf, event):
                    continue
                if not self._throttle.allow(wf.name, machine_id, wf.min_interval, now):
                    log.info("workflow_throttled", workflow=wf.name, machine_id=machine_id, event_id=event.id)
                    continue
                body = encode(build_payload(wf, event))
                ids = []
                for index, action in enumerate(wf.actions):
                    mid = message_id(event.id, wf.name, index)
                    ids.append(mid)
                    plan.rows.append(
                        NewDelivery(
                            message_id=mid,
                            endpoint=action.endpoint.key,
                            url=action.endpoint.url,
                            workflow=wf.name,
                            event_type=event.event,
                            machine_id=machine_id,
                            event_id=event.id,
                            body=body,
                            not_before=now + action.delay,
                        )
                    )
                plan.executions.append(
                    Execution(wf.name, event.id, event.event, machine_id, now, tuple(ids), durable=True)
                )
        return plan

    async def _fire(self, events: Sequence[Event], now: float) -> list[Execution]:
        if events and self._on_events is not None:
            self._on_events(events)
        plan = self._plan(events, now)
        if plan.rows:
            self._journal.update((r.message_id, r) for r in plan.rows)
            self._journal_dirty = True
            # State and the rows it produced become durable together, before the outbox sees them.
            await self.save_snapshots(now, {e.machine.id for e in events if e.machine is not None})
        durable = await self._enqueue(plan.rows)
        executions = [e if durable else _not_durable(e) for e in plan.executions]
        for ex in executions:
            self._last_execution[ex.workflow] = ex
            log.info(
                "workflow_fired",
                workflow=ex.workflow,
                event_type=ex.event_type,
                event_id=ex.event_id,
                machine_id=ex.machine_id,
                deliveries=len(ex.message_ids),
                durable=ex.durable,
            )
        return executions

    async def _enqueue(self, rows: list[NewDelivery]) -> bool:
        """True when ``rows`` (and anything waiting before them) are durable in the outbox."""
        batch = self._pending + rows
        if not batch:
            return True
        self._pending = []
        try:
            await self._outbox.enqueue(batch)
        except (OutboxUnavailable, OutboxFull) as exc:
            # Keep the rows (in order, ahead of anything newer) and try again at the next tick.
            self._pending = batch + self._pending
            self._hold_back(exc)
            return False
        if self.refusing:
            log.warning("outbox_accepting_again", delivered_from_memory=len(batch))
            self.refusing = False
        for row in batch:
            self._journal.pop(row.message_id, None)
        self._journal_dirty = True
        if self._on_enqueued is not None:
            self._on_enqueued()
        return True

    def _hold_back(self, exc: Exception) -> None:
        """Rows wait in memory while the outbox refuses; beyond ``max_waiting`` the newest are
        rejected, counted and logged (the outbox's own ``when_full: reject``), never dropped silently."""
        excess = len(self._pending) - self.max_waiting
        if excess > 0:
            rejected, self._pending = self._pending[-excess:], self._pending[:-excess]
            for row in rejected:
                self._journal.pop(row.message_id, None)
            self.rejected += len(rejected)
            log.error(
                "deliveries_rejected",
                count=len(rejected),
                rejected_total=self.rejected,
                waiting=len(self._pending),
                first_message_id=rejected[0].message_id,
                reason=str(exc),
            )
        if not self.refusing:
            # Once per episode, not every tick: the condition is also on /readyz and STATUS=.
            log.error(
                "outbox_refused_rows_kept",
                waiting=len(self._pending),
                error=type(exc).__name__,
                reason=str(exc),
            )
            self.refusing = True

    # -- durability of derived state

    async def save_snapshots(self, now: float | None = None, machines: Iterable[str] | None = None) -> None:
        """Write the journal and the snapshots of changed machines (only ``machines`` when given: a
        firing saves the machines it fired for, the periodic save takes the rest) in one transaction.

        Concurrent callers share one write: each returns once a write that began after its call
        has finished (group commit, as in the outbox)."""
        if self._store is None:
            return
        if machines is None:
            self._save_all = True
        else:
            self._save_some.update(machines)
        self._save_asked += 1
        ticket = self._save_asked
        while self._save_done < ticket:
            if self._saving is not None:
                # A write is running; it may have started before this call. Everyone waiting wakes
                # at once when it ends, so the next write again takes all of them.
                await self._saving.wait()
                continue
            self._saving = asyncio.Event()
            try:
                await asyncio.sleep(0)  # callers ready in this same loop turn join this write
                covers = self._save_asked
                await self._save_now(self._store, now)
                self._save_done = covers
            finally:
                done, self._saving = self._saving, None
                done.set()

    async def _save_now(self, store: Store, now: float | None) -> None:
        if self._pending:
            # The outbox refuses rows and they wait in memory: keep the stored state behind them (a
            # restart derives them again) rather than rewrite an ever longer journal on every save.
            return
        save_all, self._save_all = self._save_all, False
        some, self._save_some = self._save_some, set()
        # Every poll marks its machine changed; writing all of them for each firing would make a
        # burst of firings rewrite every machine's snapshot again and again.
        wanted = self._dirty if save_all else self._dirty & some
        dirty = {mid for mid in wanted if mid not in self._unplanned}
        journal = self._journal_dirty
        if not dirty and not journal:
            if save_all:
                self._last_save = self._clock() if now is None else now
            return
        self._dirty -= dirty
        self._journal_dirty = False
        snapshots: dict[str, Mapping[str, Any]] = {
            mid: self.derivers[mid].snapshot() for mid in sorted(dirty) if mid in self.derivers
        }
        if journal:
            snapshots[JOURNAL_KEY] = {"rows": [journal_entry(r) for r in self._journal.values()]}
        try:
            await store.save_many(snapshots)
        except DeriveError as exc:
            # Derived state is a convenience across restarts; delivery goes on. Try again next time.
            self._dirty |= dirty
            self._journal_dirty = self._journal_dirty or journal
            self._save_all = self._save_all or save_all
            self._save_some |= some
            log.error("derived_state_not_saved", machines=len(snapshots), error=str(exc))
            return
        if save_all:
            # Only a full save resets the periodic timer, so firings cannot starve the other machines.
            self._last_save = self._clock() if now is None else now

    async def _save_schedules(self) -> None:
        if self._store is None:
            return
        for name, sched in self._schedules.items():
            if sched.last_run is not None:
                self._stored_runs[name] = sched.last_run
                self._stored_totals[name] = dict(sched.totals)
        state = {"last_run": dict(self._stored_runs), "totals": dict(self._stored_totals)}
        try:
            await self._store.save_many({SCHEDULE_STATE_KEY: state})
        except DeriveError as exc:
            log.error("schedule_state_not_saved", error=str(exc))

    async def close(self) -> None:
        """Last chance to enqueue rows waiting in memory and to save derived state."""
        if self._pending:
            await self._enqueue([])
        await self.save_snapshots()


def journal_entry(row: NewDelivery) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "endpoint": row.endpoint,
        "url": row.url,
        "workflow": row.workflow,
        "event_type": row.event_type,
        "machine_id": row.machine_id,
        "event_id": row.event_id,
        "body": base64.b64encode(row.body).decode("ascii"),
        "not_before": row.not_before,
    }


def journal_rows(saved: Any) -> list[NewDelivery]:
    """The stored journal; an entry that does not decode is logged and skipped (never a crash)."""
    items = saved.get("rows") if isinstance(saved, Mapping) else None
    rows: list[NewDelivery] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            machine = item["machine_id"]
            rows.append(
                NewDelivery(
                    message_id=str(item["message_id"]),
                    endpoint=str(item["endpoint"]),
                    url=str(item["url"]),
                    workflow=str(item["workflow"]),
                    event_type=str(item["event_type"]),
                    machine_id=None if machine is None else str(machine),
                    event_id=str(item["event_id"]),
                    body=base64.b64decode(item["body"], validate=True),
                    not_before=float(item["not_before"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("outbox_journal_entry_unreadable", key=JOURNAL_KEY, index=i, error=repr(exc))
    return rows


def _not_durable(ex: Execution) -> Execution:
    return Execution(
        ex.workflow, ex.event_id, ex.event_type, ex.machine_id, ex.at, ex.message_ids, durable=False
    )


def _downtime_id(downtime: Any) -> str | None:
    value = downtime.get("id") if isinstance(downtime, Mapping) else getattr(downtime, "id", None)
    return str(value) if value is not None else None
