"""The api: section: off unless configured, loopback by default, a token always, TLS as a pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.api.settings import ApiConfig, parse_api
from agent.config.source import Problems, Section, parse_yaml

TOKEN = "a-long-enough-token-123"


def parse(text: str, base: Path | None = None) -> tuple[ApiConfig, list[str]]:
    problems = Problems()
    data = parse_yaml(text, "agent.yaml", problems)
    section = Section(data, file="agent.yaml", path="api", problems=problems, base_dir=base)
    return parse_api(section), [str(p) for p in problems.items]


def test_absent_section_turns_the_api_off() -> None:
    config, problems = parse("")
    assert problems == [] and not config.enabled


def test_defaults_bind_loopback_8787() -> None:
    config, problems = parse(f"token: {TOKEN}\n")
    assert problems == []
    assert (config.enabled, config.host, config.port, config.max_body) == (True, "127.0.0.1", 8787, 65536)
    assert config.loopback and not config.tls
    assert config.base_url == "http://127.0.0.1:8787"
    assert TOKEN not in repr(config)


def test_explicit_bind_and_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_TEST_API_TOKEN", TOKEN)
    config, problems = parse(
        "bind: '0.0.0.0:9000'\ntoken_env: EDGE_AGENT_TEST_API_TOKEN\nmax_body: 16KiB\nallow_plaintext: true\n"
    )
    assert problems == []
    assert config.allow_plaintext and config.exposed_plaintext
    assert config.token is not None and config.token.reveal() == TOKEN
    assert (config.host, config.port, config.max_body, config.loopback) == ("0.0.0.0", 9000, 16384, False)
    assert config.base_url == "http://127.0.0.1:9000"
    config, _ = parse(f"bind: '[::1]:9001'\ntoken: {TOKEN}\n")
    assert (config.host, config.port, config.loopback) == ("::1", 9001, True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bind: 127.0.0.1:8787\n", "agent.yaml:1: api: the API needs a bearer token"),
        ("token: short\n", "the API token must be at least 16 characters"),
        (f"token: {TOKEN}\nbind: localhost\n", "api.bind: expected host:port"),
        (f"token: {TOKEN}\nbind: '127.0.0.1:70000'\n", "api.bind: port must be 1-65535"),
        (f"token: {TOKEN}\ntls_cert_file: cert.pem\n", "api.tls_cert_file: file not found"),
        (f"token: {TOKEN}\nport: 1\n", "api.port: unknown key"),
        ("token_file: /nonexistent/edge-agent-token\n", "api.token_file: cannot read secret file"),
        (f"token: {TOKEN}\nbind: '0.0.0.0:8787'\n", "api.bind: 0.0.0.0 is reachable from the network"),
        (f"token: {TOKEN}\nbind: '192.0.2.7:8787'\n", "set allow_plaintext: true on purpose"),
        (f"token: '{TOKEN}\u00e4'\n", "the API token must be printable ASCII"),
        (f"token: {TOKEN}\nmax_connections: 0\n", "api.max_connections: must be at least 1"),
        (f"token: {TOKEN}\nidle_timeout: 0s\n", "api.idle_timeout: must be at least 1"),
    ],
)
def test_problems_name_the_key(text: str, message: str) -> None:
    _, problems = parse(text)
    assert any(message in p for p in problems), problems


def test_tls_needs_cert_and_key(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    _, problems = parse(f"token: {TOKEN}\ntls_cert_file: cert.pem\n", tmp_path)
    assert any("api.tls_key_file: TLS needs both tls_cert_file and tls_key_file" in p for p in problems)
    (tmp_path / "key.pem").write_text("x")
    config, problems = parse(f"token: {TOKEN}\ntls_cert_file: cert.pem\ntls_key_file: key.pem\n", tmp_path)
    assert problems == [] and config.tls and config.base_url.startswith("https://")
