"""``min_interval``: at most one firing per workflow and machine within the interval. Pure state."""

from __future__ import annotations

from collections.abc import Iterable


class Throttle:
    """Remembers when each (workflow, machine) last fired; ``now`` always comes from the caller.

    In memory on purpose: after a restart the first event fires again, which errs towards telling
    someone rather than staying silent.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, workflow: str, machine_id: str | None, min_interval: float, now: float) -> bool:
        """True (and remembered as a firing) unless the same pair fired less than ``min_interval`` ago."""
        if min_interval <= 0:
            return True
        key = (workflow, machine_id or "")
        last = self._last.get(key)
        # A clock that stepped backwards must not mute a workflow until it catches up again.
        if last is not None and 0 <= now - last < min_interval:
            return False
        self._last[key] = now
        return True

    def forget(self, workflow: str, machine_id: str | None, at: float) -> None:
        """Undo the firing remembered at ``at`` (it was not accepted after all)."""
        key = (workflow, machine_id or "")
        if self._last.get(key) == at:
            del self._last[key]

    def keep_only(self, workflows: Iterable[str]) -> None:
        """Forget removed workflows after a reload."""
        names = set(workflows)
        self._last = {k: v for k, v in self._last.items() if k[0] in names}
