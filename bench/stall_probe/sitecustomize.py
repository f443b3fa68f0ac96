"""Loaded by the daemon under bench/stalls.py (``PYTHONPATH=bench/stall_probe``), never shipped.

Times every callback asyncio's loop runs (``Handle._run``: a task step, a protocol's
``data_received``, a timer) between SIGUSR1 (the window opens: counts start from zero) and SIGUSR2
(the window closes: the longest ones are written to ``EDGE_AGENT_STALL_OUT`` as JSON, with the task
and the line it stopped at, and how much of each was garbage collection). The agent handles neither
signal. asyncio's own loop only: uvloop's handles are compiled. A watchdog thread looks every 5 ms
and, in a callback already running for ``SAMPLE_AFTER``, takes the main thread's stack once: the
code that was running, not only the line the step stopped at.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import heapq
import json
import os
import signal
import sys
import threading
import time
import traceback
from asyncio import events
from typing import Any

OUT = os.environ.get("EDGE_AGENT_STALL_OUT")
KEEP = 30
NOTE_FROM = 0.005  # callbacks shorter than this are only counted
SAMPLE_AFTER = 0.012


def _describe(handle: events.Handle) -> str:
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        # Where the step stopped: the innermost coroutine the task awaits, and its line.
        inner: Any = owner.get_coro()
        while True:
            awaited = getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None)
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None or frame.f_code.co_filename.startswith(asyncio.__path__[0]):
                break
            inner = awaited
        frame = getattr(inner, "cr_frame", None) or getattr(inner, "gi_frame", None)
        where = f" @{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}" if frame else " (ended)"
        return f"task {owner.get_name()}: {getattr(inner, '__qualname__', inner)}{where}"
    return repr(callback)[:200]


def install(out: str) -> None:
    window = [False]
    # when the running collection started, seconds so far, oldest generation, garbage objects found
    in_gc = [0.0, 0.0, -1.0, 0.0]
    longest: list[tuple[float, int, dict[str, Any]]] = []
    by_ms: collections.Counter[int] = collections.Counter()
    counted = [0]
    run = events.Handle._run

    def collecting(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            in_gc[0] = time.perf_counter()
        else:
            in_gc[1] += time.perf_counter() - in_gc[0]
            in_gc[2] = max(in_gc[2], info.get("generation", -1))
            in_gc[3] += info.get("collected", 0)

    running = [0.0, 0]  # when the running callback started (0: none), its number
    stacks: dict[int, list[str]] = {}
    main = threading.get_ident()

    def watchdog() -> None:
        sampled = -1
        while True:
            time.sleep(0.005)
            since, number = running
            if since and number != sampled and time.perf_counter() - since >= SAMPLE_AFTER:
                frame = sys._current_frames().get(main)
                if frame is not None and running[1] == number:
                    summary = traceback.extract_stack(frame)[-6:]
                    stacks[number] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in summary]
                    sampled = number

    def timed(self: events.Handle) -> None:
        gc_before = in_gc[1]
        in_gc[2] = -1
        in_gc[3] = 0
        t = time.perf_counter()
        running[1] += 1
        running[0] = t
        run(self)
        running[0] = 0.0
        took = time.perf_counter() - t
        stack = stacks.pop(running[1], None)
        if not window[0]:
            return
        counted[0] += 1
        if took < NOTE_FROM:
            return
        by_ms[int(took * 1000)] += 1
        entry = {
            "ms": round(took * 1000, 1),
            "gc_ms": round((in_gc[1] - gc_before) * 1000, 1),
            "gc_generation": int(in_gc[2]),  # the oldest collected inside it, -1: none
            "gc_garbage": int(in_gc[3]),
            "stack": stack,  # sampled SAMPLE_AFTER into the callback, innermost last
            "what": _describe(self),
        }
        item = (took, counted[0], entry)
        if len(longest) < KEEP:
            heapq.heappush(longest, item)
        else:
            heapq.heappushpop(longest, item)

    stats_at_open: list[dict[str, int]] = []

    def open_window(signum: int, frame: Any) -> None:
        stats_at_open[:] = gc.get_stats()
        longest.clear()
        by_ms.clear()
        counted[0] = 0
        window[0] = True

    def close_window(signum: int, frame: Any) -> None:
        window[0] = False
        # What a full collection walks: the oldest generation, frozen objects (gc.freeze) excluded.
        oldest = collections.Counter(type(o).__qualname__ for o in gc.get_objects(2))
        with open(out, "w") as f:
            json.dump(
                {
                    "callbacks": counted[0],
                    "at_least_5ms_by_ms": dict(sorted(by_ms.items())),
                    "longest": [e for _, _, e in sorted(longest, key=lambda i: i[0], reverse=True)],
                    "oldest_generation": sum(oldest.values()),
                    "oldest_generation_by_type": dict(oldest.most_common(15)),
                    "frozen": gc.get_freeze_count(),
                    "collections_by_generation": [
                        now["collections"] - then["collections"]
                        for now, then in zip(gc.get_stats(), stats_at_open, strict=True)
                    ],
                },
                f,
            )

    threading.Thread(target=watchdog, name="stall-watchdog", daemon=True).start()
    gc.callbacks.append(collecting)
    events.Handle._run = timed  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, open_window)
    signal.signal(signal.SIGUSR2, close_window)


if OUT:
    install(OUT)
