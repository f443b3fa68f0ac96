"""``edge-agent mqtt tail [TOPIC]``: what the agent publishes, as the plant's consumers see it.

Connects with the agent's own ``mqtt:`` settings (host, TLS, username/password) under a client id of
its own, subscribes to TOPIC (default: the namespace, ``<enterprise>/<site>/#``, or ``#``) and prints
one line per message: time, topic, retained flag, the ``message-id`` user property, the payload.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from typing import Any

from agent.commands.common import add_config_arg, load_agent_config_or_exit
from agent.mqtt.settings import MqttConfig


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("mqtt", help="MQTT tools: tail what the agent publishes to the broker")
    inner = p.add_subparsers(dest="mqtt_command", metavar="SUBCOMMAND", required=True)
    t = inner.add_parser("tail", help="subscribe to TOPIC on the agent's broker and print every message")
    t.add_argument("topic", nargs="?", default=None, help="topic filter (default: the namespace, or #)")
    t.add_argument("--count", type=int, default=0, help="stop after N messages (0 = until Ctrl-C)")
    t.add_argument("--timeout", type=float, default=0.0, help="stop after N seconds (0 = never)")
    t.add_argument("--json", action="store_true", help="print the payload only, one JSON document a line")
    add_config_arg(t)
    t.set_defaults(handler=run)


def check_filter(topic: str) -> str:
    """A subscription filter per MQTT §4.7.1: ``#`` only as the whole last level, ``+`` a whole level."""
    if not topic:
        raise ValueError("topic filter is empty")
    levels = topic.split("/")
    for i, lvl in enumerate(levels):
        if "#" in lvl and (lvl != "#" or i != len(levels) - 1):
            raise ValueError(f"'#' must be the whole last level: {topic!r}")
        if "+" in lvl and lvl != "+":
            raise ValueError(f"'+' must be a whole level: {topic!r}")
    return topic


def line(topic: str, payload: bytes, retained: bool, message_id: str | None, *, json_only: bool) -> str:
    text = payload.decode("utf-8", errors="replace")
    if json_only:
        return text
    flags = " retained" if retained else ""
    mid = f" id={message_id}" if message_id else ""
    return f"{time.strftime('%H:%M:%S')}  {topic}{flags}{mid}  {text}"


def run(args: argparse.Namespace) -> int:
    agent = load_agent_config_or_exit(args)
    if agent.mqtt is None:
        print(f"{agent.file}: no mqtt: section; nothing to tail", file=sys.stderr)
        return 2
    topic = args.topic
    if topic is None:
        topic = f"{agent.publish.enterprise}/{agent.publish.site}/#" if agent.publish is not None else "#"
    try:
        check_filter(topic)
    except ValueError as exc:
        print(f"bad topic filter: {exc}", file=sys.stderr)
        return 2
    # Its own client id: reusing the agent's would disconnect the running agent (MQTT §3.1.4).
    cfg = dataclasses.replace(agent.mqtt, client_id=f"{agent.mqtt.client_id}-tail-{os.getpid()}")
    return asyncio.run(_tail(cfg, topic, args.count, args.timeout, args.json))


async def _tail(cfg: MqttConfig, topic: str, count: int, seconds: float, json_only: bool) -> int:
    import aiomqtt

    from agent.mqtt.link import MESSAGE_ID_PROPERTY, tls_context

    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.password.reveal() if cfg.password is not None else None,
        identifier=cfg.client_id,
        protocol=aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        tls_context=tls_context(cfg),
        timeout=cfg.connect_timeout,
    )
    seen = 0
    try:
        async with asyncio.timeout(seconds or None), client:
            await client.subscribe(topic, qos=1)
            print(f"subscribed to {topic} on {cfg.host}:{cfg.port}", file=sys.stderr)
            async for msg in client.messages:
                props = dict(getattr(msg.properties, "UserProperty", None) or [])
                payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                print(
                    line(
                        str(msg.topic),
                        payload,
                        msg.retain,
                        props.get(MESSAGE_ID_PROPERTY),
                        json_only=json_only,
                    )
                )
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    break
    except TimeoutError:
        return 0
    except aiomqtt.MqttError as exc:
        # The error names the broker, never the password.
        print(f"broker {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    return 0
