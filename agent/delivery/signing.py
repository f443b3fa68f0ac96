"""Standard Webhooks v1 signatures (and GitHub's ``X-Hub-Signature-256``): pure functions, no I/O.

Signed content is the exact bytes ``{id}.{timestamp}.{body}``; the HMAC key is the base64-decoded
part of ``whsec_...``. During key rotation one ``v1,<sig>`` entry per secret, space separated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE = 300


class InvalidSignature(Exception):
    """The request was not signed with any of the given secrets, or its timestamp is out of range."""


def generate_secret(nbytes: int = 32, rand: Callable[[int], bytes] = os.urandom) -> str:
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise ValueError(f"secret length must be {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes")
    return SECRET_PREFIX + base64.b64encode(rand(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``ValueError`` (without the value) when malformed."""
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret is not whsec_ followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"secret decodes to {len(key)} bytes; Standard Webhooks needs {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES}"
        )
    return key


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign_v1(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.digest(key, _signed_content(msg_id, timestamp, body), "sha256")  # one C call
    return "v1," + base64.b64encode(mac).decode("ascii")


def standard_signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    if "." in msg_id:
        raise ValueError("webhook-id must not contain '.'")
    return " ".join(sign_v1(k, msg_id, timestamp, body) for k in keys)


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signing_headers(
    mode: str, secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Headers for one attempt: ``webhook-id`` is stable across retries, the timestamp is per attempt."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if mode == "github":
        headers["X-Hub-Signature-256"] = github_signature(secrets[0], body)
    else:
        headers["webhook-signature"] = standard_signature(
            [decode_secret(s) for s in secrets], msg_id, timestamp, body
        )
    return headers


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Any:
    """Check a received request; returns the parsed JSON body. Accepts Standard Webhooks or GitHub."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "webhook-signature" in lower:
        _verify_standard(secrets, lower, body, now, tolerance)
    elif "x-hub-signature-256" in lower:
        given = lower["x-hub-signature-256"].strip()
        if not any(hmac.compare_digest(github_signature(s, body), given) for s in secrets):
            raise InvalidSignature("no matching X-Hub-Signature-256")
    else:
        raise InvalidSignature("missing webhook-signature header")
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidSignature("signature valid but body is not JSON") from None


def _verify_standard(
    secrets: Sequence[str], lower: Mapping[str, str], body: bytes, now: float, tolerance: float
) -> None:
    msg_id = lower.get("webhook-id", "")
    ts_text = lower.get("webhook-timestamp", "")
    if not msg_id or not ts_text:
        raise InvalidSignature("missing webhook-id or webhook-timestamp header")
    try:
        ts = int(ts_text)
    except ValueError:
        raise InvalidSignature(f"webhook-timestamp is not an integer: {ts_text[:20]!r}") from None
    if ts < now - tolerance:
        raise InvalidSignature(f"timestamp too old ({int(now - ts)} s)")
    if ts > now + tolerance:
        raise InvalidSignature(f"timestamp too new ({int(ts - now)} s in the future)")
    keys = []
    for s in secrets:
        try:
            keys.append(decode_secret(s))
        except ValueError as exc:
            raise InvalidSignature(f"receiver secret is unusable: {exc}") from None
    content = _signed_content(msg_id, ts, body)
    for entry in lower["webhook-signature"].split(" "):
        version, _, sig = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            continue
        for key in keys:
            if hmac.compare_digest(hmac.digest(key, content, "sha256"), given):
                return
    raise InvalidSignature("no matching v1 signature")
