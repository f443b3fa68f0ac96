"""The ``outbox:`` and ``delivery:`` sections of agent.yaml and a workflow's ``webhook:`` action."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from agent.config.source import (
    Secret,
    Section,
    as_bool,
    as_duration,
    as_int,
    as_size,
    as_str,
    in_range,
    one_of,
)
from agent.delivery.signing import MIN_SECRET_BYTES, decode_secret

OUTBOX_FILE = "outbox.sqlite3"

DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)

WhenFull = Literal["reject", "drop_delivered"]
SignatureMode = Literal["standard", "github"]

# Headers the dispatcher computes itself; letting a workflow set them would break signing or HTTP.
_RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-hub-signature-256",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 9110 field values: visible characters, space and tab; every other C0 control and DEL is refused.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class OutboxConfig:
    max_size: int = 512 * 2**20
    max_rows: int = 2_000_000
    keep_delivered: float = 7 * 86400.0
    when_full: WhenFull = "reject"


@dataclass(frozen=True)
class BreakerConfig:
    failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0


@dataclass(frozen=True)
class DeliveryConfig:
    timeout: float = 30.0
    connect_timeout: float = 10.0
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: float = 0.1
    max_attempts: int = len(DEFAULT_RETRY_SCHEDULE)
    max_age: float = 5 * 86400.0
    fifo: bool = True
    concurrency: int = 4
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_response_size: int = 64 * 1024
    retry_after_max: float = 3600.0
    ca_file: Path | None = None


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how one workflow action delivers; ``key`` is ``"<workflow>#<action index>"``."""

    # The destination kind: selects ``agent/delivery/senders/webhook.py``.
    kind: ClassVar[str] = "webhook"
    key: str
    url: str
    secrets: tuple[Secret, ...]
    signature: SignatureMode = "standard"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = 30.0
    delay: float = 0.0
    fifo: bool = True
    concurrency: int = 4

    def __repr__(self) -> str:
        # Header values can be tokens (Authorization): show names only.
        return (
            f"EndpointConfig(key={self.key!r}, url={self.url!r}, secrets={len(self.secrets)}, "
            f"signature={self.signature!r}, headers={sorted(self.headers)!r}, timeout={self.timeout})"
        )

    __str__ = __repr__


def parse_outbox(section: Section) -> OutboxConfig:
    d = OutboxConfig()
    cfg = OutboxConfig(
        max_size=section.get("max_size", in_range(as_size, lo=1 * 2**20), d.max_size),
        max_rows=section.get("max_rows", in_range(as_int, lo=100), d.max_rows),
        keep_delivered=section.get("keep_delivered", as_duration, d.keep_delivered),
        when_full=section.get("when_full", one_of("reject", "drop_delivered"), d.when_full),  # type: ignore[arg-type]
    )
    section.done()
    return cfg


