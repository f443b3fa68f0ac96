"""Watching the event loop: a callback that blocks it shows up as lag, and a garbage collection is
reported with its generation and duration."""

from __future__ import annotations

import asyncio
import gc
import time

from agent.loop_watch import FULL_AFTER, YOUNG_SWEEP_SECONDS, GcPauses, LoopLag, start_without_gc


async def test_a_callback_that_blocks_the_loop_is_measured_as_lag() -> None:
    seen: list[float] = []
    lag = LoopLag(seen.append, interval=0.01)
    task = asyncio.create_task(lag.run())
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 - the blocking call a bug would make on the loop
    await asyncio.sleep(0.05)
    task.cancel()
    assert seen and max(seen) >= 0.2 - 0.01  # the sleep the sampler asked for is not lag
    assert lag.worst == max(seen)


async def test_a_full_collection_is_reported_with_its_generation() -> None:
    seen: list[tuple[int, float]] = []
    pauses = GcPauses(lambda generation, seconds: seen.append((generation, seconds)))
    pauses.install()
    try:
        gc.collect()
    finally:
        pauses.remove()
        gc.unfreeze()
    assert any(g == 2 for g, _ in seen) and pauses.worst > 0
    gc.collect()
    assert len([g for g, _ in seen if g == 2]) == 1, "removed: no more reports"


async def test_edge_agent_run_starts_without_the_collector_and_the_runtime_turns_it_back_on() -> None:
    pauses = GcPauses()
    start_without_gc()
    try:
        assert not gc.isenabled()
        pauses.install()  # what Runtime.start does once READY is sent
        assert gc.isenabled()
    finally:
        pauses.remove()
        gc.unfreeze()
        gc.enable()


async def test_the_young_generation_is_collected_on_a_timer_not_only_by_allocation_count() -> None:
    # CPython counts old objects' deaths against young allocations: with thousands of machines the
    # young generation grew to 100,000 objects between collections. The sweep does not wait for it.
    seen: list[int] = []
    pauses = GcPauses(lambda generation, seconds: seen.append(generation))
    pauses.install()
    try:
        await asyncio.sleep(YOUNG_SWEEP_SECONDS * 16)
    finally:
        pauses.remove()
        gc.unfreeze()
    assert seen.count(0) >= 4, seen  # an idle loop allocates far too little to trigger one itself


async def test_full_collections_wait_for_more_middle_ones_while_the_runtime_runs() -> None:
    before = gc.get_threshold()
    pauses = GcPauses()
    try:
        pauses.install()
        assert gc.get_threshold() == (before[0], before[1], FULL_AFTER)
    finally:
        pauses.remove()
        gc.unfreeze()
    assert gc.get_threshold() == before, "CPython's thresholds are back once the runtime stopped"
