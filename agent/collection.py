"""Collection: one collector per configured machine, each a supervised task; every poll's samples
are handed on, and what the collectors counted goes into the metrics. The protocol library is
imported only when a machine uses it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from agent.config.machines import MachineConfig
from agent.metrics import Metrics, PollSeries
from agent.supervisor import Supervisor
from agent.wakeups import Wakeups
from drivers.base import Driver, Sample

if TYPE_CHECKING:  # the Modbus modules are imported only when a machine uses Modbus
    from drivers.modbus.link import LinkPool

# Collectors built per loop turn (~12 ms of building at 2,000 machines), and the time over which the
# slices are spread: what the first connects of 2,000 machines cost is then spread as well.
START_SLICE = 100
START_SPREAD_SECONDS = 1.0


def build_driver(machine: MachineConfig, modbus_links: LinkPool | None = None) -> Driver:
    """The protocol library is imported only when a machine uses it (each costs tens of MB).

    ``modbus_links``: the ``LinkPool`` through which Modbus machines behind one host:port share one
    connection (a fresh one when not given)."""
    if machine.protocol == "modbus":
        from drivers.modbus.config import ModbusMachineConfig
        from drivers.modbus.driver import ModbusDriver

        assert isinstance(machine.connection, ModbusMachineConfig)
        return ModbusDriver(machine.connection, links=modbus_links)
    from drivers.opcua.config import OpcuaMachineConfig
    from drivers.opcua.driver import OpcuaDriver

    assert isinstance(machine.connection, OpcuaMachineConfig)
    return OpcuaDriver(machine.connection)


@dataclass
class MachineRun:
    config: MachineConfig
    collector: Any
    # Looked up when the machine starts (the runtime starts machines in slices), not on the first
    # tick: creating 6,000 labelled children in one tick at 2,000 machines held the loop 0.15 s.
    series: PollSeries
    polls_seen: int = 0
    errors_seen: int = 0
    overruns_seen: int = 0
    skipped_seen: int = 0
    # The collector counts readings by quality; the metrics take the growth every few seconds: a
    # labelled prometheus child per poll (a lock and a dict lookup) showed up in the poll path's profile.
    good_seen: int = 0
    bad_seen: int = 0


class Collection:
    def __init__(
        self,
        supervisor: Supervisor,
        metrics: Metrics,
        on_samples: Callable[[str, Sequence[Sample]], None],
    ) -> None:
        self._supervisor = supervisor
        self._metrics = metrics
        self._on_samples = on_samples
        self.runs: dict[str, MachineRun] = {}
        # This agent's Modbus connections, one per host:port. Owned here, not module-wide: two
        # runtimes in one process (tests, an embedding program) must not share a socket or its state.
        self._modbus_links: LinkPool | None = None
        self.wakeups = Wakeups()  # one timer for every machine's wait between polls

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self.runs

    def start(self, machine: MachineConfig) -> None:
        from agent.collector import Collector

        if machine.protocol == "modbus" and self._modbus_links is None:
            from drivers.modbus.link import LinkPool

            self._modbus_links = LinkPool()
        collector = Collector(
            build_driver(machine, self._modbus_links),
            poll_interval=machine.poll_interval,
            sink=functools.partial(self._on_samples, machine.id),
            subscribe=machine.subscribes,
            tags=tuple(machine.connection.tag_names),
            wakeups=self.wakeups,
        )
        self.runs[machine.id] = MachineRun(machine, collector, self._metrics.poll_series(machine.id))
        self._supervisor.start(f"collect:{machine.id}", collector.run)

    async def start_all(self, machines: Sequence[MachineConfig], stopping: asyncio.Event) -> None:
        """Every machine not yet collecting, in slices of ``START_SLICE`` spread over
        ``START_SPREAD_SECONDS``; none after ``stopping`` is set.

        At 2,000 machines, building all collectors in one go held the loop 0.23 s, and their 2,000
        first connects, all ready in the next loop turn, another 0.21 s: the ``event_loop_stalled``
        right after READY. Slices alone only moved the storm (each turn then ran the connects of
        every earlier slice); spread over a second, each slice is connected before the next starts,
        while the API, the ticker and the machines already polling keep running.
        """
        pause = START_SPREAD_SECONDS * START_SLICE / len(machines) if len(machines) > START_SLICE else 0.0
        for i, machine in enumerate(machines):
            if i and i % START_SLICE == 0:
                await asyncio.sleep(pause)
            if machine.id not in self.runs and not stopping.is_set():
                self.start(machine)

    async def stop(self, machine_id: str) -> None:
        await self._supervisor.stop(f"collect:{machine_id}")
        self.runs.pop(machine_id, None)
        self._metrics.forget_machine(machine_id)

    def observe_polls(self, machine_ids: Iterable[str] | None = None) -> None:
        """Readings, the slowest poll, lags, errors, overruns and missed ticks since the last call,
        into the metrics (the runtime calls this every few seconds and for each scrape, for a slice
        of the machines at a time)."""
        metrics = self._metrics
        runs = self.runs
        for mid in list(runs) if machine_ids is None else machine_ids:
            run = runs.get(mid)
            if run is None:
                continue
            series = run.series
            st = run.collector.stats
            if st.good != run.good_seen:
                series.good.inc(st.good - run.good_seen)
                run.good_seen = st.good
            if st.bad != run.bad_seen:
                series.bad.inc(st.bad - run.bad_seen)
                run.bad_seen = st.bad
            new = st.polls - run.polls_seen
            if new <= 0:
                continue
            series.duration.observe(st.slowest)
            st.slowest = 0.0
            errors, overran, missed = (
                st.errors - run.errors_seen,
                st.overruns - run.overruns_seen,
                st.skipped - run.skipped_seen,
            )
            lags = st.lags
            recent = list(islice(lags, max(0, len(lags) - new), None))
            metrics.observe_cycles(mid, errors=errors, overran=overran, missed=missed, lags=recent)
            run.polls_seen, run.errors_seen = st.polls, st.errors
            run.overruns_seen, run.skipped_seen = st.overruns, st.skipped
