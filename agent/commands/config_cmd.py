"""``edge-agent check-config``: every problem in every file, or a summary of what would run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.commands.common import EXIT_CONFIG, add_config_arg, config_path
from agent.config.agent_file import collect_config


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("check-config", help="validate agent.yaml, machine and workflow files")
    p.add_argument("dir", nargs="?", type=Path, help="a config directory holding agent.yaml")
    add_config_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = args.dir / "agent.yaml" if args.dir else config_path(args)
    config, problems = collect_config(path, args.state_dir)
    if config is None:
        for problem in problems.items:
            print(problem)
        print(f"{path}: {len(problems.items)} problem(s) found")
        return EXIT_CONFIG
    print(f"{path}: ok")
    print(f"  state dir  {config.agent.state_dir}")
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
