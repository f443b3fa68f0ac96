"""agent.yaml's ``mqtt:`` (the broker connection) and ``publish:`` (the Unified Namespace) sections, and
a workflow's ``mqtt:`` action. Parsers record problems with file:line and never raise for bad input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from agent.config.source import (
    Secret,
    Section,
    as_bool,
    as_duration,
    as_float,
    as_int,
    as_str,
    in_range,
    one_of,
)
from agent.mqtt.tags import TagPublishing
from agent.mqtt.topics import check_template

Protocol = Literal["3.1.1", "5"]

# Placeholders of the Unified Namespace root topic of one machine.
UNS_FIELDS = frozenset({"enterprise", "site", "area", "line", "machine", "group", "agent"})
# Placeholders of a workflow action's topic (what every event has, plus the UNS levels).
ACTION_FIELDS = UNS_FIELDS | frozenset({"event", "workflow"})
STATUS_FIELDS = frozenset({"enterprise", "site", "agent"})


@dataclass(frozen=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_hostname: bool = True


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    protocol: Protocol = "5"
    client_id: str = "edge-agent"
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    clean_session: bool = True
    keepalive: float = 30.0
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    # QoS 1 messages awaiting PUBACK at once; also the FIFO window of an MQTT destination.
    in_flight: int = 64
    status_topic: str = "edge-agent/{agent}/status"
    agent: str = "edge-agent"

    @property
    def status(self) -> str:
        from agent.mqtt.topics import render

        return render(self.status_topic, {"agent": self.agent})

    def __repr__(self) -> str:
        # The password is a Secret (prints masked); the username is not a secret but say little.
        return (
            f"MqttConfig(host={self.host!r}, port={self.port}, protocol={self.protocol!r}, "
            f"client_id={self.client_id!r}, tls={self.tls is not None}, auth={self.username is not None})"
        )


@dataclass(frozen=True)
class PublishConfig:
    """The Unified Namespace: retained per-machine state under ``topic`` and events below it."""

    enterprise: str
    site: str
    area: str | None = None  # default: the machine's group
    line: str | None = None  # default: the agent's name (one agent serves one cell/line)
    topic: str = "{enterprise}/{site}/{area}/{line}/{machine}"
    qos: int = 1
    events: bool = True
    tags: TagPublishing | None = None  # tag values on <root>/tags, rate-limited with a deadband


@dataclass(frozen=True)
class MqttTarget:
    """A workflow's ``mqtt:`` action: where each message goes and how."""

    topic: str  # a template: {machine}, {group}, {event}, {workflow}, {enterprise}, ...
    qos: int = 1
    retain: bool = False
    # (file, line, key path) of the action, for errors found once the whole config is read.
    where: tuple[str, int | None, str] = field(default=("", None, ""), compare=False)


def _path(section: Section, key: str) -> Path | None:
    raw = section.opt(key, as_str)
    if raw is None:
        return None
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = section.base_dir / p
    if not p.is_file():
        section.error(key, f"file {p} does not exist")
    return p


