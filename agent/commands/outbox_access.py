"""How the outbox/history/endpoint commands reach the agent's outbox file.

The commands open the file directly (WAL lets them while the agent runs). A retry made here is picked
up by a running agent at its next maintenance pass (within a minute) or wake.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from agent.commands.common import add_config_arg, load_agent_config_or_exit
from agent.config.source import as_duration
from agent.delivery.outbox import Outbox, OutboxError
from agent.delivery.settings import OUTBOX_FILE, OutboxConfig
from agent.events import iso_utc


def state_args(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)


def with_state(args: argparse.Namespace, fn: Callable[..., int], *a: Any, **kw: Any) -> int:
    """Call a command function with the state dir and outbox settings of the agent's config."""
    cfg = load_agent_config_or_exit(args)
    return fn(cfg.state_dir, *a, config=cfg.outbox, **kw)


def newer_than(text: str | None, now: float) -> float | None:
    """The cutoff for ``--since 1h``: rows created after it are shown."""
    if text is None:
        return None
    return now - as_duration(text)


def run_on_outbox(
    state_dir: Path,
    config: OutboxConfig | None,
    body: Callable[[Outbox], Awaitable[int]],
) -> int:
    path = state_dir / OUTBOX_FILE
    if not path.exists():
        print(f"no outbox at {path} (has the agent run with this state_dir?)", file=sys.stderr)
        return 1

    async def go() -> int:
        box = await Outbox.open(path, config or OutboxConfig(), recover=False)
        try:
            return await body(box)
        finally:
            await box.close()

    try:
        return asyncio.run(go())
    except OutboxError as exc:
        print(f"outbox {path}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad --since / --state values
        print(str(exc), file=sys.stderr)
        return 2


def stream(out: TextIO | None) -> TextIO:
    # Resolved per call, not at import: pytest's capsys and redirected stdout must be honoured.
    return out if out is not None else sys.stdout


def when(ts: float | None) -> str:
    return "-" if ts is None else iso_utc(round(ts))


async def known_endpoints(box: Outbox) -> str:
    urls = [e.url for e in await box.endpoint_summary()]
    return "known: " + ", ".join(urls) if urls else "the outbox has no endpoints yet"
