"""Signatures checked against the spec's test vector and the official ``standardwebhooks`` verifier."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from agent.config.source import Secret
from agent.delivery.signing import (
    InvalidSignature,
    decode_secret,
    generate_secret,
    github_signature,
    signing_headers,
    standard_signature,
)
from agent.delivery.verify import verify_request

VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_spec_test_vector() -> None:
    assert standard_signature([decode_secret(VECTOR_SECRET)], VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_spec_test_vector_verifies_with_our_helper_at_its_time() -> None:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIG}
    assert verify_request(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 10) == {"test": 2432232314}
    with pytest.raises(InvalidSignature, match="too old"):
        verify_request(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS + 301)


def test_official_verifier_accepts_our_headers() -> None:
    secret = generate_secret()
    body = json.dumps({"id": "evt_1", "event": "downtime_started", "machine": {"id": "mill-01"}}).encode()
    headers = signing_headers("standard", [secret], "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_official_verifier_rejects_a_changed_body_or_wrong_secret() -> None:
    secret = generate_secret()
    body = b'{"a": 1}'
    headers = signing_headers("standard", [secret], "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a": 2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_rotation_sends_one_signature_per_secret_each_accepted() -> None:
    old, new = generate_secret(), generate_secret()
    body = b'{"x": 1}'
    headers = signing_headers("standard", [new, old], "msg_2", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(body, headers) == {"x": 1}
    assert Webhook(new).verify(body, headers) == {"x": 1}


def test_timestamp_is_signed_so_replaying_with_a_new_timestamp_fails() -> None:
    secret = generate_secret()
    now = int(time.time())
    body = b'{"x": 1}'
    headers = signing_headers("standard", [secret], "msg_3", now - 10, body)
    headers["webhook-timestamp"] = str(now)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
    with pytest.raises(InvalidSignature):
        verify_request(secret, headers, body)


def test_github_mode_matches_hmac_hex_and_verifies() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    sig = github_signature("It's a Secret to Everybody", b"Hello, World!")
    # GitHub's documented example for these inputs.
    assert sig == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = signing_headers("github", ["s3cret"], "msg_4", int(time.time()), body)
    assert headers["X-Hub-Signature-256"] == github_signature("s3cret", body)
    assert verify_request("s3cret", headers, body) == json.loads(body)
    with pytest.raises(InvalidSignature):
        verify_request("other", headers, body)


def test_generate_secret_shape_and_official_acceptance() -> None:
    s = generate_secret()
    assert s.startswith("whsec_")
    assert len(base64.b64decode(s[6:])) == 32
    assert s != generate_secret()
    Webhook(s)  # the official package accepts it as a key
    for n in (24, 64):
        assert len(decode_secret(generate_secret(n))) == n
    with pytest.raises(ValueError):
        generate_secret(16)


@pytest.mark.parametrize(
    "bad", ["whsec_", "whsec_!!!notbase64", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_bad_secrets_are_rejected_without_echoing_them(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        decode_secret(bad)
    assert bad[6:] == "" or bad[6:] not in str(info.value)


def test_verify_request_two_lines_with_secret_object_and_missing_headers() -> None:
    secret = generate_secret()
    body = b'{"ok": true}'
    headers = signing_headers("standard", [secret], "msg_5", int(time.time()), body)
    assert verify_request(Secret(secret, "t"), headers, body) == {"ok": True}
    with pytest.raises(InvalidSignature, match="missing"):
        verify_request(secret, {}, body)
    with pytest.raises(InvalidSignature):
        verify_request(secret, {**headers, "webhook-timestamp": "soon"}, body)


def test_id_with_dot_is_refused() -> None:
    with pytest.raises(ValueError):
        standard_signature([decode_secret(generate_secret())], "a.b", 1, b"{}")


def test_official_sign_agrees_for_any_timestamp() -> None:
    secret = generate_secret()
    body = '{"n": 1}'
    ts = 1_900_000_000
    ours = signing_headers("standard", [secret], "msg_6", ts, body.encode())["webhook-signature"]
    assert ours == Webhook(secret).sign("msg_6", datetime.fromtimestamp(ts, UTC), body)
