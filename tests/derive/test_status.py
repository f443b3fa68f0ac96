"""Machine status: first match wins, debounce by min_state, DISCONNECTED only from read quality."""

from __future__ import annotations

from agent.events import MACHINE_STATUS_CHANGED
from drivers.base import Quality

from .builders import IDLE_VALUES, bad, deriver, good, kinds

T0 = 1_700_000_000.0


def status_events(events: list) -> list[tuple]:
    return [
        (e.payload()["status"]["from"], e.payload()["status"]["to"], e.payload()["status"]["since"])
        for e in events
        if e.event == MACHINE_STATUS_CHANGED
    ]


def test_a_state_is_reported_only_after_it_held_min_state_and_dates_from_its_start() -> None:
    d = deriver()
    assert d.ingest(good(T0, **IDLE_VALUES), T0) == []
    assert d.tick(T0 + 4.9) == []
    [event] = d.tick(T0 + 5)
    body = event.payload()
    assert body["status"] == {
        "from": None,
        "to": "IDLE",
        "since": "2023-11-14T22:13:20Z",
        "previous_duration_seconds": None,
        "reason": "status.otherwise",
    }
    assert body["timestamp"] == "2023-11-14T22:13:25Z"
    assert d.status == "IDLE" and d.status_since == T0


def test_a_flicker_shorter_than_min_state_emits_nothing() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 10)
    out = []
    for i in range(20):  # ACTIVE for 2 s, READY for 2 s, ...
        t = T0 + 20 + 2 * i
        out += d.ingest(good(t, execution="ACTIVE" if i % 2 == 0 else "READY"), t)
    out += d.tick(T0 + 100)
    assert out == []
    assert d.status == "IDLE"


def test_the_new_state_s_start_and_the_previous_duration_add_up() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    d.ingest(good(T0 + 60, execution="ACTIVE"), T0 + 60)
    [event] = d.ingest(good(T0 + 66, execution="ACTIVE"), T0 + 66)
    status = event.payload()["status"]
    assert (status["from"], status["to"], status["previous_duration_seconds"]) == ("IDLE", "ACTIVE", 60.0)
    assert status["reason"] == "status.rules[3]"
    assert d.status_since == T0 + 60


def test_first_matching_rule_wins() -> None:
    d = deriver()
    d.ingest(good(T0, **{**IDLE_VALUES, "execution": "ACTIVE", "mode": "SETUP", "estop": True}), T0)
    [event] = d.tick(T0 + 5)
    assert event.payload()["status"]["to"] == "ALARM"
    assert event.payload()["status"]["reason"] == "status.rules[0]"


def test_bad_reads_shorter_than_disconnect_after_do_not_change_the_status() -> None:
    d = deriver()
    d.ingest(good(T0, **{**IDLE_VALUES, "execution": "ACTIVE"}), T0)
    d.tick(T0 + 5)
    out = d.ingest(bad(T0 + 10, "execution", "mode"), T0 + 10)
    out += d.tick(T0 + 19.9)
    out += d.ingest(good(T0 + 19.95, **{**IDLE_VALUES, "execution": "ACTIVE"}), T0 + 19.95)
    out += d.tick(T0 + 40)
    assert out == []
    assert d.status == "ACTIVE"


def test_one_failing_tag_keeps_its_last_value() -> None:
    d = deriver()
    d.ingest(good(T0, **{**IDLE_VALUES, "execution": "ACTIVE"}), T0)
    d.tick(T0 + 5)
    out = []
    for i in range(1, 30):
        t = T0 + 5 + i
        out += d.ingest(bad(t, "execution", quality=Quality.BAD) + good(t, mode="AUTOMATIC"), t)
    assert out == [] and d.status == "ACTIVE"


