"""The alarm chain: raise by code, same code is not new, clear one, clear all, unknown while away."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.events import ALARM_CLEARED, ALARM_TRIGGERED, Event
from drivers.base import AlarmNotice, AlarmRefresh

from .builders import BASE, IDLE_VALUES, bad, deriver, good, kinds, notice

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


# -- the register and the device's event for the same code (events on: the register's raise is held)

HYDRAULICS = ("2077", "Hydraulic pressure low", 650)
EVENTS_OFF = BASE.replace("alarms:\n", "alarms:\n  events: false\n", 1)
NO_GRACE = BASE.replace("alarms:\n", "alarms:\n  event_grace: 0s\n", 1)
LONG_GRACE = BASE.replace("alarms:\n", "alarms:\n  event_grace: 5s\n", 1)
Step = tuple[float, str, Any]  # (seconds after T0, what happens, its argument)
Row = tuple[str, str, str, Any, str, str | None, float, float]


def code(value: int, severity: int = 0, count: int | None = None) -> dict[str, Any]:
    """Readings of the alarm registers: the code, its severity and the number of active alarms."""
    count = (1 if value else 0) if count is None else count
    return {"alarm_code": value, "alarm_severity": severity, "alarm_count": count}


def run_steps(d: Any, steps: list[Step]) -> list[Event]:
    out: list[Event] = []
    for at, kind, arg in steps:
        t = T0 + at
        if kind == "read":
            out += d.ingest(good(t, **arg), t)
        elif kind == "event":
            out += d.ingest([notice(t, *arg)], t)
        elif kind == "tick":
            out += d.tick(t)
        elif kind == "lost":
            out += d.ingest(bad(t, "execution"), t)
        else:
            raise AssertionError(kind)
    return out


def alarm_rows(events: list[Event]) -> list[Row]:
    """(event, code, description, severity, source, cleared_by, started +s, emitted +s) per alarm event."""
    rows = []
    for e in events:
        if e.event in (ALARM_TRIGGERED, ALARM_CLEARED):
            a = e.payload()["alarm"]
            started = datetime.fromisoformat(a["started_at"]).timestamp() - T0
            rows.append(
                (
                    e.event,
                    a["code"],
                    a["description"],
                    a["severity"],
                    a["source"],
                    a.get("cleared_by"),
                    started,
                    e.timestamp - T0,
                )
            )
    return rows


TRIG, CLEAR = ALARM_TRIGGERED, ALARM_CLEARED
FROM_EVENT = (TRIG, "2077", "Hydraulic pressure low", 650, "event", None)
FROM_REGISTER = (TRIG, "2077", "Alarm 2077", 700, "code_tag", None)
CASES: list[tuple[str, str, list[Step], list[Row]]] = [
    (
        "event after the register within the grace period: one alarm, the event's text and severity",
        BASE,
        [
            (10, "read", code(2077, 700)),
            (11, "event", (*HYDRAULICS[:1], True, *HYDRAULICS[1:])),
            (30, "tick", None),
        ],
        [(*FROM_EVENT, 10, 11)],
    ),
    (
        "register only: the grace period passes with no readings, tick raises it from the register",
        BASE,
        [(10, "read", code(2077, 700)), (11, "tick", None), (12, "tick", None), (30, "tick", None)],
        [(*FROM_REGISTER, 10, 12)],
    ),
    (
        "register only: the next readings after the grace period raise it too",
        BASE,
        [(10, "read", code(2077, 700)), (13, "read", {"execution": "READY"})],
        [(*FROM_REGISTER, 10, 13)],
    ),
    (
        "register shows a code and drops to 0 within the grace period: raised and cleared, not lost",
        BASE,
        [(10, "read", code(2077, 700)), (11, "read", code(0)), (30, "tick", None)],
        [(*FROM_REGISTER, 10, 11), (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "code_tag", 10, 11)],
    ),
    (
        "the event clears a held code it never raised: raised from the register, cleared by the event",
        BASE,
        [(10, "read", code(2077, 700)), (11, "event", ("2077", False)), (30, "tick", None)],
        [(*FROM_REGISTER, 10, 11), (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "event", 10, 11)],
    ),
    (
        "the device's clear-all ends held codes too",
        BASE,
        [(10, "read", code(2077, 700)), (11, "event", (None, False))],
        [(*FROM_REGISTER, 10, 11), (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "event_clear_all", 10, 11)],
    ),
    (
        "an event later than the grace period finds the register's alarm: not a second one",
        BASE,
        [(10, "read", code(2077, 700)), (13, "event", ("2077", True, "Hydraulic pressure low", 650))],
        [(*FROM_REGISTER, 10, 13)],
    ),
    (
        "event_grace sets the wait",
        LONG_GRACE,
        [(10, "read", code(2077, 700)), (12, "tick", None), (14, "event", ("2077", True, *HYDRAULICS[1:]))],
        [(*FROM_EVENT, 10, 14)],
    ),
    (
        "event_grace 0s: the register raises at once",
        NO_GRACE,
        [(10, "read", code(2077, 700)), (11, "event", ("2077", True, *HYDRAULICS[1:]))],
        [(*FROM_REGISTER, 10, 10)],
    ),
    (
        "the usual order, event then register: unchanged",
        BASE,
        [(10, "event", ("2077", True, *HYDRAULICS[1:])), (10.1, "read", code(2077, 700)), (30, "tick", None)],
        [(*FROM_EVENT, 10, 10)],
    ),
    (
        "a machine without events raises from the register at once and ignores notices",
        EVENTS_OFF,
        [
            (10, "read", code(2077, 700)),
            (11, "event", ("2077", True, *HYDRAULICS[1:])),
            (12, "read", code(0)),
        ],
        [(*FROM_REGISTER, 10, 10), (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "code_tag", 10, 12)],
    ),
    (
        "the count register drops a held code: raised and cleared",
        BASE,
        [
            (10, "read", code(2077, 700, 1)),
            (10.5, "read", code(2040, 300, 2)),
            (11, "read", code(2040, 300, 1)),
            (13, "tick", None),
        ],
        [
            (*FROM_REGISTER, 10, 11),
            (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "count_tag", 10, 11),
            (TRIG, "2040", "Coolant low", 300, "code_tag", None, 10.5, 13),
        ],
    ),
]


@pytest.mark.parametrize(("text", "steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_register_and_event_for_the_same_code(text: str, steps: list[Step], expected: list[Row]) -> None:
    d = deriver(text)
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    out = run_steps(d, [*steps, (60, "tick", None)])
    assert alarm_rows(out) == expected


def test_the_first_look_and_a_resync_raise_from_the_register_at_once() -> None:
    """No event will tell about an alarm already active when the agent starts or reconnects."""
    d = deriver()
    out = d.ingest(good(T0, **{**IDLE_VALUES, **code(2077, 700)}), T0)
    assert alarm_rows(out) == [(*FROM_REGISTER, 0, 0)]
    disconnect(d, T0 + 20)
    out = d.ingest(good(T0 + 100, **{**IDLE_VALUES, **code(2040, 300)}), T0 + 100)
    assert alarm_rows(out) == [
        (TRIG, "2040", "Coolant low", 300, "code_tag", None, 100, 100),
        (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "count_tag", 0, 100),
    ]


def test_a_held_alarm_is_in_the_chain_flagged_but_rules_see_it_only_once_raised() -> None:
    d = deriver(
        "timezone: UTC\n"
        "status: {min_state: 0s, rules: [{when: {alarm_active: true}, state: ALARM}]}\n"
        "alarms: {code_tag: alarm_code}\n"
    )
    d.ingest(good(T0, alarm_code=0), T0)
    assert d.ingest(good(T0 + 10, alarm_code=2077), T0 + 10) == []
    [alarm] = d.active_alarms
    assert (alarm.code, alarm.held, alarm.since, d.status) == ("2077", True, T0 + 10, "IDLE")
    out = d.tick(T0 + 12)
    assert kinds(out) == [ALARM_TRIGGERED, "machine_status_changed"]
    assert out[1].payload()["status"]["to"] == "ALARM"
    [alarm] = d.active_alarms
    assert not alarm.held


def restarted(d: Any, *, drop_held_field: bool = False) -> Any:
    snap = json.loads(json.dumps(d.snapshot()))
    if drop_held_field:  # a snapshot written before held raises existed
        for item in snap["alarms"]["active"]:
            del item["held"]
    after = deriver()
    after.restore(snap)
    return after


RESTORE_CASES: list[tuple[str, list[Step], list[Row]]] = [
    (
        "the event arrives after the restart, within the grace period",
        [(11, "read", code(2077, 700)), (11.5, "event", ("2077", True, *HYDRAULICS[1:]))],
        [(*FROM_EVENT, 10, 11.5)],
    ),
    (
        "no event: the register raises it once the grace period has passed",
        [(11, "read", code(2077, 700)), (11.5, "tick", None), (12, "tick", None)],
        [(*FROM_REGISTER, 10, 12)],
    ),
    (
        "no readings at all after the restart: tick raises it",
        [(12, "tick", None)],
        [(*FROM_REGISTER, 10, 12)],
    ),
    (
        "the register shows 0 at the first look after the restart: raised and cleared",
        [(11, "read", code(0))],
        [(*FROM_REGISTER, 10, 11), (CLEAR, "2077", "Alarm 2077", 700, "code_tag", "reconnect", 10, 11)],
    ),
]


@pytest.mark.parametrize("old_format", [False, True], ids=["held", "without-held-field"])
@pytest.mark.parametrize(
    ("steps", "expected"), [c[1:] for c in RESTORE_CASES], ids=[c[0] for c in RESTORE_CASES]
)
def test_restore_mid_grace_neither_loses_nor_duplicates(
    steps: list[Step], expected: list[Row], old_format: bool
) -> None:
    d = started()
    assert d.ingest(good(T0 + 10, **code(2077, 700)), T0 + 10) == []
    after = restarted(d, drop_held_field=old_format)
    out = run_steps(after, [*steps, (60, "tick", None), (61, "read", IDLE_VALUES)])
    if old_format:
        # An older agent had raised it already; the snapshot says it was announced: nothing again.
        assert [r for r in alarm_rows(out) if r[0] == TRIG] == []
    else:
        rows = alarm_rows(out)
        assert rows[: len(expected)] == expected
        assert [r[0] for r in rows[len(expected) :]] in ([], [CLEAR])  # only the final 0 may clear it
        assert len([r for r in rows if r[0] == TRIG]) == 1


@pytest.mark.parametrize("unusable", [float("nan"), float("inf"), float("-inf")])
def test_an_unusable_float_in_the_code_register_names_no_alarm_and_derivation_goes_on(
    unusable: float,
) -> None:
    d = started()
    out = d.ingest(good(T0 + 10, alarm_code=unusable, alarm_severity=0, alarm_count=0), T0 + 10)
    out += d.ingest(good(T0 + 11, alarm_code=1001, alarm_severity=800, alarm_count=1), T0 + 11)
    out += d.tick(T0 + 20)  # past any event grace: the register's code is raised by now
    assert alarm_log(out) == [(ALARM_TRIGGERED, "1001", None)]


# -- OPC 10000-9 conditions: identity by ConditionId, ConditionRefresh


def condition(t: float, key: str, code: str, active: bool, message: str = "Temperature high") -> AlarmNotice:
    return AlarmNotice("mill-01", code, message, 700, active, t, key=key)


def test_a_clear_with_another_message_ends_its_condition_and_a_new_raise_is_a_new_alarm() -> None:
    d = started()
    events = []
    for i in range(2):
        t = T0 + 10 + 20 * i
        events += d.ingest([condition(t, "nsu=urn:x;s=Boiler.High", "High", True)], t)
        events += d.ingest(
            [condition(t + 5, "nsu=urn:x;s=Boiler.High", "High", False, "Back to normal")], t + 5
        )
    assert alarm_log(events) == [
        (ALARM_TRIGGERED, "High", None),
        (ALARM_CLEARED, "High", "event"),
        (ALARM_TRIGGERED, "High", None),
        (ALARM_CLEARED, "High", "event"),
    ]
    cleared = [e.payload()["alarm"] for e in events if e.event == ALARM_CLEARED]
    assert [c["duration_seconds"] for c in cleared] == [5, 5]  # from the device's times


def test_two_conditions_with_one_name_and_text_stay_two_alarms() -> None:
    d = started()
    t = T0 + 10
    events = d.ingest(
        [condition(t, "s=Furnace1.High", "High", True), condition(t, "s=Furnace2.High", "High", True)], t
    )
    events += d.ingest([condition(t + 1, "s=Furnace1.High", "High", False)], t + 1)
    assert alarm_log(events) == [
        (ALARM_TRIGGERED, "High", None),
        (ALARM_TRIGGERED, "High", None),
        (ALARM_CLEARED, "High", "event"),
    ]
    assert [a.key for a in d.active_alarms] == ["s=Furnace2.High"]


def test_a_refresh_announces_nothing_twice_and_ends_what_it_no_longer_lists() -> None:
    d = started()
    t = T0 + 10
    d.ingest([condition(t, "s=A", "A", True), condition(t, "s=B", "B", True)], t)
    # After a reconnect the server lists only A: B ended while nobody listened.
    refreshed = [condition(t + 60, "s=A", "A", True), AlarmRefresh("mill-01", frozenset({"s=A"}), t + 60)]
    events = d.ingest(refreshed, t + 60)
    assert alarm_log(events) == [(ALARM_CLEARED, "B", "refresh")]
    assert [a.code for a in d.active_alarms] == ["A"]


def test_a_device_clock_ahead_of_ours_is_cut_to_ours() -> None:
    d = started()
    t = T0 + 10
    [event] = d.ingest([condition(t + 3600, "s=A", "A", True)], t)
    assert event.payload()["alarm"]["started_at"] == datetime.fromtimestamp(t, tz=UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
