"""The scenario engine as pure specifications: data in, clock injected, state out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.source import ConfigError, Problems, parse_yaml
from simulators.model import Alarm, Execution, MachineState, OperationMode
from simulators.scenario import Change, Player, Scenario, builtin_scenarios, load_scenario, parse_scenario


def scenario_of(text: str) -> Scenario:
    problems = Problems()
    data = parse_yaml(text, "test.yaml", problems)
    scenario = parse_scenario(data, file="test.yaml", problems=problems)
    problems.raise_if_any()
    return scenario


CUTTING = scenario_of(
    """
loop: true
jitter: 0.1
steps:
  - {for: 60s, execution: ACTIVE, cycle: 10s, spindle: 6000}
  - {for: 20s, execution: READY}
"""
)

ALARM = scenario_of(
    """
loop: false
steps:
  - {for: 10s, execution: ACTIVE}
  - {for: 20s, execution: INTERRUPTED, alarm: {code: 1001, text: Spindle overload, severity: 800}}
  - {for: 5s, clear_alarm: 1001, execution: READY}
"""
)

REBOOT = scenario_of(
    """
steps:
  - {for: 5s, execution: ACTIVE, spindle: 3000, alarm: {code: 7, text: Door, severity: 300}}
  - {for: 5s, estop: true}
  - {reboot: 8s}
  - {for: 20s, execution: READY}
