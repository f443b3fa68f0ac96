"""Fault drills that need a hand on a real part's internals (no production code path does this)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.delivery.outbox import Outbox
from agent.state.store import StateStore


async def set_page_limit(target: Outbox | StateStore, pages: int) -> int:
    """``PRAGMA max_page_count`` on the outbox's writer connection (or the state store's): the
    disk-full drill (SQLite then fails every write that needs a new page with SQLITE_FULL).
    Returns the effective limit."""
    conn = target.writer.conn if isinstance(target, Outbox) else target._db
    rows = await conn.execute_fetchall(f"PRAGMA max_page_count = {int(pages)}")
    return int(next(iter(rows))[0])


@contextlib.contextmanager
def small_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A real filesystem of ``size`` (e.g. ``4m``) at ``mnt``, for the disk-full drills that SQLite's
    page limit cannot play (the WAL, -shm and the reserve file live outside it). Needs root."""
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
