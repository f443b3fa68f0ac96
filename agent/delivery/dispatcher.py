"""Hands due outbox rows to their destination's sender, records each outcome, schedules retries.

One loop task picks work and sleeps until the earliest due time of an endpoint that may send, or a
``wake()``; each attempt runs in its own task. Per endpoint: FIFO (the oldest pending row goes first,
alone), a concurrency limit, a circuit breaker, a pause after 429/503, disable after 410.

An attempt is: the endpoint kind's sender returns a ``SendOutcome`` (``senders/``); ``retry.assess``
and ``retry.decide`` turn it into the row's next state (pure); the queue records it; ``report``
logs and counts it. The dispatcher itself knows no protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

from agent.delivery.outbox import AttemptRecord, Delivery, Outbox, OutboxError, OutboxUnavailable
from agent.delivery.report import AttemptReport, DispatcherStats, ResultObserver, gone_reason
from agent.delivery.retry import CircuitBreaker, Classified, Outcome, assess, decide
from agent.delivery.senders import Destination, Sender, SendOutcome, create_sender
from agent.delivery.settings import DeliveryConfig

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# How often, in clock time, to prune history and re-read endpoint state changed by the CLI.
MAINTENANCE_INTERVAL = 60.0
# After a database error the loop waits this long before trying again.
DB_RETRY_DELAY = 1.0


class _Endpoint:
    def __init__(self, config: DeliveryConfig) -> None:
        self.breaker = CircuitBreaker(config.breaker)
        self.in_flight = 0


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        endpoints: Mapping[str, Destination],
        config: DeliveryConfig,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_result: ResultObserver | None = None,
    ) -> None:
        self.outbox = outbox
        self.queue = outbox.queue
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self._rand = rand
        self._endpoints: dict[str, Destination] = dict(endpoints)
        self._state: dict[str, _Endpoint] = {}
        self._disabled: dict[str, str] = {}
        self._held_noted: set[str] = set()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._senders: dict[str, Sender] = {}
        self._stopping = False
        self._next_maintenance = 0.0
        self._configured_changed = True
        self._internal_failing: set[str] = set()  # endpoints whose attempts end in an exception
        self.stats = DispatcherStats()
        self._report = AttemptReport(self.stats, on_result)

    # ---- lifecycle

    async def start(self) -> None:
        for cfg in self._endpoints.values():
            await self._sender(cfg.kind)
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    async def _sender(self, kind: str) -> Sender:
        sender = self._senders.get(kind)
        if sender is None:
            sender = create_sender(kind, self.config)
            await sender.start()
            self._senders[kind] = sender
        return sender

    def wake(self) -> None:
        """New rows were enqueued (or something else changed): look again now."""
        self._wakeup.set()

    def recheck(self) -> None:
        """Endpoint state changed in the outbox (re-enabled from the panel): read it at the next turn
        instead of at the next maintenance."""
        self._next_maintenance = 0.0
        self.wake()

    def set_endpoints(self, endpoints: Mapping[str, Destination]) -> None:
        old = self._endpoints
        self._endpoints = dict(endpoints)
        for key, cfg in self._endpoints.items():
            if key in old and old[key].url != cfg.url:
                self._state.pop(key, None)
        self._configured_changed = True
        self._held_noted.clear()
        self.wake()

    @property
    def busy(self) -> int:
        """Requests in flight right now."""
        return len(self._tasks)

    @property
    def wake_pending(self) -> bool:
        return self._wakeup.is_set()

    @property
    def open_breakers(self) -> frozenset[str]:
        """Endpoint keys whose circuit breaker is open (the operator panel shows them)."""
        return frozenset(key for key, st in self._state.items() if st.breaker.is_open)

    @property
    def disabled(self) -> Mapping[str, str]:
        """URL → reason for endpoints disabled after 410 Gone."""
        return dict(self._disabled)

    async def stop(self, grace: float = 5.0) -> None:
        """In-flight requests get ``grace`` seconds; whatever is unfinished stays pending."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:
            await self._loop_task
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace)
            ids = [self._tasks[t].id for t in unfinished if t in self._tasks]
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
                if ids:
                    with contextlib.suppress(OutboxError):
                        await self.queue.release(ids, "interrupted by shutdown")
                log.warning("delivery_stopped_in_flight", released=len(ids))
        senders, self._senders = self._senders, {}
        for sender in senders.values():
            await sender.close()

    # ---- the loop

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                wake_at = await self._pass()
            except (sqlite3.Error, OutboxError) as exc:
                self.stats.db_errors += 1
                log.error("delivery_outbox_error", error=str(exc))
                wake_at = self.clock() + DB_RETRY_DELAY
            except Exception as exc:
                # A bug must not end delivery for good: report it and try again after a pause.
                self.stats.db_errors += 1
                log.error("delivery_pass_failed", error=repr(exc), exc_info=True)
                wake_at = self.clock() + DB_RETRY_DELAY
            if self._stopping:
                break
            delay = None if wake_at is None else wake_at - self.clock()
            if delay is not None and delay <= 0:
                continue
            await self._wait(delay)

    async def _wait(self, delay: float | None) -> None:
        if self._wakeup.is_set():
            return
        waker = asyncio.ensure_future(self._wakeup.wait())
        if delay is None:
            await waker
            return
        sleeper = asyncio.ensure_future(self._sleep(delay))
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                if not t.done():
                    t.cancel()

    async def _maintain(self, now: float) -> None:
        if self._configured_changed:
            self._configured_changed = False
            n = await self.queue.note_unconfigured(self._endpoints)
            if n:
                log.warning("delivery_endpoint_not_configured", rows=n)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            before = set(self._disabled)
            self._disabled = await self.queue.disabled_endpoints()
            for url in before - set(self._disabled):
                log.info("delivery_endpoint_enabled", url=url)
                self._held_noted.clear()
            await self.outbox.operations.prune()

    async def _pass(self) -> float | None:
        """Start what may start; return when to look again (``None``: only on wake)."""
        now = self.clock()
        await self._maintain(now)
        wake_at: float | None = self._next_maintenance
        again = False
        for key, cfg in list(self._endpoints.items()):
            if self._stopping:
                break
            if cfg.url in self._disabled:
                if key not in self._held_noted:
                    self._held_noted.add(key)
                    await self.queue.note_held(key, f"endpoint disabled: {self._disabled[cfg.url]}")
                continue
            ep = self._state.get(key)
            if ep is None:
                ep = self._state[key] = _Endpoint(self.config)
            # A destination whose one connection keeps order (MQTT) may have a FIFO window in flight.
            limit = getattr(cfg, "fifo_window", 1) if cfg.fifo else cfg.concurrency
            allowance = ep.breaker.allowance(now, ep.in_flight, limit)
            if allowance <= 0:
                t = ep.breaker.wake_at(now)
                if t is not None and (wake_at is None or t < wake_at):
                    wake_at = t
                continue
            found = await self.queue.candidates(key, now, allowance, cfg.fifo, window=limit > 1)
            if found.corrupt:
                await self.queue.mark_corrupt(found.corrupt)
                again = True
            if found.next_due is not None and (wake_at is None or found.next_due < wake_at):
                wake_at = found.next_due
            rows = found.rows[:allowance]
            if not rows:
                continue
            claimed = await self.queue.claim([r.id for r in rows])
            for row in rows:
                if row.id not in claimed:
                    continue
                ep.in_flight += 1
                ep.breaker.started()
                task = asyncio.create_task(self._deliver(key, cfg, ep, row), name=f"deliver-{row.id}")
                self._tasks[task] = row
                task.add_done_callback(self._task_done)
        return now if again else wake_at

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    # ---- one attempt

    async def _deliver(self, key: str, cfg: Destination, ep: _Endpoint, row: Delivery) -> None:
        try:
            record, result = await self._attempt(cfg, row)
            await self._record(record)
        except asyncio.CancelledError:
            ep.in_flight -= 1
            ep.breaker.finished()
            raise
        except Exception as exc:  # a bug must not leave the row in flight forever
            ep.in_flight -= 1
            # Nor the breaker waiting for a probe result that will never come; and counted as a
            # failure, so that a bug that repeats opens the breaker instead of spinning.
            ep.breaker.failure(self.clock())
            ep.breaker.finished()
            self._internal_error(key, row, exc)
            with contextlib.suppress(OutboxError):
                await self.queue.release([row.id], f"internal error: {type(exc).__name__}")
            return
        ep.in_flight -= 1
        try:
            self._after(key, cfg, ep, row, record, result)
        finally:
            ep.breaker.finished()
        if result.outcome is Outcome.GONE:
            try:
                await self.queue.disable_endpoint(cfg.url, self._disabled[cfg.url])
            except OutboxError as exc:
                log.error("delivery_endpoint_state_not_saved", url=cfg.url, error=str(exc))
        self.wake()

    def _internal_error(self, key: str, row: Delivery, exc: Exception) -> None:
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

    async def _attempt(self, cfg: Destination, row: Delivery) -> tuple[AttemptRecord, Classified]:
        sender = await self._sender(cfg.kind)
        started = time.perf_counter()
        try:
            sent = await sender.send(cfg, row, self.clock())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Senders must not raise (their contract), but one that does (aiohttp refusing a header,
            # a bug) makes a failed attempt: it follows the retry schedule like any other failure,
            # never an immediate retry in a loop.
            self._internal_error(cfg.key, row, exc)
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

    async def _record(self, record: AttemptRecord) -> None:
        # The HTTP outcome must reach the disk: until it does, the row stays in flight (FIFO holds).
        while True:
            try:
                await self.queue.record([record])
                return
            except OutboxUnavailable as exc:
                self.stats.db_errors += 1
                log.error("delivery_record_failed", id=record.delivery_id, error=str(exc))
                if self._stopping:
                    return
                await self._sleep(DB_RETRY_DELAY)

    def _after(
        self,
        key: str,
        cfg: Destination,
        ep: _Endpoint,
        row: Delivery,
        rec: AttemptRecord,
        result: Classified,
    ) -> None:
        """The endpoint's own state follows the outcome; then logs and counters observe it."""
        out = result.outcome
        if out is Outcome.DELIVERED or out is Outcome.ABORTED:
            ep.breaker.success()
        elif out is Outcome.THROTTLED:
            if rec.decision.pause_endpoint_until is not None:
                ep.breaker.pause(rec.decision.pause_endpoint_until)
        elif out is Outcome.GONE:
            self._disabled[cfg.url] = gone_reason(rec.decision.attempts)
        else:
            ep.breaker.failure(rec.at)
        self._report.observe(key, cfg.url, row, rec, result)
