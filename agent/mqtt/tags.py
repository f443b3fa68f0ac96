"""Which tag values to put on the namespace, and when: at most once per ``interval``, only values that
changed by more than ``deadband`` (numbers) or at all (anything else) since they were last published.

Pure code over plain data: readings in, a mapping of tag → value out, the clock given by the caller.
Readings of bad quality are not values and are never published (the status topic says DISCONNECTED).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from drivers.base import Quality


@dataclass(frozen=True)
class TagPublishing:
    interval: float = 10.0
    deadband: float = 0.0  # absolute, in the tag's own unit (after scale/offset)
    only: tuple[str, ...] = ()  # tag names; empty: every tag


def changed(old: Any, new: Any, deadband: float) -> bool:
    numeric = (int, float)
    if isinstance(old, numeric) and isinstance(new, numeric) and not isinstance(old, bool | str):
        if isinstance(new, bool):
            return bool(old != new)
        return abs(float(new) - float(old)) > deadband
    return bool(old != new)


class TagReporter:
    """One per machine."""

    def __init__(self, config: TagPublishing) -> None:
        self.config = config
        self._current: dict[str, Any] = {}
        self._sent: dict[str, Any] = {}
        self._next_at: float | None = None

    def observe(self, readings: Iterable[Any]) -> None:
        only = self.config.only
        for r in readings:
            tag = getattr(r, "tag", None)
            if tag is None or getattr(r, "quality", None) is not Quality.GOOD:
                continue
            if only and tag not in only:
                continue
            self._current[tag] = r.value

    def due(self, now: float) -> dict[str, Any] | None:
        """Every value as last published, when at least one changed past the deadband and the
        interval has passed (``None`` otherwise). Whole, so the retained message is the full picture."""
        if self._next_at is not None and now < self._next_at:
            return None
        out = {
            tag: value
            for tag, value in self._current.items()
            if tag not in self._sent or changed(self._sent[tag], value, self.config.deadband)
        }
        if not out:
            return None
        self._sent.update(out)
        self._next_at = now + self.config.interval
        return dict(self._sent)
