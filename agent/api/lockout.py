"""Wrong tokens, counted per client address: guessing is slowed to a crawl, a mistyped token is not.

Tokens are at least 16 characters, so guessing one is hopeless anyway; the lockout makes it also
loud and slow. After ``attempts`` wrong tokens within ``window`` seconds, the address gets 429 for
every token-carrying request (right or wrong: answering a right one would let the guessing go on)
for ``pause`` seconds, doubling with each further lockout up to ``max_pause``. A right token outside
a lockout clears the address's count. At most ``max_addresses`` addresses are remembered (the least
recently seen is forgotten first), so a flood from many addresses cannot grow memory.

Pure: the clock is injected, nothing here does I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

ATTEMPTS = 10
WINDOW = 60.0
PAUSE = 60.0
MAX_PAUSE = 900.0
MAX_ADDRESSES = 4096


@dataclass
class _Address:
    failures: list[float] = field(default_factory=list)  # times of the wrong tokens in the window
    until: float = 0.0  # locked out before this time
    lockouts: int = 0  # lockouts so far: each doubles the pause


class Lockout:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        attempts: int = ATTEMPTS,
        window: float = WINDOW,
        pause: float = PAUSE,
        max_pause: float = MAX_PAUSE,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self.attempts = attempts
        self.window = window
        self.pause = pause
        self.max_pause = max_pause
        self.max_addresses = max_addresses
        self._seen: OrderedDict[str, _Address] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try a token again, or ``None`` when it may now."""
        entry = self._seen.get(address)
        if entry is None:
            return None
        left = entry.until - self._clock()
        return left if left > 0 else None

    def failed(self, address: str) -> float | None:
        """Count a wrong token; the seconds of the lockout it starts, or ``None`` when it starts none."""
        now = self._clock()
        entry = self._seen.pop(address, None) or _Address()
        self._seen[address] = entry  # most recently seen last
        while len(self._seen) > self.max_addresses:
            self._seen.popitem(last=False)
        entry.failures = [t for t in entry.failures if now - t < self.window]
        entry.failures.append(now)
        if len(entry.failures) < self.attempts:
            return None
        pause: float = min(self.max_pause, self.pause * 2.0**entry.lockouts)
        entry.lockouts += 1
        entry.failures.clear()
        entry.until = now + pause
        return pause

    def succeeded(self, address: str) -> None:
        """A right token: the address's wrong ones are forgiven (its lockout history too)."""
        self._seen.pop(address, None)

    def __len__(self) -> int:
        return len(self._seen)