"""
)


def kinds(changes: list[Change]) -> list[str]:
    return [c.kind for c in changes if c.kind != "values"]


def test_builtin_scenarios_load_and_demo_covers_every_state() -> None:
    assert {"demo", "steady"} <= set(builtin_scenarios())
    demo = load_scenario("demo")
    assert 60 <= demo.length <= 90
    assert demo.loop
    executions = {s.execution for s in demo.steps}
    assert {Execution.ACTIVE, Execution.READY, Execution.FEED_HOLD} <= executions
    assert any(s.cycle for s in demo.steps)
    assert any(s.alarm and s.alarm.code and s.alarm.text and s.alarm.severity for s in demo.steps)
    raised = {s.alarm.code for s in demo.steps if s.alarm}
    assert raised <= {s.clear_alarm for s in demo.steps if s.clear_alarm}
    assert any(s.mode == OperationMode.SETUP for s in demo.steps)
    assert any(s.estop for s in demo.steps)
    assert any(s.reboot for s in demo.steps)
    steady = load_scenario("steady")
    assert all(s.execution in (None, Execution.ACTIVE) and not s.reboot for s in steady.steps)


def test_part_count_rises_only_while_cutting() -> None:
    m = MachineState("m")
    p = Player(CUTTING, m, seed=3)
    p.advance(0.0)
    counts = []
    for t in range(0, 61, 5):
        p.advance(float(t))
        counts.append(m.part_count)
    assert counts == sorted(counts)
    assert 5 <= counts[-1] <= 6  # 60 s of 10 s ± 10% cycles
    p.advance(79.0)
    assert m.execution is Execution.READY
    assert m.spindle_speed == 0.0
    idle_count = m.part_count
    p.advance(79.9)
    assert m.part_count == idle_count
    assert p.advance(150.0).count(Change("part", 0)) == 0  # parts carry their own time
    assert m.part_count > idle_count


def test_spindle_speed_has_seeded_noise_around_the_set_point() -> None:
    m = MachineState("m")
    p = Player(CUTTING, m, seed=1)
    speeds = set()
    for t in range(0, 30):
        p.advance(t + 0.5)
        speeds.add(m.spindle_speed)
        assert 6000 * 0.99 <= m.spindle_speed <= 6000 * 1.01
    assert len(speeds) > 10


def test_speed_scales_scenario_time() -> None:
    slow, fast = MachineState("m"), MachineState("m")
    p1 = Player(CUTTING, slow, seed=9, speed=1.0, start=100.0)
    p60 = Player(CUTTING, fast, seed=9, speed=60.0, start=100.0)
    p1.advance(100.0 + 3600.0)
    p60.advance(100.0 + 60.0)  # an hour in a minute
    assert fast.part_count == slow.part_count > 0
    assert fast.execution == slow.execution
    assert p60.scenario_time(160.0) == pytest.approx(3600.0)


def test_offset_starts_the_scenario_later() -> None:
    m = MachineState("m")
    p = Player(CUTTING, m, seed=0, start=10.0, offset=70.0)
    p.advance(10.0)
    assert m.execution is Execution.READY  # 70 s in: the idle step


def test_same_seed_same_story_whatever_the_tick_pattern() -> None:
    a, b, c = MachineState("m"), MachineState("m"), MachineState("m")
    pa, pb, pc = Player(CUTTING, a, seed=42), Player(CUTTING, b, seed=42), Player(CUTTING, c, seed=43)
    parts_a = [ch.at for t in range(0, 500) for ch in pa.advance(t * 0.7) if ch.kind == "part"]
    parts_b = [ch.at for ch in pb.advance(499 * 0.7) if ch.kind == "part"]
    parts_c = [ch.at for ch in pc.advance(499 * 0.7) if ch.kind == "part"]
    assert parts_a == pytest.approx(parts_b)
    assert parts_a != pytest.approx(parts_c)  # jitter differs with the seed
    assert (a.part_count, a.execution, a.spindle_speed) == (b.part_count, b.execution, b.spindle_speed)
    assert a.axis_temperature == pytest.approx(b.axis_temperature)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), ticks=st.lists(st.floats(0.01, 40.0), min_size=1, max_size=30))
def test_state_is_a_function_of_scenario_time(seed: int, ticks: list[float]) -> None:
    stepped, direct = MachineState("m"), MachineState("m")
    ps, pd = (
        Player(load_scenario("demo"), stepped, seed=seed),
        Player(load_scenario("demo"), direct, seed=seed),
    )
    now = 0.0
    for dt in ticks:
        now += dt
        ps.advance(now)
    pd.advance(now)
    assert (stepped.part_count, stepped.execution, stepped.mode, stepped.estop, stepped.powered) == (
        direct.part_count,
        direct.execution,
        direct.mode,
        direct.estop,
        direct.powered,
    )
    assert stepped.alarms == direct.alarms
    assert stepped.spindle_speed == direct.spindle_speed


def test_alarm_is_raised_with_code_text_severity_and_later_cleared() -> None:
    m = MachineState("m")
    p = Player(ALARM, m, seed=0)
    p.advance(5.0)
    assert m.alarm_code == 0
    changes = p.advance(12.0)
    raised = [c for c in changes if c.kind == "alarm_raised"]
    assert raised == [Change("alarm_raised", 10.0, alarm=Alarm(1001, "Spindle overload", 800), code=1001)]
    assert m.alarm_code == 1001
    assert m.execution is Execution.INTERRUPTED
    assert kinds(p.advance(29.0)) == []
    changes = p.advance(31.0)
    assert [c for c in changes if c.kind == "alarm_cleared"] == [Change("alarm_cleared", 30.0, code=1001)]
    assert m.alarms == {}
    assert m.execution is Execution.READY


def test_scenario_without_loop_holds_its_last_state() -> None:
    m = MachineState("m")
    p = Player(ALARM, m, seed=0)
    p.advance(1000.0)
    assert kinds(p.advance(5000.0)) == []
    assert m.execution is Execution.READY


def test_estop_then_reboot_powers_off_and_comes_back_reset() -> None:
    m = MachineState("m", part_count=41)
    p = Player(REBOOT, m, seed=0)
    p.advance(6.0)
    assert m.estop and m.execution is Execution.STOPPED and m.spindle_speed == 0.0
    changes = p.advance(11.0)
    assert kinds(changes) == ["power_off"]
    assert not m.powered and p.rebooting
    changes = p.advance(19.0)
    assert kinds(changes) == ["power_on", "state"]
    assert changes[0].at == pytest.approx(18.0)
    assert m.powered and not p.rebooting
    assert (m.estop, m.execution, m.alarms, m.part_count) == (False, Execution.READY, {}, 41)


def test_part_counter_wraps_like_a_uint32() -> None:
    m = MachineState("m", part_count=2**32 - 1)
    p = Player(CUTTING, m, seed=0)
    p.advance(15.0)
    assert m.part_count == 0


def test_bad_scenario_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "steps:\n"
        "  - {for: 5s, execution: RUNNING}\n"
        "  - {for: soon, alarm: {text: no code}}\n"
        "  - {reboot: 3s, colour: red}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(str(path))
    text = str(info.value)
    assert f"{path}:2: steps[0].execution: unknown value 'RUNNING'" in text
    assert f"{path}:3: steps[1].for:" in text
    assert "steps[1].alarm.code: required key is missing" in text
    assert f"{path}:4: steps[2].colour: unknown key" in text


def test_missing_scenario_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario(str(tmp_path / "nope.yaml"))


def test_looping_scenario_needs_a_duration() -> None:
    with pytest.raises(ConfigError, match="needs at least one step with a duration"):
        scenario_of("steps: [{execution: ACTIVE}]")
