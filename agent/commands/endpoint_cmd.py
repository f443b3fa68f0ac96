"""``edge-agent endpoint``: webhook endpoints' state, and re-enabling one disabled after 410 Gone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from agent.commands.common import table
from agent.commands.outbox_access import known_endpoints, run_on_outbox, state_args, stream, with_state
from agent.delivery.outbox import Outbox
from agent.delivery.settings import OutboxConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    ep = sub.add_parser("endpoint", help="webhook endpoints: state, re-enable after 410 Gone")
    eps = ep.add_subparsers(dest="endpoint_command", metavar="ACTION", required=True)
    p = eps.add_parser("list", help="every URL in the outbox with counts and disabled state")
    state_args(p)
    p.set_defaults(handler=lambda args: with_state(args, endpoint_list))
    p = eps.add_parser("enable", help="re-enable an endpoint disabled after 410 Gone")
    state_args(p)
    p.add_argument("url", metavar="ENDPOINT", help="its URL, or its key workflow#index")
    p.set_defaults(handler=lambda args: with_state(args, endpoint_enable, args.url))


def endpoint_list(state_dir: Path, *, config: OutboxConfig | None = None, out: TextIO | None = None) -> int:
    async def body(box: Outbox) -> int:
        rows = await box.endpoint_summary()
        if not rows:
            stream(out).write("no endpoints in the outbox yet\n")
            return 0
        lines = [["URL", "STATE", "DELIVERIES"]]
        for e in rows:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(e.counts.items())) or "no deliveries"
            flag = f"DISABLED ({e.disabled_reason})" if e.disabled_reason else "enabled"
            lines.append([e.url, flag, counts])
        stream(out).writelines(line + "\n" for line in table(lines))
        return 0

    return run_on_outbox(state_dir, config, body)


def endpoint_enable(
    state_dir: Path, url: str, *, config: OutboxConfig | None = None, out: TextIO | None = None
) -> int:
    async def body(box: Outbox) -> int:
        target = url
        if "://" not in url:  # a key workflow#index names the URL its rows were sent to
            page = await box.list(endpoint=url, limit=1)
            if not page.items:
                print(f"no endpoint {url!r} in the outbox ({await known_endpoints(box)})", file=sys.stderr)
                return 2
            target = page.items[0].url
        if await box.enable_endpoint(target):
            stream(out).write(f"{target} enabled; a running agent resumes it within a minute\n")
            return 0
        known = {e.url: e for e in await box.endpoint_summary()}
        if target not in known:
            print(f"no endpoint {target!r} in the outbox ({await known_endpoints(box)})", file=sys.stderr)
            return 2
        print(f"{target} is not disabled; nothing to do", file=sys.stderr)
        return 1

    return run_on_outbox(state_dir, config, body)
