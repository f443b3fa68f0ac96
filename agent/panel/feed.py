"""The panel's live feed: an in-process publish/subscribe of machine tiles and tag values.

The runtime calls ``samples`` from each collector's sink (after derivation), ``observe`` for the
machine of every derived event, and ``observe_all`` for a ``sweep`` of the machines each tick; a
tile whose view changed is published at once to every open board. Nothing here polls: a subscriber
waits on its own ``asyncio.Event``. A slow browser cannot make the agent hoard messages: a
subscriber keeps only the newest tile of each machine (and tag set of its machine) until it reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.panel.views import Latest, TagValue, tag_rows, tile_view
from drivers.base import Quality, Reading

_PLAIN_QUALITY = {q: str(q.value) for q in Quality}

# Per machine, in memory: today's picture for the timeline without a new table in the state store.
MAX_HISTORY = 500


@dataclass(eq=False)  # identity: each open page is its own subscriber
class Subscriber:
    """One open board or machine page. ``machine`` set: that machine's tag values are sent too."""

    machine: str | None = None
    tiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags_changed: bool = False
    wake: Any = None  # asyncio.Event, created in the loop that reads it

    def take(self) -> tuple[dict[str, dict[str, Any]], bool]:
        tiles, tags = self.tiles, self.tags_changed
        self.tiles, self.tags_changed = {}, False
        if self.wake is not None:
            self.wake.clear()
        return tiles, tags


@dataclass
class MachineHistory:
    status: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    # Cleared alarms: since, until, code, text.
    alarms: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))


class LiveFeed:
    def __init__(
        self,
        machines: Callable[[], Mapping[str, Any]],
        derivers: Callable[[], Mapping[str, Any]],
        clock: Callable[[], float],
    ) -> None:
        self._machines = machines
        self._derivers = derivers
        self._clock = clock
        self._tiles: dict[str, dict[str, Any]] = {}
        # The newest reading of each tag, formatted only when a page shows it. Kept as plain tuples of
        # plain values, not as the Reading: CPython stops tracking such a tuple at its first young
        # collection, while 20 Readings a machine (100,000 at 5,000 machines), each replaced every
        # second, lived just long enough to reach the oldest generation, and every full collection
        # walked them all: 50-100 ms stalls every 2 s (bench/daemon.py --n 5000).
        self._tags: dict[str, dict[str, Latest]] = {}
        self._history: dict[str, MachineHistory] = {}
        self._subscribers: set[Subscriber] = set()
        self.published = 0  # tile changes sent out (bench/panel.py reads it); pages carry it as ``since``
        self._version: dict[str, int] = {}  # machine -> ``published`` when its tile last changed
        self._cursor = 0  # where ``sweep`` goes on
        self.closed = False

    # -- fed by the runtime

    def samples(self, machine_id: str, samples: Sequence[Any], derived: bool = True) -> None:
        """A collector delivered ``samples`` and the pipeline derived from them; ``derived`` says it
        produced events. Every change a tile shows (state, alarm, downtime, part count) is an event,
        so a poll without one costs only the bookkeeping of tag values."""
        latest = self._tags.setdefault(machine_id, {})
        plain = _PLAIN_QUALITY
        for s in samples:
            if s.__class__ is Reading:
                latest[s.tag] = (s.value, plain[s.quality], s.reason, s.timestamp)
        for sub in self._subscribers:
            if sub.machine == machine_id:
                sub.tags_changed = True
                self._wake(sub)
        if derived:
            self.observe(machine_id)

    def observe(self, machine_id: str) -> None:
        """Publish ``machine_id``'s tile if it differs from the last one published."""
        ref = self._machines().get(machine_id)
        if ref is None:
            return
        now = self._clock()
        tile = tile_view(ref, self._derivers().get(machine_id), now)
        last = self._tiles.get(machine_id)
        if tile == last:
            return
        self._remember(machine_id, last, tile, now)
        self._tiles[machine_id] = tile
        self.published += 1
        self._version[machine_id] = self.published
        for sub in self._subscribers:
            sub.tiles[machine_id] = tile
            self._wake(sub)

    def observe_all(self, machine_ids: Iterable[str] | None = None) -> None:
        """Compare every machine (and drop those a reload removed), or only those of ``machine_ids``."""
        if machine_ids is None:
            self._forget_removed()
            machine_ids = list(self._machines())
        for mid in machine_ids:
            self.observe(mid)

    def sweep(self, rounds: int) -> list[str]:
        """The next ``1/rounds`` of the machines, in turn: every machine once within ``rounds`` calls.

        The runtime observes the machines of every event as it fires (a timer's status change, an
        operator's category); once a tick it also compares this share, for what no event marks: the
        day's part count at midnight, a machine a reload removed. Comparing every tile every second
        was 8 % of the daemon's CPU at 5,000 machines."""
        known = list(self._machines())
        if self._cursor >= len(known):
            self._cursor = 0
            self._forget_removed()
        share = -(-len(known) // max(1, rounds))
        out = known[self._cursor : self._cursor + share]
        self._cursor += share
        return out

    def _forget_removed(self) -> None:
        known = self._machines()
        for mid in list(self._tiles):
            if mid not in known:  # removed by a reload
                del self._tiles[mid]
                self._tags.pop(mid, None)
                self._version.pop(mid, None)

    # -- read by the panel

    def tile(self, machine_id: str) -> dict[str, Any] | None:
        if machine_id not in self._tiles:
            self.observe(machine_id)
        return self._tiles.get(machine_id)

    def tiles(self) -> list[dict[str, Any]]:
        known = self._machines()
        for mid in known:
            if mid not in self._tiles:
                self.observe(mid)
        return [self._tiles[mid] for mid in sorted(known) if mid in self._tiles]

    def tags(self, machine_id: str) -> list[TagValue]:
        return tag_rows(self._tags.get(machine_id, {}))

    def history(self, machine_id: str) -> MachineHistory:
        return self._history.get(machine_id) or MachineHistory()

    def close(self) -> None:
        """The agent stops: every open stream ends now instead of at the server's shutdown timeout."""
        self.closed = True
        for sub in self._subscribers:
            self._wake(sub)

    def subscribe(self, sub: Subscriber, since: int = 0) -> None:
        """``since``: the ``published`` count a page was rendered at. Tiles that changed after it (between
        the render and the stream's start, or while a dropped stream reconnected) are queued at once:
        otherwise a board shows the old state until that machine changes again, maybe for hours."""
        self._subscribers.add(sub)
        if since > self.published:  # a page from before a restart: its count means nothing here
            since = 0
        for mid, version in self._version.items():
            if version > since and (sub.machine is None or sub.machine == mid):
                sub.tiles[mid] = self._tiles[mid]
        if sub.tiles:
            self._wake(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def __iter__(self) -> Iterator[Subscriber]:
        return iter(self._subscribers)

    # -- internals

    @staticmethod
    def _wake(sub: Subscriber) -> None:
        if sub.wake is not None:
            sub.wake.set()

    def _remember(self, mid: str, last: dict[str, Any] | None, tile: dict[str, Any], now: float) -> None:
        hist = self._history.setdefault(mid, MachineHistory())
        status = tile.get("status")
        since = tile.get("status_since")
        if status is not None and (last is None or last.get("status") != status or not hist.status):
            hist.status.append((since if isinstance(since, float) else now, str(status)))
        if last is not None:
            now_codes = {a["code"] for a in tile["alarms"]}
            for alarm in last["alarms"]:
                if alarm["code"] not in now_codes:
                    hist.alarms.append({**alarm, "until": now})
