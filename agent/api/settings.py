"""The ``api:`` section of agent.yaml: where the operator API listens and the token it requires."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.source import Secret, Section, as_bool, as_size, as_str, in_range

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_MAX_BODY = 64 * 1024
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = False
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: Secret | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_body: int = DEFAULT_MAX_BODY

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
    max_body = section.get("max_body", in_range(as_size, 1024, 16 * 2**20), DEFAULT_MAX_BODY)
    cert = _file(section, "tls_cert_file")
    key = _file(section, "tls_key_file")
    if section.has("tls_cert_file") != section.has("tls_key_file"):
        missing = "tls_cert_file" if section.has("tls_key_file") else "tls_key_file"
        section.error(missing, "TLS needs both tls_cert_file and tls_key_file")
    if enabled and token is None and not any(section.has(k) for k in ("token", "token_file", "token_env")):
        section.error_here(
            "the API needs a bearer token: give token, token_file or token_env (or enabled: false)"
        )
    if token is not None and len(token.reveal()) < MIN_TOKEN_LENGTH:
        section.error_here(f"the API token must be at least {MIN_TOKEN_LENGTH} characters")
    section.done()
    return ApiConfig(
        enabled=enabled,
        host=host,
        port=port,
        token=token,
        tls_cert_file=cert,
        tls_key_file=key,
        max_body=max_body,
    )


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
