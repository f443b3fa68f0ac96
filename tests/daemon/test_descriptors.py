"""Running out of file descriptors: the daemon says so once per episode, not once per accept retry.

A real ``python -m agent run`` with a soft RLIMIT_NOFILE of 160 (set in the child before exec) and an
API connection cap above it on purpose, then idle connections until the listen backlog is full too: accept() fails with EMFILE and
asyncio retries it every second. Before, each retry was a log line (74,419 lines in 25 s in the field).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import REPO, START_WITHIN, AgentDir, NotifySocket

pytestmark = pytest.mark.slow


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


async def test_emfile_on_accept_is_logged_once_per_episode(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    files = AgentDir(tmp_path)
    files.agent_yaml.write_text(
        files.agent_yaml.read_text().replace(
            "token_file: secrets/api-token}",
            "token_file: secrets/api-token, max_connections: 1000, idle_timeout: 120s}",
        )
    )
    log_path = tmp_path / "agent.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--config", str(files.agent_yaml),
            cwd=REPO, env={"NOTIFY_SOCKET": str(notify_socket.path), "PATH": "/usr/bin:/bin"},
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_low_nofile,
        )  # fmt: skip
    held: list[asyncio.StreamWriter] = []
    try:
        await notify_socket.wait_for("READY", "1", within=START_WITHIN)
        for _ in range(300):
            try:  # once the listen backlog is full too, the kernel stops answering SYNs
                _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", files.api_port), 2)
            except TimeoutError:
                break
            held.append(writer)
        assert len(held) > 160, "more connections than descriptors, or there is no EMFILE to report"
        # Long enough for asyncio to retry accept() several times (it waits 1 s between retries).
        await asyncio.sleep(5)
    finally:
        for writer in held:
            writer.close()
        proc.terminate()
        rc = await asyncio.wait_for(proc.wait(), START_WITHIN)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    events = [e.get("event") for e in lines]
    assert events.count("api_accept_failing") == 1, "\n".join(str(e) for e in events)
    assert not any("out of system resource" in str(e) for e in events)
    assert rc == 0
