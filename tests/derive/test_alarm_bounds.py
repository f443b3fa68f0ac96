"""What a device can make the deriver keep is bounded: alarm code and text length, the number of
active alarms, and so the snapshot that is written to disk after every change."""

from __future__ import annotations

import json

from agent.derive import MachineDeriver
from agent.derive.alarms import MAX_ACTIVE, MAX_CODE_LENGTH, MAX_TEXT_LENGTH, bounded_code
from agent.events import ALARM_CLEARED, ALARM_TRIGGERED

from .builders import IDLE_VALUES, deriver, good, notice

T0 = 1_700_000_000.0


def started() -> MachineDeriver:
    d = deriver()
    d.ingest(good(T0, **IDLE_VALUES), T0)
    d.tick(T0 + 5)
    return d


def test_a_huge_register_code_becomes_a_bounded_code_and_clears_again() -> None:
    d = started()
    huge = "E" * 5_000_000
    out = d.ingest(good(T0 + 10, alarm_code=huge), T0 + 10)
    out += d.tick(T0 + 100)  # past the hold for the device's own event
    (alarm,) = d.active_alarms
    assert len(alarm.code) == MAX_CODE_LENGTH and alarm.code == bounded_code(huge)
    assert [e.event for e in out if e.event == ALARM_TRIGGERED] == [ALARM_TRIGGERED]
    body = json.dumps([e.payload() for e in out])
    assert len(body) < 10_000  # the webhook carries the bounded code, not 5 MB
    out = d.ingest(good(T0 + 20, alarm_code=0), T0 + 20)
    assert ALARM_CLEARED in [e.event for e in out] and d.active_alarms == ()


def test_long_codes_with_a_common_beginning_stay_distinct() -> None:
    a, b = "X" * 500 + "1", "X" * 500 + "2"
    assert bounded_code(a) != bounded_code(b)
    assert bounded_code("E1001") == "E1001"


def test_event_message_is_cut_to_the_text_limit() -> None:
    d = started()
    d.ingest([notice(T0 + 10, "1001", True, "m" * 100_000, 800)], T0 + 10)
    (alarm,) = d.active_alarms
    assert len(alarm.description) == MAX_TEXT_LENGTH and alarm.description.endswith("…")


def test_active_alarms_stop_at_the_cap_and_the_snapshot_stays_bounded() -> None:
    d = started()
    for i in range(MAX_ACTIVE + 500):
        d.ingest([notice(T0 + 10 + i * 0.001, f"C{i}", True, "t" * 5000, 500)], T0 + 10 + i * 0.001)
    assert len(d.active_alarms) == MAX_ACTIVE
    snapshot = json.dumps(d.snapshot())
    assert len(snapshot) < MAX_ACTIVE * (MAX_CODE_LENGTH + MAX_TEXT_LENGTH + 400)
    # Clearing makes room again.
    d.ingest([notice(T0 + 20, "C0", False)], T0 + 20)
    d.ingest([notice(T0 + 21, "new", True, "x", 500)], T0 + 21)
    assert "new" in [a.code for a in d.active_alarms]
