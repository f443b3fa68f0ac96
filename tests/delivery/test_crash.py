"""kill -9 in the middle of a burst loses no accepted delivery; duplicates carry the same webhook-id."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

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
