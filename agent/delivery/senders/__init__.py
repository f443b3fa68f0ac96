"""Destination kinds: one module per kind, loaded by name when an endpoint of that kind appears.

See ``base.py`` for the contract a new kind implements.
"""

from __future__ import annotations

import importlib

from agent.delivery.senders.base import Destination, Sender, SendOutcome
from agent.delivery.settings import DeliveryConfig


def create_sender(kind: str, config: DeliveryConfig) -> Sender:
    """The sender for ``kind``; ``ValueError`` naming the kind when no module provides it."""
    if not kind.isidentifier() or kind == "base":
        raise ValueError(f"no destination kind {kind!r}")
    try:
        # Lazy on purpose: a protocol library (aiohttp, an MQTT client) loads only when used.
        module = importlib.import_module(f"agent.delivery.senders.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"agent.delivery.senders.{kind}":
            raise
        raise ValueError(f"no destination kind {kind!r}") from None
    sender: Sender = module.create(config)
    return sender


__all__ = ["Destination", "SendOutcome", "Sender", "create_sender"]
