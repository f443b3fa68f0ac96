"""Receiver side: verify an edge-agent webhook in two lines.

from agent.delivery.verify import verify_request, InvalidSignature
event = verify_request(SECRET, request.headers, raw_body)   # raises InvalidSignature
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.config.source import Secret
from agent.delivery.signing import DEFAULT_TOLERANCE, InvalidSignature, verify

__all__ = ["InvalidSignature", "verify_request"]


def verify_request(
    secret: str | Secret | Sequence[str | Secret],
    headers: Mapping[str, str],
    body: bytes,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The parsed JSON object of a genuine request; ``InvalidSignature`` for anything else.

    Pass the raw body bytes exactly as received (not re-serialised JSON). Several secrets may be given
    while one is being rotated.
    """
    items = [secret] if isinstance(secret, str | Secret) else list(secret)
    plain = [s.reveal() if isinstance(s, Secret) else s for s in items]
    data = verify(plain, headers, body, time.time() if now is None else now, tolerance)
    if not isinstance(data, dict):
        raise InvalidSignature("signature valid but body is not a JSON object")
    return data
