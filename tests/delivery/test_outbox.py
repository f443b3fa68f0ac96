"""The outbox against real SQLite files: durability, group commit, limits, disk full, damage."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent.delivery.outbox import (
    SCHEMA_VERSION,
    AttemptRecord,
    Outbox,
    OutboxFull,
    OutboxUnavailable,
    checksum,
)
from agent.delivery.retry import Decision
from agent.delivery.settings import OutboxConfig, WhenFull
from tests.drills import set_page_limit

from .conftest import FakeClock, delivery


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


async def test_schema_is_versioned_wal_and_full_sync(outbox: Outbox) -> None:
    with raw(outbox.path) as c:
        assert SCHEMA_VERSION == 3
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"deliveries_state_updated", "deliveries_active_created"} <= indexes
    rows = await outbox._w.execute_fetchall("PRAGMA synchronous")
    assert next(iter(rows))[0] == 2  # FULL


async def test_the_writer_is_the_only_connection_that_can_write(outbox: Outbox) -> None:
    await outbox.enqueue([delivery(1)])
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await outbox.reader.execute("DELETE FROM deliveries")
    assert (await outbox.counts()).pending == 1


async def test_enqueue_returns_when_rows_are_visible_to_another_connection(outbox: Outbox) -> None:
    await outbox.enqueue([delivery(1), delivery(2)])
    with raw(outbox.path) as c:
        got = c.execute("SELECT message_id, state, body FROM deliveries ORDER BY id").fetchall()
    assert got == [("msg_000001", "pending", b'{"seq": 1}'), ("msg_000002", "pending", b'{"seq": 2}')]


async def test_a_message_id_is_accepted_once(outbox: Outbox) -> None:
    # A scheduled run re-enqueued after a crash carries the same deterministic id: one row, one send.
    await outbox.enqueue([delivery(1)])
    await outbox.enqueue([delivery(1), delivery(2)])
    with raw(outbox.path) as c:
        got = c.execute("SELECT message_id FROM deliveries ORDER BY id").fetchall()
    assert got == [("msg_000001",), ("msg_000002",)]


async def test_version_1_outbox_is_migrated_keeping_the_first_of_duplicate_messages(
    tmp_path: Path, clock: FakeClock
) -> None:
    from agent.delivery.outbox import schema as outbox_module

    path = tmp_path / "v1.sqlite3"
    with raw(path) as c:
        c.executescript(outbox_module.MIGRATIONS[0])
        c.execute("PRAGMA user_version = 1")
        for body in (b"first", b"second"):
            c.execute(
                "INSERT INTO deliveries (message_id, endpoint, url, workflow, event_type, event_id, body,"
                " checksum, created_at, age_base, due_at, state, updated_at)"
                " VALUES ('msg_dup', 'wf#0', 'http://127.0.0.1:1/', 'wf', 'scheduled', 'e1', ?, ?, 0, 0, 0,"
                " 'pending', 0)",
                (body, checksum(body)),
            )
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.close()
    with raw(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("SELECT body FROM deliveries").fetchall() == [(b"first",)]


async def test_version_2_outbox_gains_the_maintenance_indexes(tmp_path: Path, clock: FakeClock) -> None:
    from agent.delivery.outbox import schema as outbox_module

    path = tmp_path / "v2.sqlite3"
    with raw(path) as c:
        c.executescript(outbox_module.MIGRATIONS[0] + ";" + outbox_module.MIGRATIONS[1])
        c.execute("PRAGMA user_version = 2")
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.enqueue([delivery(1)])
    assert (await box.counts()).oldest_pending_age == 0
    await box.close()
    with raw(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 3

        def plan(sql: str) -> str:
            return " ".join(r[3] for r in c.execute("EXPLAIN QUERY PLAN " + sql))

        # What prune and counts ask must be answered from an index, not by reading every row.
        prune_plan = plan(
            "SELECT id FROM deliveries WHERE state IN ('delivered', 'cancelled') AND updated_at < 5 LIMIT 9"
        )
        assert "deliveries_state_updated (state=? AND updated_at<?)" in prune_plan
        assert "USING COVERING INDEX deliveries_state_updated" in plan(
            "SELECT state, count(*) FROM deliveries GROUP BY state"
        )
        assert "deliveries_active_created" in plan(
            "SELECT created_at FROM deliveries INDEXED BY deliveries_active_created "
            "WHERE state IN ('pending', 'in_flight') ORDER BY created_at LIMIT 1"
        )


async def test_concurrent_enqueues_share_transactions(outbox: Outbox) -> None:
    before = outbox.stats.committed_batches
    await asyncio.gather(*(outbox.enqueue([delivery(i)]) for i in range(200)))
    commits = outbox.stats.committed_batches - before
    assert outbox.stats.enqueued == 200
    assert 1 <= commits < 20  # 200 callers, a handful of fsyncs
    assert (await outbox.counts()).pending == 200


async def test_not_before_becomes_the_first_due_time(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(1, not_before=clock.now + 600)])
    early = await outbox.candidates("wf#0", clock.now, 10, fifo=False)
    assert early.rows == [] and early.next_due == clock.now + 600
    late = await outbox.candidates("wf#0", clock.now + 600, 10, fifo=False)
    assert [r.message_id for r in late.rows] == ["msg_000001"]


async def test_in_flight_rows_return_to_pending_on_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.enqueue([delivery(1), delivery(2)])
    await box.claim([1])
    assert (await box.counts()).in_flight == 1
    await box.close()
    cli = await Outbox.open(path, OutboxConfig(), clock=clock, recover=False)
    assert (await cli.counts()).in_flight == 1  # the CLI must not touch a running agent's rows
    await cli.close()
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    counts = await box.counts()
    assert (counts.pending, counts.in_flight) == (2, 0)
    await box.close()


async def test_record_keeps_attempt_history_with_response_prefix(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(1)])
    await outbox.claim([1])
    rec = AttemptRecord(
        1,
        clock.now,
        500,
        0.012,
        "http_500",
        "HTTP 500",
        b"x" * 5000,
        Decision("pending", clock.now + 5, 1, 0),
    )
    await outbox.record([rec])
    detail = await outbox.get(1)
    assert detail is not None
    assert detail.summary.state == "pending" and detail.summary.attempts == 1
    assert detail.summary.last_error == "HTTP 500" and detail.summary.last_status == 500
    (att,) = detail.attempts
    assert (att.status, att.error_class, len(att.response)) == (500, "http_500", 1024)
    assert detail.body == b'{"seq": 1}'


async def test_list_pagination_filters_and_executions(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(i, endpoint_key="a#0") for i in range(5)])
    clock.advance(100)
    await outbox.enqueue([delivery(i, endpoint_key="b#0", event_id="evt_shared") for i in range(5, 8)])
    page = await outbox.list(limit=3)
    assert [d.id for d in page.items] == [8, 7, 6] and page.next_cursor == 6
    page2 = await outbox.list(limit=3, cursor=page.next_cursor)
    assert [d.id for d in page2.items] == [5, 4, 3]
    assert [d.id for d in (await outbox.list(workflow="a")).items] == [5, 4, 3, 2, 1]
    assert len((await outbox.list(since=clock.now - 50)).items) == 3
    ex = await outbox.executions(limit=2)
    assert ex.items[0].event_id == "evt_shared" and ex.items[0].deliveries == 3
    assert ex.items[0].states == {"pending": 3}
    with pytest.raises(ValueError, match="unknown state"):
        await outbox.list(state="lost")


async def test_retry_cancel_purge(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(i) for i in range(4)])
    await outbox.claim([1, 2])
    dead = Decision("dead", clock.now, 8, 0)
    ok = Decision("delivered", clock.now, 1, 0)
    await outbox.record([AttemptRecord(1, clock.now, 500, 0.1, "http_500", "HTTP 500", b"", dead)])
    await outbox.record([AttemptRecord(2, clock.now, 200, 0.1, None, None, b"ok", ok)])
    c = await outbox.counts()
    assert (c.pending, c.dead, c.delivered) == (2, 1, 1)
    assert await outbox.retry_dead() == 1
    detail = await outbox.get(1)
    assert detail is not None and detail.summary.state == "pending" and detail.summary.attempts == 0
    assert await outbox.cancel(3)
    assert not await outbox.cancel(2)  # delivered stays delivered
    assert await outbox.purge() == 2  # delivered #2 and cancelled #3
    assert await outbox.get(2) is None
    assert (await outbox.counts()).pending == 2
    assert await outbox.purge(("pending",), endpoint="wf#0") == 2
    with pytest.raises(ValueError):
        await outbox.purge(("in_flight",))


async def test_row_limit_rejects_and_never_drops_pending(tmp_path: Path, clock: FakeClock) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig(max_rows=100), clock=clock)
    await box.enqueue([delivery(i) for i in range(100)])
    with pytest.raises(OutboxFull, match="full"):
        await box.enqueue([delivery(100)])
    assert box.stats.rejected_full == 1
    assert (await box.counts()).pending == 100
    await box.close()


@pytest.mark.parametrize("when_full", ["reject", "drop_delivered"])
async def test_history_makes_room_before_anything_is_refused(
    tmp_path: Path, clock: FakeClock, when_full: WhenFull
) -> None:
    box = await Outbox.open(
        tmp_path / "o.sqlite3", OutboxConfig(max_rows=100, when_full=when_full), clock=clock
    )
    await box.enqueue([delivery(i) for i in range(100)])
    await box.claim(list(range(1, 51)))
    ok = Decision("delivered", clock.now, 1, 0)
    await box.record([AttemptRecord(i, clock.now, 200, 0.01, None, None, b"", ok) for i in range(1, 51)])
    await box.enqueue([delivery(i) for i in range(100, 120)])
    c = await box.counts()
    assert c.pending == 70 and c.delivered < 50
    with raw(box.path) as conn:
        # Oldest history went first; no pending row was touched.
        assert conn.execute("SELECT min(id) FROM deliveries WHERE state='delivered'").fetchone()[0] > 1
        assert conn.execute("SELECT count(*) FROM attempts WHERE delivery_id <= 10").fetchone()[0] == 0
    await box.close()


async def test_many_fill_cycles_never_refuse_while_history_can_go(tmp_path: Path, clock: FakeClock) -> None:
    """Issue 10: with a small outbox and the default when_full: reject, delivered history used to
    fill it and refuse every new webhook. Forty cycles of 60 rows through a 100-row, 256 KiB outbox."""
    config = OutboxConfig(max_rows=100, max_size=256 * 1024)
    box = await Outbox.open(tmp_path / "o.sqlite3", config, clock=clock)
    ok = Decision("delivered", clock.now, 1, 0)
    try:
        for cycle in range(40):
            batch = [delivery(cycle * 100 + i, body=b"b" * 500) for i in range(60)]
            await box.enqueue(batch)  # never OutboxFull: history goes first
            ids = [r.id for r in (await box.list(state="pending", limit=200)).items]
            claimed = await box.claim(ids)
            await box.record([AttemptRecord(i, clock.now, 200, 0.01, None, None, b"", ok) for i in claimed])
            clock.advance(1)
            c = await box.counts()
            assert c.pending == 0 and c.delivered <= config.max_rows
        assert box.stats.rejected_full == 0
        # Undelivered rows alone filling it: now when_full refuses, and nothing pending is touched.
        await box.enqueue([delivery(10_000 + i) for i in range(60)])
        with pytest.raises(OutboxFull):
            await box.enqueue([delivery(20_000 + i) for i in range(60)])
        assert (await box.counts()).pending == 60
    finally:
        await box.close()


async def test_prune_removes_old_delivered_history(tmp_path: Path, clock: FakeClock) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig(keep_delivered=3600), clock=clock)
    await box.enqueue([delivery(1), delivery(2)])
    await box.claim([1])
    await box.record(
        [AttemptRecord(1, clock.now, 200, 0.01, None, None, b"", Decision("delivered", clock.now, 1, 0))]
    )
    assert await box.prune() == 0
    clock.advance(3601)
    assert await box.prune() == 1
    c = await box.counts()
    assert (c.delivered, c.pending) == (0, 1)
    await box.close()


async def test_prune_deletes_in_batches_and_lets_enqueues_in_between(
    tmp_path: Path, clock: FakeClock
) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig(keep_delivered=3600), clock=clock)
    await box.enqueue([delivery(i) for i in range(1, 31)])
    done = list(range(1, 26))
    await box.claim(done)
    await box.record(
        [
            AttemptRecord(i, clock.now, 200, 0.01, None, None, b"", Decision("delivered", clock.now, 1, 0))
            for i in done
        ]
    )
    clock.advance(3601)
    before = box.stats.committed_batches
    pruning = asyncio.create_task(box.prune(batch=2))
    await asyncio.sleep(0)  # prune's first batch is queued ahead of the enqueue
    await box.enqueue([delivery(99)])
    assert not pruning.done()  # the enqueue committed between prune batches, not after all of them
    assert await pruning == 25
    assert box.stats.committed_batches - before >= 13  # 25 rows, 2 per transaction
    c = await box.counts()
    assert (c.delivered, c.pending) == (0, 6)
    with raw(box.path) as conn:
        assert conn.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
    await box.close()


async def test_disk_full_is_unavailable_then_recovers_without_loss(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.enqueue([delivery(i) for i in range(10)])
    with raw(path) as c:
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    assert await set_page_limit(box, pages) == pages
    big = [delivery(i, body=b'{"seq": %d, "pad": "%s"}' % (i, b"x" * 4000)) for i in range(10, 60)]
    with pytest.raises(OutboxUnavailable, match="full"):
        await box.enqueue(big)
    assert box.stats.unavailable and box.stats.write_errors == 1
    # Reads keep working and nothing accepted is lost or half-written.
    c = await box.counts()
    assert c.pending == 10
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    await set_page_limit(box, 1_000_000)
    await box.enqueue(big)  # the caller kept the items and retries
    assert not box.stats.unavailable
    assert (await box.counts()).pending == 60
    await box.close()
    with raw(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 60


async def test_garbage_rows_are_skipped_and_reported(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(1), delivery(2), delivery(3)])
    with raw(outbox.path) as c:
        c.execute("UPDATE deliveries SET body = 'not bytes' WHERE id = 1")
        c.execute("UPDATE deliveries SET checksum = 12345 WHERE id = 2")
    found = await outbox.candidates("wf#0", clock.now, 10, fifo=False)
    assert [r.id for r in found.rows] == [3]
    assert sorted(i for i, _ in found.corrupt) == [1, 2]
    assert outbox.stats.corrupt_rows == 2
    await outbox.mark_corrupt(found.corrupt)
    detail = await outbox.get(2)
    assert detail is not None and detail.summary.state == "dead"
    assert detail.summary.last_error == "corrupt row: body checksum mismatch"
    # retry --dead does not resurrect damaged rows
    assert await outbox.retry_dead() == 0


async def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not sqlite at all" * 100)
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.enqueue([delivery(1)])
    assert (await box.counts()).pending == 1
    await box.close()
    aside = [
        p.name for p in await asyncio.to_thread(lambda: list(tmp_path.iterdir())) if ".corrupt-" in p.name
    ]
    assert aside == [f"outbox.sqlite3.corrupt-{int(clock.now)}"]


async def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    with raw(path) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="newer than this edge-agent"):
        await Outbox.open(path, OutboxConfig(), clock=clock)


async def test_endpoint_disable_state_persists(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite3"
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.disable_endpoint("http://127.0.0.1:1/x", "410 Gone")
    await box.close()
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    assert await box.disabled_endpoints() == {"http://127.0.0.1:1/x": "410 Gone"}
    assert await box.enable_endpoint("http://127.0.0.1:1/x")
    assert not await box.enable_endpoint("http://127.0.0.1:1/x")
    await box.close()


async def test_claim_skips_rows_cancelled_meanwhile(outbox: Outbox) -> None:
    await outbox.enqueue([delivery(1), delivery(2)])
    assert await outbox.cancel(2)
    assert await outbox.claim([1, 2]) == {1}
    assert (await outbox.counts()).in_flight == 1


async def test_consecutive_outcomes_share_one_commit_and_are_durable_only_together(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "o.sqlite3"
    box = await Outbox.open(path, OutboxConfig(), clock=clock)
    await box.enqueue([delivery(i) for i in range(1, 51)])
    await box.claim(list(range(1, 51)))

    def answered(i: int) -> AttemptRecord:
        # A 1 KiB response per attempt: the batch needs new pages, which the full disk refuses.
        return AttemptRecord(
            i, clock.now, 200, 0.001, None, None, b"r" * 1024, Decision("delivered", 0, 1, 0)
        )

    with raw(path) as c:
        pages = c.execute("PRAGMA page_count").fetchone()[0]
    await set_page_limit(box, pages)
    # Fifty receivers' answers, submitted one by one as the dispatcher does, before the writer runs.
    futures = [box.queue.submit_record([answered(i)]) for i in range(1, 51)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, OutboxUnavailable) for r in results)
    with raw(path) as c:
        # None of them is durable: every row is still in flight (a restart re-sends all fifty).
        assert c.execute("SELECT count(*) FROM deliveries WHERE state = 'in_flight'").fetchone()[0] == 50
        assert c.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0

    await set_page_limit(box, 1_000_000)
    before = box.stats.committed_batches
    await asyncio.gather(*(box.queue.submit_record([answered(i)]) for i in range(1, 51)))
    assert box.stats.committed_batches == before + 1  # one commit (one fsync) for the fifty
    assert (await box.counts()).delivered == 50
    await box.close()


async def _claim_steps(box: Outbox, ids: list[int]) -> int:
    """SQLite virtual-machine steps the writer spends on one claim (BEGIN and COMMIT included)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0  # go on

    await box._w.set_progress_handler(count, 1)
    try:
        assert await box.claim(ids) == set(ids)
    finally:
        await box._w.set_progress_handler(None, 1)  # type: ignore[arg-type]
    return steps


