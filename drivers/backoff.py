"""Reconnect backoff shared by the drivers and the collector. Pure arithmetic."""

from __future__ import annotations

import math


def backoff_delay(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: base doubling up to cap, ±25 % jitter.

    Jitter keeps a plant's worth of machines behind one rebooted switch from reconnecting in step.
    """
    full = min(cap, math.ldexp(base, min(max(failures - 1, 0), 32)))
    return min(cap, full * (0.75 + 0.5 * jitter))
