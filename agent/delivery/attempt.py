"""One attempt: the endpoint kind's sender, what it returned, and the row's next state.

The senders are loaded per kind on first use (``senders/``); ``retry.assess`` and ``retry.decide``
(pure) turn a ``SendOutcome`` into the record the queue stores. Nothing here writes the outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from agent.delivery.records import AttemptRecord, Delivery
from agent.delivery.report import DispatcherStats
from agent.delivery.retry import Classified, assess, decide
from agent.delivery.senders import Destination, Sender, SendOutcome, create_sender
from agent.delivery.settings import DeliveryConfig

# The events keep the logger they were always logged under (operators filter on it).
log = structlog.get_logger("agent.delivery.dispatcher")


class Attempts:
    def __init__(
        self,
        config: DeliveryConfig,
        stats: DispatcherStats,
        clock: Callable[[], float],
        rand: Callable[[], float],
    ) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock
        self._rand = rand
        self._senders: dict[str, Sender] = {}
        self._internal_failing: set[str] = set()  # endpoints whose attempts end in an exception
        self._destinations: list[Destination] = []

    async def sender(self, kind: str) -> Sender:
        sender = self._senders.get(kind)
        if sender is None:
            sender = create_sender(kind, self.config)
            await sender.start()
            self._senders[kind] = sender
            _configure(sender, [d for d in self._destinations if d.kind == kind])
        return sender

    def loaded(self, kind: str) -> Sender | None:
        """The sender of this kind if one was loaded (for the state of its connections)."""
        return self._senders.get(kind)

    def configure(self, destinations: Iterable[Destination]) -> None:
        """Tell each loaded sender the destinations of its kind configured now (see senders/base.py)."""
        self._destinations = list(destinations)
        for kind, sender in self._senders.items():
            _configure(sender, [d for d in self._destinations if d.kind == kind])

    async def close(self) -> None:
        senders, self._senders = self._senders, {}
        for sender in senders.values():
            await sender.close()

    def internal_error(self, key: str, row: Delivery, exc: Exception) -> None:
        """Once per episode per endpoint: the same bug on every retry would flood the journal."""
        self.stats.internal_errors += 1
        if key in self._internal_failing:
            return
        self._internal_failing.add(key)
        log.error(
            "delivery_internal_error",
            id=row.id,
            endpoint=key,
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )

    async def run(self, cfg: Destination, row: Delivery) -> tuple[AttemptRecord, Classified]:
        """Send once; the outcome judged and the row's next state decided (nothing recorded yet)."""
        sender = await self.sender(cfg.kind)
        started = time.perf_counter()
        try:
            sent = await sender.send(cfg, row, self.clock())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Senders must not raise (their contract), but one that does (aiohttp refusing a header,
            # a bug) makes a failed attempt: it follows the retry schedule like any other failure,
            # never an immediate retry in a loop.
            self.internal_error(cfg.key, row, exc)
            sent = SendOutcome(
                None,
                time.perf_counter() - started,
                error_class="internal",
                error=f"internal error: {type(exc).__name__}",
            )
        else:
            if cfg.key in self._internal_failing:
                self._internal_failing.discard(cfg.key)
                log.info("delivery_internal_error_cleared", endpoint=cfg.key)
        now = self.clock()
        judged = assess(sent, now)
        decision = decide(
            self.config,
            judged.result,
            attempts=row.attempts,
            throttled=row.throttled,
            age_base=row.age_base,
            now=now,
            rand=self._rand(),
        )
        record = AttemptRecord(
            delivery_id=row.id,
            at=now,
            status=sent.status,
            latency=sent.latency,
            error_class=judged.error_class,
            error=judged.error,
            response=sent.response,
            decision=decision,
        )
        return record, judged.result


def _configure(sender: Sender, destinations: list[Destination]) -> None:
    configure = getattr(sender, "configure", None)  # optional in the sender contract
    if configure is not None:
        configure(destinations)
