"""Downtime: micro-stops, start time, exceeded thresholds from the clock, categorization."""

from __future__ import annotations

from typing import Any

import pytest

from agent.derive import InvalidCategorization, UnknownCategory, UnknownDowntime
from agent.events import (
    DOWNTIME_CATEGORIZED,
    DOWNTIME_ENDED,
    DOWNTIME_EXCEEDED,
    DOWNTIME_STARTED,
    Event,
)

from .builders import IDLE_VALUES, bad, deriver, good, kinds, notice

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
NOON = 1_699_963_200.0  # 2023-11-14 12:00:00 UTC
DT_EVENTS = (DOWNTIME_STARTED, DOWNTIME_ENDED, DOWNTIME_CATEGORIZED, DOWNTIME_EXCEEDED)


def running(t0: float = NOON, **kw: Any) -> Any:
    d = deriver(**kw)
    d.ingest(good(t0, **{**IDLE_VALUES, "execution": "ACTIVE"}), t0)
    d.tick(t0 + 5)
    assert d.status == "ACTIVE"
    return d


def downtime_log(events: list[Event]) -> list[tuple[str, Any, Any]]:
    return [
        (e.event, e.payload()["downtime"]["started_at"], e.payload()["downtime"]["duration_seconds"])
        for e in events
        if e.event in DT_EVENTS
    ]


def test_a_stop_shorter_than_micro_stop_is_no_downtime() -> None:
    d = running()
    out = d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    out += d.tick(NOON + 200)
    out += d.ingest(good(NOON + 219, execution="ACTIVE"), NOON + 219)  # 119 s out of ACTIVE
    out += d.tick(NOON + 400)
    assert downtime_log(out) == []
    assert d.open_downtime is None


def test_a_downtime_starts_when_the_machine_left_active_and_ends_when_active_again() -> None:
    d = running()
    out = d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    out += d.tick(NOON + 219.9)
    assert downtime_log(out) == []
    out += d.tick(NOON + 220)
    assert downtime_log(out) == [(DOWNTIME_STARTED, "2023-11-14T12:01:40Z", 120.0)]
    assert d.open_downtime is not None and d.open_downtime.started_at == NOON + 100
    out += d.ingest(good(NOON + 1000, execution="ACTIVE"), NOON + 1000)
    out += d.tick(NOON + 1005)
    ended = [e for e in out if e.event == DOWNTIME_ENDED]
    assert ended[0].payload()["downtime"]["ended_at"] == "2023-11-14T12:16:40Z"
    assert ended[0].payload()["downtime"]["duration_seconds"] == 900.0
    assert d.open_downtime is None and d.recent_downtimes[-1].ended_at == NOON + 1000


def test_the_payload_has_the_seed_s_shape() -> None:
    d = running()
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    [started] = [e for e in d.tick(NOON + 220) if e.event == DOWNTIME_STARTED]
    body = started.payload()
    assert list(body)[:4] == ["id", "event", "timestamp", "machine"]
    assert body["machine"] == {"id": "mill-01", "name": "CNC Mill 01", "group": "Milling"}
    assert {"id", "duration_seconds", "category", "notes", "started_at", "ended_at"} <= set(body["downtime"])
    assert body["timestamp"] == "2023-11-14T12:03:40Z"


def test_exceeded_fires_once_per_threshold_from_ticks_alone() -> None:
    d = running(exceeded_after=[1800, 600, 600])
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    out = []
    for minute in range(0, 120):  # a dead machine: no readings, only the clock
        out += d.tick(NOON + 100 + minute * 60)
    exceeded = [e.payload()["downtime"] for e in out if e.event == DOWNTIME_EXCEEDED]
    assert [(x["threshold_seconds"], x["duration_seconds"]) for x in exceeded] == [
        (600.0, 600.0),
        (1800.0, 1800.0),
    ]


def test_exceeded_fires_again_for_the_next_downtime_and_new_thresholds_apply() -> None:
    d = running(exceeded_after=[300])
    out: list[Event] = []
    for start in (NOON + 100, NOON + 2000):
        out += d.ingest(good(start, execution="READY"), start)
        out += d.tick(start + 400)
        out += d.ingest(good(start + 500, execution="ACTIVE"), start + 500)
        out += d.tick(start + 505)
    assert kinds(out).count(DOWNTIME_EXCEEDED) == 2
    d.set_exceeded_after([60, 300])
    d.ingest(good(NOON + 5000, execution="READY"), NOON + 5000)
    assert kinds(d.tick(NOON + 5400)).count(DOWNTIME_EXCEEDED) == 2


def test_a_machine_first_seen_idle_has_no_downtime() -> None:
    d = deriver()
    d.ingest(good(NOON, **IDLE_VALUES), NOON)
    assert downtime_log(d.tick(NOON + 10_000)) == []


def test_an_open_downtime_keeps_running_while_disconnected() -> None:
    d = running(exceeded_after=[1800])
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    d.tick(NOON + 300)
    d.ingest(bad(NOON + 400, "execution"), NOON + 400)
    out = d.tick(NOON + 2000)
    assert d.status == "DISCONNECTED"
    assert kinds(out) == ["machine_status_changed", DOWNTIME_EXCEEDED]
    d.ingest(good(NOON + 3000, **{**IDLE_VALUES, "execution": "ACTIVE"}), NOON + 3000)
    ended = [e for e in d.tick(NOON + 3005) if e.event == DOWNTIME_ENDED]
    assert ended[0].payload()["downtime"]["duration_seconds"] == 2900.0


