"""The collectors' shared waits (agent/wakeups.py): like ``asyncio.sleep``, never early, in order,
cancellable, with one timer for all of them."""

from __future__ import annotations

import asyncio

import pytest

from agent.wakeups import RESOLUTION, Wakeups


async def test_a_wait_never_ends_before_its_time() -> None:
    wakeups = Wakeups()
    loop = asyncio.get_running_loop()
    for delay in (0.0, 0.001, 0.013, 0.05):
        asked = loop.time()
        await wakeups.after(delay)
        assert loop.time() >= asked + delay


async def test_waits_end_in_the_order_of_their_times_whatever_order_they_were_asked_in() -> None:
    wakeups = Wakeups()
    ended: list[float] = []
    delays = [0.09, 0.01, 0.05, 0.03, 0.07, 0.011]

    async def wait(delay: float) -> None:
        await wakeups.after(delay)
        ended.append(delay)

    await asyncio.gather(*(wait(d) for d in delays))
    # Waits within one slot may end together; slots end in time order.
    assert [round(d / RESOLUTION) for d in ended] == sorted(round(d / RESOLUTION) for d in delays)
    assert wakeups.waiting == 0


async def test_a_cancelled_wait_is_skipped_and_the_others_still_end() -> None:
    wakeups = Wakeups()
    first = asyncio.create_task(asyncio.wait_for(wakeups.after(0.02), timeout=5))
    second = asyncio.ensure_future(wakeups.after(0.02))
    third = asyncio.ensure_future(wakeups.after(0.04))
    await asyncio.sleep(0)
    second.cancel()
    await first
    await third
    assert second.cancelled()
    assert wakeups.waiting == 0


async def test_a_sooner_wait_rearms_the_timer_and_a_later_one_does_not_delay_it() -> None:
    wakeups = Wakeups()
    late = wakeups.after(0.2)
    await wakeups.after(0.01)
    assert not late.done()  # had only the 0.2 s timer been armed, both would have ended together
    await late


async def test_close_cancels_every_wait() -> None:
    wakeups = Wakeups()
    waits = [wakeups.after(d) for d in (0.5, 0.5, 1.0)]
    wakeups.close()
    assert all(w.cancelled() for w in waits)
    assert wakeups.waiting == 0
    with pytest.raises(asyncio.CancelledError):
        await waits[0]


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="resolution"):
        Wakeups(0)
