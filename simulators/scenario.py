"""Scenario engine: a scenario is data (a list of timed steps), a ``Player`` applies it to one machine.

Pure: no I/O, no clock of its own. ``Player.advance(now)`` is given the time and mutates the
``MachineState`` it plays; the fleet turns the returned ``Change`` list into server actions.

The state at scenario time *t* is a function of (scenario, seed, t) only, not of how often
``advance`` was called: cycle-time jitter is drawn per cycle and spindle noise per scenario second
from RNGs keyed by the seed, and the temperature follows an exact exponential between events.

Step keys (all optional, any combination):
``for`` (how long the step lasts), ``execution``, ``mode``, ``program``, ``cycle`` (cycle time while
ACTIVE: each finished cycle adds a part), ``spindle`` (rpm set point), ``feedrate`` (mm/min set point),
``spindle_override`` / ``feed_override`` (%), ``alarm: {code, text, severity}``, ``clear_alarm`` (a code,
or ``all``), ``estop`` / ``door`` (bool), ``reboot`` (power off for that long, then back on), ``label``.
Settings persist into later steps until a step changes them; ``cycle`` applies to its own step only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.config.source import (
    Problems,
    Section,
    as_bool,
    as_duration,
    as_float,
    as_int,
    as_str,
    in_range,
    load_yaml,
    one_of,
)
from simulators.model import Alarm, Execution, MachineState, OperationMode

BUILTIN_DIR = Path(__file__).with_name("scenarios")
UINT32 = 2**32
AMBIENT_C = 21.5
CUTTING_C = 38.0
THERMAL_TAU_S = 120.0  # scenario seconds for the axis to get ~63% of the way to its target
CLEAR_ALL = -1

ChangeKind = Literal["state", "values", "part", "alarm_raised", "alarm_cleared", "power_off", "power_on"]


@dataclass(frozen=True, slots=True)
class Step:
    duration: float = 0.0  # scenario seconds
    label: str = ""
    execution: Execution | None = None
    mode: OperationMode | None = None
    program: str | None = None
    cycle: float | None = None
    spindle: float | None = None
    feedrate: float | None = None
    spindle_override: float | None = None
    feed_override: float | None = None
    alarm: Alarm | None = None
    clear_alarm: int | None = None  # CLEAR_ALL clears every active alarm
    estop: bool | None = None
    door: bool | None = None
    reboot: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    steps: tuple[Step, ...]
    loop: bool = True
    jitter: float = 0.05  # cycle time varies by up to ± this fraction
    noise: float = 0.01  # spindle speed varies by up to ± this fraction

    @property
    def length(self) -> float:
        return sum(s.duration for s in self.steps)


@dataclass(frozen=True, slots=True)
class Change:
    """Something the servers must show. ``at`` is scenario seconds since the scenario began."""

    kind: ChangeKind
    at: float
    alarm: Alarm | None = None
    code: int = 0


# --- parsing -----------------------------------------------------------------------------------------


def parse_scenario(data: Any, *, file: str, problems: Problems, default_name: str = "scenario") -> Scenario:
    """Build a ``Scenario`` from YAML data: a list of steps, or a mapping with ``steps:`` and options."""
    if isinstance(data, list):
        data = {"steps": data}
    top = Section(data, file=file, path="", problems=problems)
    name = top.get("name", as_str, default_name)
    top.get("description", as_str, "")
    loop = top.get("loop", as_bool, True)
    jitter = top.get("jitter", in_range(as_float, 0.0, 0.9), 0.05)
    noise = top.get("noise", in_range(as_float, 0.0, 0.9), 0.01)
    steps = tuple(_parse_step(s) for s in top.sections("steps", required=True))
    top.done()
    if top.ok and not steps and top.has("steps"):
        top.error("steps", "a scenario needs at least one step")
    scenario = Scenario(name=name, steps=steps, loop=loop, jitter=jitter, noise=noise)
    if loop and steps and scenario.length <= 0:
        top.error("steps", "a looping scenario needs at least one step with a duration ('for' or 'reboot')")
    return scenario


def _parse_step(s: Section) -> Step:
    duration = s.get("for", as_duration, 0.0)
    reboot = s.opt("reboot", as_duration)
    if reboot is not None:
        if s.has("for"):
            s.error("reboot", "a reboot step lasts as long as the reboot; drop 'for'")
        duration = reboot
    alarm: Alarm | None = None
    if s.has("alarm"):
        a = s.sub("alarm")
        code = a.need("code", in_range(as_int, 1, 65535))
        text = a.get("text", as_str, f"Alarm {code}")
        severity = a.get("severity", in_range(as_int, 1, 1000), 500)
        a.done()
        if code is not None:
            alarm = Alarm(code=code, text=text, severity=severity)
    clear: int | None = None
    if s.has("clear_alarm"):
        clear = s.get("clear_alarm", _alarm_code_or_all, None)
    step = Step(
        duration=duration,
        label=s.get("label", as_str, ""),
        execution=_enum(s, "execution", Execution),
        mode=_enum(s, "mode", OperationMode),
        program=s.opt("program", as_str),
        cycle=s.opt("cycle", in_range(as_duration, 0.001)),
        spindle=s.opt("spindle", in_range(as_float, 0.0, 100000.0)),
        feedrate=s.opt("feedrate", in_range(as_float, 0.0, 100000.0)),
        spindle_override=s.opt("spindle_override", in_range(as_float, 0.0, 200.0)),
        feed_override=s.opt("feed_override", in_range(as_float, 0.0, 200.0)),
        alarm=alarm,
        clear_alarm=clear,
        estop=s.opt("estop", as_bool),
        door=s.opt("door", as_bool),
        reboot=reboot is not None,
    )
    s.done()
    return step


def _alarm_code_or_all(value: Any) -> int:
    if isinstance(value, str) and value.strip().lower() == "all":
        return CLEAR_ALL
    return in_range(as_int, 1, 65535)(value)


def _enum(s: Section, key: str, enum: type[Execution] | type[OperationMode]) -> Any:
    names = [m.name for m in enum]
    word = s.opt(key, one_of(*names))
    return enum[word] if word is not None else None


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name (``demo``, ``steady``) or a YAML file; raises ``ConfigError``."""
    problems = Problems()
    builtin = BUILTIN_DIR / f"{name_or_path}.yaml"
    path = builtin if "/" not in name_or_path and builtin.is_file() else Path(name_or_path)
    data = load_yaml(path, problems, display=str(path))
    if problems:
        problems.raise_if_any()
    scenario = parse_scenario(data, file=str(path), problems=problems, default_name=path.stem)
    problems.raise_if_any()
    return scenario


