"""What a person reads: a reload summary instead of raw JSON, floats without binary noise."""

from __future__ import annotations

from pathlib import Path

from agent.commands.operate_cmd import reload_summary
from agent.commands.read_cmd import precisions, render, shown
from agent.config.agent_file import collect_config
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


def test_a_tag_with_precision_is_shown_with_that_many_decimals_and_others_are_untouched(
    tmp_path: Path,
) -> None:
    """``precision`` is read by the real machine-file parser and only changes what a person sees."""
    machine = tmp_path / "machines" / "mill-01.yaml"
    machine.parent.mkdir()
    machine.write_text(
        "id: mill-01\nmodbus: {host: 127.0.0.1, port: 5020, unit: 1}\n"
        "tags:\n"
        "  temperature: {table: holding, address: 10, type: int16, scale: 0.1, precision: 2}\n"
        "  rpm: {table: holding, address: 4, type: float32}\n"
        "status: {rules: [{when: {rpm: {gt: 0}}, state: ACTIVE}]}\n"
    )
    (tmp_path / "agent.yaml").write_text("agent: {state_dir: state}\n")
    config, problems = collect_config(tmp_path / "agent.yaml", None)
    assert config is not None, [str(p) for p in problems.items]
    (m,) = config.machines
    table = precisions(m.connection)
    assert table == {"temperature": 2}
    readings = [
        Reading("mill-01", "temperature", 254 * 0.1, Quality.GOOD, 0.0),
        Reading("mill-01", "rpm", 8006.5, Quality.GOOD, 0.0),
    ]
    text = render("mill-01", readings, table)
    assert "25.40 " in text and "8006.5 " in text


def test_precision_on_a_string_tag_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    machine = tmp_path / "machines" / "mill-01.yaml"
    machine.parent.mkdir()
    machine.write_text(
        "id: mill-01\nmodbus: {host: 127.0.0.1, port: 5020, unit: 1}\n"
        "tags:\n"
        "  program: {table: holding, address: 30, type: string, length: 32, precision: 1}\n"
    )
    (tmp_path / "agent.yaml").write_text("agent: {state_dir: state}\n")
    config, problems = collect_config(tmp_path / "agent.yaml", None)
    assert config is None
    assert any("tags.program.precision" in str(p) and "only numeric types" in str(p) for p in problems.items)
