"""Panel sessions: a token exchanged once for an HttpOnly cookie, with a CSRF token per session.

Sessions live in memory only: an agent restart asks everyone to log in again, and removing a token
from agent.yaml ends its sessions at the next restart. Pure code over plain data, clock injected.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.api.settings import RoleToken

COOKIE = "edge_panel"
# A shared tablet logs in once a shift, a wall display once; bound the table all the same.
MAX_SESSIONS = 1000


@dataclass
class Session:
    id: str
    token_name: str
    role: str
    csrf: str
    expires: float
    operator: dict[str, str] = field(default_factory=dict)
    flash: dict[str, Any] | None = None  # the outcome of the last form, shown once on the next page

    def operator_object(self, name: str | None, op_id: str | None) -> dict[str, Any] | None:
        """The seed's ``operator`` object from what the form says, remembered for the next form."""
        name = (name or "").strip() or None
        op_id = (op_id or "").strip() or None
        self.operator = {k: v for k, v in (("id", op_id), ("name", name)) if v}
        if not self.operator:
            return None
        return {"id": op_id, "name": name}


class Sessions:
    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def open(self, token: RoleToken, operator: dict[str, str] | None = None) -> Session:
        now = self._clock()
        self._expire(now)
        if len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id.values(), key=lambda s: s.expires)
            del self._by_id[oldest.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            token_name=token.name,
            role=token.role,
            csrf=secrets.token_urlsafe(32),
            expires=now + self.ttl,
            operator=dict(operator or {}),
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._by_id.values() if s.expires <= now]:
            del self._by_id[sid]


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
