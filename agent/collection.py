"""Collection: one collector per configured machine, each a supervised task; every poll's samples
are counted and handed on. The protocol library is imported only when a machine uses it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config.machines import MachineConfig
from agent.metrics import Metrics
from agent.supervisor import Supervisor
from drivers.base import Driver, Quality, Sample


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

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self.runs

    def start(self, machine: MachineConfig) -> None:
        from agent.collector import Collector

        collector = Collector(
            build_driver(machine),
            poll_interval=machine.poll_interval,
            sink=self._sink(machine.id),
            subscribe=machine.subscribes,
            tags=tuple(machine.connection.tag_names),
        )
        self.runs[machine.id] = MachineRun(machine, collector)
        self._supervisor.start(f"collect:{machine.id}", collector.run)

    async def stop(self, machine_id: str) -> None:
        await self._supervisor.stop(f"collect:{machine_id}")
        self.runs.pop(machine_id, None)
        self._metrics.forget_machine(machine_id)

    def _sink(self, machine_id: str) -> Callable[[Sequence[Sample]], None]:
        metrics = self._metrics
        on_samples = self._on_samples

        def sink(samples: Sequence[Sample]) -> None:
            good = sum(1 for s in samples if getattr(s, "quality", Quality.GOOD) is Quality.GOOD)
            if good:
                metrics.count_readings(machine_id, good, "good")
            if len(samples) - good:
                metrics.count_readings(machine_id, len(samples) - good, "bad")
            on_samples(machine_id, samples)

        return sink

    def observe_polls(self) -> None:
        """Poll durations and errors since the last call, into the metrics."""
        for mid, run in self.runs.items():
            st = run.collector.stats
            if st.polls > run.polls_seen:
                errors = st.errors - run.errors_seen
                self._metrics.observe_poll(mid, st.last_poll_duration, error="poll" if errors > 0 else None)
                run.polls_seen, run.errors_seen = st.polls, st.errors