async def test_a_claim_costs_the_same_whatever_the_backlog(outbox: Outbox) -> None:
    # The claim runs in the writer's commit that every batch of a FIFO endpoint waits for. Looked up
    # through the index on (state, updated_at) it visited every pending row: after an outage with
    # 200,000 rows waiting, the backlog drained at 374/s instead of 2,098/s (bench/outbox.py).
    await outbox.enqueue([delivery(i) for i in range(1, 101)])
    small = await _claim_steps(outbox, list(range(1, 33)))
    await outbox.enqueue([delivery(i) for i in range(101, 10_101)])
    large = await _claim_steps(outbox, list(range(33, 65)))
    assert large < 2 * small, (small, large)  # 100x the backlog, not 100x the work


async def test_a_lazy_outcome_waits_for_company_and_commits_with_it(outbox: Outbox, clock: FakeClock) -> None:
    await outbox.enqueue([delivery(i) for i in range(1, 4)])
    await outbox.claim([1, 2, 3])

    def answered(i: int) -> AttemptRecord:
        return AttemptRecord(i, clock.now, 200, 0.001, None, None, b"ok", Decision("delivered", 0, 1, 0))

    before = outbox.stats.committed_batches
    first = outbox.queue.submit_record([answered(1)], lazy=True)
    second = outbox.queue.submit_record([answered(2)], lazy=True)
    await asyncio.sleep(0)
    assert not first.done()  # waiting for company, not committed alone
    await outbox.enqueue([delivery(4)])  # an operation whose caller waits ends the wait at once
    assert first.done() and second.done()
    assert outbox.stats.committed_batches == before + 1  # one commit (one fsync) for the three
    assert (await outbox.counts()).delivered == 2

    # Alone, it does not wait for ever: no other write comes, it still becomes durable.
    await asyncio.wait_for(outbox.queue.submit_record([answered(3)], lazy=True), timeout=10)
    with raw(outbox.path) as c:
        assert c.execute("SELECT state FROM deliveries WHERE id = 3").fetchone() == ("delivered",)
