"""What the dispatcher keeps in memory per endpoint (not the outbox's ``endpoint_state`` table): rows
in flight, the circuit breaker, and for a FIFO endpoint the rows it claimed in one commit but has not
started yet (in order)."""

from __future__ import annotations

import collections

from agent.delivery.records import AttemptRecord, Delivery
from agent.delivery.report import gone_reason
from agent.delivery.retry import CircuitBreaker, Classified, Outcome
from agent.delivery.senders import Destination
from agent.delivery.settings import DeliveryConfig

# A FIFO endpoint claims this many of its oldest due rows in one commit and sends them in order from
# memory: one claim per batch instead of one per delivery.
FIFO_BATCH = 32
# A FIFO destination with a window (MQTT) claims this many windows at once: refilling at every
# window drained it while the claim waited for the writer's commit, and the reads and claims cost
# ~30 µs of SQLite thread CPU per message (bench/mqtt.py sink: 75-86 -> 45-52 µs/msg).
WINDOWS_PER_CLAIM = 4


class EndpointState:
    def __init__(self, config: DeliveryConfig) -> None:
        self.breaker = CircuitBreaker(config.breaker)
        self.in_flight = 0
        self.claimed: collections.deque[Delivery] = collections.deque()  # FIFO: not started, in order
        # FIFO failures not yet durable: the reader would still see their rows in flight and hand
        # out later ones, so nothing is read for the endpoint meanwhile.
        self.settling = 0

    def finished(self) -> None:
        """A request no longer takes a slot (its answer came, or it ended otherwise)."""
        self.in_flight -= 1
        self.breaker.finished()

    @staticmethod
    def limit(cfg: Destination) -> int:
        """Requests at once: a destination whose one connection keeps order (MQTT) may have a FIFO
        window in flight; a webhook FIFO endpoint has one."""
        return getattr(cfg, "fifo_window", 1) if cfg.fifo else cfg.concurrency

    def batch(self, cfg: Destination, allowance: int) -> int:
        """Rows to read and claim at once."""
        return max(WINDOWS_PER_CLAIM * self.limit(cfg), FIFO_BATCH) if cfg.fifo else allowance

    def give_back(self) -> list[int]:
        """Claimed rows that will not be started now (they go back to pending)."""
        ids = [r.id for r in self.claimed]
        self.claimed.clear()
        return ids

    def hold(self) -> list[int]:
        """A FIFO row failed: nothing may overtake it. The rows claimed after it go back (in the
        failure's transaction) and nothing is read until that is durable (``settling``)."""
        self.settling += 1
        return self.give_back()

    def follow(self, rec: AttemptRecord, result: Classified) -> str | None:
        """The breaker follows the receiver's answer at once (not after the commit). Returns why
        the endpoint is to be disabled (410), else None."""
        out = result.outcome
        if out is Outcome.DELIVERED or out is Outcome.ABORTED:
            self.breaker.success()
        elif out is Outcome.THROTTLED:
            if rec.decision.pause_endpoint_until is not None:
                self.breaker.pause(rec.decision.pause_endpoint_until)
        elif out is Outcome.GONE:
            return gone_reason(rec.decision.attempts)
        else:
            self.breaker.failure(rec.at)
        return None
