"""publish.tags: tag values on the namespace at most once per interval, past a deadband (pure part)."""

from __future__ import annotations

from agent.mqtt.tags import TagPublishing, TagReporter
from drivers.base import Quality, Reading


def r(tag: str, value: object, quality: Quality = Quality.GOOD) -> Reading:
    return Reading("mill-01", tag, value, quality, 0.0)


def test_first_values_at_once_then_changes_past_the_deadband_at_most_once_per_interval() -> None:
    rep = TagReporter(TagPublishing(interval=10.0, deadband=5.0))
    rep.observe([r("rpm", 1000.0)])
    assert rep.due(0.0) == {"rpm": 1000.0}
    rep.observe([r("rpm", 1100.0)])
    assert rep.due(9.9) is None  # changed, but the interval has not passed
    # Every value, as last published, so the retained message is the whole picture.
    rep.observe([r("program", "O2000")])
    assert rep.due(10.0) == {"rpm": 1100.0, "program": "O2000"}
    rep.observe([r("rpm", 1104.9)])
    assert rep.due(30.0) is None  # within the deadband of the last published 1100
    rep.observe([r("rpm", 1094.0)])
    assert rep.due(31.0) == {"rpm": 1094.0, "program": "O2000"}


def test_bad_readings_are_not_values_and_only_limits_the_tags() -> None:
    rep = TagReporter(TagPublishing(interval=1.0, only=("rpm", "estop")))
    rep.observe([r("rpm", None, Quality.DISCONNECTED), r("temp", 21.5), r("estop", False)])
    assert rep.due(0.0) == {"estop": False}
    rep.observe([r("estop", True)])
    assert rep.due(1.0) == {"estop": True}
    # Non-numbers change on any difference; booleans are not numbers for the deadband.
    rep2 = TagReporter(TagPublishing(interval=1.0, deadband=10.0))
    rep2.observe([r("estop", False)])
    assert rep2.due(0.0) == {"estop": False}
    rep2.observe([r("estop", True)])
    assert rep2.due(1.0) == {"estop": True}
