"""``edge-agent run`` (the daemon) and ``edge-agent reload`` (re-read config in the running agent)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
from typing import Any

from agent.commands.common import add_config_arg, config_path, load_config_or_exit
from agent.commands.errors import CommandFailed, UsageError
from agent.config.agent_file import state_dir_writable_problem


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("run", help="run the agent (what the systemd service starts)")
    add_config_arg(p)
    p.add_argument("--log-format", choices=("json", "console"), help="override log.format")
    p.set_defaults(handler=run)

    r = sub.add_parser("reload", help="make the running agent re-read its configuration (like SIGHUP)")
    add_config_arg(r, state_dir=False)
    r.add_argument("--json", action="store_true", help="print the API's JSON answer")
    r.set_defaults(handler=reload)


def run(args: argparse.Namespace) -> int:
    import os

    import structlog

    from agent.event_loop import loop_factory
    from agent.logs import configure
    from agent.loop_watch import start_without_gc
    from agent.notify import Notifier
    from agent.runtime import Runtime
    from agent.state_lock import StateDirInUse

    # Outside systemd (which sets UMask=0077) the databases and their -wal/-shm files would be
    # world-readable; their bodies hold operator names and notes.
    os.umask(0o077)
    start_without_gc()
    config = load_config_or_exit(args)
    problem = state_dir_writable_problem(config.agent.state_dir)
    if problem:
        where = "--state-dir" if args.state_dir is not None else f"{config.agent.file}: agent.state_dir"
        raise UsageError(f"{where}: {problem}")
    configure(config.agent.log_level, args.log_format or config.agent.log_format)
    runtime = Runtime(
        config, config_path=config_path(args), state_dir=args.state_dir, notifier=Notifier.from_env()
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.agent.event_loop)) as runner:
            return runner.run(runtime.serve())
    except StateDirInUse as exc:
        structlog.get_logger("agent.run").error("state_dir_in_use", error=str(exc))
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise CommandFailed(
            f"cannot listen on {config.agent.api.host}:{config.agent.api.port} (api.bind in {config.agent.file}): address in "
            "use; another edge-agent may be running (edge-agent status), or change api.bind"
        ) from None


def reload(args: argparse.Namespace) -> int:
    from agent.api.client import ApiClient, ApiError
    from agent.commands.common import load_agent_config_or_exit

    agent = load_agent_config_or_exit(args)

    async def call() -> dict[str, Any]:
        async with ApiClient.from_config(agent.api) as client:
            result: dict[str, Any] = await client.request("POST", "/api/v1/reload", expect=(200, 422))
            return result

    try:
        result = asyncio.run(call())
    except ApiError as exc:
        print(f"reload failed: {exc}", file=sys.stderr)
        return 1
    if not result.get("ok"):
        print("the new configuration was rejected; the agent keeps running the old one:", file=sys.stderr)
        for line in result.get("errors", []):
            print(f"  {line}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(reload_summary(result))
    return 0


def reload_summary(result: dict[str, Any]) -> str:
    """``reloaded: 1 machine added (mill-03), 1 changed (lathe-02); 7 workflows``."""
    parts: list[str] = []
    for key in ("added", "removed", "changed"):
        ids = [str(i) for i in result.get(key) or []]
        if ids:
            noun = "machine" if len(ids) == 1 and not parts else "machines" if not parts else ""
            parts.append(f"{len(ids)} {noun + ' ' if noun else ''}{key} ({', '.join(ids)})")
    machines = ", ".join(parts) if parts else "machines unchanged"
    return f"reloaded: {machines}; {result.get('workflows', 0)} workflows"
