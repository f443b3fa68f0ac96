"""One agent per state directory: the lock is the kernel's (flock), so it names a live holder and
disappears with it, however it died."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.state_lock import LOCK_FILE, StateDirInUse, lock_state_dir, prepare_state_dir

HOLDER = """
import sys, time
from pathlib import Path
from agent.state_lock import lock_state_dir
lock = lock_state_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def hold_in_other_process(state_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_holder_is_refused_naming_the_first_and_kill_9_frees_it(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path / "state")
    proc = hold_in_other_process(tmp_path / "state")
    try:
        with pytest.raises(StateDirInUse) as err:
            lock_state_dir(tmp_path / "state")
        assert f"pid {proc.pid}" in str(err.value)
        assert str(tmp_path / "state") in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The lock file is still there, but the lock died with its holder.
    assert (tmp_path / "state" / LOCK_FILE).exists()
    lock = lock_state_dir(tmp_path / "state")
    assert lock.held
    assert (tmp_path / "state" / LOCK_FILE).read_text().strip() == str(os.getpid())
    lock.release()


def test_same_process_cannot_take_it_twice_until_released(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path)
    first = lock_state_dir(tmp_path)
    with pytest.raises(StateDirInUse):
        lock_state_dir(tmp_path)
    first.release()
    lock_state_dir(tmp_path).release()


def test_state_dir_is_created_private_and_an_open_one_is_tightened(tmp_path: Path) -> None:
    fresh = tmp_path / "a" / "state"
    prepare_state_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    old.chmod(0o755)
    prepare_state_dir(old)
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
