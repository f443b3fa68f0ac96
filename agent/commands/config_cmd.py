"""``edge-agent check-config``: every problem in every file, or a summary of what would run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.commands.common import EXIT_CONFIG, add_config_arg, config_path
from agent.config.agent_file import collect_config, state_dir_writable_problem


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("check-config", help="validate agent.yaml, machine and workflow files")
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        metavar="PATH",
        help="a config directory holding agent.yaml, or the file",
    )
    add_config_arg(p)
    p.set_defaults(handler=run)


def target(args: argparse.Namespace) -> Path:
    """``check-config config/`` and ``check-config config/agent.yaml`` mean the same file."""
    given: Path | None = args.path
    if given is None:
        return config_path(args)
    return given / "agent.yaml" if given.is_dir() else given


def run(args: argparse.Namespace) -> int:
    path = target(args)
    config, problems = collect_config(path, args.state_dir)
    lines = [str(p) for p in problems.items]
    if config is not None:
        # What `run` would stop at before reading a single machine: checked for this user, who may
        # not be the service's user (systemd's StateDirectory= creates and owns the directory).
        state_problem = state_dir_writable_problem(config.agent.state_dir)
        if state_problem and args.state_dir is not None:
            lines.append(f"--state-dir: {state_problem}")
        elif state_problem and config.agent.state_dir.exists():
            lines.append(f"{path}: agent.state_dir: {state_problem}")
    if config is None or lines:
        for line in lines:
            print(line)
        print(f"{path}: {len(lines)} problem(s) found")
        return EXIT_CONFIG
    print(f"{path}: ok")
    note = "" if config.agent.state_dir.is_dir() else "  (created by `run`, or by systemd's StateDirectory=)"
    print(f"  state dir  {config.agent.state_dir}{note}")
    mqtt = config.agent.mqtt
    if mqtt is not None:
        tls = " tls" if mqtt.tls is not None else ""
        print(f"  mqtt       {mqtt.host}:{mqtt.port}{tls}  MQTT {mqtt.protocol}  client id {mqtt.client_id}")
    if config.agent.publish is not None:
        print(f"  namespace  {config.agent.publish.topic}/{{status,alarms,downtime,parts,events}}")
    for m in config.machines:
        mode = "subscribe" if m.subscribes else f"poll {m.poll_interval:g}s"
        tags = len(m.connection.tag_names)
        print(f"  machine    {m.id:<16} {m.protocol:<6} {mode:<12} {tags} tags  ({m.file})")
    for w in config.workflows:
        state = "enabled" if w.enabled else "disabled"
        print(f"  workflow   {w.name:<32} {w.trigger.type:<24} {state}")
    return 0
