"""One agent per state directory: an exclusive ``flock`` on ``<state_dir>/agent.lock``.

Two agents on the same outbox would both deliver every row and race on the derived state. The lock
is held by the open file descriptor, so the kernel releases it when the holder exits, however it
exits (kill -9 included): a stale lock file never blocks a restart. The file records the holder's pid
so the refusal can name the other process.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LOCK_FILE = "agent.lock"
# Bodies in the outbox hold operator names and notes; nobody but the service user reads them.
STATE_DIR_MODE = 0o700


class StateDirInUse(RuntimeError):
    """Another process holds the state directory's lock."""


class StateDirLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def prepare_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` 0700; tighten an existing one we own that others can read."""
    state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    st = state_dir.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(state_dir, STATE_DIR_MODE)
        log.warning(
            "state_dir_tightened",
            path=str(state_dir),
            was=oct(stat.S_IMODE(st.st_mode)),
            now=oct(STATE_DIR_MODE),
        )


def lock_state_dir(state_dir: Path) -> StateDirLock:
    """Take the state directory for this process, or raise ``StateDirInUse`` naming the holder."""
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(os.pread(fd, 64, 0))
        os.close(fd)
        raise StateDirInUse(
            f"state directory {state_dir} is in use by another edge-agent ({holder}); "
            "stop it first, or give this one its own state_dir"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateDirLock(path, fd)


def _describe(raw: bytes) -> str:
    text = raw.decode("ascii", "replace").strip()
    if not text.isdigit():
        return "pid unknown"
    pid = int(text)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: {cmdline.strip()[:200]}"