def _schedule(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of durations like [0s, 5s, 5m, 30m]")
    return tuple(as_duration(v) for v in value)


def parse_delivery(section: Section) -> DeliveryConfig:
    d = DeliveryConfig()
    schedule = section.get("retry_schedule", _schedule, d.retry_schedule)
    breaker_sec = section.sub("circuit_breaker")
    db = BreakerConfig()
    breaker = BreakerConfig(
        failures=breaker_sec.get("failures", in_range(as_int, lo=1), db.failures),
        cooldown=breaker_sec.get("cooldown", in_range(as_duration, lo=0.1), db.cooldown),
        max_cooldown=breaker_sec.get("max_cooldown", in_range(as_duration, lo=0.1), db.max_cooldown),
    )
    breaker_sec.done()
    ca_raw = section.opt("ca_file", as_str)
    ca_file: Path | None = None
    if ca_raw is not None:
        ca_file = Path(ca_raw)
        if not ca_file.is_absolute():
            ca_file = section.base_dir / ca_file
        if not ca_file.is_file():
            section.error("ca_file", f"CA bundle {ca_file} does not exist")
    cfg = DeliveryConfig(
        timeout=section.get("timeout", in_range(as_duration, lo=0.01, hi=600), d.timeout),
        connect_timeout=section.get(
            "connect_timeout", in_range(as_duration, lo=0.01, hi=600), d.connect_timeout
        ),
        retry_schedule=schedule,
        jitter=section.get("jitter", in_range(_fraction, lo=0, hi=1), d.jitter),
        max_attempts=section.get("max_attempts", in_range(as_int, lo=1), len(schedule)),
        max_age=section.get("max_age", in_range(as_duration, lo=1), d.max_age),
        fifo=section.get("fifo", as_bool, d.fifo),
        concurrency=section.get("concurrency", in_range(as_int, lo=1, hi=256), d.concurrency),
        breaker=breaker,
        max_response_size=section.get("max_response_size", in_range(as_size, lo=1024), d.max_response_size),
        # Below 1 s a throttling receiver ("Retry-After: 0") would be hammered in a tight loop.
        retry_after_max=section.get("retry_after_max", in_range(as_duration, lo=1), d.retry_after_max),
        ca_file=ca_file,
    )
    section.done()
    return cfg


def _fraction(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            pass
    raise ValueError(f"expected a fraction like 0.1 or 10%, got {value!r}")


def _url(value: Any) -> str:
    text = as_str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got scheme {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if parts.username or parts.password:
        # Credentials in a URL end up in logs and history: require a header instead.
        raise ValueError("credentials in the URL are not allowed; use headers: {Authorization: ...}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL: {exc}") from None
    return text


def _check_secret(section: Section, key: str, secret: Secret, mode: str) -> bool:
    if mode == "github":
        # GitHub-style HMAC keys are the secret's bytes as written: the same minimum strength as a
        # Standard Webhooks key, or a receiver's signature check is a guessing game.
        if len(secret.reveal().strip().encode("utf-8")) < MIN_SECRET_BYTES:
            section.error(
                key,
                f"a signature: github secret must be at least {MIN_SECRET_BYTES} bytes "
                "(create one with: edge-agent secret generate)",
            )
            return False
        return True
    try:
        decode_secret(secret.reveal())
    except ValueError as exc:
        section.error(key, f"{exc} (create one with: edge-agent secret generate)")
        return False
    return True


def parse_webhook(section: Section, key: str, defaults: DeliveryConfig) -> EndpointConfig:
    """A workflow's ``webhook:`` action. With problems (recorded in ``section.problems``) the result is
    incomplete (empty url or no secrets) and the loader must reject the file."""
    url = section.need("url", _url)
    mode = section.get("signature", one_of("standard", "github"), "standard")
    secrets: list[Secret] = []
    if section.has("secrets"):
        for sub in section.sections("secrets"):
            s = sub.secret("secret", required=True)
            if s is not None and _check_secret(sub, "secret", s, mode):
                secrets.append(s)
            sub.done()
        for k in ("secret", "secret_file", "secret_env"):
            if section.has(k):
                section.error(k, "give either secrets: (a list, for rotation) or one secret")
        section.secret("secret")
    else:
        one = section.secret("secret", required=True)
        given = next((k for k in ("secret", "secret_file", "secret_env") if section.has(k)), "secret")
        if one is not None and _check_secret(section, given, one, mode):
            secrets.append(one)
    if mode == "github" and len(secrets) > 1:
        section.error("secrets", "signature: github supports one secret only")
    headers: dict[str, str] = {}
    hsec = section.sub("headers")
    for name in hsec.keys():  # noqa: SIM118 - Section is not iterable
        value = hsec.raw(name)
        if not _HEADER_NAME.fullmatch(name):
            hsec.error(name, "not a valid HTTP header name")
        elif name.lower() in _RESERVED_HEADERS:
            hsec.error(name, "set by the dispatcher; cannot be overridden")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            hsec.error(name, "expected a single-line string value")
        elif _CONTROL.search(str(value)):
            # \r, \0 or any other control byte would split or corrupt the request (header injection);
            # aiohttp refuses them only at send time, and then every attempt fails the same way.
            hsec.error(name, "control characters (\\r, \\n, \\0 ...) are not allowed in a header value")
        else:
            headers[name] = str(value)
    hsec.done()
    timeout = section.get("timeout", in_range(as_duration, lo=0.01, hi=600), defaults.timeout)
    delay = section.get("delay", as_duration, 0.0)
    fifo = section.get("fifo", as_bool, defaults.fifo)
    concurrency = section.get("concurrency", in_range(as_int, lo=1, hi=256), defaults.concurrency)
    section.done()
    return EndpointConfig(
        key=key,
        url=url or "",
        secrets=tuple(secrets),
        signature=mode,  # type: ignore[arg-type]
        headers=MappingProxyType(headers),
        timeout=timeout,
        delay=delay,
        fifo=fifo,
        concurrency=concurrency,
    )
