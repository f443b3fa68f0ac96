"""The daemon: collection, derivation + workflows, delivery and the local API on one event loop.

Start order: outbox and derived state first (nothing is collected that could not be kept), then the
dispatcher, the API, and the collectors last, in slices after ``READY=1`` (sent once the configuration is
loaded, the outbox and the state store are open and the API listens). Stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from agent import reload
from agent.collection import Collection
from agent.config.agent_file import Config
from agent.config.machines import MachineConfig
from agent.config_changes import endpoints_of
from agent.delivery.settings import OUTBOX_FILE
from agent.event_loop import running_loop_name
from agent.health import Facts, Health, judge, status_line
from agent.loop_watch import GC_SETTLE_SECONDS, AcceptEpisodes, GcPauses, LoopLag
from agent.metrics import Metrics
from agent.notify import Notifier
from agent.state_lock import StateDirLock, lock_state_dir, prepare_state_dir
from agent.supervisor import Supervisor
from drivers.base import Sample

log = structlog.get_logger(__name__)

STATE_FILE = "state.sqlite3"
TICK_SECONDS = 1.0
# counts() scans the outbox table (0.1-0.2 s at a million rows, off the loop): not every tick.
OUTBOX_COUNTS_SECONDS = 10.0
# Machines whose tiles or metrics the tick updates in one loop turn. For all of them at once it was
# one turn of 50 ms (metrics) and 22 ms (tiles) at 3,500 machines, every second: the polls due in it
# were that late. 500 a turn still took 11 ms at 5,000 machines on a loaded core (bench/stalls.py).
MACHINE_SLICE = 250
# Each tick compares 1/TILE_SWEEP_TICKS of the panel's tiles (``LiveFeed.sweep``); an event updates
# its machine's tile at once.
TILE_SWEEP_TICKS = 10
# The tick brings the per-machine series up to date this often (a scrape always does first): every
# second, that was 11 % of the daemon's CPU at 5,000 machines. The collectors keep 30 s of poll
# lags in between (``collector.LAG_SECONDS``).
METRICS_SECONDS = 10.0


async def in_slices(machines: Sequence[str], work: Callable[[Sequence[str]], None]) -> None:
    """``work`` on ``MACHINE_SLICE`` machines per loop turn (the loop turns after the last one too)."""
    for first in range(0, len(machines), MACHINE_SLICE):
        work(machines[first : first + MACHINE_SLICE])
        await asyncio.sleep(0)


class Runtime:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        state_dir: Path | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.state_dir_override = state_dir
        self.notifier = notifier or Notifier(None)
        self.clock = clock
        self.metrics = Metrics()
        self.supervisor = Supervisor()
        self.collection = Collection(self.supervisor, self.metrics, self._on_samples)
        self.started_at = clock()
        self.stopping = asyncio.Event()
        self.last_reload: dict[str, Any] | None = None
        self._runner: web.AppRunner | None = None
        self._fire_tasks: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self.outbox: Any = None
        self.store: Any = None
        self.pipeline: Any = None
        self.dispatcher: Any = None
        self.feed: Any = None  # the operator panel's live feed, when the panel is on
        self.api_url: str | None = None
        self._outbox_counts: Any = None
        self._disk_error: str | None = None
        self._counts_at = 0.0
        self._metrics_at = 0.0
        self._lock: StateDirLock | None = None
        self._accept_episodes = AcceptEpisodes()
        self.loop_lag = LoopLag(self.metrics.loop_lag.observe)
        self.gc_pauses = GcPauses()

    # ---- start / stop

    async def start(self) -> None:
        cfg = self.config
        await self._open_files()
        await self._build_pipeline()
        await self.pipeline.start()
        await self.pipeline.publish_state()
        if cfg.agent.api.enabled and cfg.agent.api.panel:
            from agent.panel.feed import LiveFeed

            self.feed = LiveFeed(lambda: self.pipeline.machines, lambda: self.pipeline.derivers, self.clock)
        await self.dispatcher.start()
        await self._start_api()
        self.supervisor.start("ticker", self._ticker)
        self.supervisor.start("loop-lag", self.loop_lag.run)
        if self.notifier.watchdog_interval() is not None:
            self.supervisor.start("watchdog", self.notifier.keep_alive)
        await self._refresh_outbox_counts()
        self.notifier.ready(self.status_line())
        log.info(
            "agent_ready",
            machines=len(cfg.machines),
            workflows=len(cfg.workflows),
            api=self.api_url,
            state_dir=str(cfg.agent.state_dir),
            event_loop=running_loop_name(),
            startup_seconds=round(self.clock() - self.started_at, 3),
        )
        # After READY (config, outbox, state and API are up): building 500 drivers took half of the
        # start, and connecting goes on in the background anyway.
        async with self._reload_lock:  # a reload decides what to start from what runs: after the last slice
            await self.collection.start_all(cfg.machines, self.stopping)
        self.gc_pauses.install()  # and freezes what lives as long as the process
        asyncio.get_running_loop().call_later(GC_SETTLE_SECONDS, self.gc_pauses.settle)

    async def _open_files(self) -> None:
        from agent.delivery.outbox import Outbox
        from agent.state.store import StateStore

        state_dir = self.config.agent.state_dir
        prepare_state_dir(state_dir)
        # Before any file is opened: a second agent on the same outbox would deliver every row twice.
        self._lock = lock_state_dir(state_dir)
        self.outbox = await Outbox.open(state_dir / OUTBOX_FILE, self.config.agent.outbox)
        self.store = await StateStore.open(state_dir / STATE_FILE)

    async def _build_pipeline(self) -> None:
        from agent.delivery.dispatcher import Dispatcher
        from agent.pipeline import Pipeline

        cfg = self.config
        derivers = await self.derivers_for(cfg.machines)
        self.dispatcher = Dispatcher(
            self.outbox, endpoints_of(cfg), cfg.agent.delivery, on_result=self.metrics.observe_delivery
        )
        from agent.mqtt.uns import namespace_of

        self.pipeline = Pipeline(
            {m.id: m.ref for m in cfg.machines},
            derivers,
            cfg.workflows,
            self.outbox,
            self.store,
            clock=self.clock,
            on_enqueued=self.dispatcher.wake,
            on_events=self._on_events,
            on_firings=self._count_firings,
            namespace=namespace_of(cfg.agent.publish, cfg.agent.name),
            agent_name=cfg.agent.name,
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Reverse of start: no new input (collectors, API), then everything derived reaches the
        outbox and the state store, in-flight webhooks get ``grace`` seconds, then the files close."""
        self.notifier.stopping("stopping")
        self.gc_pauses.remove()
        log.info("agent_stopping")
        await asyncio.gather(*(self.collection.stop(mid) for mid in list(self.collection.runs)))
        self.collection.wakeups.close()
        if self.feed is not None:
            self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.supervisor.stop_all()
        if self._fire_tasks:
            await asyncio.gather(*self._fire_tasks, return_exceptions=True)
        if self.pipeline is not None:
            try:
                await self.pipeline.close()
            except Exception as exc:
                # Rows still waiting in memory are lost only if the outbox refuses them to the end.
                log.error("pipeline_close_failed", error=repr(exc), waiting=self.pipeline.pending)
            self.metrics.set_held(
                self.pipeline.pending,
                {"memory_full": self.pipeline.rejected, "stopped": self.pipeline.discarded},
            )
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        if self.store is not None:
            await self.store.close()
        if self.outbox is not None:
            await self.outbox.close()
        if self._lock is not None:
            self._lock.release()
        log.info("agent_stopped")

    async def derivers_for(
        self,
        machines: Sequence[MachineConfig],
        *,
        after_restart: bool = True,
        live: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """New derivers, each restored from ``live[id]`` (a reload: the running deriver's state, which
        may be ahead of the store) or else from the state store."""
        from agent.derive.machine import MachineDeriver

        saved = await self.store.load_all()
        out: dict[str, Any] = {}
        for m in machines:
            d = MachineDeriver(m.derivation, m.ref, self.config.agent.categories)
            current = live.get(m.id) if live is not None else None
            snap = current.snapshot() if current is not None else saved.get(m.id)
            if snap is not None:
                try:
                    d.restore(snap, after_restart=after_restart)
                except Exception as exc:
                    # A snapshot from an incompatible older config must not keep the agent from starting.
                    log.error("derived_state_not_restored", machine_id=m.id, error=str(exc))
            out[m.id] = d
        return out

    def _on_samples(self, machine_id: str, samples: Sequence[Sample]) -> None:
        """Every poll: derive now; only the rare poll that yields events pays for a task to fire them."""
        events = self.pipeline.derive(machine_id, samples)
        if events:
            self._spawn(self.pipeline.fire(events))
        if self.feed is not None:
            self.feed.samples(machine_id, samples, derived=bool(events))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._fire_tasks.add(task)
        task.add_done_callback(self._fire_done)

    def _fire_done(self, task: asyncio.Task[Any]) -> None:
        self._fire_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pipeline_failed", error=repr(task.exception()))

    def _on_events(self, events: Sequence[Any]) -> None:
        """Every derived event, whatever derived it (a poll, a timer, an operator): counted, and its
        machine's panel tile compared at once."""
        for event_type, n in Counter(e.event for e in events).items():
            self.metrics.count_event(event_type, n)
        if self.feed is not None:
            for mid in {e.machine.id for e in events if e.machine is not None}:
                self.feed.observe(mid)

    def _count_firings(self, firings: Sequence[Any]) -> None:
        for f in firings:
            self.metrics.count_workflow(f.workflow, "queued" if f.durable else "waiting")

    # ---- the once-a-second tick: timers, schedules, metrics, systemd status

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += TICK_SECONDS
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > TICK_SECONDS:
                next_at = loop.time()  # the loop was stalled: do not catch up with a burst of ticks
            try:
                await self.pipeline.tick()
            except Exception as exc:
                log.error("tick_failed", error=repr(exc))
            await asyncio.sleep(0)  # every phase walks every machine: let due polls run between them
            try:
                await self.pipeline.publish_tags()
            except Exception as exc:
                log.error("tag_publishing_failed", error=repr(exc))
            if self.feed is not None:
                await in_slices(self.feed.sweep(TILE_SWEEP_TICKS), self.feed.observe_all)
            if loop.time() - self._counts_at >= OUTBOX_COUNTS_SECONDS:
                self._counts_at = loop.time()
                await self._refresh_outbox_counts()
            if loop.time() - self._metrics_at >= METRICS_SECONDS:
                self._metrics_at = loop.time()
                await self.update_metrics()
            self.notifier.status(self.status_line())

    async def _refresh_outbox_counts(self) -> None:
        try:
            self._outbox_counts = await self.outbox.counts()
            self._disk_error = None
        except Exception as exc:
            self._disk_error = f"{type(exc).__name__}: {exc}"

    async def update_metrics(self) -> None:
        """Bring the series up to date, a slice of machines per loop turn (for all 2,000 machines at
        once, the first turn of a /metrics scrape held the loop for 26 ms)."""
        await in_slices(list(self.pipeline.derivers), self._machine_metrics)
        self._agent_metrics()

    def _machine_metrics(self, machines: Sequence[str]) -> None:
        derivers = self.pipeline.derivers
        for mid in machines:
            d = derivers.get(mid)
            if d is None:  # removed by a reload between two slices
                continue
            unreadable = d.status in ("DISCONNECTED", "BAD")
            self.metrics.set_unreadable(
                mid, d.status if unreadable else None, d.status_reason, d.status_since if unreadable else None
            )
        self.collection.observe_polls(machines)

    def _agent_metrics(self) -> None:
        # A machine without a status yet is in no series (not status="None").
        statuses = Counter(d.status for d in self.pipeline.derivers.values() if d.status is not None)
        self.metrics.set_machine_statuses(statuses)
        self.metrics.set_held(
            self.pipeline.pending,
            {"memory_full": self.pipeline.rejected, "stopped": self.pipeline.discarded},
        )
        self.metrics.set_mqtt_links((ln.broker, ln.connected, ln.reconnects) for ln in self.mqtt_links())
        c = self._outbox_counts
        if c is not None:
            self.metrics.set_outbox(
                pending=c.pending,
                in_flight=c.in_flight,
                dead=c.dead,
                oldest_pending_age=c.oldest_pending_age or 0.0,  # None when nothing is pending
            )

    def mqtt_links(self) -> list[Any]:
        """The MQTT sender's open links (``MqttLink``: broker, connected, reconnects, last_error)."""
        sender = self.dispatcher.sender("mqtt") if self.dispatcher is not None else None
        return list(getattr(sender, "links", list)())

    def _statuses(self) -> list[str]:
        return [str(d.status) for d in self.pipeline.derivers.values()] if self.pipeline else []

    def status_line(self) -> str:
        links = [(link.broker, link.connected) for link in self.mqtt_links()]
        return status_line(self._statuses(), self._outbox_counts, links)

    def health(self) -> Health:
        return judge(
            Facts(
                disk_error=self._disk_error,
                outbox_unavailable=self.outbox is not None and self.outbox.stats.unavailable,
                recovery_pending=self.outbox is not None and self.outbox.recovery_pending,
                waiting=self.pipeline.pending if self.pipeline is not None else 0,
                rejected=self.pipeline.rejected if self.pipeline is not None else 0,
                counts=self._outbox_counts,
                statuses=self._statuses(),
                mqtt=[(link.broker, link.connected, link.last_error) for link in self.mqtt_links()],
            )
        )

    # ---- the API, with /metrics, /healthz, /readyz and reload added to the operator routes

    async def _start_api(self) -> None:
        from agent.daemon_routes import start_daemon_api

        started = await start_daemon_api(self)
        if started is not None:
            self._runner, self.api_url = started

    # ---- reload: a bad config is rejected and the running one stays

    async def reload(self) -> dict[str, Any]:
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await reload.apply(self)
            finally:
                self.notifier.ready(self.status_line())

    # ---- the process: signals, until SIGTERM/SIGINT

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        loop.set_exception_handler(self._accept_episodes.handle)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()
        return 0