def test_lost_while_active_and_back_idle_is_down_since_contact_was_lost() -> None:
    d = running()
    d.ingest(bad(NOON + 100, "execution"), NOON + 100)
    assert downtime_log(d.tick(NOON + 1000)) == []  # unreachable is not stopped
    d.ingest(good(NOON + 2000, **IDLE_VALUES), NOON + 2000)
    out = d.tick(NOON + 2005)
    assert downtime_log(out) == [(DOWNTIME_STARTED, "2023-11-14T12:01:40Z", 1905.0)]


def test_lost_while_active_and_back_active_is_no_downtime() -> None:
    d = running()
    d.ingest(bad(NOON + 100, "execution"), NOON + 100)
    d.tick(NOON + 1000)
    d.ingest(good(NOON + 2000, **{**IDLE_VALUES, "execution": "ACTIVE"}), NOON + 2000)
    assert downtime_log(d.tick(NOON + 2005) + d.tick(NOON + 5000)) == []


def categorized(events: list[Event]) -> list[tuple[Any, Any]]:
    return [
        (e.payload()["downtime"]["category"], e.payload()["downtime"]["categorized_by"])
        for e in events
        if e.event == DOWNTIME_CATEGORIZED
    ]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ({"alarm_code": 1001, "alarm_count": 1}, ("Maintenance Required", "downtime.categorize[0]")),
        ({"mode": "SETUP"}, ("Setup", "downtime.categorize[2]")),
        ({"execution": "READY"}, None),
    ],
)
def test_auto_categorization_at_start(stop: dict[str, Any], expected: Any) -> None:
    d = running()
    d.ingest(good(NOON + 100, **stop), NOON + 100)
    out = d.tick(NOON + 300)
    assert categorized(out) == ([expected] if expected else [])
    if expected:
        assert kinds(out)[-2:] == [DOWNTIME_STARTED, DOWNTIME_CATEGORIZED]


def test_alarm_text_rule_uses_an_alarm_cleared_before_the_downtime_was_confirmed() -> None:
    d = running()
    d.ingest([notice(NOON + 99, "77", True, "COOLANT pressure low")], NOON + 99)
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    d.tick(NOON + 105)  # the runtime ticks every second: the stop is reported here
    d.ingest([notice(NOON + 150, "77", False)], NOON + 150)
    assert categorized(d.tick(NOON + 300)) == [("Maintenance Required", "downtime.categorize[1]")]


def test_time_window_rule_uses_the_downtime_start_in_the_machine_s_time_zone() -> None:
    d = running(T0 - 3600)  # active since 21:13 UTC
    d.ingest(good(T0, execution="READY"), T0)  # stopped at 22:13 UTC
    assert categorized(d.tick(T0 + 300)) == [("No Operator", "downtime.categorize[3]")]


def test_an_uncategorized_downtime_takes_the_first_rule_that_later_applies() -> None:
    d = running()
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    assert categorized(d.tick(NOON + 300)) == []
    out = d.ingest([notice(NOON + 400, "2040", True, "Coolant low")], NOON + 400)
    assert categorized(out) == [("Maintenance Required", "downtime.categorize[1]")]
    assert categorized(d.ingest(good(NOON + 500, mode="SETUP"), NOON + 500) + d.tick(NOON + 600)) == []


def test_operators_categorize_and_recategorize_open_and_recent_downtimes() -> None:
    d = running()
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    d.tick(NOON + 300)
    dt_id = d.open_downtime.id  # type: ignore[union-attr]
    op = {"id": "op456", "name": "John Smith"}
    first = d.categorize(dt_id, "maintenance required", "Spindle bearing noise detected", op, NOON + 1900)
    body = first.payload()
    assert body["event"] == DOWNTIME_CATEGORIZED
    assert body["downtime"]["category"] == "Maintenance Required"
    assert body["downtime"]["notes"] == "Spindle bearing noise detected"
    assert body["downtime"]["duration_seconds"] == 1800.0
    assert body["downtime"]["categorized_by"] == "operator"
    assert body["operator"] == op
    d.ingest(good(NOON + 2000, execution="ACTIVE"), NOON + 2000)
    ended = [e for e in d.tick(NOON + 2005) if e.event == DOWNTIME_ENDED]
    assert ended[0].payload()["operator"] == op  # operator when known
    second = d.categorize(dt_id, "Tooling", None, None, NOON + 3000)
    assert second.id != first.id
    assert second.payload()["downtime"]["category"] == "Tooling"
    assert second.payload()["downtime"]["duration_seconds"] == 1900.0
    assert "operator" not in second.payload()


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("nope", "Tooling", None, None), UnknownDowntime, "no open or recent downtime with id 'nope'"),
        (("OPEN", "Lunch", None, None), UnknownCategory, "'Lunch' is not a downtime category of this plant"),
        (("OPEN", "Tooling", 5, None), InvalidCategorization, "notes must be text"),
        (("OPEN", "Tooling", "x" * 2001, None), InvalidCategorization, "longer than 2000"),
        (("OPEN", "Tooling", None, {"name": "x"}), InvalidCategorization, "operator.id"),
        (("OPEN", "Tooling", None, {"id": "1", "badge": 2}), InvalidCategorization, "unknown field(s) badge"),
        (("OPEN", "Tooling", None, "op1"), InvalidCategorization, "operator must be an object"),
    ],
)
def test_bad_categorizations_are_refused_with_a_clear_error(args: tuple, error: type, message: str) -> None:
    d = running()
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    d.tick(NOON + 300)
    dt_id = d.open_downtime.id  # type: ignore[union-attr]
    args = tuple(dt_id if a == "OPEN" else a for a in args)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        d.categorize(*args, NOON + 400)
    assert d.open_downtime.category is None  # type: ignore[union-attr]
