"""sd_notify against real AF_UNIX datagram sockets, as systemd would listen."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.notify import Notifier, message, socket_address, watchdog_interval_from


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_stopping_reloading_reach_the_socket(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("3 machines\nrunning")
    assert receive(sock) == {"READY": "1", "STATUS": "3 machines running"}
    assert n.status("outbox 12 pending")
    assert receive(sock) == {"STATUS": "outbox 12 pending"}
    assert n.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    assert n.reloading()
    got = receive(sock)
    assert got["RELOADING"] == "1" and int(got["MONOTONIC_USEC"]) > 0
    assert n.stopping()
    assert receive(sock) == {"STOPPING": "1"}
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"edge-agent-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert receive(sock) == {"READY": "1"}
        n.close()
    finally:
        sock.close()


def test_no_notify_socket_is_a_no_op() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.status("x")
    assert n.watchdog_interval() is None


def test_unreachable_socket_reports_false_and_does_not_raise(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.ready() is False
    n.close()


def test_relative_notify_socket_is_ignored() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative.sock"}).enabled
    assert socket_address("@x") == "\0x"
    assert socket_address("/run/x") == "/run/x"
    assert socket_address("@") is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid() -> None:
    assert watchdog_interval_from({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval_from({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval_from({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval_from({"WATCHDOG_USEC": "0"}, pid=7) is None
    assert watchdog_interval_from({"WATCHDOG_USEC": "soon"}, pid=7) is None
    assert watchdog_interval_from({}, pid=7) is None
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval() == 1.0


def test_message_is_one_line_per_key() -> None:
    assert message({"READY": "1", "STATUS": "a\nb  c"}) == b"READY=1\nSTATUS=a b c"


async def test_keep_alive_pings_from_the_event_loop(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"}, pid=1)
    assert n.watchdog_interval() == pytest.approx(0.01)
    task = asyncio.create_task(n.keep_alive())
    loop = asyncio.get_running_loop()
    try:
        pings = []
        for _ in range(2):
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=5)
            pings.append(data)
        assert pings == [b"WATCHDOG=1", b"WATCHDOG=1"]
    finally:
        task.cancel()
        n.close()


def test_missing_reader_is_logged_once_per_episode(tmp_path: Path) -> None:
    """The tick sends STATUS every second; a socket without a reader must not log every second."""
    path = tmp_path / "late.sock"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        for _ in range(20):
            assert not n.status("tick")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        try:
            assert n.status("back")
            assert n.status("again")
        finally:
            sock.close()
        path.unlink()
        for _ in range(5):
            assert not n.status("gone again")
    n.close()
    events = [e["event"] for e in logs]
    assert events == ["notify_failed", "notify_recovered", "notify_failed"]
    assert n.failures == 25