def builtin_scenarios() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


# --- playing -----------------------------------------------------------------------------------------


@dataclass
class _Setpoints:
    spindle: float = 0.0
    feedrate: float = 0.0


@dataclass
class Player:
    """Plays ``scenario`` on ``state``. Scenario time = ``offset + (now - start) * speed``.

    ``now`` is any monotonic clock in seconds; the fleet passes ``loop.time()``, tests pass numbers.
    """

    scenario: Scenario
    state: MachineState
    seed: int = 0
    speed: float = 1.0
    start: float = 0.0
    offset: float = 0.0
    _t: float = field(default=0.0, init=False)
    _index: int = field(default=0, init=False)
    _round: int = field(default=0, init=False)
    _step_start: float = field(default=0.0, init=False)
    _cycle_index: int = field(default=0, init=False)
    _next_cycle: float = field(default=math.inf, init=False)
    _finished: bool = field(default=False, init=False)
    _entered: bool = field(default=False, init=False)
    _sample: int = field(default=-1, init=False)
    _power_on: float = field(default=0.0, init=False)
    _setpoints: _Setpoints = field(default_factory=_Setpoints, init=False)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if not self.scenario.steps:
            raise ValueError("scenario has no steps")
        self._power_on = float(self.state.power_on_seconds)

    # -- views

    def scenario_time(self, now: float) -> float:
        return self.offset + (now - self.start) * self.speed

    @property
    def step(self) -> Step:
        return self.scenario.steps[self._index]

    @property
    def step_index(self) -> int:
        return self._index

    @property
    def rebooting(self) -> bool:
        return self.step.reboot and not self._finished

    # -- the one entry point

    def advance(self, now: float) -> list[Change]:
        """Apply everything that happened up to ``now``; return what the servers must show, in order."""
        target = self.scenario_time(now)
        changes: list[Change] = []
        if not self._entered:
            self._entered = True
            self._enter(0.0, changes)
        if target <= self._t:
            return changes
        while not self._finished:
            step_end = self._step_start + self.step.duration
            if self._next_cycle <= step_end and self._next_cycle <= target:
                at = self._next_cycle
                self._flow(at)
                self.state.part_count = (self.state.part_count + 1) % UINT32
                changes.append(Change("part", at))
                self._cycle_index += 1
                self._next_cycle = at + self._cycle_time()
                continue
            if step_end > target:
                break
            self._flow(step_end)
            self._leave(step_end, changes)
            if self._index + 1 < len(self.scenario.steps):
                self._index += 1
            elif self.scenario.loop:
                self._index = 0
                self._round += 1
            else:
                self._finished = True
                break
            self._enter(step_end, changes)
        self._flow(target)
        second = math.floor(target)
        if second != self._sample:
            self._sample = second
            self._sample_values(target)
            changes.append(Change("values", target))
        return changes

    # -- step transitions

    def _enter(self, at: float, changes: list[Change]) -> None:
        step, st = self.step, self.state
        self._step_start = at
        self._next_cycle = math.inf
        self._cycle_index = 0
        if step.reboot:
            st.powered = False
            changes.append(Change("power_off", at))
            self._sample_values(at)
            return
        if step.alarm is not None and step.alarm.code not in st.alarms:
            st.alarms[step.alarm.code] = step.alarm
            changes.append(Change("alarm_raised", at, alarm=step.alarm, code=step.alarm.code))
        if step.clear_alarm is not None:
            codes = list(st.alarms) if step.clear_alarm == CLEAR_ALL else [step.clear_alarm]
            for code in codes:
                if st.alarms.pop(code, None) is not None:
                    changes.append(Change("alarm_cleared", at, code=code))
        if step.estop is not None:
            st.estop = step.estop
        if step.door is not None:
            st.door_open = step.door
        if step.execution is not None:
            st.execution = step.execution
        elif step.estop:
            # Pressing e-stop aborts whatever ran; the step may still say otherwise.
            st.execution = Execution.STOPPED
        if step.mode is not None:
            st.mode = step.mode
        if step.program is not None:
            st.program = step.program
        if step.spindle is not None:
            self._setpoints.spindle = step.spindle
        if step.feedrate is not None:
            self._setpoints.feedrate = step.feedrate
        if step.spindle_override is not None:
            st.spindle_override = step.spindle_override
        if step.feed_override is not None:
            st.feed_override = step.feed_override
        if step.cycle is not None and self._cutting():
            self._next_cycle = at + self._cycle_time()
        self._sample_values(at)
        changes.append(Change("state", at))

    def _leave(self, at: float, changes: list[Change]) -> None:
        if not self.step.reboot:
            return
        # A controller comes back from a power cycle idle, with its volatile state reset;
        # the part counter and program are retentive.
        st = self.state
        st.powered = True
        st.execution = Execution.READY
        st.estop = False
        st.door_open = False
        st.alarms.clear()
        self._setpoints = _Setpoints()
        changes.append(Change("power_on", at))

    # -- continuous values

    def _cutting(self) -> bool:
        st = self.state
        return st.powered and not st.estop and st.execution == Execution.ACTIVE

    def _cycle_time(self) -> float:
        base = self.step.cycle or 0.0
        rng = random.Random(
            f"{self.seed}/{self.state.name}/cycle/{self._round}/{self._index}/{self._cycle_index}"
        )
        return max(base * (1.0 + self.scenario.jitter * rng.uniform(-1.0, 1.0)), 0.001)

    def _flow(self, to: float) -> None:
        """Integrate time-driven quantities from the last processed time to ``to`` (no jumps)."""
        dt = to - self._t
        if dt <= 0:
            return
        st = self.state
        if st.powered:
            self._power_on += dt
            st.power_on_seconds = int(self._power_on)
        goal = CUTTING_C if self._cutting() else AMBIENT_C
        st.axis_temperature = goal + (st.axis_temperature - goal) * math.exp(-dt / THERMAL_TAU_S)
        self._t = to

    def _sample_values(self, at: float) -> None:
        st = self.state
        if not self._cutting():
            st.spindle_speed = 0.0
            st.feedrate = 0.0
            st.spindle_load = 0.0
            return
        rng = random.Random(f"{self.seed}/{st.name}/noise/{math.floor(at)}")
        wobble = 1.0 + self.scenario.noise * rng.uniform(-1.0, 1.0)
        st.spindle_speed = round(self._setpoints.spindle * st.spindle_override / 100.0 * wobble, 1)
        st.feedrate = round(self._setpoints.feedrate * st.feed_override / 100.0, 1)
        st.spindle_load = round(min(100.0, 35.0 * wobble + rng.uniform(0.0, 10.0)), 1)
        # The X axis sweeps ±50 mm once per cycle (or per 10 s without a cycle time).
        period = self.step.cycle or 10.0
        st.position_x_um = int(50_000 * math.sin(2 * math.pi * (at - self._step_start) / period))
