"""Operator commands that call the running agent's API: trigger, categorize, workflows, status."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from agent.api.client import ApiClient, ApiRequestError
from agent.commands.common import add_config_arg, load_agent_config_or_exit

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2

Command = Callable[[argparse.Namespace, ApiClient, TextIO], Awaitable[int]]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("trigger", help="run a manual workflow for a machine (an operator's button)")
    p.add_argument("workflow", metavar="WORKFLOW", help="workflow name (quote names with spaces)")
    p.add_argument("--machine", "-m", required=True, help="machine id")
    _operator_args(p)
    p.add_argument("--note", help="free text sent with the trigger")
    _common(p, trigger_command)

    p = sub.add_parser(
        "categorize", help="give a downtime its category (fires downtime_categorized workflows)"
    )
    p.add_argument("downtime_id", metavar="DOWNTIME_ID")
    p.add_argument("category", metavar="CATEGORY")
    p.add_argument("--notes", help="what the operator saw")
    _operator_args(p)
    _common(p, categorize_command)

    p = sub.add_parser("workflows", help="list workflows with enabled state and last execution")
    _common(p, workflows_command)

    p = sub.add_parser("status", help="machines with live status, open downtimes and active alarms")
    _common(p, status_command)


def _operator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operator-id", help="operator id (badge number)")
    p.add_argument("--operator-name", help="operator name")


def _common(p: argparse.ArgumentParser, command: Command) -> None:
    # These talk to the running agent's API: a --state-dir would be accepted and silently ignored.
    add_config_arg(p, state_dir=False)
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    p.set_defaults(handler=lambda args: asyncio.run(run(args, command)), command_fn=command)


async def run(args: argparse.Namespace, command: Command, out: TextIO | None = None) -> int:
    """Load the agent config (for the API address and token) and run ``command`` against the API."""
    out = out or sys.stdout
    config = load_agent_config_or_exit(args)
    if not config.api.enabled:
        print("error: the API is disabled in the agent config (api: section)", file=sys.stderr)
        return EXIT_INPUT
    try:
        async with ApiClient.for_config(config.api) as client:
            try:
                return await command(args, client, out)
            except ApiRequestError as exc:
                hint = await _hint(exc, client)
                raise ApiRequestError(exc.status, exc.code, exc.message + hint, exc.field) from None
    except ApiRequestError as exc:
        where = f" [{exc.field}]" if exc.field else ""
        if exc.status == 401:
            token = config.api.token.source if config.api.token is not None else "no token"
            where += (
                f"; this command sent the token from {token} (api: in {config.file}); it must be the "
                "token the running agent reads (same file, variable or value)"
            )
        print(f"error: {exc.message}{where}", file=sys.stderr)
        return EXIT_INPUT if 400 <= exc.status < 500 and exc.status != 401 else EXIT_FAILED


async def _hint(exc: ApiRequestError, client: ApiClient) -> str:
    """What the user may have meant, for a name or id the agent does not know."""
    try:
        if exc.code == "unknown_workflow":
            names = [
                str(w.get("name"))
                for w in await client.workflows()
                if w.get("trigger", {}).get("type") == "manual"
            ]
            return _choices(exc, names, "manual workflows")
        if exc.code == "unknown_machine":
            return _choices(exc, [str(m.get("id")) for m in await client.machines()], "machines")
        if exc.code == "unknown_downtime":
            open_ones = [f"{d.get('id')} ({d.get('machine_id')})" for d in await client.downtimes("open")]
            return f"; open downtimes: {', '.join(open_ones) or 'none'}"
    except ApiRequestError:
        pass  # the hint is a courtesy; the original error stands
    return ""


def _choices(exc: ApiRequestError, known: list[str], what: str) -> str:
    given = exc.message.split("'", 2)[1] if exc.message.count("'") >= 2 else ""
    lowered = {k.lower(): k for k in known}
    close = [lowered[m] for m in difflib.get_close_matches(given.lower(), list(lowered), n=3, cutoff=0.6)]
    text = f"; {what}: {', '.join(known) or 'none'}"
    return text + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else "")


def _operator(args: argparse.Namespace) -> dict[str, str] | None:
    op_id = getattr(args, "operator_id", None)
    name = getattr(args, "operator_name", None)
    if not op_id and not name:
        return None
    out: dict[str, str] = {}
    if op_id:
        out["id"] = op_id
    if name:
        out["name"] = name
    return out


def _print_json(data: Any, out: TextIO) -> None:
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")


async def trigger_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> int:
    result = await client.trigger(args.workflow, args.machine, _operator(args), args.note)
    if args.json:
        _print_json(result, out)
        return EXIT_OK
    ex = result.get("execution", {})
    ids = ", ".join(ex.get("message_ids", [])) or "none (workflow has no actions)"
    state = "queued" if ex.get("durable", True) else "held in memory (outbox unavailable)"
    print(f"triggered {args.workflow!r} for {args.machine}: {state}; messages: {ids}", file=out)
    return EXIT_OK


async def categorize_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> int:
    result = await client.categorize(args.downtime_id, args.category, args.notes, _operator(args))
    if args.json:
        _print_json(result, out)
        return EXIT_OK
    fired = [e.get("workflow") for e in result.get("executions", [])]
    print(
        f"downtime {args.downtime_id} categorized as {args.category!r}; "
        f"workflows fired: {', '.join(map(str, fired)) or 'none'}",
        file=out,
    )
    return EXIT_OK


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _trigger_text(trigger: dict[str, Any]) -> str:
    kind = str(trigger.get("type"))
    if kind == "scheduled":
        return f"scheduled {trigger.get('cron')} {trigger.get('timezone')}"
    if kind == "downtime_exceeded":
        return f"downtime_exceeded {float(trigger.get('after_seconds') or 0) / 60:g}m"
    if kind == "downtime_categorized" and trigger.get("categories"):
        return f"downtime_categorized {', '.join(trigger['categories'])}"
    if kind == "manual" and trigger.get("description"):
        return f"manual ({trigger['description']})"
    return kind


async def workflows_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> int:
    flows = await client.workflows()
    if args.json:
        _print_json(flows, out)
        return EXIT_OK
    rows = [["NAME", "ENABLED", "TRIGGER", "LAST EXECUTION"]]
    for wf in flows:
        last = wf.get("last_execution") or {}
        last_text = f"{last.get('at')} {last.get('machine') or ''}".strip() if last else "-"
        rows.append(
            [str(wf["name"]), "yes" if wf.get("enabled") else "no", _trigger_text(wf["trigger"]), last_text]
        )
    _table(rows, out)
    return EXIT_OK


async def status_command(args: argparse.Namespace, client: ApiClient, out: TextIO) -> int:
    machines = await client.machines()
    if args.json:
        _print_json(machines, out)
        return EXIT_OK
    rows = [["MACHINE", "GROUP", "STATUS", "SINCE", "OPEN DOWNTIME", "ALARMS", "WHY"]]
    for m in machines:
        dt = m.get("open_downtime") or {}
        dt_text = f"{dt.get('id')} {dt.get('category') or 'uncategorized'}" if dt else "-"
        alarms = (
            ",".join(str(a.get("code")) for a in m.get("active_alarms", []) if isinstance(a, dict)) or "-"
        )
        rows.append(
            [
                str(m["id"]),
                str(m.get("group") or "-"),
                str(m.get("status") or "-"),
                str(m.get("status_since") or "-"),
                dt_text,
                alarms,
                # Only an unreadable machine needs its reason spelt out (the rule path is noise).
                str(m.get("status_reason") or "-") if m.get("status") in ("DISCONNECTED", "BAD") else "-",
            ]
        )
    _table(rows, out)
    return EXIT_OK
