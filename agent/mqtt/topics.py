"""MQTT topic names: validation of publish topics and rendering of ``{placeholder}`` templates.

Pure code. The rules are MQTT 3.1.1 §4.7 / MQTT 5 §4.7: a topic name is 1..65535 UTF-8 bytes, has no
NUL, and a *publish* topic has no wildcard (``+``, ``#``). Empty levels are legal in the spec but a
Unified Namespace never wants them (``a//b`` is almost always a missing placeholder value), so they are
rejected too; so is a leading ``$`` (reserved for the broker, e.g. ``$SYS``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

MAX_TOPIC_BYTES = 65535
# An MQTT outbox row's ``url`` is this prefix and its rendered topic.
URL_PREFIX = "mqtt:"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# Characters a rendered placeholder value must not bring into a topic: they would add a level,
# a wildcard, or a NUL.
_UNSAFE_IN_LEVEL = re.compile(r"[/+#\x00]")


def check_topic(topic: str) -> str:
    """A valid publish topic name, or ValueError saying what is wrong with it."""
    if not topic:
        raise ValueError("topic is empty")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise ValueError(f"topic is longer than {MAX_TOPIC_BYTES} bytes")
    if "\x00" in topic:
        raise ValueError("topic contains a NUL character")
    if "+" in topic or "#" in topic:
        raise ValueError(f"wildcards (+, #) are for subscriptions, not publish topics: {topic!r}")
    if topic.startswith("$"):
        raise ValueError(f"topics starting with $ are reserved for the broker: {topic!r}")
    if topic.startswith("/") or topic.endswith("/") or "//" in topic:
        raise ValueError(f"topic has an empty level: {topic!r}")
    return topic


def placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str, allowed: frozenset[str]) -> str:
    """A topic template whose placeholders are all in ``allowed`` and whose fixed text is valid."""
    try:
        names = placeholders(template)
    except ValueError as exc:
        raise ValueError(f"bad placeholder in topic template {template!r}: {exc}") from None
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        raise ValueError(f"unknown placeholder(s) {unknown} in {template!r}; known: {sorted(allowed)}")
    # Fill every placeholder with a harmless word so the fixed parts are checked as a topic.
    check_topic(_PLACEHOLDER.sub("x", template))
    return template


def level(value: object) -> str:
    """One topic level made from a value (machine id, group): separators and wildcards become ``_``."""
    text = _UNSAFE_IN_LEVEL.sub("_", str(value)).strip()
    return text or "_"


def render(template: str, fields: Mapping[str, object]) -> str:
    """Fill a template checked by ``check_template``; a missing or empty value becomes ``_``."""
    rendered = _PLACEHOLDER.sub(lambda m: level(fields.get(m.group(1), "") or ""), template)
    return check_topic(rendered)
