"""The daemon: collection, derivation + workflows, delivery and the local API on one event loop.

Start order: outbox and derived state first (nothing is collected that could not be kept), then the
dispatcher, the API, and the collectors last. Stop order is the reverse. ``READY=1`` is sent only once
the configuration is loaded, the outbox is open and the API listens.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from agent.config.agent_file import Config, collect_config
from agent.config.machines import MachineConfig
from agent.delivery.settings import OUTBOX_FILE, EndpointConfig
from agent.metrics import Metrics
from agent.notify import Notifier
from agent.supervisor import Supervisor
from drivers.base import Driver, Quality, Sample

log = structlog.get_logger(__name__)

STATE_FILE = "state.sqlite3"
TICK_SECONDS = 1.0
# counts() scans the outbox table (0.1-0.2 s at a million rows, off the loop): not every tick.
OUTBOX_COUNTS_SECONDS = 10.0


def build_driver(machine: MachineConfig) -> Driver:
    """The protocol library is imported only when a machine uses it (each costs tens of MB)."""
    if machine.protocol == "modbus":
        from drivers.modbus.config import ModbusMachineConfig
        from drivers.modbus.driver import ModbusDriver

        assert isinstance(machine.connection, ModbusMachineConfig)
        return ModbusDriver(machine.connection)
    from drivers.opcua.config import OpcuaMachineConfig
    from drivers.opcua.driver import OpcuaDriver

    assert isinstance(machine.connection, OpcuaMachineConfig)
    return OpcuaDriver(machine.connection)


@dataclass
class MachineRun:
    config: MachineConfig
    collector: Any
    polls_seen: int = 0
    errors_seen: int = 0


@dataclass
class Health:
    ok: bool
    reasons: list[str] = field(default_factory=list)


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
        self.machines: dict[str, MachineRun] = {}
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

    # ---- start / stop

    async def start(self) -> None:
        from agent.delivery.dispatcher import Dispatcher
        from agent.delivery.outbox import Outbox
        from agent.derive.store import DeriveStore
        from agent.pipeline import Pipeline

        cfg = self.config
        state_dir = cfg.agent.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = await Outbox.open(state_dir / OUTBOX_FILE, cfg.agent.outbox)
        self.store = await DeriveStore.open(state_dir / STATE_FILE)
        derivers = await self._derivers(cfg.machines)
        self.dispatcher = Dispatcher(
            self.outbox, endpoints_of(cfg), cfg.agent.delivery, on_result=self.metrics.observe_delivery
        )
        self.pipeline = Pipeline(
            {m.id: m.ref for m in cfg.machines},
            derivers,
            cfg.workflows,
            self.outbox,
            self.store,
            clock=self.clock,
            on_enqueued=self.dispatcher.wake,
            on_events=self._count_events,
        )
        await self.pipeline.start()
        if cfg.agent.api.enabled and cfg.agent.api.panel:
            from agent.panel.feed import LiveFeed

            self.feed = LiveFeed(lambda: self.pipeline.machines, lambda: self.pipeline.derivers, self.clock)
        await self.dispatcher.start()
        await self._start_api()
        for machine in cfg.machines:
            self._start_machine(machine)
        self.supervisor.start("ticker", self._ticker)
        if self.notifier.watchdog_interval() is not None:
            self.supervisor.start("watchdog", self.notifier.keep_alive)
        await self._refresh_outbox_counts()
        self.notifier.ready(self.status_line())
        log.info(
            "agent_ready",
            machines=len(cfg.machines),
            workflows=len(cfg.workflows),
            api=self.api_url,
            state_dir=str(state_dir),
            startup_seconds=round(self.clock() - self.started_at, 3),
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Reverse of start: no new input (collectors, API), then everything derived reaches the
        outbox and the state store, in-flight webhooks get ``grace`` seconds, then the files close."""
        self.notifier.stopping("stopping")
        log.info("agent_stopping")
        await asyncio.gather(*(self._stop_machine(mid) for mid in list(self.machines)))
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
        if self.dispatcher is not None:
            await self.dispatcher.stop(grace)
        if self.store is not None:
            await self.store.close()
        if self.outbox is not None:
            await self.outbox.close()
        log.info("agent_stopped")

    async def _derivers(
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

    # ---- machines

    def _start_machine(self, machine: MachineConfig) -> None:
        from agent.collector import Collector

        collector = Collector(
            build_driver(machine),
            poll_interval=machine.poll_interval,
            sink=self._sink(machine.id),
            subscribe=machine.subscribes,
            tags=tuple(machine.connection.tag_names),
        )
        self.machines[machine.id] = MachineRun(machine, collector)
        self.supervisor.start(f"collect:{machine.id}", collector.run)

    async def _stop_machine(self, machine_id: str) -> None:
        await self.supervisor.stop(f"collect:{machine_id}")
        self.machines.pop(machine_id, None)
        self.metrics.forget_machine(machine_id)

    def _sink(self, machine_id: str) -> Callable[[Sequence[Sample]], None]:
        metrics = self.metrics

        def sink(samples: Sequence[Sample]) -> None:
            good = sum(1 for s in samples if getattr(s, "quality", Quality.GOOD) is Quality.GOOD)
            if good:
                metrics.count_readings(machine_id, good, "good")
            if len(samples) - good:
                metrics.count_readings(machine_id, len(samples) - good, "bad")
            events = self.pipeline.derive(machine_id, samples)
            if events:
                self._spawn(self.pipeline.fire(events))
            if self.feed is not None:
                self.feed.samples(machine_id, samples, derived=bool(events))

        return sink

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._fire_tasks.add(task)
        task.add_done_callback(self._fire_done)

    def _fire_done(self, task: asyncio.Task[Any]) -> None:
        self._fire_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pipeline_failed", error=repr(task.exception()))

    def _count_events(self, events: Sequence[Any]) -> None:
        for event_type, n in Counter(e.event for e in events).items():
            self.metrics.count_event(event_type, n)

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
                executions = await self.pipeline.tick()
            except Exception as exc:
                log.error("tick_failed", error=repr(exc))
                executions = []
            for ex in executions:
                self.metrics.count_workflow(ex.workflow, "queued" if ex.durable else "waiting")
            if self.feed is not None:
                self.feed.observe_all()  # timers, and categorizations made through the JSON API
            if loop.time() - self._counts_at >= OUTBOX_COUNTS_SECONDS:
                self._counts_at = loop.time()
                await self._refresh_outbox_counts()
            self._update_metrics()
            self.notifier.status(self.status_line())

    async def _refresh_outbox_counts(self) -> None:
        try:
            self._outbox_counts = await self.outbox.counts()
            self._disk_error = None
        except Exception as exc:
            self._disk_error = f"{type(exc).__name__}: {exc}"

    def _update_metrics(self) -> None:
        statuses = Counter(str(d.status) for d in self.pipeline.derivers.values())
        self.metrics.set_machine_statuses(statuses)
        for mid, run in self.machines.items():
            st = run.collector.stats
            if st.polls > run.polls_seen:
                errors = st.errors - run.errors_seen
                self.metrics.observe_poll(mid, st.last_poll_duration, error="poll" if errors > 0 else None)
                run.polls_seen, run.errors_seen = st.polls, st.errors
        c = self._outbox_counts
        if c is not None:
            self.metrics.set_outbox(
                pending=c.pending,
                in_flight=c.in_flight,
                dead=c.dead,
                oldest_pending_age=c.oldest_pending_age or 0.0,  # None when nothing is pending
            )

    def status_line(self) -> str:
        statuses = (
            Counter(str(d.status) for d in self.pipeline.derivers.values()) if self.pipeline else Counter()
        )
        machines = " ".join(f"{k}={v}" for k, v in sorted(statuses.items())) or "no machines"
        c = self._outbox_counts
        outbox = f"outbox pending={c.pending} dead={c.dead}" if c is not None else "outbox ?"
        return f"{machines}; {outbox}"

    def health(self) -> Health:
        reasons: list[str] = []
        if self._disk_error:
            reasons.append(f"outbox unavailable: {self._disk_error}")
        if self.outbox is not None and self.outbox.stats.unavailable:
            reasons.append("outbox cannot be written (disk full or I/O error); new deliveries wait in memory")
        if self.pipeline is not None and self.pipeline.pending:
            reasons.append(f"{self.pipeline.pending} deliveries waiting in memory: the outbox refuses writes")
        if self.pipeline is not None and self.pipeline.rejected:
            reasons.append(
                f"{self.pipeline.rejected} deliveries rejected since start: outbox and memory full"
            )
        c = self._outbox_counts
        if c is not None and c.pending and (c.oldest_pending_age or 0.0) > 600:
            reasons.append(f"outbox not draining: oldest pending delivery is {c.oldest_pending_age:.0f}s old")
        statuses = [str(d.status) for d in self.pipeline.derivers.values()] if self.pipeline else []
        if statuses and all(s == "DISCONNECTED" for s in statuses):
            reasons.append("every machine is disconnected")
        return Health(ok=not reasons, reasons=reasons)

    # ---- the API, with /metrics, /healthz, /readyz and reload added to the operator routes

    async def _start_api(self) -> None:
        from agent.api.server import add_public_route, bound_port, create_app, start_api

        api = self.config.agent.api
        if not api.enabled:
            log.warning(
                "api_disabled", detail="no api: section; manual triggers, /metrics and /readyz are off"
            )
            return
        app = create_app(self.pipeline, self.outbox, api)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_post("/api/v1/reload", self._reload_handler)
        add_public_route(app, "GET", "/healthz", self._healthz)
        add_public_route(app, "GET", "/readyz", self._readyz)
        if self.feed is not None:
            from agent.panel.routes import PanelContext, install_panel

            install_panel(
                app,
                PanelContext(
                    pipeline=self.pipeline,
                    outbox=self.outbox,
                    dispatcher=self.dispatcher,
                    feed=self.feed,
                    api=api,
                    categories=lambda: self.config.agent.categories.names,
                    agent_name=lambda: self.config.agent.name,
                ),
            )
        self._runner = await start_api(app, api)
        host = api.base_url.rsplit(":", 1)[0]
        self.api_url = f"{host}:{bound_port(self._runner)}"

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        self._update_metrics()
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_seconds": round(self.clock() - self.started_at, 1)})

    async def _readyz(self, request: web.Request) -> web.Response:
        h = self.health()
        body = {"status": "ready" if h.ok else "degraded", "reasons": h.reasons}
        return web.json_response(body, status=200 if h.ok else 503)

    async def _reload_handler(self, request: web.Request) -> web.Response:
        result = await self.reload()
        return web.json_response(result, status=200 if result["ok"] else 422)

    # ---- reload: a bad config is rejected and the running one stays

    async def reload(self) -> dict[str, Any]:
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                return await self._reload()
            finally:
                self.notifier.ready(self.status_line())

    async def _reload(self) -> dict[str, Any]:
        if self.config_path is None:
            return {"ok": False, "errors": ["this agent was started without a config file"]}
        new, problems = collect_config(self.config_path, self.state_dir_override)
        if new is None:
            errors = [str(p) for p in problems.items]
            for e in errors:
                log.error("reload_rejected", problem=e)
            self.last_reload = {"ok": False, "errors": errors, "at": self.clock()}
            return self.last_reload
        if new.agent.state_dir != self.config.agent.state_dir or new.agent.api != self.config.agent.api:
            log.warning(
                "reload_needs_restart", detail="state_dir and api changes take effect after a restart"
            )
        old = {m.id: m for m in self.config.machines}
        fresh = {m.id: m for m in new.machines}
        removed = [mid for mid in old if mid not in fresh]
        added = [mid for mid in fresh if mid not in old]
        changed = [mid for mid in fresh if mid in old and fresh[mid] != old[mid]]
        previous = self.config
        try:
            # Stopped first so a changed machine's live state is final when its new deriver takes it
            # over; on any failure below, the finally clause starts every configured machine again.
            for mid in removed + changed:
                await self._stop_machine(mid)
            self.config = new  # new derivers take the new plant categories
            rebuilt = await self._derivers(
                [fresh[mid] for mid in added + changed], after_restart=False, live=self.pipeline.derivers
            )
            derivers = {mid: d for mid, d in self.pipeline.derivers.items() if mid in fresh}
            derivers.update(rebuilt)
            self.pipeline.set_machines({m.id: m.ref for m in new.machines}, derivers)
            self.pipeline.set_workflows(new.workflows)
            self.dispatcher.set_endpoints(endpoints_of(new))
        except Exception as exc:
            log.error("reload_failed", error=repr(exc), exc_info=True)
            self.config = previous
            self.last_reload = {"ok": False, "errors": [f"reload failed: {exc!r}"], "at": self.clock()}
            return self.last_reload
        finally:
            # Whatever happened above, every configured machine is collecting afterwards.
            for m in self.config.machines:
                if m.id not in self.machines:
                    self._start_machine(m)
        self.last_reload = {
            "ok": True,
            "added": added,
            "removed": removed,
            "changed": changed,
            "workflows": len(new.workflows),
            "at": self.clock(),
        }
        log.info("reloaded", added=added, removed=removed, changed=changed, workflows=len(new.workflows))
        return self.last_reload

    # ---- the process: signals, until SIGTERM/SIGINT

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()
        return 0


def endpoints_of(config: Config) -> Mapping[str, EndpointConfig]:
    """Endpoint key ``<workflow>#<action index>`` → its webhook settings, for the dispatcher."""
    return {ep.key: ep for wf in config.workflows for ep in wf.endpoints}
