"""The ``api:`` section of agent.yaml: where the operator API listens, its role tokens, and the panel."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_MAX_BODY = 64 * 1024
MIN_TOKEN_LENGTH = 16
# A connection that has not sent a full request line and headers (or sits idle between requests)
# this long is closed: slow-loris clients must not pin file descriptors.
DEFAULT_IDLE_TIMEOUT = 10.0
# Open API connections, well below the unit's LimitNOFILE= (8192) and even systemd's default soft
# limit of 1,024: the outbox, the PLC links and outgoing webhooks need descriptors too.
DEFAULT_MAX_CONNECTIONS = 128
# Least to most: each role may do everything the roles before it may.
ROLES = ("viewer", "operator", "admin")
DEFAULT_SESSION_TTL = 12 * 3600.0


@dataclass(frozen=True)
class RoleToken:
    """One bearer token and what it may do; ``name`` (never the token) is what logs and sessions show."""

    name: str
    role: str
    secret: Secret


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Secret | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_body: int = DEFAULT_MAX_BODY
    allow_plaintext: bool = False
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    # ``token`` above is the admin token of older configs; ``tokens`` adds tokens per role.
    tokens: tuple[RoleToken, ...] = ()
    panel: bool = True
    session_ttl: float = DEFAULT_SESSION_TTL

    @property
    def exposed_plaintext(self) -> bool:
        """A non-loopback bind without TLS: the token would cross the plant network in clear text."""
        return not self.loopback and not self.tls

    @property
    def role_tokens(self) -> tuple[RoleToken, ...]:
        """Every accepted token: the legacy ``token`` counts as an admin token named "token"."""
        legacy = (RoleToken("token", "admin", self.token),) if self.token is not None else ()
        return legacy + self.tokens

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def base_url(self) -> str:
        """The URL a local client uses; a wildcard bind is reached through loopback."""
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
        return ctx


def _bind(value: Any) -> tuple[str, int]:
    text = as_str(value).strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port such as 127.0.0.1:8787, got {text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


def parse_api(section: Section) -> ApiConfig:
    """An absent or empty ``api:`` section turns the API off; otherwise a token is required."""
    enabled = section.get("enabled", as_bool, bool(section.keys()))
    host, port = section.get("bind", _bind, (DEFAULT_HOST, DEFAULT_PORT))
    token = section.secret("token")
    tokens = _role_tokens(section, token)
    panel_on, session_ttl = _panel(section.sub("panel"))
    max_body = section.get("max_body", in_range(as_size, 1024, 16 * 2**20), DEFAULT_MAX_BODY)
    cert = _file(section, "tls_cert_file")
    key = _file(section, "tls_key_file")
    if section.has("tls_cert_file") != section.has("tls_key_file"):
        missing = "tls_cert_file" if section.has("tls_key_file") else "tls_key_file"
        section.error(missing, "TLS needs both tls_cert_file and tls_key_file")
    _check_token(section, enabled, token, tokens)
    allow_plaintext = section.get("allow_plaintext", as_bool, False)
    idle_timeout = section.get("idle_timeout", in_range(as_duration, 1.0, 600.0), DEFAULT_IDLE_TIMEOUT)
    max_connections = section.get("max_connections", in_range(as_int, 1, 4096), DEFAULT_MAX_CONNECTIONS)
    loopback = ApiConfig(host=host).loopback
    if enabled and not loopback and cert is None and not section.has("tls_cert_file") and not allow_plaintext:
        section.error(
            "bind",
            f"{host} is reachable from the network and there is no TLS: the bearer token would travel "
            "in clear text; give tls_cert_file and tls_key_file, bind 127.0.0.1, or set "
            "allow_plaintext: true on purpose",
        )
    section.done()
    return ApiConfig(
        enabled=enabled,
        host=host,
        port=port,
        token=token,
        tls_cert_file=cert,
        tls_key_file=key,
        max_body=max_body,
        allow_plaintext=allow_plaintext,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        tokens=tuple(tokens),
        panel=panel_on,
        session_ttl=session_ttl,
    )


def _panel(panel: Section) -> tuple[bool, float]:
    """``api.panel``: whether the operator panel is served, and how long a login lasts."""
    enabled = panel.get("enabled", as_bool, True)
    session_ttl = panel.get("session_ttl", in_range(as_duration, 60.0, 30 * 86400.0), DEFAULT_SESSION_TTL)
    panel.done()
    return enabled, session_ttl


def _check_token(section: Section, enabled: bool, token: Secret | None, tokens: list[RoleToken]) -> None:
    """An enabled API needs a token; ``api.token`` must be long enough and fit in an HTTP header."""
    given = any(section.has(k) for k in ("token", "token_file", "token_env", "tokens"))
    if enabled and token is None and not tokens and not given:
        section.error_here(
            "the API needs a bearer token: give token, token_file, token_env or tokens (or enabled: false)"
        )
    if token is not None and len(token.reveal()) < MIN_TOKEN_LENGTH:
        section.error_here(f"the API token must be at least {MIN_TOKEN_LENGTH} characters")
    if token is not None and not _header_safe(token.reveal()):
        section.error_here("the API token must be printable ASCII (it travels in an HTTP header)")


def _header_safe(text: str) -> bool:
    return text.isascii() and text.isprintable() and text == text.strip()


def _role_tokens(section: Section, legacy: Secret | None) -> list[RoleToken]:
    """``tokens: [{name, role, token | token_file | token_env}]``; names and tokens must be unique."""
    out: list[RoleToken] = []
    names: set[str] = set()
    for item in section.sections("tokens"):
        name = item.need("name", as_str)
        role = item.need("role", one_of(*ROLES))
        secret = item.secret("token", required=True)
        item.done()
        if name in names or name == "token":
            item.error("name", f"token name {name!r} is taken: names are unique and 'token' means api.token")
        names.add(name)
        if secret is None or not name or not role:
            continue
        if len(secret.reveal()) < MIN_TOKEN_LENGTH:
            item.error_here(f"a token must be at least {MIN_TOKEN_LENGTH} characters")
            continue
        if not _header_safe(secret.reveal()):
            item.error_here("a token must be printable ASCII (it travels in an HTTP header)")
            continue
        taken = [t.secret for t in out] + ([legacy] if legacy is not None else [])
        if any(t.reveal() == secret.reveal() for t in taken):
            # A token that maps to two roles would make its role depend on list order.
            item.error_here(f"token {name!r} has the same value as another token")
            continue
        out.append(RoleToken(name, role, secret))
    return out


def _file(section: Section, key: str) -> Path | None:
    raw = section.opt(key, as_str)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = section.base_dir / path
    if not path.is_file():
        section.error(key, f"file not found: {path}")
        return None
    return path
