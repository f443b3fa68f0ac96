"""kill -9 in the middle of a burst loses no accepted delivery; duplicates carry the same webhook-id."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from agent.delivery.outbox import NewDelivery, Outbox
from agent.delivery.settings import OutboxConfig
from agent.receiver import start_receiver

WORKER = Path(__file__).with_name("crash_worker.py")
ROOT = Path(__file__).resolve().parents[2]


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), *args, stdout=asyncio.subprocess.PIPE, env=env
    )


@pytest.mark.slow
async def test_sigkill_mid_burst_then_restart_delivers_every_accepted(tmp_path: Path, secret: str) -> None:
    rec = await start_receiver(secret)
    db = tmp_path / "outbox.sqlite3"
    accepted: list[str] = []
    try:
        proc = await spawn("burst", str(db), rec.url, secret, "3000")
        assert proc.stdout is not None

        async def read_until_killed() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                accepted.append(line.decode().split()[1])

        reader = asyncio.create_task(read_until_killed())
        await rec.wait_for(300, within=60)  # deliveries are flowing while more are enqueued
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await asyncio.wait_for(reader, 10)
        at_kill = len(rec.received)
        assert at_kill > 0 and 0 < len(accepted) < 3000  # killed mid-burst, mid-delivery

        drain = await spawn("drain", str(db), rec.url, secret, "0")
        out, _ = await asyncio.wait_for(drain.communicate(), 120)
        assert drain.returncode == 0 and out.decode().strip() == "drained"
    finally:
        await rec.stop()

    by_seq: dict[int, set[str]] = defaultdict(set)
    for r in rec.received:
        assert r.valid, r.error
        Webhook(secret).verify(r.body, r.headers)  # the official verifier agrees
        by_seq[r.json()["seq"]].add(r.headers["webhook-id"])  # type: ignore[index]
    received_ids = {i for ids in by_seq.values() for i in ids}
    missing = set(accepted) - received_ids
    assert not missing, f"{len(missing)} accepted deliveries never arrived"
    # A duplicate is only ever a resend of the same message: one webhook-id per payload.
    assert all(len(ids) == 1 for ids in by_seq.values())
    assert len(rec.received) >= len(accepted)
    print(f"accepted {len(accepted)}, received at kill {at_kill}, total {len(rec.received)}")


@pytest.mark.slow
async def test_sigkill_after_answers_before_their_commit_resends_them_in_order(
    tmp_path: Path, secret: str
) -> None:
    """A FIFO endpoint sends the next row while the last answer is being committed. Kill -9 while
    answers are not yet durable (another connection holds SQLite's write lock, as a backup tool or
    a stuck CLI could): those rows were never marked delivered, so the restart sends them again,
    in order, before anything newer; nothing answered is lost and nothing later overtakes."""
    rec = await start_receiver(secret)
    db = tmp_path / "outbox.sqlite3"
    box = await Outbox.open(db, OutboxConfig())
    await box.enqueue(
        [
            NewDelivery(
                f"msg_{i:06d}", "burst#0", rec.url, "burst", "part_count", "m", f"e{i}", b'{"seq": %d}' % i, 0
            )
            for i in range(100)
        ]
    )
    await box.close()
    lock = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        proc = await spawn("fifo", str(db), rec.url, secret, "0")
        await rec.wait_for(1, within=60)
        # From here on the worker's outcomes cannot be committed; it keeps sending what it claimed.
        await asyncio.to_thread(lock.execute, "BEGIN IMMEDIATE")
        at_lock = len(rec.received)
        # The worker claimed a batch of rows in one commit before: it keeps sending them.
        await rec.wait_for(at_lock + 3, within=60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        lock.execute("ROLLBACK")
        answered = [r.json()["seq"] for r in rec.received]  # type: ignore[index]
        assert answered == list(range(len(answered)))
        delivered_on_disk = {
            int(row[0][4:])
            for row in lock.execute("SELECT message_id FROM deliveries WHERE state = 'delivered'")
        }
        # Durable only in order: what is delivered on disk is a prefix of what was answered, and
        # nothing answered while the commits were blocked became durable: the kill landed between
        # answers and their commit.
        assert delivered_on_disk == set(range(len(delivered_on_disk)))
        assert len(delivered_on_disk) <= at_lock
        not_durable = answered[len(delivered_on_disk) :]
        assert len(not_durable) >= 3

        drain = await spawn("fifo", str(db), rec.url, secret, "0")
        assert drain.stdout is not None
        out, _ = await asyncio.wait_for(drain.communicate(), 120)
        assert drain.returncode == 0 and out.decode().strip() == "drained"
    finally:
        lock.close()
        await rec.stop()

    seqs = [r.json()["seq"] for r in rec.received]  # type: ignore[index]
    assert all(r.valid for r in rec.received)
    after = seqs[len(answered) :]
    # The restart begins with the first answer that was not durable and goes on in order.
    assert after == list(range(not_durable[0], 100))
    assert sorted(set(seqs)) == list(range(100))
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0] == 100
