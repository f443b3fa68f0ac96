"""``edge-agent history``: workflow executions, each event and what its webhooks did."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

from agent.commands.common import table
from agent.commands.errors import positive_int
from agent.commands.outbox_access import newer_than, run_on_outbox, state_args, stream, when, with_state
from agent.delivery.outbox import Outbox
from agent.delivery.settings import OutboxConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("history", help="workflow executions: each event and what its webhooks did")
    state_args(p)
    p.add_argument("--workflow")
    p.add_argument("--since", help="e.g. 1h, 30m, 7d")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many rows (default 50)")
    p.set_defaults(handler=_h_history)


def history(
    state_dir: Path,
    *,
    workflow: str | None = None,
    since: str | None = None,
    limit: int = 50,
    config: OutboxConfig | None = None,
    out: TextIO | None = None,
) -> int:
    async def body(box: Outbox) -> int:
        page = await box.executions(workflow=workflow, since=newer_than(since, time.time()), limit=limit)
        if not page.items:
            stream(out).write("no executions match\n")
            return 0
        rows = [["WHEN", "WORKFLOW", "EVENT", "MACHINE", "RESULT"]]
        for e in page.items:
            result = ", ".join(f"{n} {s}" for s, n in e.states.items())
            if e.last_error and ("dead" in e.states or "pending" in e.states):
                result += f" ({e.last_error})"
            rows.append([when(e.created_at), e.workflow, e.event_type, e.machine_id or "-", result])
        stream(out).writelines(line + "\n" for line in table(rows))
        return 0

    return run_on_outbox(state_dir, config, body)


def _h_history(args: argparse.Namespace) -> int:
    return with_state(args, history, workflow=args.workflow, since=args.since, limit=args.limit)
