"""The ``opcua:`` section and the tags of one OPC-UA machine file, parsed into frozen dataclasses.

Pure: no asyncua import here, so checking a config never loads the protocol library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

from agent.config.source import (
    Secret,
    Section,
    as_duration,
    as_float,
    as_int,
    as_size,
    as_str,
    in_range,
    one_of,
)

MODES = ("poll", "subscribe")
SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("Sign", "SignAndEncrypt")
SERVER_OBJECT = "i=2253"
# OPC 10000-9 AlarmConditionType: an OfType filter on it also matches every subtype (limit, discrete,
# off-normal, OPC 40502 CncAlarmType).
DEFAULT_EVENT_TYPE = "i=2915"
# What names an alarm in events: the condition's ConditionName, the OPC 40502 AlarmIdentifier (a
# property of the configured event type), or the ConditionId itself.
CODE_FIELDS = ("ConditionName", "AlarmIdentifier", "ConditionId")
# Bounds on what a server can make the agent hold (see drivers/opcua/limits.py). A CNC's tags are
# numbers and short strings; 4 MiB answers a Read of hundreds of tags.
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_STRING_LENGTH = 4096
DEFAULT_MAX_ARRAY_LENGTH = 1000

_NODE = re.compile(r"^(?:(?:ns=(?P<ns>\d+)|nsu=(?P<nsu>[^;]+));)?(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node address as written in config; ``namespace_uri`` set means the index is looked up on connect."""

    text: str
    kind: str  # i (numeric), s (string), g (guid), b (opaque, base64)
    identifier: str
    namespace_index: int = 0
    namespace_uri: str | None = None


def parse_node(text: str) -> NodeRef:
    """``ns=2;s=..``, ``ns=2;i=..``, ``nsu=URI;s=..``, ``i=2253``; raises ValueError naming the problem."""
    m = _NODE.match(text.strip())
    if not m:
        raise ValueError(
            f"invalid node id {text!r}; expected ns=<index>;s=<name>, ns=<index>;i=<number> "
            "or nsu=<namespace URI>;s=<name>"
        )
    kind, ident = m.group("kind"), m.group("ident")
    if kind == "i" and not re.fullmatch(r"\d+", ident):
        raise ValueError(f"invalid node id {text!r}: i= needs a non-negative integer")
    if kind == "i" and int(ident) > 0xFFFFFFFF:
        raise ValueError(f"invalid node id {text!r}: i= must fit in 32 bits")
    if kind == "g" and not _GUID.match(ident):
        raise ValueError(
            f"invalid node id {text!r}: g= needs a GUID like 09087e75-8e5e-499b-954f-f2a9603db28a"
        )
    ns = int(m.group("ns")) if m.group("ns") is not None else 0
    if ns > 0xFFFF:
        raise ValueError(f"invalid node id {text!r}: ns= must be at most 65535")
    return NodeRef(
        text=text.strip(), kind=kind, identifier=ident, namespace_index=ns, namespace_uri=m.group("nsu")
    )


