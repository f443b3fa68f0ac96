"""One machine's collection loop, the same for every protocol: connect, then poll (or subscribe).

Each machine gets its own ``Collector`` running as its own task, so a slow, hung or refusing machine
only ever delays itself. Polls keep a fixed cadence measured from the previous *scheduled* start; a
poll that overruns skips the ticks it missed instead of queueing them, and no poll of a machine
starts while the previous one still runs (there is only ever one ``read`` awaited per machine).

The scheduling arithmetic (``next_slot``, ``drivers.backoff.backoff_delay``) is pure; ``Collector`` is the thin shell.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from agent.wakeups import Wakeups
from drivers.backoff import backoff_delay
from drivers.base import ConnectionState, Driver, DriverError, Quality, Reading, Sample, Sink

log = structlog.get_logger(__name__)

BACKOFF_BASE = 0.5
# A restarted controller must be read again within 10 s of coming back: a wait of at most 4 s here,
# plus at most 4 s in the Modbus link's own backoff, plus one poll.
BACKOFF_CAP = 4.0
# Recent cycle lags kept per machine for the metrics, which take them every few seconds
# (``runtime.METRICS_SECONDS``): at least LAG_WINDOW, and LAG_SECONDS' worth of a fast machine's.
LAG_WINDOW = 120
LAG_SECONDS = 30.0


def next_slot(scheduled: float, finished: float, interval: float) -> tuple[float, int]:
    """The next start on the fixed cadence after a cycle scheduled at ``scheduled`` finished.

    Returns ``(next start, ticks skipped)``; ticks that passed while the cycle ran are skipped.
    """
    following = scheduled + interval
    if finished <= following:
        return following, 0
    skipped = int((finished - scheduled) // interval)
    return scheduled + (skipped + 1) * interval, skipped


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation a library swallowed.

    Python 3.11's ``asyncio.wait_for`` (which pymodbus and asyncua use) returns the result instead of
    raising when the awaited reply lands in the same loop step as ``cancel()``; the task would then
    poll on forever and block shutdown.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class CollectorStats:
    polls: int = 0
    overruns: int = 0  # cycles that ran past the next tick
    skipped: int = 0  # ticks not polled because a cycle overran
    errors: int = 0  # cycles with a reading that was not good, or a driver failure
    good: int = 0  # samples handed on: readings of good quality (and pushed alarm samples)
    bad: int = 0  # ... and readings of any other quality
    connects: int = 0
    connect_failures: int = 0
    last_poll_duration: float = 0.0
    slowest: float = 0.0  # the longest cycle since the metrics last took it (they reset it)
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=LAG_WINDOW))


class Collector:
    def __init__(
        self,
        driver: Driver,
        *,
        poll_interval: float,
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        subscribe: bool = False,
        tags: Sequence[str] | None = None,
        jitter: Callable[[], float] = random.random,
        phase: float | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.driver = driver
        self.machine_id = driver.machine_id
        self.poll_interval = poll_interval
        self.sink = sink
        self.stats = CollectorStats(
            lags=deque(maxlen=max(LAG_WINDOW, math.ceil(LAG_SECONDS / poll_interval)))
        )
        self._clock = clock
        self._wall = wall
        self._subscribe = subscribe
        # Tag names let an outage be reported per tag, so derivation sees which values went stale.
        self._tags = tuple(tags if tags is not None else getattr(driver, "tag_names", ()))
        self._jitter = jitter
        # Machines polled at the same instant make the loop bursty; spreading their first polls over
        # the interval (by a stable hash of the id unless given) keeps every cycle's lag small.
        self._phase = (
            (zlib.crc32(self.machine_id.encode()) % 1000) / 1000 * poll_interval if phase is None else phase
        )
        self._healthy = True
        self._overrunning = False
        # Shared by a runtime's collectors (agent/wakeups.py says why); alone, a plain sleep.
        self._wakeups = wakeups

    async def run(self) -> None:
        """Collect until cancelled; closes the driver on the way out."""
        try:
            while True:
                await self._connect()
                # Always offer the sink: a polled OPC-UA machine still gets its alarm events pushed.
                pushed = await self._try_subscribe()
                if self._subscribe and pushed:
                    if not self._healthy:  # pushed values bypass _judge: the subscription is the recovery
                        self._healthy = True
                        log.info("machine_readings_recovered", machine=self.machine_id)
                    await self._watch()
                else:
                    await self._poll()
        finally:
            try:
                await self.driver.close()
            except Exception as exc:
                log.warning("driver_close_failed", machine=self.machine_id, error=repr(exc))

    # -- connecting

    async def _connect(self) -> None:
        failures = 0
        next_report = self._clock()
        while True:
            try:
                await self.driver.connect()
            except DriverError as exc:
                reason = str(exc) or "cannot connect"
            except Exception as exc:  # a driver bug must not end collection for good
                reason = f"unexpected driver error: {exc!r}"
            else:
                _raise_if_cancelled()
                self.stats.connects += 1
                # A connect is no recovery yet (a hung device accepts TCP): good readings are.
                log.debug("machine_connected", machine=self.machine_id, after_failures=failures)
                return
            _raise_if_cancelled()
            failures += 1
            self.stats.connect_failures += 1
            if self._healthy:  # once per outage; the readings carry the current reason
                self._healthy = False
                log.warning("machine_connect_failed", machine=self.machine_id, reason=reason)
            retry_at = self._clock() + backoff_delay(failures, BACKOFF_BASE, BACKOFF_CAP, self._jitter())
            while True:
                now = self._clock()
                if now >= next_report:
                    self._emit_outage(reason)
                    next_report = max(next_report + self.poll_interval, now)
                if now >= retry_at:
                    break
                await asyncio.sleep(min(retry_at, next_report) - now)

    def _emit_outage(self, reason: str) -> None:
        if not self._tags:
            return
        ts = self._wall()
        self.stats.bad += len(self._tags)
        self._deliver(
            [Reading(self.machine_id, tag, None, Quality.DISCONNECTED, ts, reason) for tag in self._tags]
        )

    # -- polling

    async def _poll(self) -> None:
        interval = self.poll_interval
        stats = self.stats
        wakeups = self._wakeups
        scheduled = self._clock() + self._phase
        while True:
            delay = scheduled - self._clock()
            if delay > 0:
                await (asyncio.sleep(delay) if wakeups is None else wakeups.after(delay))
            start = self._clock()
            try:
                readings: Sequence[Sample] = await self.driver.read()
                failure = ""
            except Exception as exc:  # read() should not raise; if it does, report and go on
                failure = f"read failed: {exc!r}"
                # Bad readings, not silence: derivation must see the machine is not being read.
                ts = self._wall()
                readings = [Reading(self.machine_id, t, None, Quality.BAD, ts, failure) for t in self._tags]
            _raise_if_cancelled()
            finished = self._clock()
            lag = start - scheduled
            stats.polls += 1
            stats.lags.append(lag)
            took = stats.last_poll_duration = finished - start
            if took > stats.slowest:
                stats.slowest = took
            self._judge(readings, failure)
            self._deliver(readings)
            # Not kept through the sleep: held for a second, the readings of every machine (100,000 at
            # 5,000 machines) reached the collector's oldest generation, and each full collection
            # walked them all (50-100 ms stalls every 2 s).
            readings = ()
            if self.driver.state is ConnectionState.DISCONNECTED:
                return
            scheduled, skipped = next_slot(scheduled, finished, interval)
            if skipped:
                stats.overruns += 1
                stats.skipped += skipped
                if not self._overrunning:
                    log.warning(
                        "poll_overrun",
                        machine=self.machine_id,
                        duration=round(finished - start, 3),
                        interval=interval,
                        skipped=skipped,
                    )
                self._overrunning = True
            else:
                self._overrunning = False

    def _judge(self, readings: Sequence[Sample], failure: str) -> None:
        """Count the readings by quality; log once when they go bad and once when they recover."""
        bad, first = self._count(readings)
        reason = failure or first
        if reason:
            self.stats.errors += 1
            if self._healthy:
                self._healthy = False
                log.error("machine_readings_bad", machine=self.machine_id, bad=bad, first=reason)
        elif not self._healthy:
            self._healthy = True
            log.info("machine_readings_recovered", machine=self.machine_id)

    def _deliver(self, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        try:
            self.sink(samples)
        except Exception as exc:  # the consumer's bug must not stop collection
            self.stats.errors += 1
            log.error("sink_failed", machine=self.machine_id, error=repr(exc))

    # -- subscribing

    async def _try_subscribe(self) -> bool:
        try:
            subscribed = await self.driver.subscribe(self._pushed)
        except Exception as exc:
            log.warning("subscribe_failed", machine=self.machine_id, error=repr(exc))
            subscribed = False
        _raise_if_cancelled()
        return subscribed

    def _pushed(self, samples: Sequence[Sample]) -> None:
        """What a subscription pushes, counted as the polls' readings are."""
        self._count(samples)
        self.sink(samples)

    def _count(self, samples: Sequence[Sample]) -> tuple[int, str]:
        """Count the samples by quality (the metrics' readings); returns how many readings were not
        good and why the first of them was not."""
        bad, first = 0, ""
        for r in samples:
            if isinstance(r, Reading) and r.quality is not Quality.GOOD:
                bad += 1
                if not first:
                    first = f"{r.tag}: {r.quality}: {r.reason or 'no reason given'}"
        self.stats.good += len(samples) - bad
        self.stats.bad += bad
        return bad, first

    async def _watch(self) -> None:
        """While the driver pushes samples, only check once per interval that it is still connected."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.driver.state is ConnectionState.DISCONNECTED:
                break
        reason = str(getattr(self.driver, "reason", "") or "connection lost")
        if self._healthy:
            self._healthy = False
            log.warning("machine_connection_lost", machine=self.machine_id, reason=reason)
        self._emit_outage(reason)
