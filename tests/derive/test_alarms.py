"""The alarm chain: raise by code, same code is not new, clear one, clear all, unknown while away."""

from __future__ import annotations

from typing import Any

from agent.events import ALARM_CLEARED, ALARM_TRIGGERED, Event

from .builders import IDLE_VALUES, bad, deriver, good, notice

T0 = 1_700_000_000.0


def alarm_log(events: list[Event]) -> list[tuple[str, str, Any]]:
    out = []
    for e in events:
        if e.event in (ALARM_TRIGGERED, ALARM_CLEARED):
            a = e.payload()["alarm"]
            out.append((e.event, a["code"], a.get("cleared_by")))
    return out


def started() -> Any:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    return d


def test_events_raise_clear_one_and_clear_all() -> None:
    d = started()
    out = d.ingest([notice(T0 + 10, "1001", True, "Spindle overload", 800)], T0 + 10)
    out += d.ingest([notice(T0 + 11, "1001", True, "Spindle overload", 800)], T0 + 11)  # same code: not new
    out += d.ingest([notice(T0 + 12, "2040", True, "Coolant low", 300)], T0 + 12)
    out += d.ingest([notice(T0 + 13, "3000", True, "Door open", 100)], T0 + 13)
    out += d.ingest([notice(T0 + 20, "2040", False)], T0 + 20)
    assert [a.code for a in d.active_alarms] == ["1001", "3000"]  # clearing one leaves the others
    out += d.ingest([notice(T0 + 30, None, False)], T0 + 30)  # clear all
    assert d.active_alarms == ()
    assert alarm_log(out) == [
        (ALARM_TRIGGERED, "1001", None),
        (ALARM_TRIGGERED, "2040", None),
        (ALARM_TRIGGERED, "3000", None),
        (ALARM_CLEARED, "2040", "event"),
        (ALARM_CLEARED, "1001", "event_clear_all"),
        (ALARM_CLEARED, "3000", "event_clear_all"),
    ]
    first = next(e for e in out if e.event == ALARM_TRIGGERED).payload()["alarm"]
    assert first == {
        "code": "1001",
        "description": "Spindle overload",
        "severity": 800,
        "source": "event",
        "started_at": "2023-11-14T22:13:30Z",
    }
    cleared = [e.payload()["alarm"] for e in out if e.event == ALARM_CLEARED]
    assert cleared[0]["duration_seconds"] == 8.0 and cleared[1]["duration_seconds"] == 20.0


def test_a_clear_for_an_alarm_never_raised_is_ignored() -> None:
    d = started()
    assert d.ingest([notice(T0 + 10, "77", False)], T0 + 10) == []


def test_the_code_register_raises_codes_and_zero_clears_them() -> None:
    d = started()
    out = d.ingest(good(T0 + 10, alarm_code=1001, alarm_severity=800, alarm_count=1), T0 + 10)
    out += d.ingest(good(T0 + 11, alarm_code=1001, alarm_severity=800, alarm_count=1), T0 + 11)
    out += d.ingest(good(T0 + 12, alarm_code=2040, alarm_severity=300, alarm_count=2), T0 + 12)
    # 2040 cleared: the register shows 1001 again, which is still active: nothing new.
    out += d.ingest(good(T0 + 13, alarm_code=1001, alarm_severity=800, alarm_count=1), T0 + 13)
    out += d.ingest(good(T0 + 14, alarm_code=0, alarm_severity=0, alarm_count=0), T0 + 14)
    assert alarm_log(out) == [
        (ALARM_TRIGGERED, "1001", None),
        (ALARM_TRIGGERED, "2040", None),
        (ALARM_CLEARED, "2040", "count_tag"),
        (ALARM_CLEARED, "1001", "code_tag"),
    ]
    assert out[0].payload()["alarm"]["description"] == "Spindle overload"  # from alarms.texts
    assert out[0].payload()["alarm"]["severity"] == 800  # from severity_tag


