"""Rows held in memory while the outbox refuses them reach it in the order they were made, even when
two failing writes overlap (FIFO per endpoint is a promise). A real outbox, full by SQLite's own
``max_page_count``."""

from __future__ import annotations

import asyncio

from agent.delivery.outbox import Outbox, OutboxUnavailable
from agent.holdback import HoldBack
from agent.state.journal import Journal
from tests.drills import set_page_limit

from .conftest import delivery


async def test_overlapping_refused_enqueues_keep_fifo(outbox: Outbox) -> None:
    hold = HoldBack(outbox, Journal())
    await set_page_limit(outbox, 1)
    for i in range(1000, 2000):  # use up the free space left in the file's pages
        try:
            await outbox.enqueue([delivery(i, body=b"x" * 2000)])
        except OutboxUnavailable:
            break
    else:
        raise AssertionError("the page limit never made the outbox refuse")
    filled = (await outbox.counts()).pending
    batches = [[delivery(10 * b + i, body=b"y" * 2000) for i in range(5)] for b in range(4)]
    # Started together: every write is refused while the earlier ones are still in flight.
    results = await asyncio.gather(*(hold.enqueue(list(b)) for b in batches))
    assert results == [False] * 4
    expected = [r.message_id for b in batches for r in b]
    assert [r.message_id for r in hold.waiting] == expected
    await set_page_limit(outbox, 2**30)
    assert await hold.enqueue([]) is True
    stored = await outbox.list(limit=200)
    ours = [r for r in sorted(stored.items, key=lambda r: r.id) if r.message_id in set(expected)]
    assert [r.message_id for r in ours] == expected
    assert (await outbox.counts()).pending == filled + len(expected)
