"""Saving derived state: changed machines' snapshots and the outbox journal, in one transaction.

A firing saves the machines it fired for (with the journal holding its rows) before the outbox sees
the rows; a periodic save takes every other changed machine. A machine whose derived events still
wait to be planned is not saved live: its snapshot would be ahead of the journal. Instead, when a
poll arrives while a batch of the machine's events waits, the state before that poll is kept for the
batch, and saved once the batch is planned; a firing thus always stores the state its rows came
from. Concurrent callers share one write (group commit, as in the outbox).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from agent.derive.errors import DeriveError
from agent.state.journal import JOURNAL_KEY, Journal

log = structlog.get_logger("agent.pipeline")

# Machines snapshotted and encoded per loop turn during a save (~10 ms of loop time).
SNAPSHOT_SLICE = 150


class Store(Protocol):
    """What the pipeline uses of ``agent.state.store.StateStore``."""

    async def save_many(
        self, snapshots: Mapping[str, Mapping[str, Any] | str], now: float | None = None
    ) -> None: ...
    async def load_all(self) -> Mapping[str, Any]: ...


class StateSaver:
    def __init__(
        self,
        store: Store | None,
        snapshot: Callable[[str], Mapping[str, Any] | None],
        journal: Journal,
        held: Callable[[], bool],
        clock: Callable[[], float],
        interval: float,
    ) -> None:
        self._store = store
        self._snapshot = snapshot
        self._journal = journal
        self._held = held
        self._clock = clock
        self._interval = interval
        self._dirty: set[str] = set()
        # Machines whose derived events a task has still to plan: their snapshot would be ahead of
        # the journal, so it waits.
        self._unplanned: Counter[str] = Counter()
        self._last_batch: dict[str, str] = {}  # machine -> key of its newest batch not yet planned
        # batch key -> the machine's state including that batch and nothing later that made events
        self._captured: dict[str, Mapping[str, Any]] = {}
        # machine -> the captured state of its last planned batch, waiting to be written
        self._planned_state: dict[str, Mapping[str, Any]] = {}
        # machine -> its snapshot as last written, without ``last_now``: see ``_encode_live``.
        self._written: dict[str, str] = {}
        self._saving: asyncio.Event | None = None
        self._save_all = False  # a waiting write must take every changed machine
        self._save_some: set[str] = set()  # ... or at least these
        self._save_asked = 0
        self._save_done = 0
        self._last_save = clock()

    def changed(self, machine_id: str) -> None:
        self._dirty.add(machine_id)

    def before_poll(self, machine_id: str) -> None:
        """A poll's samples are about to change the machine's state: if a batch of its events still
        waits to be planned, keep the state as it is now for that batch."""
        batch = self._last_batch.get(machine_id)
        if batch is not None:
            snap = self._snapshot(machine_id)
            if snap is not None:
                self._captured[batch] = snap

    def unplanned(self, machine_id: str, batch: str) -> None:
        """A batch of events derived from this machine waits to be planned (until ``planned``)."""
        self._unplanned[machine_id] += 1
        self._last_batch[machine_id] = batch

    def planned(self, batches: Mapping[str, str]) -> None:
        """These batches (machine -> batch key) are planned: their rows are in the journal."""
        for mid, batch in batches.items():
            self._unplanned[mid] -= 1
            if self._unplanned[mid] <= 0:
                del self._unplanned[mid]
                self._last_batch.pop(mid, None)
            snap = self._captured.pop(batch, None)
            if snap is not None:
                self._planned_state[mid] = snap

    def due(self, now: float) -> bool:
        """Something changed and the periodic interval has passed since the last full save."""
        return bool(self._dirty or self._journal.dirty) and now - self._last_save >= self._interval

    async def save(self, now: float | None = None, machines: Iterable[str] | None = None) -> None:
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

    async def _encode_live(
        self, machines: list[str], out: dict[str, Mapping[str, Any] | str], written: dict[str, str]
    ) -> set[str]:
        """Snapshot and encode these machines into ``out``, yielding to the loop between slices:
        at 2,000 machines doing it in one go blocked the loop for ~140 ms every 5 s. A machine whose
        events became unplanned while we yielded is left dirty for a later save (its live state is
        now ahead of the journal). Returns the machines taken.

        A snapshot equal to the one last written but for ``last_now`` (the clock floor, which moves
        at every poll) is not written again: the stored floor is still later than every time in
        the stored state. Rewriting every machine every 5 s was 2.8 MB of flash a save at 5,000
        machines, though a machine's state changes with its status, alarms and parts only.
        ``written`` gets the new texts; they replace ``self._written`` once the write succeeded."""
        taken: set[str] = set()
        for start in range(0, len(machines), SNAPSHOT_SLICE):
            if start:
                await asyncio.sleep(0)
            for mid in machines[start : start + SNAPSHOT_SLICE]:
                if mid in self._unplanned:
                    self._dirty.add(mid)
                    continue
                snap = self._snapshot(mid)
                if snap is not None:
                    rest = json.dumps(
                        {k: v for k, v in snap.items() if k != "last_now"}, separators=(",", ":")
                    )
                    if self._written.get(mid) != rest:
                        out[mid] = json.dumps(snap, separators=(",", ":"))
                        written[mid] = rest
                taken.add(mid)
        return taken

    async def _save_now(self, store: Store, now: float | None) -> None:
        if self._held():
            # The outbox refuses rows and they wait in memory: keep the stored state behind them (a
            # restart derives them again) rather than rewrite an ever longer journal on every save.
            return
        save_all, self._save_all = self._save_all, False
        some, self._save_some = self._save_some, set()
        # Every poll marks its machine changed; writing all of them for each firing would make a
        # burst of firings rewrite every machine's snapshot again and again.
        wanted = self._dirty if save_all else self._dirty & some
        dirty = {mid for mid in wanted if mid not in self._unplanned}
        # A machine still waiting for a batch to be planned: the state of its last planned batch.
        held = {mid: self._planned_state.pop(mid) for mid in wanted & self._planned_state.keys() - dirty}
        for mid in dirty:
            self._planned_state.pop(mid, None)  # the live state is newer
        journal = self._journal.dirty
        if not dirty and not journal and not held:
            if save_all:
                self._last_save = self._clock() if now is None else now
            return
        self._dirty -= dirty
        snapshots: dict[str, Mapping[str, Any] | str] = dict(held)
        written: dict[str, str] = {}
        taken = await self._encode_live(sorted(dirty), snapshots, written)
        # The journal last: every event in a snapshot taken above was planned by then, so its rows
        # are in this copy of the journal (crash consistency does not depend on the slicing).
        journal = self._journal.dirty
        self._journal.dirty = False
        if journal:
            snapshots[JOURNAL_KEY] = self._journal.snapshot()
        dirty = taken
        try:
            await store.save_many(snapshots)
        except DeriveError as exc:
            # Derived state is a convenience across restarts; delivery goes on. Try again next time.
            self._dirty |= dirty
            for mid, snap in held.items():
                self._planned_state.setdefault(mid, snap)
            self._journal.dirty = self._journal.dirty or journal
            self._save_all = self._save_all or save_all
            self._save_some |= some
            log.error("derived_state_not_saved", machines=len(snapshots), error=str(exc))
            return
        for mid in held:
            self._written.pop(mid, None)  # stored now: an older state than the live one
        self._written.update(written)
        if save_all:
            # Only a full save resets the periodic timer, so firings cannot starve the other machines.
            self._last_save = self._clock() if now is None else now
