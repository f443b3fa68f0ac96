"""Scheduled workflows as pure state over an injected ``now``: which one is due, the production
report event of a run, and the JSON-able state the shell stores.

Without any stored run, a schedule's first run waits for the next cron time (it never fires for the
past); with one, a run missed while the agent was down fires once at the next tick. The stored part
total of each machine at the last run makes "parts since the last run" exact across restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.events import SCHEDULED, Event, MachineRef
from agent.workflows.cron import next_fire, previous_fire
from agent.workflows.match import in_scope
from agent.workflows.plan import scheduled_event_id
from agent.workflows.spec import ScheduledTrigger, Workflow


class PartCounter(Protocol):
    """What a run reads of a machine's deriver."""

    @property
    def part_total(self) -> int: ...
    def parts_since(self, ts: float) -> int: ...


@dataclass
class Schedule:
    workflow: str
    cron: str
    timezone: str
    next_due: float
    last_run: float | None
    # Each machine's running part total at the last run: "since the last run" is then exact.
    totals: dict[str, int] = field(default_factory=dict)


class Schedules:
    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}
        self._stored_runs: dict[str, float] = {}
        self._stored_totals: dict[str, dict[str, int]] = {}

    def restore(self, state: Any, workflows: Iterable[Workflow], now: float) -> None:
        """Take the stored state (see ``state``) and plan from it; what was planned before is dropped."""
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
        self._by_name = {}
        self.plan(workflows, now)

    def plan(self, workflows: Iterable[Workflow], now: float) -> None:
        """(Re)plan after a (re)load; a workflow kept across a reload keeps its run history."""
        old = self._by_name
        self._by_name = {}
        for wf in workflows:
            trig = wf.trigger
            if not wf.enabled or not isinstance(trig, ScheduledTrigger):
                continue
            prev = old.get(wf.name)
            last = prev.last_run if prev is not None else self._stored_runs.get(wf.name)
            totals = dict(prev.totals) if prev is not None else dict(self._stored_totals.get(wf.name, {}))
            due = next_fire(trig.cron, trig.timezone, last if last is not None else now)
            self._by_name[wf.name] = Schedule(wf.name, trig.cron, trig.timezone, due, last, totals)

    def next_run(self, workflow: str) -> float | None:
        sched = self._by_name.get(workflow)
        return sched.next_due if sched is not None else None

    def run_due(
        self,
        now: float,
        workflows: Mapping[str, Workflow],
        machines: Mapping[str, MachineRef],
        counters: Mapping[str, PartCounter],
    ) -> tuple[list[Event], bool]:
        """The events of every run due at ``now``, each schedule advanced past ``now``; the flag says
        whether any schedule ran (its state must then be stored)."""
        events: list[Event] = []
        ran = False
        for sched in self._by_name.values():
            if sched.next_due > now:
                continue
            wf = workflows.get(sched.workflow)
            if wf is not None and isinstance(wf.trigger, ScheduledTrigger):
                events.append(_run_event(sched, wf, now, machines, counters))
                ran = True
            sched.last_run = sched.next_due
            sched.next_due = next_fire(sched.cron, sched.timezone, max(sched.next_due, now))
        return events, ran

    def state(self) -> dict[str, Any]:
        """What to store (JSON-able): the last run and part totals of each schedule ever run."""
        for name, sched in self._by_name.items():
            if sched.last_run is not None:
                self._stored_runs[name] = sched.last_run
                self._stored_totals[name] = dict(sched.totals)
        return {"last_run": dict(self._stored_runs), "totals": dict(self._stored_totals)}


def _run_event(
    sched: Schedule,
    wf: Workflow,
    now: float,
    machines: Mapping[str, MachineRef],
    counters: Mapping[str, PartCounter],
) -> Event:
    """The ``scheduled`` event of one run; updates the schedule's part totals."""
    fire_time = sched.next_due
    since = sched.last_run
    if since is None:
        since = previous_fire(sched.cron, sched.timezone, fire_time)
    report = []
    totals: dict[str, int] = {}
    for mid in sorted(machines):
        ref = machines[mid]
        counter = counters.get(mid)
        if counter is None or not in_scope(wf.scope, ref):
            continue
        total = counter.part_total
        base = sched.totals.get(mid)
        # The counter total is exact; minute buckets (parts_since) only serve a first run or a
        # machine added since the last one.
        parts = total - base if base is not None and total >= base else counter.parts_since(since)
        totals[mid] = total
        report.append({"machine": ref.as_dict(), "parts": parts})
    sched.totals = totals
    data = {
        "workflow": {"name": wf.name},
        "production": {"since": since, "until": now, "machines": report},
    }
    return Event(scheduled_event_id(wf.name, fire_time), SCHEDULED, fire_time, None, data)