def _template(allowed: frozenset[str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        return check_template(as_str(value).strip(), allowed)

    return convert


def _qos(value: object) -> int:
    # QoS 2 would need a second handshake per message for nothing: the outbox plus the stable
    # message id already give exactly-once to a consumer that de-duplicates.
    q = as_int(value)
    if q not in (0, 1):
        raise ValueError(f"expected 0 or 1, got {q} (QoS 2 is not supported; de-duplicate on the message id)")
    return q


def parse_mqtt(section: Section, agent_name: str) -> MqttConfig | None:
    """``None`` when the section is absent."""
    if not section.ok or not section.data:
        section.done()
        return None
    host = section.need("host", as_str)
    tls = _tls(section)
    port = section.get("port", in_range(as_int, lo=1, hi=65535), 8883 if tls else 1883)
    protocol = section.get("protocol", one_of("3.1.1", "5"), "5")
    username = section.opt("username", as_str)
    password = section.secret("password")
    if password is not None and username is None:
        section.error("password", "a password needs a username")
    client_id = section.get("client_id", as_str, f"edge-agent-{agent_name}")
    if not client_id or len(client_id.encode()) > 65535:
        section.error("client_id", "expected a non-empty client id")
    rmin, rmax = _reconnect(section.sub("reconnect"))
    cfg = MqttConfig(
        host=host or "",
        port=port,
        protocol=protocol,  # type: ignore[arg-type]
        client_id=client_id,
        username=username,
        password=password,
        tls=tls,
        clean_session=section.get("clean_session", as_bool, True),
        keepalive=section.get("keepalive", in_range(as_duration, lo=1, hi=65535), 30.0),
        connect_timeout=section.get("connect_timeout", in_range(as_duration, lo=0.1, hi=600), 10.0),
        publish_timeout=section.get("publish_timeout", in_range(as_duration, lo=0.1, hi=600), 10.0),
        reconnect_min=rmin,
        reconnect_max=rmax,
        in_flight=section.get("in_flight", in_range(as_int, lo=1, hi=65535), 64),
        status_topic=section.get("status_topic", _template(STATUS_FIELDS), "edge-agent/{agent}/status"),
        agent=agent_name,
    )
    section.done()
    return cfg


def _tls(section: Section) -> TlsConfig | None:
    """``mqtt.tls``: present (even empty) means TLS; a client certificate needs its key."""
    tls_sec = section.sub("tls")
    tls: TlsConfig | None = None
    if section.has("tls") and tls_sec.ok:
        tls = TlsConfig(
            ca_file=_path(tls_sec, "ca_file"),
            cert_file=_path(tls_sec, "cert_file"),
            key_file=_path(tls_sec, "key_file"),
            verify_hostname=tls_sec.get("verify_hostname", as_bool, True),
        )
        if (tls.cert_file is None) != (tls.key_file is None):
            tls_sec.error_here("give both cert_file and key_file for a client certificate, or neither")
    tls_sec.done()
    return tls


def _reconnect(rec: Section) -> tuple[float, float]:
    """``mqtt.reconnect``: the first and the longest wait between connection attempts."""
    rmin = rec.get("min", in_range(as_duration, lo=0.05, hi=3600), 1.0)
    rmax = rec.get("max", in_range(as_duration, lo=0.05, hi=3600), 60.0)
    if rmax < rmin:
        rec.error("max", "must not be below reconnect.min")
    rec.done()
    return rmin, rmax


def parse_publish(section: Section) -> PublishConfig | None:
    """``None`` when the section is absent."""
    if not section.ok or not section.data:
        section.done()
        return None
    d = PublishConfig(enterprise="", site="")
    cfg = PublishConfig(
        enterprise=section.need("enterprise", as_str) or "",
        site=section.need("site", as_str) or "",
        area=section.opt("area", as_str),
        line=section.opt("line", as_str),
        topic=section.get("topic", _template(UNS_FIELDS), d.topic),
        qos=section.get("qos", _qos, d.qos),
        events=section.get("events", as_bool, d.events),
        tags=_tags(section.sub("tags")) if section.has("tags") else None,
    )
    section.done()
    return cfg


def _tags(section: Section) -> TagPublishing:
    d = TagPublishing()
    cfg = TagPublishing(
        # Faster than 1 s is telemetry for a historian, not state for a namespace.
        interval=section.get("interval", in_range(as_duration, lo=1, hi=86400), d.interval),
        deadband=section.get("deadband", in_range(as_float, lo=0), d.deadband),
        only=tuple(section.list_of("only", as_str)),
    )
    section.done()
    return cfg


@dataclass(frozen=True)
class MqttEndpoint:
    """A destination of kind ``mqtt`` (``agent/delivery/senders/mqtt.py``): a workflow's ``mqtt:``
    action or one of the namespace's two streams. Each row holds its rendered topic in ``url``."""

    kind: ClassVar[str] = "mqtt"
    key: str
    url: str  # "mqtt:<topic template>", for operators
    target: MqttTarget
    # The agent's mqtt: section, set once the whole config is read (None: the check refuses it).
    broker: MqttConfig | None = None
    delay: float = 0.0
    fifo: bool = True
    concurrency: int = 1

    @property
    def fifo_window(self) -> int:
        # One MQTT connection keeps order (TCP, and the broker per MQTT §4.6): a FIFO destination
        # may have this many rows in flight, where an HTTP endpoint sends one at a time.
        return self.broker.in_flight if self.broker is not None else 1


def parse_mqtt_action(section: Section, key: str) -> MqttEndpoint:
    """A workflow's ``mqtt:`` action: an endpoint of the shared outbox that publishes to the broker."""
    topic = section.need("topic", _template(ACTION_FIELDS))
    target = MqttTarget(
        topic=topic or "",
        qos=section.get("qos", _qos, 1),
        retain=section.get("retain", as_bool, False),
        where=(section.file, section.line, section.path),
    )
    delay = section.get("delay", as_duration, 0.0)
    section.done()
    return MqttEndpoint(key=key, url=f"mqtt:{target.topic}", target=target, delay=delay)