def test_count_register_clears_the_oldest_other_alarm() -> None:
    d = started()
    out = d.ingest(good(T0 + 10, alarm_code=1001, alarm_count=1), T0 + 10)
    out += d.ingest(good(T0 + 11, alarm_code=2040, alarm_count=2), T0 + 11)
    out += d.ingest(good(T0 + 12, alarm_code=2040, alarm_count=1), T0 + 12)  # 1001 went away
    assert alarm_log(out)[-1] == (ALARM_CLEARED, "1001", "count_tag")
    assert [a.code for a in d.active_alarms] == ["2040"]


def test_alarm_bits_raise_and_clear_their_own_codes_and_survive_a_clear_all() -> None:
    d = started()
    out = d.ingest(good(T0 + 10, alarm_bits=0b11), T0 + 10)
    out += d.ingest([notice(T0 + 11, None, False)], T0 + 11)  # the device's clear-all: bits are live
    out += d.ingest(good(T0 + 12, alarm_bits=0b01), T0 + 12)
    assert alarm_log(out) == [
        (ALARM_TRIGGERED, "ESTOP", None),
        (ALARM_TRIGGERED, "DOOR", None),
        (ALARM_CLEARED, "DOOR", "bits"),
    ]
    assert out[0].payload()["alarm"]["severity"] == 900
    assert [a.code for a in d.active_alarms] == ["ESTOP"]


def test_an_alarm_raises_the_status_to_alarm() -> None:
    d = started()
    d.ingest(good(T0 + 10, alarm_code=1001, alarm_count=1), T0 + 10)
    statuses = [e for e in d.tick(T0 + 15) if e.event == "machine_status_changed"]
    assert statuses[0].payload()["status"]["to"] == "ALARM"


def disconnect(d: Any, t: float) -> None:
    d.ingest(bad(t, "execution"), t)
    d.tick(t + 10)
    assert d.status == "DISCONNECTED"


def test_disconnected_makes_alarms_unknown_without_clearing_them() -> None:
    d = started()
    d.ingest(good(T0 + 10, alarm_code=1001, alarm_count=1, alarm_bits=1), T0 + 10)
    d.ingest([notice(T0 + 11, "5000", True, "Hydraulics")], T0 + 11)
    d.ingest(bad(T0 + 20, "execution"), T0 + 20)
    out = d.tick(T0 + 30)
    assert alarm_log(out) == []  # nothing cleared silently, nothing cleared loudly
    assert [(a.code, a.unknown) for a in d.active_alarms] == [("1001", True), ("ESTOP", True), ("5000", True)]


def test_on_reconnect_the_tags_settle_unknown_alarms() -> None:
    d = started()
    d.ingest(good(T0 + 10, alarm_code=1001, alarm_count=1, alarm_bits=1), T0 + 10)
    d.ingest([notice(T0 + 11, "5000", True, "Hydraulics")], T0 + 11)
    disconnect(d, T0 + 20)
    # Back: the e-stop is still pressed, the register says no coded alarm is active.
    out = d.ingest(good(T0 + 100, **{**IDLE_VALUES, "alarm_bits": 1}), T0 + 100)
    assert alarm_log(out) == [(ALARM_CLEARED, "1001", "reconnect"), (ALARM_CLEARED, "5000", "reconnect")]
    assert [(a.code, a.unknown) for a in d.active_alarms] == [("ESTOP", False)]


def test_on_reconnect_a_code_still_shown_stays_active_without_a_new_event() -> None:
    d = started()
    d.ingest(good(T0 + 10, alarm_code=1001, alarm_count=1), T0 + 10)
    disconnect(d, T0 + 20)
    out = d.ingest(good(T0 + 100, **{**IDLE_VALUES, "alarm_code": 1001, "alarm_count": 1}), T0 + 100)
    assert alarm_log(out) == []
    [alarm] = d.active_alarms
    assert (alarm.code, alarm.unknown, alarm.since) == ("1001", False, T0 + 10)


def test_alarm_events_can_be_turned_off() -> None:
    d = deriver("timezone: UTC\nalarms: {events: false}\n")
    assert d.ingest([notice(T0, "1", True)], T0) == []
