"""Hands due outbox rows to their destination's sender, records each outcome, schedules retries.

One loop task picks work and sleeps until the earliest due time of an endpoint that may send, or a
``wake()``; each attempt runs in its own task. Per endpoint: FIFO (in order; one in flight or the
destination's window), a concurrency limit, a circuit breaker, a pause after 429/503, disable after
410. An attempt (``attempt.py``) gives the row's next state; the queue records it; ``report`` logs
and counts it. The dispatcher itself knows no protocol.

A FIFO endpoint claims a batch of its oldest due rows in one commit and, on each ``delivered``
answer, starts the next one while that answer is still being committed (a lazy commit: it waits
a few ms so that consecutive answers share it). At-least-once holds: a row stays ``in_flight`` on
disk until its outcome commits, and a crash puts it back to pending; the writer commits in
submission order, so outcomes become durable in order. Any other answer gives the
unsent claimed rows back in the same transaction, and nothing is read until that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

from agent.delivery.attempt import Attempts
from agent.delivery.dispatch_state import EndpointState
from agent.delivery.outbox import AttemptRecord, Delivery, Outbox, OutboxError, OutboxUnavailable
from agent.delivery.report import AttemptReport, DispatcherStats, ResultObserver
from agent.delivery.retry import Outcome
from agent.delivery.senders import Destination, Sender
from agent.delivery.settings import DeliveryConfig

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# How often, in clock time, to prune history and re-read endpoint state changed by the CLI.
MAINTENANCE_INTERVAL = 60.0
# After a database error the loop waits this long before trying again.
DB_RETRY_DELAY = 1.0


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
        self._endpoints: dict[str, Destination] = dict(endpoints)
        self._state: dict[str, EndpointState] = {}
        self._disabled: dict[str, str] = {}
        self._held_noted: set[str] = set()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._stopping = False
        self._next_maintenance = 0.0
        self._configured_changed = True
        self._orphans: list[int] = []  # claimed, never started, endpoint gone: back to pending
        self.stats = DispatcherStats()
        self._report = AttemptReport(self.stats, on_result)
        self._attempts = Attempts(config, self.stats, clock, rand)

    # ---- lifecycle

    async def start(self) -> None:
        self._attempts.configure(self._endpoints.values())
        for cfg in self._endpoints.values():
            await self._attempts.sender(cfg.kind)
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

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
                self._drop_state(key)
        for key in set(self._state) - set(self._endpoints):
            self._drop_state(key)
        self._attempts.configure(self._endpoints.values())
        self._configured_changed = True
        self._held_noted.clear()
        self.wake()

    def sender(self, kind: str) -> Sender | None:
        """The loaded sender of a kind (the runtime reports the state of its connections)."""
        return self._attempts.loaded(kind)

    def _drop_state(self, key: str) -> None:
        ep = self._state.pop(key, None)
        if ep is not None:
            self._give_back(ep)

    def _give_back(self, ep: EndpointState) -> None:
        self._orphans.extend(ep.give_back())  # back to pending at the next pass

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
        for ep in self._state.values():
            self._give_back(ep)
        if self._orphans:
            orphans, self._orphans = self._orphans, []
            with contextlib.suppress(OutboxError):
                await self.queue.unclaim(orphans)
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
        await self._attempts.close()

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
        if self._orphans:
            await self.queue.unclaim(self._orphans)
            self._orphans = []
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
                again = await self._held(key, cfg) or again
                continue
            ep = self._state.get(key)
            if ep is None:
                ep = self._state[key] = EndpointState(self.config)
            if ep.settling:
                continue  # the task that is settling a failure wakes the loop when it is durable
            allowance = ep.breaker.allowance(now, ep.in_flight, ep.limit(cfg))
            if allowance <= 0:
                t = ep.breaker.wake_at(now)
                if t is not None and (wake_at is None or t < wake_at):
                    wake_at = t
                continue
            if cfg.fifo and ep.claimed:
                self._start_claimed(key, cfg, ep, allowance)
                continue
            batch = ep.batch(cfg, allowance)
            found = await self.queue.candidates(key, now, batch, cfg.fifo, window=cfg.fifo)
            if found.corrupt:
                await self.queue.mark_corrupt(found.corrupt)
                again = True
            if found.next_due is not None and (wake_at is None or found.next_due < wake_at):
                wake_at = found.next_due
            rows = found.rows[:batch]
            if not rows:
                continue
            claimed = await self.queue.claim([r.id for r in rows])
            if cfg.fifo:
                again = self._keep_in_order(ep, rows, claimed) or again
                self._start_claimed(key, cfg, ep, allowance)
                continue
            for row in rows:
                if row.id in claimed:
                    self._start(key, cfg, ep, row)
        return now if again else wake_at

    async def _held(self, key: str, cfg: Destination) -> bool:
        """A disabled endpoint: its claimed rows go back; its pending rows say why they wait."""
        ep = self._state.get(key)
        gave_back = ep is not None and bool(ep.claimed)
        if ep is not None:
            self._give_back(ep)
        if key not in self._held_noted:
            self._held_noted.add(key)
            await self.queue.note_held(key, f"endpoint disabled: {self._disabled[cfg.url]}")
        return gave_back

    def _keep_in_order(self, ep: EndpointState, rows: list[Delivery], claimed: set[int]) -> bool:
        """Keep the claimed FIFO rows up to the first one not claimed (the CLI cancelled it
        meanwhile); what follows waits for the next read, so the order stays the one on disk."""
        if len(claimed) < len(rows):
            cut = next(i for i, r in enumerate(rows) if r.id not in claimed)
            self._orphans.extend(r.id for r in rows[cut:] if r.id in claimed)
            ep.claimed.extend(rows[:cut])
            return True
        ep.claimed.extend(rows)
        return False

    def _start(self, key: str, cfg: Destination, ep: EndpointState, row: Delivery) -> None:
        ep.in_flight += 1
        ep.breaker.started()
        task = asyncio.create_task(self._deliver(key, cfg, ep, row), name=f"deliver-{row.id}")
        self._tasks[task] = row
        task.add_done_callback(self._task_done)

    def _start_claimed(self, key: str, cfg: Destination, ep: EndpointState, allowance: int) -> None:
        for _ in range(min(allowance, len(ep.claimed))):
            self._start(key, cfg, ep, ep.claimed.popleft())

    def _next(self, key: str, cfg: Destination, ep: EndpointState) -> None:
        """A slot of the endpoint is free: start its next claimed row at once (no pass, no read)
        when the endpoint may send, otherwise let the loop decide."""
        may_send = not ep.settling and not self._stopping and cfg.url not in self._disabled
        if ep.claimed and may_send and self._state.get(key) is ep and self._endpoints.get(key) is cfg:
            allowance = ep.breaker.allowance(self.clock(), ep.in_flight, ep.limit(cfg))
            if allowance > 0:
                self._start_claimed(key, cfg, ep, allowance)
                return
        self.wake()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    # ---- one attempt

    async def _deliver(self, key: str, cfg: Destination, ep: EndpointState, row: Delivery) -> None:
        slot = True  # this task still counts in ep.in_flight
        settling = False
        try:
            record, result = await self._attempts.run(cfg, row)
            gone = ep.follow(record, result)
            if gone is not None:
                self._disabled[cfg.url] = gone
            if result.outcome is Outcome.DELIVERED:
                # The next row may go while this answer is being committed (that commit or the next);
                # until then the row is in flight on disk, so a crash re-sends it (see the module doc).
                pending = self.queue.submit_record([record], lazy=True)
                slot = False
                ep.finished()
                self._next(key, cfg, ep)
                await self._record(record, pending)
            else:
                settling = cfg.fifo
                await self._record(record, None, ep.hold() if settling else [])
        except asyncio.CancelledError:
            if slot:
                ep.finished()
            raise
        except Exception as exc:  # a bug must not leave the row in flight forever
            if slot:
                # Nor the breaker waiting for a probe result that will never come; and counted as a
                # failure, so that a bug that repeats opens the breaker instead of spinning.
                ep.breaker.failure(self.clock())
                ep.finished()
            self._attempts.internal_error(key, row, exc)
            with contextlib.suppress(OutboxError):
                await self.queue.release([row.id], f"internal error: {type(exc).__name__}")
            return
        finally:
            if settling:
                ep.settling -= 1
        if slot:
            ep.finished()
        self._report.observe(key, cfg.url, row, record, result)
        if result.outcome is Outcome.GONE:
            try:
                await self.queue.disable_endpoint(cfg.url, self._disabled[cfg.url])
            except OutboxError as exc:
                log.error("delivery_endpoint_state_not_saved", url=cfg.url, error=str(exc))
        if slot or not ep.claimed:
            # Without claimed rows left the loop reads the endpoint again; it also learns that
            # nothing is in flight any more (``busy``).
            self.wake()

    async def _record(
        self,
        record: AttemptRecord,
        pending: asyncio.Future[list[int]] | None,
        unclaim: list[int] | None = None,
    ) -> None:
        # The outcome must reach the disk: until it does, the row stays in flight (FIFO holds).
        while True:
            try:
                if pending is None:
                    pending = self.queue.submit_record([record], unclaim or ())
                await pending
                return
            except OutboxUnavailable as exc:
                pending = None
                self.stats.db_errors += 1
                log.error("delivery_record_failed", id=record.delivery_id, error=str(exc))
                if self._stopping:
                    return
                await self._sleep(DB_RETRY_DELAY)
