"""Which asyncio event loop runs the daemon: the standard library's, or uvloop's when ``agent.yaml``
asks for it (``agent: {event_loop: uvloop}``).

uvloop (libuv under the asyncio API) is an option, not a requirement: every behaviour is the same on
both, the standard loop stays the default, and uvloop is only what a large cell needs. The agent's
own cost per Modbus poll is mostly the loop's (a socket read, a write, a timer, a future); on
uvloop that floor is less than half (bench/daemon.py --floor --event-loop uvloop)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

LOOPS = ("asyncio", "uvloop")
DEFAULT_LOOP = "asyncio"
INSTALL_HINT = "pip install 'edge-agent[uvloop]' (Linux and macOS)"


def unavailable(name: str) -> str | None:
    """Why the loop called ``name`` cannot run here, or ``None`` when it can."""
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return f"uvloop is not installed in this Python: {INSTALL_HINT}, or use event_loop: asyncio"
    return None


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """For ``asyncio.Runner(loop_factory=...)``; ``None`` is the standard library's loop."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def running_loop_name() -> str:
    """What actually runs: ``uvloop`` or ``asyncio`` (the ``agent_ready`` log line names it)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
