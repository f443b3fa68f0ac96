"""Sends due outbox rows over HTTP, signs each attempt, records the outcome, schedules retries.

One loop task picks work and sleeps until the earliest due time of an endpoint that may send, or a
``wake()``; each request runs in its own task. Per endpoint: FIFO (the oldest pending row goes first,
alone), a concurrency limit, a circuit breaker, a pause after 429/503, disable after 410.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from agent import __version__
from agent.delivery.outbox import AttemptRecord, Delivery, Outbox, OutboxError, OutboxUnavailable
from agent.delivery.retry import (
    DEAD,
    DELIVERED,
    CircuitBreaker,
    Classified,
    Outcome,
    classify,
    decide,
)
from agent.delivery.settings import DeliveryConfig, EndpointConfig
from agent.delivery.signing import signing_headers

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# (endpoint key, outcome: delivered|retry|throttled|gone|aborted|dead, seconds from enqueue to delivery)
ResultObserver = Callable[[str, str, float | None], None]
USER_AGENT = f"edge-agent/{__version__}"
# How often, in clock time, to prune history and re-read endpoint state changed by the CLI.
MAINTENANCE_INTERVAL = 60.0
# After a database error the loop waits this long before trying again.
DB_RETRY_DELAY = 1.0


@dataclass
class DispatcherStats:
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    throttled: int = 0
    dead: int = 0
    disabled_endpoints: int = 0
    db_errors: int = 0


class _Endpoint:
    def __init__(self, config: DeliveryConfig) -> None:
        self.breaker = CircuitBreaker(config.breaker)
        self.in_flight = 0


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        endpoints: Mapping[str, EndpointConfig],
        config: DeliveryConfig,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        on_result: ResultObserver | None = None,
    ) -> None:
        self.outbox = outbox
        self._on_result = on_result
        self.config = config
        self.clock = clock
        self._sleep = sleep
        self._rand = rand
        self._endpoints: dict[str, EndpointConfig] = dict(endpoints)
        self._state: dict[str, _Endpoint] = {}
        self._disabled: dict[str, str] = {}
        self._held_noted: set[str] = set()
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._next_maintenance = 0.0
        self._configured_changed = True
        self.stats = DispatcherStats()

    # ---- lifecycle

    async def start(self) -> None:
        ssl_ctx: ssl.SSLContext | bool = True
        if self.config.ca_file is not None:
            ssl_ctx = ssl.create_default_context(cafile=str(self.config.ca_file))
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": USER_AGENT},
            auto_decompress=False,
        )
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    def wake(self) -> None:
        """New rows were enqueued (or something else changed): look again now."""
        self._wakeup.set()

    def recheck(self) -> None:
        """Endpoint state changed in the outbox (re-enabled from the panel): read it at the next turn
        instead of at the next maintenance."""
        self._next_maintenance = 0.0
        self.wake()

    def set_endpoints(self, endpoints: Mapping[str, EndpointConfig]) -> None:
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
                        await self.outbox.release(ids, "interrupted by shutdown")
                log.warning("delivery.stopped_in_flight", released=len(ids))
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the loop

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                wake_at = await self._pass()
            except (sqlite3.Error, OutboxError) as exc:
                self.stats.db_errors += 1
                log.error("delivery.outbox_error", error=str(exc))
                wake_at = self.clock() + DB_RETRY_DELAY
            except Exception as exc:
                # A bug must not end delivery for good: report it and try again after a pause.
                self.stats.db_errors += 1
                log.error("delivery.pass_failed", error=repr(exc), exc_info=True)
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
            n = await self.outbox.note_unconfigured(self._endpoints)
            if n:
                log.warning("delivery.endpoint_not_configured", rows=n)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            before = set(self._disabled)
            self._disabled = await self.outbox.disabled_endpoints()
            for url in before - set(self._disabled):
                log.info("delivery.endpoint_enabled", url=url)
                self._held_noted.clear()
            await self.outbox.prune()

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
                    await self.outbox.note_held(key, f"endpoint disabled: {self._disabled[cfg.url]}")
                continue
            ep = self._state.get(key)
            if ep is None:
                ep = self._state[key] = _Endpoint(self.config)
            limit = 1 if cfg.fifo else cfg.concurrency
            allowance = ep.breaker.allowance(now, ep.in_flight, limit)
            if allowance <= 0:
                t = ep.breaker.wake_at(now)
                if t is not None and (wake_at is None or t < wake_at):
                    wake_at = t
                continue
            found = await self.outbox.candidates(key, now, allowance, cfg.fifo)
            if found.corrupt:
                await self.outbox.mark_corrupt(found.corrupt)
                again = True
            if found.next_due is not None and (wake_at is None or found.next_due < wake_at):
                wake_at = found.next_due
            rows = found.rows[:allowance]
            if not rows:
                continue
            claimed = await self.outbox.claim([r.id for r in rows])
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

    async def _deliver(self, key: str, cfg: EndpointConfig, ep: _Endpoint, row: Delivery) -> None:
        try:
            record, result = await self._attempt(cfg, row)
            await self._record(record)
        except asyncio.CancelledError:
            ep.in_flight -= 1
            ep.breaker.finished()
            raise
        except Exception as exc:  # a bug must not leave the row in flight forever
            ep.in_flight -= 1
            # Nor the breaker waiting for a probe result that will never come.
            ep.breaker.finished()
            log.exception("delivery.internal_error", id=row.id, endpoint=key, error=str(exc))
            with contextlib.suppress(OutboxError):
                await self.outbox.release([row.id], f"internal error: {type(exc).__name__}")
            self.wake()
            return
        ep.in_flight -= 1
        try:
            self._after(key, cfg, ep, row, record, result)
        finally:
            ep.breaker.finished()
        if result.outcome is Outcome.GONE:
            try:
                await self.outbox.disable_endpoint(cfg.url, self._disabled[cfg.url])
            except OutboxError as exc:
                log.error("delivery.endpoint_state_not_saved", url=cfg.url, error=str(exc))
        self.wake()

    async def _attempt(self, cfg: EndpointConfig, row: Delivery) -> tuple[AttemptRecord, Classified]:
        assert self._session is not None
        status: int | None = None
        resp_headers: dict[str, str] = {}
        response = b""
        error: str | None = None
        error_class: str | None = None
        started = time.perf_counter()
        ts = int(self.clock())
        try:
            headers = {"Content-Type": "application/json", **cfg.headers}
            headers.update(
                signing_headers(
                    cfg.signature, [s.reveal() for s in cfg.secrets], row.message_id, ts, row.body
                )
            )
        except ValueError as exc:
            # Never include the secret itself; the message names only what is wrong with it.
            error_class, error = "config", f"cannot sign: {exc}"
        else:
            try:
                timeout = aiohttp.ClientTimeout(total=cfg.timeout, sock_connect=self.config.connect_timeout)
                async with self._session.post(
                    cfg.url, data=row.body, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    status = resp.status
                    resp_headers = {k: v for k, v in resp.headers.items()}
                    response = await _read_capped(resp, self.config.max_response_size)
            except TimeoutError:
                error_class, error = "timeout", f"no response within {cfg.timeout:g} s"
            except aiohttp.ClientSSLError as exc:
                error_class, error = "tls", f"TLS error: {exc}"
            except aiohttp.ClientConnectorError as exc:
                error_class, error = "connect", f"cannot connect: {exc.os_error or exc}"
            except aiohttp.ClientError as exc:
                error_class, error = "connection", f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                error_class, error = "connection", f"{type(exc).__name__}: {exc}"
        latency = time.perf_counter() - started
        now = self.clock()
        result = classify(status, resp_headers, now)
        if status is not None:
            error_class = result.error_class
            if result.outcome is not Outcome.DELIVERED:
                error = f"HTTP {status}"
                if 300 <= status < 400:
                    error += f" redirect to {resp_headers.get('Location', '?')} not followed"
                elif result.outcome is Outcome.ABORTED:
                    error += " and webhook-delivery: abort-message"
        decision = decide(
            self.config,
            result,
            attempts=row.attempts,
            throttled=row.throttled,
            age_base=row.age_base,
            now=now,
            rand=self._rand(),
        )
        record = AttemptRecord(
            delivery_id=row.id,
            at=now,
            status=status,
            latency=latency,
            error_class=error_class,
            error=error,
            response=response,
            decision=decision,
        )
        return record, result

    async def _record(self, record: AttemptRecord) -> None:
        # The HTTP outcome must reach the disk: until it does, the row stays in flight (FIFO holds).
        while True:
            try:
                await self.outbox.record([record])
                return
            except OutboxUnavailable as exc:
                self.stats.db_errors += 1
                log.error("delivery.record_failed", id=record.delivery_id, error=str(exc))
                if self._stopping:
                    return
                await self._sleep(DB_RETRY_DELAY)

    def _after(
        self,
        key: str,
        cfg: EndpointConfig,
        ep: _Endpoint,
        row: Delivery,
        rec: AttemptRecord,
        result: Classified,
    ) -> None:
        self.stats.attempts += 1
        d = rec.decision
        out = result.outcome
        fields = {"id": row.id, "endpoint": key, "webhook_id": row.message_id, "status": rec.status}
        if out is Outcome.DELIVERED or out is Outcome.ABORTED:
            ep.breaker.success()
        elif out is Outcome.THROTTLED:
            self.stats.throttled += 1
            if d.pause_endpoint_until is not None:
                ep.breaker.pause(d.pause_endpoint_until)
            log.warning("delivery.throttled", retry_at=d.due_at, **fields)
        elif out is Outcome.GONE:
            reason = f"410 Gone at attempt {d.attempts}"
            self._disabled[cfg.url] = reason
            self.stats.disabled_endpoints += 1
            log.error("delivery.endpoint_disabled", url=cfg.url, reason=reason, **fields)
        else:
            ep.breaker.failure(rec.at)
            self.stats.failed += 1
        if d.state == DELIVERED:
            self.stats.delivered += 1
            log.debug("delivery.delivered", attempts=d.attempts, **fields)
        elif d.state == DEAD:
            self.stats.dead += 1
            log.error("delivery.dead", attempts=d.attempts, error=rec.error, **fields)
        elif out is Outcome.RETRY:
            log.warning("delivery.failed", error=rec.error, attempts=d.attempts, retry_at=d.due_at, **fields)
        if self._on_result is not None:
            outcome = DEAD if d.state == DEAD else out.value
            latency = rec.at - row.created_at if d.state == DELIVERED else None
            try:
                self._on_result(key, outcome, latency)
            except Exception as exc:  # metrics must never break delivery
                log.warning("delivery.observer_failed", error=str(exc))


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = await resp.content.read(cap - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
