"""Logs and counters that observe finished attempts; they never change what happens to a row.

The dispatcher calls ``AttemptReport.observe`` once per attempt after the outcome is decided. The
result observer (the runtime's metrics) gets ``(endpoint key, outcome, seconds from enqueue to
delivery)``; a failing observer is logged and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from agent.delivery.records import AttemptRecord, Delivery
from agent.delivery.retry import DEAD, DELIVERED, Classified, Outcome

# The dispatcher's logger name: these events were always logged under it, and log filters use it.
log = structlog.get_logger("agent.delivery.dispatcher")

# (endpoint key, outcome: delivered|retry|throttled|gone|aborted|dead, seconds from enqueue to delivery)
ResultObserver = Callable[[str, str, float | None], None]


@dataclass
class DispatcherStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    throttled: int = 0
    dead: int = 0
    disabled_endpoints: int = 0
    db_errors: int = 0
    internal_errors: int = 0  # attempts that ended in an exception (a bug or an unforeseen input)


class AttemptReport:
    def __init__(self, stats: DispatcherStats, on_result: ResultObserver | None) -> None:
        self.stats = stats
        self._on_result = on_result

    def observe(self, key: str, url: str, row: Delivery, rec: AttemptRecord, result: Classified) -> None:
        self.stats.attempts += 1
        d = rec.decision
        out = result.outcome
        fields = {"id": row.id, "endpoint": key, "webhook_id": row.message_id, "status": rec.status}
        if out is Outcome.THROTTLED:
            self.stats.throttled += 1
            log.warning("delivery_throttled", retry_at=d.due_at, **fields)
        elif out is Outcome.GONE:
            self.stats.disabled_endpoints += 1
            log.error("delivery_endpoint_disabled", url=url, reason=gone_reason(d.attempts), **fields)
        elif out is Outcome.RETRY:
            self.stats.failed += 1
        if d.state == DELIVERED:
            self.stats.delivered += 1
            log.debug("delivery_delivered", attempts=d.attempts, **fields)
        elif d.state == DEAD:
            self.stats.dead += 1
            log.error("delivery_dead", attempts=d.attempts, error=rec.error, **fields)
        elif out is Outcome.RETRY:
            log.warning("delivery_failed", error=rec.error, attempts=d.attempts, retry_at=d.due_at, **fields)
        self._notify(key, row, rec, out)

    def _notify(self, key: str, row: Delivery, rec: AttemptRecord, out: Outcome) -> None:
        if self._on_result is None:
            return
        d = rec.decision
        outcome = DEAD if d.state == DEAD else out.value
        latency = rec.at - row.created_at if d.state == DELIVERED else None
        try:
            self._on_result(key, outcome, latency)
        except Exception as exc:  # metrics must never break delivery
            log.warning("delivery_observer_failed", error=str(exc))


def gone_reason(attempts: int) -> str:
    """Why an endpoint is disabled, as stored and shown to operators."""
    return f"410 Gone at attempt {attempts}"
