"""The outbox on a really full filesystem: a small tmpfs mounted for the test (root only; skipped
elsewhere). Start-up with rows left in flight must not crash, and when space returns the outbox
writes again (checkpointing its WAL first) and puts the in-flight rows back without loss."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.delivery.outbox import Outbox, OutboxUnavailable
from agent.delivery.outbox.writer import RESERVE_SUFFIX
from agent.delivery.settings import OutboxConfig
from tests.drills import set_page_limit, small_tmpfs

from .conftest import delivery


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "fs", "4m") as mnt:
        yield mnt


def fill(folder: Path) -> Path:
    """Take every free byte of the filesystem."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    with filler.open("ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 512)
    return filler


async def test_start_with_a_full_disk_and_rows_in_flight_then_recover(tiny_fs: Path) -> None:
    path = tiny_fs / "outbox.sqlite3"
    box = await Outbox.open(path, OutboxConfig())
    await box.enqueue([delivery(i) for i in range(5)])
    await box.claim([1, 2])  # a dead process left these in flight
    await box.close()
    assert (tiny_fs / ("outbox.sqlite3" + RESERVE_SUFFIX)).exists()
    filler = fill(tiny_fs)

    # Used to raise "database or disk is full" (or "disk I/O error": no room for the -shm file).
    box = await Outbox.open(path, OutboxConfig())
    try:
        # The reserve made room to open and to put the in-flight rows back: the outbox's own state.
        assert not box.recovery_pending
        assert (await box.counts()).in_flight == 0
        assert not (tiny_fs / ("outbox.sqlite3" + RESERVE_SUFFIX)).exists()
        (tiny_fs / "again").mkdir()
        refill = fill(tiny_fs / "again")  # what the reserve gave is gone again
        with pytest.raises(OutboxUnavailable):
            for i in range(100, 400):  # until the last free page is gone
                await box.enqueue([delivery(i, body=b"x" * 4000)])
        held_back = (await box.counts()).pending

        filler.unlink()  # space returns
        refill.unlink()
        started = time.monotonic()
        await box.enqueue([delivery(1000)])
        recovery = time.monotonic() - started
        c = await box.counts()
        assert not box.recovery_pending and not box.stats.unavailable
        assert (c.in_flight, c.pending) == (0, held_back + 1)
        assert held_back == 5  # nothing accepted was lost
        assert (tiny_fs / ("outbox.sqlite3" + RESERVE_SUFFIX)).exists()  # the reserve is back
        wal = tiny_fs / "outbox.sqlite3-wal"
        assert not wal.exists() or wal.stat().st_size < 1024 * 1024
    finally:
        await box.close()
    print(f"disk-full recovery: first write after space returned took {recovery * 1000:.1f} ms")


async def test_in_flight_rows_that_could_not_be_put_back_at_open_are_put_back_by_the_next_write(
    tmp_path: Path,
) -> None:
    """What ``Outbox.open`` leaves when the disk is too full even for the recovery UPDATE: the rows
    stay in flight (not sent twice, not lost) and go back to pending in the first write that
    commits, in the same transaction."""
    box = await Outbox.open(tmp_path / "o.sqlite3", OutboxConfig())
    try:
        await box.enqueue([delivery(i) for i in range(3)])
        await box.claim([1, 2])
        box.writer.recovery_pending = True  # as open() sets it after "database or disk is full"
        await set_page_limit(box, 1)
        with pytest.raises(OutboxUnavailable):
            for i in range(100, 400):
                await box.enqueue([delivery(i, body=b"x" * 4000)])
        assert (await box.counts()).in_flight == 2 and box.recovery_pending
        await set_page_limit(box, 2**30)
        await box.enqueue([delivery(1000)])
        c = await box.counts()
        assert (c.in_flight, box.recovery_pending) == (0, False)
        assert c.pending >= 3 + 1  # the two put back, the one never claimed, the new one
    finally:
        await box.close()
