"""What the pipeline uses of a machine's deriver (``agent.derive.machine.MachineDeriver``), and how
it finds a machine's reference in a configured machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.events import Event, MachineRef


class Deriver(Protocol):
    """What the pipeline uses of ``agent.derive.machine.MachineDeriver``."""

    def ingest(self, samples: Sequence[Any], now: float) -> list[Event]: ...
    def tick(self, now: float) -> list[Event]: ...
    def categorize(
        self,
        downtime_id: str,
        category: str,
        notes: str | None,
        operator: Mapping[str, Any] | None,
        now: float,
    ) -> Event: ...
    def snapshot(self) -> dict[str, Any]: ...
    def parts_since(self, ts: float) -> int: ...
    @property
    def part_total(self) -> int: ...
    def set_exceeded_after(self, thresholds: Sequence[float]) -> None: ...


def machine_ref(machine: Any) -> MachineRef:
    if isinstance(machine, MachineRef):
        return machine
    ref = getattr(machine, "ref", None)
    if isinstance(ref, MachineRef):
        return ref
    raise TypeError(f"expected a MachineRef or an object with .ref, got {type(machine).__name__}")
