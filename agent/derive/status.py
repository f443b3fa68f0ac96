"""Machine status with debounce: a candidate state is reported only after it held ``min_state``.

The reported change carries the moment the new state *began* (when the candidate first appeared),
not the moment the debounce confirmed it, so durations add up to wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conditions import RuleContext
from .snapshot import Fields
from .spec import StatusSpec


@dataclass(frozen=True, slots=True)
class StatusChange:
    from_state: str | None
    to_state: str
    since: float
    previous_duration: float | None
    reason: str  # the rule path (``status.rules[1]``), ``status.otherwise`` or why reads failed


def evaluate(spec: StatusSpec, ctx: RuleContext) -> tuple[str, str]:
    """The first matching rule's state and its path, else ``otherwise``."""
    for rule in spec.rules:
        if rule.when.check(ctx):
            return rule.state, rule.path
    return spec.otherwise, "status.otherwise"


class StatusTracker:
    def __init__(self, min_state: float) -> None:
        self.min_state = min_state
        self.state: str | None = None
        self.since: float | None = None
        self.reason: str | None = None  # why the current state: a rule's path or why reads fail
        self.pending: str | None = None
        self.pending_since = 0.0
        self.pending_reason = ""

    def propose(self, candidate: str, reason: str, now: float) -> StatusChange | None:
        """The rules say ``candidate`` now; report it once it has held ``min_state``."""
        if candidate == self.state:
            self.pending = None  # a flicker that came back before the debounce: nothing happened
            return None
        if candidate != self.pending:
            self.pending, self.pending_since, self.pending_reason = candidate, now, reason
        return self.confirm(now)

    def confirm(self, now: float) -> StatusChange | None:
        if self.pending is None or now - self.pending_since < self.min_state:
            return None
        return self._commit(self.pending, self.pending_since, self.pending_reason)

    def force(self, state: str, since: float, reason: str) -> StatusChange | None:
        """Report ``state`` without debounce (DISCONNECTED has its own delay, ``disconnect_after``)."""
        self.pending = None
        if state == self.state:
            return None
        return self._commit(state, since, reason)

    def _commit(self, state: str, since: float, reason: str) -> StatusChange:
        if self.since is not None:
            since = max(since, self.since)  # never a negative duration, even if clocks disagreed
        previous = None if self.since is None else since - self.since
        change = StatusChange(self.state, state, since, previous, reason)
        self.state, self.since, self.reason, self.pending = state, since, reason, None
        return change

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            "reason": self.reason,
            "pending": None
            if self.pending is None
            else {"state": self.pending, "since": self.pending_since, "reason": self.pending_reason},
        }

    def load(self, f: Fields) -> None:
        self.state = f.opt_text("state")
        self.since = f.opt_number("since")
        self.reason = f.opt_text("reason")  # absent in snapshots from before it was kept
        if (self.state is None) != (self.since is None):
            raise f.error("since", "state and since must both be set or both be null")
        pending = f.opt_sub("pending")
        if pending is None:
            self.pending = None
        else:
            self.pending = pending.text("state")
            self.pending_since = pending.number("since")
            self.pending_reason = pending.text("reason")
