"""``edge-agent outbox``: list, inspect, retry, cancel and purge webhook deliveries."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agent.commands.common import table
from agent.commands.errors import positive_int
from agent.commands.outbox_access import (
    known_endpoints,
    newer_than,
    run_on_outbox,
    state_args,
    stream,
    when,
    with_state,
)
from agent.config.source import as_duration
from agent.delivery.outbox import Outbox
from agent.delivery.retry import CANCELLED, DEAD, DELIVERED, PENDING, STATES
from agent.delivery.settings import OutboxConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    ob = sub.add_parser("outbox", help="list, inspect, retry and purge webhook deliveries")
    obs = ob.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)

    p = obs.add_parser("list", help="deliveries, newest first")
    state_args(p)
    p.add_argument("--state", choices=STATES)
    p.add_argument("--workflow")
    p.add_argument("--since", help="only newer than this, e.g. 1h, 30m, 7d")
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many rows (default 50)")
    p.set_defaults(handler=_h_list)

    p = obs.add_parser("show", help="one delivery with its body and every attempt")
    state_args(p)
    p.add_argument("id", type=int)
    p.set_defaults(handler=lambda args: with_state(args, outbox_show, args.id))

    p = obs.add_parser("retry", help="send a delivery again now (or every dead one with --dead)")
    state_args(p)
    p.add_argument("id", type=int, nargs="?")
    p.add_argument("--dead", action="store_true", help="retry every dead delivery")
    p.add_argument("--force", action="store_true", help="also re-send a delivery that was already delivered")
    p.set_defaults(
        handler=lambda args: with_state(args, outbox_retry, args.id, dead=args.dead, force=args.force)
    )

    p = obs.add_parser("cancel", help="stop trying a pending or dead delivery")
    state_args(p)
    p.add_argument("id", type=int)
    p.set_defaults(handler=lambda args: with_state(args, outbox_cancel, args.id))

    p = obs.add_parser("purge", help="delete finished deliveries (delivered, dead, cancelled)")
    state_args(p)
    p.add_argument(
        "--state",
        action="append",
        choices=[PENDING, DELIVERED, DEAD, CANCELLED],
        help="only these states (repeatable); pending must be named explicitly",
    )
    p.add_argument("--endpoint", help="only this endpoint: its URL, or its key workflow#index")
    p.add_argument("--older-than", help="only rows last changed longer ago than this, e.g. 7d")
    p.add_argument("--dry-run", action="store_true", help="only say how many would be deleted")
    p.add_argument("--yes", action="store_true", help="do not ask (needed when not on a terminal)")
    p.set_defaults(handler=_h_purge)


def outbox_list(
    state_dir: Path,
    *,
    state: str | None = None,
    workflow: str | None = None,
    since: str | None = None,
    limit: int = 50,
    config: OutboxConfig | None = None,
    out: TextIO | None = None,
) -> int:
    async def body(box: Outbox) -> int:
        page = await box.list(
            state=state, workflow=workflow, since=newer_than(since, time.time()), limit=limit
        )
        counts = await box.counts()
        age = "-" if counts.oldest_pending_age is None else f"{counts.oldest_pending_age:.0f}s"
        stream(out).write(
            f"pending {counts.pending}  in flight {counts.in_flight}  delivered {counts.delivered}  "
            f"dead {counts.dead}  cancelled {counts.cancelled}  oldest pending {age}  "
            f"size {counts.bytes / 2**20:.1f} MiB\n"
        )
        if not page.items:
            stream(out).write("no deliveries match\n")
            return 0
        rows = [["ID", "STATE", "TRY", "CREATED", "WORKFLOW#ACTION", "LAST"]]
        for d in page.items:
            last = d.last_error or (f"HTTP {d.last_status}" if d.last_status else "")
            rows.append([str(d.id), d.state, str(d.attempts), when(d.created_at), d.endpoint, last])
        stream(out).writelines(line + "\n" for line in table(rows, right=frozenset({0, 2})))
        if page.next_cursor is not None:
            stream(out).write(f"(more: showing the newest {limit}; use --limit or --since)\n")
        return 0

    return run_on_outbox(state_dir, config, body)


def outbox_show(
    state_dir: Path, delivery_id: int, *, config: OutboxConfig | None = None, out: TextIO | None = None
) -> int:
    async def body(box: Outbox) -> int:
        detail = await box.get(delivery_id)
        if detail is None:
            print(f"no delivery {delivery_id}", file=sys.stderr)
            return 1
        d = detail.summary
        for label, value in (
            ("id", d.id),
            ("webhook-id", d.message_id),
            ("state", d.state),
            ("workflow", d.workflow),
            ("endpoint", d.endpoint),
            ("url", d.url),
            ("event", f"{d.event_type} {d.event_id}"),
            ("machine", d.machine_id or "-"),
            ("created", when(d.created_at)),
            ("next attempt", when(d.due_at) if d.state == PENDING else "-"),
            ("attempts", d.attempts),
            ("last error", d.last_error or "-"),
        ):
            stream(out).write(f"{label:>13}: {value}\n")
        stream(out).write("body:\n")
        try:
            pretty = json.dumps(json.loads(detail.body), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = detail.body.decode("utf-8", "replace")
        stream(out).write("".join(f"  {line}\n" for line in pretty.splitlines()))
        stream(out).write(f"attempts ({len(detail.attempts)}):\n")
        for a in detail.attempts:
            status = a.status if a.status is not None else "---"
            latency = f"{a.latency * 1000:.0f}ms" if a.latency is not None else "-"
            err = f" {a.error_class}: {a.error}" if a.error else ""
            stream(out).write(f"  {when(a.at)}  {status}  {latency}{err}\n")
            if a.response:
                stream(out).write(f"    response: {a.response[:200].decode('utf-8', 'replace')!r}\n")
        return 0

    return run_on_outbox(state_dir, config, body)


def outbox_retry(
    state_dir: Path,
    delivery_id: int | None = None,
    *,
    dead: bool = False,
    force: bool = False,
    config: OutboxConfig | None = None,
    out: TextIO | None = None,
) -> int:
    if (delivery_id is None) == (not dead):
        print("give a delivery ID or --dead (not both)", file=sys.stderr)
        return 2

    async def body(box: Outbox) -> int:
        if dead:
            n = await box.retry_dead()
            stream(out).write(f"{n} dead deliveries queued again\n")
            return 0
        assert delivery_id is not None
        detail = await box.get(delivery_id)
        if detail is None:
            print(f"no delivery {delivery_id} (edge-agent outbox list shows the ids)", file=sys.stderr)
            return 1
        if detail.summary.state == DELIVERED and not force:
            print(
                f"delivery {delivery_id} was already delivered; sending it again makes the receiver see "
                "it twice: add --force to do it anyway",
                file=sys.stderr,
            )
            return 2
        if await box.retry(delivery_id):
            stream(out).write(f"delivery {delivery_id} queued again\n")
            return 0
        print(f"no delivery {delivery_id} that can be retried (unknown or in flight)", file=sys.stderr)
        return 1

    return run_on_outbox(state_dir, config, body)


def outbox_cancel(
    state_dir: Path, delivery_id: int, *, config: OutboxConfig | None = None, out: TextIO | None = None
) -> int:
    async def body(box: Outbox) -> int:
        if await box.cancel(delivery_id):
            stream(out).write(f"delivery {delivery_id} cancelled\n")
            return 0
        print(f"no pending or dead delivery {delivery_id}", file=sys.stderr)
        return 1

    return run_on_outbox(state_dir, config, body)


def outbox_purge(
    state_dir: Path,
    *,
    states: list[str] | None = None,
    endpoint: str | None = None,
    older_than: str | None = None,
    dry_run: bool = False,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    config: OutboxConfig | None = None,
    out: TextIO | None = None,
) -> int:
    """Delete finished rows; counts first, and asks on a terminal unless ``yes`` (``--yes``)."""
    try:
        older = as_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        print(f"--older-than: {exc}", file=sys.stderr)
        return 2
    chosen = tuple(states or (DELIVERED, DEAD, CANCELLED))
    ask = confirm if confirm is not None else (_ask_terminal if sys.stdin.isatty() else None)

    async def body(box: Outbox) -> int:
        keys = await _endpoint_keys(box, endpoint) if endpoint is not None else [None]
        if not keys:
            print(
                f"--endpoint: no endpoint {endpoint!r} in the outbox ({await known_endpoints(box)})",
                file=sys.stderr,
            )
            return 2
        cutoff = None if older is None else box.clock() - older
        n = sum([await _count(box, state, key, cutoff) for state in chosen for key in keys])
        what = f"{n} deliveries ({', '.join(chosen)}" + (f", endpoint {endpoint}" if endpoint else "")
        what += f", unchanged for {older_than})" if older_than else ")"
        if dry_run or n == 0:
            stream(out).write(
                f"would delete {what}\n" if dry_run else "no deliveries match; nothing deleted\n"
            )
            return 0
        refused = None if yes else _refused(what, ask, out)
        if refused is not None:
            return refused
        deleted = 0
        for key in keys:
            deleted += await box.purge(chosen, endpoint=key, older_than=older)
        stream(out).write(f"{deleted} deliveries purged\n")
        return 0

    return run_on_outbox(state_dir, config, body)


def _refused(what: str, ask: Callable[[str], bool] | None, out: TextIO | None) -> int | None:
    """The exit code when the person did not agree to the deletion; None when they did."""
    if ask is None:
        print(f"would delete {what}; add --yes to do it (or --dry-run to only count)", file=sys.stderr)
        return 2
    if not ask(f"delete {what}? [y/N] "):
        stream(out).write("nothing deleted\n")
        return 1
    return None


def _ask_terminal(question: str) -> bool:
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


async def _count(box: Outbox, state: str, endpoint: str | None, cutoff: float | None) -> int:
    """Rows ``purge`` would delete, read through the outbox's own paging (no SQL of ours)."""
    n, cursor = 0, None
    while True:
        page = await box.list(state=state, endpoint=endpoint, limit=1000, cursor=cursor)
        n += sum(1 for d in page.items if cutoff is None or d.updated_at < cutoff)
        if page.next_cursor is None:
            return n
        cursor = page.next_cursor


async def _endpoint_keys(box: Outbox, name: str) -> list[str]:
    """An endpoint named by URL (as ``endpoint list`` shows it) or by key ``workflow#index``."""
    if "://" not in name:
        page = await box.list(endpoint=name, limit=1)
        return [name] if page.items else []
    keys: set[str] = set()
    cursor = None
    while True:
        page = await box.list(limit=1000, cursor=cursor)
        keys.update(d.endpoint for d in page.items if d.url == name)
        if page.next_cursor is None:
            return sorted(keys)
        cursor = page.next_cursor


def _h_list(args: argparse.Namespace) -> int:
    return with_state(
        args, outbox_list, state=args.state, workflow=args.workflow, since=args.since, limit=args.limit
    )


def _h_purge(args: argparse.Namespace) -> int:
    return with_state(
        args,
        outbox_purge,
        states=args.state,
        endpoint=args.endpoint,
        older_than=args.older_than,
        dry_run=args.dry_run,
        yes=args.yes,
    )
