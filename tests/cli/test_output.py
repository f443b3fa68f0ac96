"""What a person reads: a reload summary instead of raw JSON, floats without binary noise."""

from __future__ import annotations

from agent.commands.operate_cmd import reload_summary
from agent.commands.read_cmd import render, shown
from drivers.base import Quality, Reading


def test_reload_prints_what_changed_in_words() -> None:
    answer = {
        "ok": True,
        "added": ["mill-03"],
        "removed": [],
        "changed": ["lathe-02"],
        "workflows": 7,
        "at": 1.7e9,
    }
    assert reload_summary(answer) == "reloaded: 1 machine added (mill-03), 1 changed (lathe-02); 7 workflows"
    assert reload_summary({"ok": True, "workflows": 2}) == "reloaded: machines unchanged; 2 workflows"


def test_scaled_values_are_shown_as_written() -> None:
    assert shown(254 * 0.1) == 25.4  # 25.400000000000002 in binary floating point
    assert shown(8006.0) == 8006.0 and shown(1e-9) == 1e-9 and shown(7) == 7
    reading = Reading(
        machine_id="mill-01", tag="temperature", value=254 * 0.1, quality=Quality.GOOD, timestamp=0.0
    )
    assert "25.4 " in render("mill-01", [reading]) and "25.400000000000002" not in render(
        "mill-01", [reading]
    )
