"""Properties over random reading sequences: the event stream is always internally consistent."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.events import Event

from .builders import bad, deriver, good, notice

T0 = 1_700_000_000.0

values = st.fixed_dictionaries(
    {},
    optional={
        "execution": st.sampled_from(["ACTIVE", "READY", "FEED_HOLD", "STOPPED", 7]),
        "mode": st.sampled_from(["AUTOMATIC", "SETUP", "MANUAL"]),
        "estop": st.booleans(),
        "alarm_code": st.sampled_from([0, 0, 0, 1001, 2040]),
        "alarm_count": st.integers(0, 3),
        "alarm_bits": st.integers(-4, 4),
        "part_count": st.one_of(st.integers(0, 9999), st.just(-5), st.just("garbage")),
    },
)
step = st.one_of(
    st.tuples(st.just("read"), values),
    st.tuples(st.just("bad"), st.just(None)),
    st.tuples(st.just("tick"), st.just(None)),
    st.tuples(st.just("notice"), st.tuples(st.sampled_from(["1001", "77", None]), st.booleans())),
    st.tuples(st.just("restart"), st.just(None)),
    st.tuples(st.just("categorize"), st.sampled_from(["Tooling", "Setup"])),
)
steps = st.lists(st.tuples(st.floats(-5, 400, allow_nan=False), step), max_size=60)


def run(sequence: list[tuple[float, tuple[str, Any]]]) -> list[Event]:
    d = deriver(exceeded_after=[300, 900])
    t = T0
    events: list[Event] = []
    for dt, (kind, arg) in sequence:
        t += dt  # may step back a little: the wall clock is not monotonic
        if kind == "read":
            events += d.ingest(good(t, **arg), t)
        elif kind == "bad":
            events += d.ingest(bad(t, "execution", "mode"), t)
        elif kind == "tick":
            events += d.tick(t)
        elif kind == "notice":
            code, active = arg
            events += d.ingest([notice(t, code, active, "text")], t)
        elif kind == "categorize":
            if d.open_downtime is not None:
                events.append(d.categorize(d.open_downtime.id, arg, "note", {"id": "op1"}, t))
        else:
            snap = json.loads(json.dumps(d.snapshot()))
            d = deriver(exceeded_after=[300, 900])
            d.restore(snap)
    events += d.tick(t + 10_000)
    return events


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_event_stream_invariants(sequence: list[tuple[float, tuple[str, Any]]]) -> None:
    events = run(sequence)
    status: str | None = None
    status_since = -1.0
    open_dt: str | None = None
    last_end = 0.0
    exceeded: set[tuple[str, float]] = set()
    active: set[str] = set()
    total = 0
    last_ts = 0.0
    for e in events:
        body = e.payload()
        assert e.timestamp >= last_ts, "events are emitted in time order"
        last_ts = e.timestamp
        if e.event == "machine_status_changed":
            s = body["status"]
            assert s["from"] != s["to"], "no status event without a change"
            assert s["from"] == status, "status events chain"
            assert s["previous_duration_seconds"] is None or s["previous_duration_seconds"] >= 0
            assert e.timestamp >= status_since
            status, status_since = s["to"], e.timestamp
        elif e.event == "downtime_started":
            dt = body["downtime"]
            assert open_dt is None, "downtimes never overlap"
            assert ts(dt["started_at"]) >= last_end, "a downtime starts after the previous one ended"
            assert dt["duration_seconds"] >= 0
            open_dt = dt["id"]
        elif e.event == "downtime_ended":
            dt = body["downtime"]
            assert dt["id"] == open_dt, "every ended downtime was started"
            assert dt["duration_seconds"] >= 0 and ts(dt["ended_at"]) >= ts(dt["started_at"])
            open_dt, last_end = None, ts(dt["ended_at"])
        elif e.event == "downtime_exceeded":
            dt = body["downtime"]
            assert dt["id"] == open_dt
            key = (dt["id"], dt["threshold_seconds"])
            assert key not in exceeded, "once per downtime per threshold"
            exceeded.add(key)
            assert dt["duration_seconds"] >= dt["threshold_seconds"]
        elif e.event == "downtime_categorized":
            assert body["downtime"]["category"] is not None
        elif e.event == "alarm_triggered":
            code = body["alarm"]["code"]
            assert code not in active, "the same code again is not a new alarm"
            active.add(code)
        elif e.event == "alarm_cleared":
            code = body["alarm"]["code"]
            assert code in active, "every cleared alarm was triggered"
            assert body["alarm"]["duration_seconds"] >= 0
            active.discard(code)
        elif e.event == "part_count":
            p = body["parts"]
            assert p["delta"] > 0, "no negative or empty part counts"
            assert p["total"] == total + p["delta"], "totals never skip or double count"
            total = p["total"]
