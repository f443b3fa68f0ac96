"""Config sections: good values parse, bad ones become problems naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.source import Problems, Section, parse_yaml
from agent.delivery.settings import (
    DEFAULT_RETRY_SCHEDULE,
    DeliveryConfig,
    parse_delivery,
    parse_outbox,
    parse_webhook,
)
from agent.delivery.signing import generate_secret


def section(text: str, tmp_path: Path | None = None) -> tuple[Section, Problems]:
    problems = Problems()
    data = parse_yaml(text, "agent.yaml", problems)
    assert not problems
    return Section(data, file="agent.yaml", path="", problems=problems, base_dir=tmp_path), problems


def test_outbox_and_delivery_from_the_config_sketch() -> None:
    top, problems = section(
        "outbox: {max_size: 512MiB, keep_delivered: 7d, when_full: reject}\n"
        "delivery:\n  timeout: 30s\n  retry_schedule: [0s, 5s, 5m, 30m, 2h, 5h, 10h, 10h]\n"
    )
    ob = parse_outbox(top.sub("outbox"))
    dl = parse_delivery(top.sub("delivery"))
    assert not problems, problems.items
    assert (ob.max_size, ob.keep_delivered, ob.when_full) == (512 * 2**20, 7 * 86400, "reject")
    assert dl.timeout == 30 and dl.retry_schedule == DEFAULT_RETRY_SCHEDULE and dl.max_attempts == 8


def test_bad_delivery_values_name_their_keys() -> None:
    top, problems = section(
        "delivery:\n  timeout: forever\n  retry_schedule: 5s\n  fifo: maybe\n  circuit_breaker: {failures: 0}\n"
        "  colour: blue\n"
    )
    parse_delivery(top.sub("delivery"))
    text = "\n".join(str(p) for p in problems.items)
    assert "agent.yaml:2: delivery.timeout" in text
    assert "delivery.retry_schedule" in text
    assert "delivery.fifo" in text
    assert "delivery.circuit_breaker.failures" in text
    assert "delivery.colour: unknown key" in text


def test_outbox_when_full_choices() -> None:
    top, problems = section("outbox: {when_full: explode}\n")
    parse_outbox(top.sub("outbox"))
    assert "outbox.when_full" in str(problems.items[0]) and "drop_delivered" in str(problems.items[0])


def test_webhook_with_secret_headers_and_delay() -> None:
    s = generate_secret()
    top, problems = section(
        f"webhook:\n  url: http://127.0.0.1:8090/hook\n  secret: {s}\n  delay: 2m\n"
        "  headers: {Authorization: Bearer abc, X-Plant: cell-a}\n  timeout: 10s\n"
    )
    ep = parse_webhook(top.sub("webhook"), "wf#0", DeliveryConfig())
    assert not problems, problems.items
    assert ep.key == "wf#0" and ep.url == "http://127.0.0.1:8090/hook" and ep.delay == 120
    assert ep.secrets[0].reveal() == s and ep.timeout == 10
    assert dict(ep.headers) == {"Authorization": "Bearer abc", "X-Plant": "cell-a"}
    assert s not in repr(ep) and "Bearer abc" not in repr(ep)


def test_webhook_secret_from_env_and_file_and_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_secret(), generate_secret()
    monkeypatch.setenv("HOOK_SECRET_NEW", new)
    (tmp_path / "old.secret").write_text(old + "\n")
    top, problems = section(
        "webhook:\n  url: https://127.0.0.1/x\n  secrets:\n    - secret_env: HOOK_SECRET_NEW\n"
        "    - secret_file: old.secret\n",
        tmp_path,
    )
    ep = parse_webhook(top.sub("webhook"), "wf#1", DeliveryConfig())
    assert not problems, problems.items
    assert [x.reveal() for x in ep.secrets] == [new, old]


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("url: ftp://127.0.0.1/x\nsecret: {s}", "webhook.url: expected an http:// or https:// URL"),
        ("url: http://user:pw@127.0.0.1/x\nsecret: {s}", "credentials in the URL"),
        ("url: http://127.0.0.1/x", "webhook.secret: required"),
        ("url: http://127.0.0.1/x\nsecret: not-a-secret", "webhook.secret: secret is not whsec_"),
        ("url: http://127.0.0.1/x\nsecret_env: NOPE_NOT_SET_123", "environment variable NOPE_NOT_SET_123"),
        ("url: http://127.0.0.1/x\nsecret: {s}\nsignature: pgp", "webhook.signature"),
        ("url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{webhook-id: x}}", "cannot be overridden"),
        ("url: http://127.0.0.1/x\nsecret: {s}\nretries: 3", "webhook.retries: unknown key"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{X-Y: "a\\rInjected: 1"}}', "headers.X-Y: control"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{X-Y: "a\\0b"}}', "headers.X-Y: control"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{X-Y: "a\\x1bb"}}', "headers.X-Y: control"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{X-Y: "a\\x7f"}}', "headers.X-Y: control"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{"X-Y\\n": a}}', "not a valid HTTP header name"),
        ('url: http://127.0.0.1/x\nsecret: {s}\nheaders: {{"X\\rY": a}}', "not a valid HTTP header name"),
        (
            "url: http://127.0.0.1/x\nsecret: a\nsignature: github",
            "webhook.secret: a signature: github secret",
        ),
        (
            "url: http://127.0.0.1/x\nsecret: 23-characters-is-short!\nsignature: github",
            "at least 24 bytes",
        ),
    ],
)
def test_bad_webhooks_are_named_problems(yaml_text: str, needle: str) -> None:
    s = generate_secret()
    body = "\n".join("  " + line for line in yaml_text.format(s=s).splitlines())
    top, problems = section("webhook:\n" + body + "\n")
    parse_webhook(top.sub("webhook"), "wf#0", DeliveryConfig())
    text = "\n".join(str(p) for p in problems.items)
    assert needle in text
    assert s not in text
    assert "agent.yaml:" in text


def test_github_mode_accepts_any_strong_enough_secret_but_only_one() -> None:
    top, problems = section(
        "webhook: {url: 'http://127.0.0.1/gh', secret: plain-words-but-long-enough, signature: github,"
        ' headers: {X-Tab: "a\\tb"}}\n'
    )
    ep = parse_webhook(top.sub("webhook"), "wf#0", DeliveryConfig())
    assert not problems and ep.signature == "github"
    assert ep.headers["X-Tab"] == "a\tb"  # HTAB is legal inside a field value (RFC 9110)


def test_retry_after_max_must_be_at_least_a_second() -> None:
    top, problems = section("delivery:\n  retry_after_max: 0s\n")
    parse_delivery(top.sub("delivery"))
    text = "\n".join(str(p) for p in problems.items)
    assert "delivery.retry_after_max" in text and "at least 1" in text
    top, problems = section("delivery:\n  retry_after_max: 2s\n")
    assert parse_delivery(top.sub("delivery")).retry_after_max == 2 and not problems
