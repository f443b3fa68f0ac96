"""systemd's sd_notify datagram protocol, without libsystemd.

One datagram of ``KEY=value`` lines to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` means the Linux abstract namespace). With no ``NOTIFY_SOCKET`` every call is a cheap no-op, so
the daemon runs the same under systemd, in a container or in a terminal.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def socket_address(value: str) -> str | None:
    """The address to ``sendto``: ``@name`` → abstract (leading NUL), ``/path`` as is, else unusable."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval_from(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None when not asked for.

    ``WATCHDOG_PID`` names the process the watchdog is for; a child that inherited the environment
    must not ping on its parent's behalf.
    """
    raw = environ.get("WATCHDOG_USEC", "").strip()
    if not raw.isdigit() or int(raw) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "").strip()
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(raw) / 1_000_000 / 2


def message(fields: Mapping[str, str]) -> bytes:
    """The datagram: one ``KEY=value`` per line; values are flattened to one line."""
    return "\n".join(f"{k}={' '.join(str(v).split())}" for k, v in fields.items()).encode("utf-8")


class Notifier:
    """Sends state to the service manager; never raises, never blocks the event loop."""

    def __init__(self, address: str | None, watchdog_interval: float | None = None) -> None:
        self._address = address
        self._watchdog_interval = watchdog_interval
        self._sock: socket.socket | None = None
        # The tick sends STATUS every second: without a reader on the socket that would be a
        # warning a second for as long as it lasts. Log when sending starts and stops failing.
        self._failing = False
        self.failures = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw) if raw else None
        if raw and address is None:
            log.warning("notify_socket_unusable", reason="NOTIFY_SOCKET must start with / or @")
        interval = watchdog_interval_from(env, os.getpid() if pid is None else pid)
        return cls(address, interval if address else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        return self._watchdog_interval

    def send(self, **fields: str) -> bool:
        """Send one datagram; False when disabled or the manager could not be reached."""
        if self._address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(message(fields), self._address)
        except OSError as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning("notify_failed", keys=sorted(fields), error=exc.strerror or str(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("notify_recovered", failed_sends=self.failures)
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = {"READY": "1"}
        if status:
            fields["STATUS"] = status
        return self.send(**fields)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str | None = None) -> bool:
        fields = {"STOPPING": "1"}
        if status:
            fields["STATUS"] = status
        return self.send(**fields)

    def reloading(self) -> bool:
        # Type=notify-reload (systemd 253+) wants the monotonic time to match the reload with READY=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING="1", MONOTONIC_USEC=str(usec))

    async def keep_alive(self) -> None:
        """Ping the watchdog from the event loop until cancelled: a stalled loop stops the pings."""
        interval = self._watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"Notifier(enabled={self.enabled}, watchdog_interval={self._watchdog_interval})"