def test_unreadable_for_disconnect_after_is_disconnected_since_the_first_failure() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    d.ingest(bad(T0 + 100, "execution"), T0 + 100)
    assert d.tick(T0 + 109) == []
    [event] = d.tick(T0 + 110)
    status = event.payload()["status"]
    assert (status["from"], status["to"], status["previous_duration_seconds"]) == (
        "IDLE",
        "DISCONNECTED",
        100.0,
    )
    assert status["since"] == "2023-11-14T22:15:00Z"
    assert status["reason"] == "cannot read the machine: connection refused"
    # Back: the state it reports again goes through the debounce like any other.
    assert d.ingest(good(T0 + 200, **IDLE_VALUES), T0 + 200) == []
    assert status_events(d.tick(T0 + 205)) == [("DISCONNECTED", "IDLE", "2023-11-14T22:16:40Z")]


def test_disconnected_is_not_the_status_of_a_machine_that_answers() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    for i in range(1, 100):  # answers every second, all good: never DISCONNECTED
        assert "DISCONNECTED" not in str(d.ingest(good(T0 + i, **IDLE_VALUES), T0 + i))


def test_no_readings_at_all_is_not_a_disconnect() -> None:
    # Subscriptions push only changes: silence means "nothing changed", not "unreachable".
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    assert d.tick(T0 + 86_400) == [] and d.status == "IDLE"


def test_a_clock_that_steps_back_never_makes_negative_durations() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    d.ingest(good(T0 - 3600, execution="ACTIVE"), T0 - 3600)  # wall clock stepped back an hour
    events = d.tick(T0 + 10)
    assert kinds(events) == ["machine_status_changed"]
    assert events[0].payload()["status"]["previous_duration_seconds"] >= 0


def test_changed_within_rules_expire_on_tick_without_readings() -> None:
    text = """
timezone: UTC
status:
  min_state: 0s
  rules:
    - {when: {part_count: {changed_within: 60s}}, state: ACTIVE}
"""
    d = deriver(text)
    d.ingest(good(T0, part_count=1), T0)
    assert status_events(d.tick(T0)) == [] and d.status == "IDLE"
    assert status_events(d.ingest(good(T0 + 10, part_count=2), T0 + 10))[0][1] == "ACTIVE"
    assert d.tick(T0 + 70) == []
    assert status_events(d.tick(T0 + 70.5)) == [("ACTIVE", "IDLE", "2023-11-14T22:14:30.500Z")]


def test_no_state_is_decided_before_the_first_good_reading() -> None:
    # Timers tick from the start; without a single good reading the rules have nothing to judge, so
    # the "otherwise" state (a false IDLE) must not be reported.
    d = deriver()
    assert d.tick(T0) == [] and d.tick(T0 + 60) == []
    assert d.status is None
    events = d.ingest(bad(T0 + 61, "execution"), T0 + 61) + d.tick(T0 + 71)
    assert [(f, t) for f, t, _ in status_events(events)] == [(None, "DISCONNECTED")]


def test_a_device_answering_only_errors_is_bad_not_disconnected() -> None:
    d = deriver()
    reason = "exception 4 (device failure) reading holding 3..4 (unit 1)"
    readings = [
        r.__class__(r.machine_id, r.tag, None, Quality.BAD, r.timestamp, reason) for r in bad(T0, "execution")
    ]
    events = d.ingest(readings, T0) + d.tick(T0 + 10)
    [event] = [e for e in events if e.event == MACHINE_STATUS_CHANGED]
    status = event.payload()["status"]
    assert (status["from"], status["to"]) == (None, "BAD")
    assert status["reason"] == f"the machine answers with errors: {reason}"
    assert d.status_reason == status["reason"]
    # One unanswered request in the same outage: it is not just answering with errors any more.
    events = d.ingest(bad(T0 + 11, "execution"), T0 + 11)
    assert [(f, t) for f, t, _ in status_events(events)] == [("BAD", "DISCONNECTED")]
    assert d.status_reason == "cannot read the machine: connection refused"


def test_the_reason_of_a_readable_machine_is_the_rule_that_decided_its_state() -> None:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    assert (d.status, d.status_reason) == ("IDLE", "status.otherwise")
    restored = deriver()
    restored.restore(d.snapshot())
    assert (restored.status, restored.status_reason) == ("IDLE", "status.otherwise")