def map_key(value: Any) -> str:
    """How a raw value and a ``map:`` key meet: YAML keys arrive as strings, values as typed data."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text.lower() if text in ("True", "False") else text


@dataclass(frozen=True, slots=True)
class OpcuaTag:
    name: str
    node: NodeRef
    value_map: Mapping[str, Any] | None = None
    scale: float | None = None
    offset: float | None = None
    deadband: float | None = None  # absolute; subscriptions only
    precision: int | None = None  # decimals a person is shown (`read`); the value itself is not rounded

    def convert(self, raw: Any) -> Any:
        """Raw device value → configured value: scale/offset on numbers, then ``map`` (pure)."""
        value = raw
        is_number = isinstance(raw, int | float) and not isinstance(raw, bool)
        if is_number and (self.scale is not None or self.offset is not None):
            value = raw * (1.0 if self.scale is None else self.scale) + (self.offset or 0.0)
        if self.value_map is not None:
            return self.value_map.get(map_key(value), value)
        return value


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    policy: str = "None"
    mode: str = "SignAndEncrypt"
    certificate_file: Path | None = None
    private_key_file: Path | None = None
    server_certificate_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AlarmConfig:
    notifier: NodeRef
    event_type: NodeRef | None
    source: NodeRef | None = None  # only events whose SourceNode is this node (many machines, one server)
    code: str = "ConditionName"  # one of CODE_FIELDS (conditions only)
    # Plain (non-condition) events: the event type's fields that carry the code and the active flag.
    # Both set means the events are read as plain events; neither means OPC 10000-9 conditions.
    code_field: str | None = None
    active_field: str | None = None

    @property
    def conditions(self) -> bool:
        return self.code_field is None


@dataclass(frozen=True)
class OpcuaMachineConfig:
    machine_id: str
    url: str
    tags: tuple[OpcuaTag, ...]
    mode: str = "poll"
    poll_interval: float = 1.0
    publishing_interval: float = 0.5  # seconds
    sampling_interval: float = 0.5
    queue_size: int = 1
    timeout: float = 4.0
    session_timeout: float = 60.0
    security: SecurityConfig = SecurityConfig()
    username: str | None = None
    password: Secret | None = None
    prefix: str = ""
    alarms: AlarmConfig | None = None
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH
    max_array_length: int = DEFAULT_MAX_ARRAY_LENGTH

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)


def _as_url(value: Any) -> str:
    text = as_str(value).strip()
    parsed = urlparse(text)
    if "@" in parsed.netloc:
        # Never echo it: the user part may hold a password.
        raise ValueError("credentials do not belong in the URL; use username and password_file/password_env")
    if parsed.scheme != "opc.tcp" or not parsed.hostname:
        raise ValueError(f"expected an OPC-UA URL like opc.tcp://127.0.0.1:4840, got {text!r}")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a non-numeric port
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    return text


def _as_map(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError("expected a mapping of raw value to word, like {0: ACTIVE, 1: INTERRUPTED}")
    return MappingProxyType({map_key(k): v for k, v in value.items()})


def _existing_file(section: Section, key: str) -> Path | None:
    raw = section.opt(key, as_str)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = section.base_dir / path
    if not path.is_file():
        section.error(key, f"file not found: {path}")
        return None
    return path


def _node_key(section: Section, key: str, prefix: str, default: str | None = None) -> NodeRef | None:
    raw = section.opt(key, as_str)
    if raw is None:
        raw = default
    if raw is None:
        return None
    try:
        return parse_node(raw.replace("{prefix}", prefix))
    except ValueError as exc:
        section.error(key, str(exc))
        return None


def _security(conn: Section) -> SecurityConfig:
    policy = conn.get("security", one_of(*SECURITY_POLICIES), "None")
    mode = conn.get("security_mode", one_of(*SECURITY_MODES), "SignAndEncrypt")
    cert = _existing_file(conn, "certificate_file")
    key = _existing_file(conn, "private_key_file")
    server_cert = _existing_file(conn, "server_certificate_file")
    if policy == "None":
        for k in ("security_mode", "certificate_file", "private_key_file", "server_certificate_file"):
            if conn.has(k):
                conn.error(k, "only used with a security policy; set security: Basic256Sha256 (or another)")
    else:
        for k, v in (("certificate_file", cert), ("private_key_file", key)):
            if v is None and not conn.has(k):
                conn.problems.add(conn.file, conn.line, conn.key_path(k), f"required with security: {policy}")
    return SecurityConfig(policy, mode, cert, key, server_cert)


def parse(machine_id: str, conn: Section, tags: Section, poll_interval: float) -> OpcuaMachineConfig:
    """Read the ``opcua:`` section and ``tags:``; problems go to the sections' shared ``Problems``."""
    url = conn.need("url", _as_url)
    mode = conn.get("mode", one_of(*MODES), "poll")
    publishing = conn.get("publishing_interval", in_range(as_duration, 0.001, 3600.0), 0.5)
    sampling = conn.get("sampling_interval", in_range(as_duration, 0.0, 3600.0), publishing)
    queue_size = conn.get("queue_size", in_range(as_int, 1, 10000), 1)
    timeout = conn.get("timeout", in_range(as_duration, 0.01, 600.0), 4.0)
    session_timeout = conn.get(
        "session_timeout", in_range(as_duration, 1.0, 86400.0), max(60.0, 3 * poll_interval)
    )
    if conn.has("session_timeout") and session_timeout <= poll_interval:
        # The server drops a session idle longer than this: BadSessionIdInvalid on every poll (telegraf #15998).
        conn.error("session_timeout", f"must be longer than poll_interval ({poll_interval:g}s)")
    security = _security(conn)
    max_message_size = conn.get(
        "max_message_size", in_range(as_size, 64 * 1024, 256 * 2**20), DEFAULT_MAX_MESSAGE_SIZE
    )
    max_string_length = conn.get(
        "max_string_length", in_range(as_int, 1, 16 * 2**20), DEFAULT_MAX_STRING_LENGTH
    )
    max_array_length = conn.get("max_array_length", in_range(as_int, 1, 2**20), DEFAULT_MAX_ARRAY_LENGTH)
    username = conn.opt("username", as_str)
    password = conn.secret("password")
    if password is not None and username is None:
        conn.error("password", "a password needs a username")
    prefix = conn.get("prefix", lambda v: v if isinstance(v, str) else as_str(v), "")
    alarms: AlarmConfig | None = None
    if conn.has("alarms"):
        sec = conn.sub("alarms")
        notifier = _node_key(sec, "notifier", prefix, SERVER_OBJECT)
        event_type = _node_key(sec, "event_type", prefix, DEFAULT_EVENT_TYPE)
        source = _node_key(sec, "source", prefix)
        code = sec.get("code", one_of(*CODE_FIELDS), "ConditionName")
        code_field = sec.opt("code_field", as_str)
        active_field = sec.opt("active_field", as_str)
        plain = code_field is not None or active_field is not None
        if plain:
            # Never guess a plain event's code from its message text: the file must say where it is.
            for k, v in (("code_field", code_field), ("active_field", active_field)):
                if v is None and not sec.has(k):
                    sec.problems.add(
                        sec.file,
                        sec.line,
                        sec.key_path(k),
                        "plain (non-condition) alarm events need both code_field and active_field",
                    )
            if sec.has("code"):
                sec.error("code", "only for conditions; plain events name their code with code_field")
            if not sec.has("event_type"):
                sec.problems.add(
                    sec.file, sec.line, sec.key_path("event_type"), "required with code_field/active_field"
                )
        sec.done()
        if notifier is not None:
            alarms = AlarmConfig(notifier, event_type, source, code, code_field, active_field)
    conn.done()

    parsed: list[OpcuaTag] = []
    for name in list(tags.data):
        tag = tags.sub(name)
        node = _node_key(tag, "node", prefix)
        if node is None and not tag.has("node"):
            tag.problems.add(tag.file, tag.line, tag.key_path("node"), "required key is missing")
        value_map = tag.opt("map", _as_map)
        scale = tag.opt("scale", as_float)
        offset = tag.opt("offset", as_float)
        deadband = tag.opt("deadband", in_range(as_float, 0.0))
        precision = tag.opt("precision", in_range(as_int, 0, 12))
        if deadband is not None and mode != "subscribe":
            tag.error("deadband", "only applies with mode: subscribe")
        tag.done()
        if node is not None:
            parsed.append(OpcuaTag(name, node, value_map, scale, offset, deadband, precision))
    tags.done()
    if not tags.keys() and alarms is None and tags.ok:
        tags.error_here("no tags configured (and no alarms: section)")

    return OpcuaMachineConfig(
        machine_id=machine_id,
        url=url or "",
        tags=tuple(parsed),
        mode=mode,
        poll_interval=poll_interval,
        publishing_interval=publishing,
        sampling_interval=sampling,
        queue_size=queue_size,
        timeout=timeout,
        session_timeout=session_timeout,
        security=security,
        username=username,
        password=password,
        prefix=prefix,
        alarms=alarms,
        max_message_size=max_message_size,
        max_string_length=max_string_length,
        max_array_length=max_array_length,
    )
