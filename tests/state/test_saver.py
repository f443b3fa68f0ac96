"""The periodic save of derived state, with a real state store (SQLite file): it lets the loop run
while it snapshots thousands of machines, and never stores a machine ahead of the journal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agent.state.journal import JOURNAL_KEY, Journal
from agent.state.saver import SNAPSHOT_SLICE, StateSaver
from agent.state.store import StateStore
from tests.drills import set_page_limit

MACHINES = [f"m{i:04d}" for i in range(3 * SNAPSHOT_SLICE + 7)]


class Derived:
    """Each machine's state: a counter the 'polls' below advance."""

    def __init__(self) -> None:
        self.state = dict.fromkeys(MACHINES, 0)
        self.snapshotted: list[str] = []
        self.on_first: Any = None  # runs soon after the save took its first snapshot

    def snapshot(self, machine_id: str) -> dict[str, Any]:
        self.snapshotted.append(machine_id)
        if len(self.snapshotted) == 1 and self.on_first is not None:
            asyncio.get_running_loop().call_soon(self.on_first)
        return {"version": 1, "n": self.state[machine_id]}


async def saver_with_every_machine_changed(tmp_path: Path) -> tuple[StateSaver, Derived, StateStore]:
    store = await StateStore.open(tmp_path / "state.sqlite3")
    derived = Derived()
    saver = StateSaver(store, derived.snapshot, Journal(), lambda: False, lambda: 100.0, 5.0)
    for mid in MACHINES:
        saver.changed(mid)
    return saver, derived, store


async def test_a_save_of_many_machines_lets_other_work_run_between_slices(tmp_path: Path) -> None:
    saver, derived, store = await saver_with_every_machine_changed(tmp_path)
    seen_at: list[int] = []

    def other_work() -> None:  # a poll's callback, say
        seen_at.append(len(derived.snapshotted))
        if len(seen_at) < 10:
            asyncio.get_running_loop().call_soon(other_work)

    asyncio.get_running_loop().call_soon(other_work)
    await saver.save(100.0)
    saved = await store.load_all()
    await store.close()
    assert set(saved) == set(MACHINES)
    assert any(0 < n < len(MACHINES) for n in seen_at), f"nothing ran during the save: {seen_at}"


async def test_a_machine_whose_events_wait_to_be_planned_mid_save_stays_for_the_next(tmp_path: Path) -> None:
    saver, derived, store = await saver_with_every_machine_changed(tmp_path)
    late = MACHINES[-1]

    def poll_with_events() -> None:
        # A poll of the last machine derives events during the save: its live state is now ahead
        # of the journal until a task plans them.
        derived.state[late] = 1
        saver.unplanned(late, "batch-1")

    derived.on_first = poll_with_events
    await saver.save(100.0)
    first = await store.load_all()
    assert late not in first and len(first) == len(MACHINES) - 1
    saver.planned({late: "batch-1"})
    await saver.save(200.0)
    second = await store.load_all()
    await store.close()
    assert second[late] == {"version": 1, "n": 1}
    assert JOURNAL_KEY not in second  # nothing was journalled in this test
    assert json.dumps(second[MACHINES[0]]) == json.dumps({"version": 1, "n": 0})


class Clocked(Derived):
    """Snapshots carry ``last_now``, the deriver's clock floor, which moves at every poll."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0

    def snapshot(self, machine_id: str) -> dict[str, Any]:
        return {**super().snapshot(machine_id), "last_now": self.now}


async def test_a_machine_whose_state_changed_only_in_its_clock_floor_is_not_written_again(
    tmp_path: Path,
) -> None:
    store = await StateStore.open(tmp_path / "state.sqlite3")
    derived = Clocked()
    saver = StateSaver(store, derived.snapshot, Journal(), lambda: False, lambda: 100.0, 5.0)
    for mid in MACHINES:
        saver.changed(mid)
    await saver.save(100.0)
    derived.now = 105.0  # every machine polled since ...
    moved = MACHINES[3]
    derived.state[moved] = 7  # ... and one of them counted parts
    for mid in MACHINES:
        saver.changed(mid)
    await saver.save(105.0)
    saved = await store.load_all()
    await store.close()
    assert saved[moved] == {"version": 1, "n": 7, "last_now": 105.0}
    unchanged = [mid for mid in MACHINES if mid != moved]
    assert {saved[mid]["last_now"] for mid in unchanged} == {100.0}, "rewritten though unchanged"
    assert all(saved[mid]["n"] == 0 for mid in unchanged)


async def test_a_save_that_failed_is_written_in_full_by_the_next(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.sqlite3")
    derived = Clocked()
    saver = StateSaver(store, derived.snapshot, Journal(), lambda: False, lambda: 100.0, 5.0)
    await set_page_limit(store, 1)  # the disk-full drill: capped at the pages the file has now
    for mid in MACHINES:
        saver.changed(mid)
    await saver.save(100.0)
    assert await store.load_all() == {}
    await set_page_limit(store, 1_073_741_823)
    await saver.save(105.0)  # nothing changed since: what failed must still be written
    saved = await store.load_all()
    await store.close()
    assert set(saved) == set(MACHINES)
