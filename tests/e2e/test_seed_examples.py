"""The seed's workflow examples end to end: Modbus simulator → Runtime (collectors, derivation, workflows,
outbox, dispatcher, API) → signed webhooks at a verifying receiver.

Machines change by assigning the simulator's ``MachineState`` and publishing it; the agent's clock is
injected (see conftest), so "down for 30 minutes" is an assignment, not a wait.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from agent.events import iso_utc
from agent.receiver import Receiver
from simulators.modbus_server import ModbusSimulator
from simulators.model import Alarm, Execution, MachineState, OperationMode

from .conftest import (
    DAY,
    ISO_UTC,
    SECRET,
    TOKEN,
    Agent,
    FakeClock,
    at_path,
    modbus_machine,
    past_clock,
    payload,
    start_agent,
    wait_at,
    webhook,
)

MAINTENANCE_RULES = """\
downtime:
  micro_stop: 1s
  categorize:
    - {when: {alarm_code: [1001]}, category: Maintenance Required}
"""
REPO = Path(__file__).resolve().parents[2]
SEED_OPERATOR = {"id": "op456", "name": "John Smith"}
SEED_MACHINE = {"id": "mill-01", "name": "CNC Mill 01", "group": "Milling"}
LATHE = {"id": "lathe-02", "name": "CNC Lathe 02", "group": "Turning"}


def fleet(sim: ModbusSimulator, extra: str = MAINTENANCE_RULES) -> dict[str, str]:
    return {
        "mill-01": modbus_machine("mill-01", "CNC Mill 01", "Milling", sim.port, 1, extra=extra),
        "lathe-02": modbus_machine("lathe-02", "CNC Lathe 02", "Turning", sim.port, 2, extra=extra),
    }


def show(sim: ModbusSimulator, state: MachineState) -> None:
    unit = next(u for u, m in sim.machines.items() if m is state)
    sim.publish(unit)


async def run_then_stop(
    agent: Agent, sim: ModbusSimulator, state: MachineState, alarm: Alarm | None = None
) -> None:
    """The machine cuts, then stops (with ``alarm``: faults); the agent has seen both."""
    state.execution = Execution.ACTIVE
    show(sim, state)
    await agent.wait_status(state.name, "ACTIVE")
    state.execution = Execution.INTERRUPTED if alarm else Execution.STOPPED
    if alarm is not None:
        state.alarms[alarm.code] = alarm
    show(sim, state)
    await agent.wait_status(state.name, "ALARM" if alarm else "IDLE")


async def resume(agent: Agent, sim: ModbusSimulator, state: MachineState) -> None:
    state.alarms.clear()
    state.execution = Execution.ACTIVE
    show(sim, state)
    await agent.wait_status(state.name, "ACTIVE")


# -- seed example 1: maintenance alert


async def test_maintenance_alert_from_an_alarm_auto_rule(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flow = (
        "name: Maintenance alert\nscope: {groups: [Milling, Turning]}\n"
        "trigger: {type: downtime_categorized, categories: [Maintenance Required]}\n"
        + webhook(receiver.url + "maintainx", delay="0s")
    )
    clock = past_clock()
    agent = await start_agent(tmp_path, fleet(modbus_sim), {"maintenance": flow}, clock)
    try:
        await run_then_stop(agent, modbus_sim, machines["mill-01"], Alarm(1001, "Spindle overload", 800))
        clock.advance(90)
        await agent.runtime.pipeline.tick()
        (got,) = await wait_at(receiver, "/maintainx", 1)
    finally:
        await agent.stop()
    body = payload(got)
    assert body["event"] == "downtime_categorized"
    assert body["machine"] == SEED_MACHINE
    assert body["downtime"]["category"] == "Maintenance Required"
    assert body["downtime"]["duration_seconds"] == 90
    assert body["operator"] is None  # a rule decided, not a person
    assert body["workflow"] == {"name": "Maintenance alert"}
    assert ISO_UTC.match(body["timestamp"])


async def test_maintenance_alert_from_an_operator_through_the_api(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flow = (
        "name: Maintenance alert\n"
        "trigger: {type: downtime_categorized, categories: [Maintenance Required]}\n"
        + webhook(receiver.url + "maintainx", delay="0s")
    )
    clock = past_clock()
    agent = await start_agent(tmp_path, fleet(modbus_sim), {"maintenance": flow}, clock)
    try:
        await run_then_stop(agent, modbus_sim, machines["mill-01"])
        left_active = clock.now
        clock.advance(5)
        await agent.runtime.pipeline.tick()
        status, listed = await agent.api("GET", "/api/v1/downtimes?machine=mill-01")
        assert status == 200
        (open_dt,) = listed["items"]
        assert open_dt["category"] is None  # no rule applies to a plain stop

        clock.now = left_active + 1800
        choice = {"category": "Maintenance Required"}
        url = f"/api/v1/downtimes/{open_dt['id']}/category"
        assert (await agent.api("POST", url, choice, token=None))[0] == 401
        assert (await agent.api("POST", url, choice, token=TOKEN[:-1] + "x"))[0] == 401
        status, answer = await agent.api(
            "POST",
            f"/api/v1/downtimes/{open_dt['id']}/category",
            {
                "category": "Maintenance Required",
                "notes": "Spindle bearing noise detected",
                "operator": SEED_OPERATOR,
            },
        )
        assert status == 200, answer
        (got,) = await wait_at(receiver, "/maintainx", 1)
    finally:
        await agent.stop()
    assert [e["workflow"] for e in answer["executions"]] == ["Maintenance alert"]
    body = payload(got)
    # The seed's sample payload, field for field (plus id and workflow, and the downtime's own id).
    assert body["event"] == "downtime_categorized"
    assert body["timestamp"] == iso_utc(left_active + 1800)
    assert body["machine"] == SEED_MACHINE
    assert {k: body["downtime"][k] for k in ("duration_seconds", "category", "notes")} == {
        "duration_seconds": 1800,
        "category": "Maintenance Required",
        "notes": "Spindle bearing noise detected",
    }
    assert body["operator"] == SEED_OPERATOR
    assert body["downtime"]["id"] == open_dt["id"]
    assert body["id"] == answer["event"]["id"]


# -- seed example 2: supervisor notification when a machine is down longer than N


async def test_supervisor_notified_exactly_once_per_downtime(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flow = "name: Supervisor notification\ntrigger: {type: downtime_exceeded, after: 2s}\n" + webhook(
        receiver.url + "make"
    )
    clock = past_clock()
    agent = await start_agent(tmp_path, fleet(modbus_sim), {"supervisor": flow}, clock)
    mill = machines["mill-01"]
    try:
        downtime_ids = []
        for _ in range(2):
            await run_then_stop(agent, modbus_sim, mill)
            for _ in range(8):  # 4 s in steps of 0.5 s: past micro_stop (1 s), past the 2 s threshold, on
                clock.advance(0.5)
                await agent.runtime.pipeline.tick()
            downtime_ids.append(agent.deriver("mill-01").open_downtime.id)
            await resume(agent, modbus_sim, mill)
        got = await wait_at(receiver, "/make", 2)
        rows = await agent.rows("Supervisor notification")
    finally:
        await agent.stop()
    # Every row the workflow ever made is in the outbox: two, one per downtime.
    assert [(r.event_type, r.machine_id) for r in rows] == [("downtime_exceeded", "mill-01")] * 2
    bodies = sorted((payload(r) for r in got), key=lambda b: b["id"])
    assert len(bodies) == 2
    assert [b["downtime"]["id"] for b in bodies] == downtime_ids
    assert [b["downtime"]["threshold_seconds"] for b in bodies] == [2, 2]
    assert all(b["machine"] == SEED_MACHINE for b in bodies)


# -- seed example 3: daily production sync on a schedule


async def test_scheduled_production_sync_counts_parts_of_machines_in_scope(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flow = (
        "name: Daily production sync\nscope: {groups: [Milling]}\n"
        "trigger: {type: scheduled, cron: '0 23 * * *', timezone: Europe/Berlin}\n"
        + webhook(receiver.url + "production")
    )
    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.fromtimestamp(time.time() - 3 * DAY, berlin).date()
    clock = FakeClock(datetime(day.year, day.month, day.day, 22, 0, tzinfo=berlin).timestamp())
    mill, lathe = machines["mill-01"], machines["lathe-02"]
    mill.part_count, lathe.part_count = 100, 500
    show(modbus_sim, mill)
    show(modbus_sim, lathe)
    agent = await start_agent(tmp_path, fleet(modbus_sim), {"sync": flow}, clock)
    try:
        await agent.wait_status("mill-01", "IDLE")
        await agent.wait_status("lathe-02", "IDLE")
        clock.advance(600)
        mill.part_count, lathe.part_count = 107, 520
        show(modbus_sim, mill)
        show(modbus_sim, lathe)
        await agent.wait_until(lambda: agent.deriver("mill-01").part_total == 7, "mill-01 to count 7")
        await agent.wait_until(lambda: agent.deriver("lathe-02").part_total == 20, "lathe-02 to count 20")
        before = await agent.runtime.pipeline.tick(clock.now)
        cron_time = datetime(day.year, day.month, day.day, 23, 0, tzinfo=berlin).timestamp()
        executions = await agent.runtime.pipeline.tick(cron_time + 30)
        (got,) = await wait_at(receiver, "/production", 1)
    finally:
        await agent.stop()
    assert before == []  # 22:10 is not 23:00
    assert [e.workflow for e in executions] == ["Daily production sync"]
    body = payload(got)
    assert body["event"] == "scheduled"
    assert body["timestamp"] == iso_utc(cron_time)
    assert body["workflow"]["name"] == "Daily production sync"
    assert body["production"]["machines"] == [{"machine": SEED_MACHINE, "parts": 7}]  # lathe-02: not Milling
    assert body["production"]["until"] == iso_utc(cron_time + 30)
    assert body["workflow"]["trigger"]["cron"] == "0 23 * * *"  # the seed's "workflow configuration"
    assert receiver.url not in got.body.decode() and SECRET not in got.body.decode()


# -- seed example 4: quality inspection, an operator's manual trigger (API and CLI)

QUALITY = "Quality inspection"


def quality_flow(receiver: Receiver) -> str:
    return (
        f"name: {QUALITY}\ndescription: Request Quality Inspection\n"
        "trigger: {type: manual, description: Request Quality Inspection}\n"
        + webhook(receiver.url + "quality")
    )


async def test_quality_inspection_triggered_through_the_api_and_the_cli(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    clock = past_clock()
    agent = await start_agent(tmp_path, fleet(modbus_sim), {"quality": quality_flow(receiver)}, clock)
    try:
        status, answer = await agent.api(
            "POST",
            f"/api/v1/workflows/{quote(QUALITY)}/trigger",
            {"machine": "mill-01", "operator": SEED_OPERATOR, "note": "burr on part 17"},
        )
        assert status == 202, answer
        cli = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "trigger",
            QUALITY,
            "--machine",
            "lathe-02",
            "--operator-id",
            "op789",
            "--operator-name",
            "Jane Doe",
            "--note",
            "surface finish",
            "-c",
            str(agent.config_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        out, err = await asyncio.wait_for(cli.communicate(), 30)
        unknown = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "trigger",
            QUALITY,
            "--machine",
            "mill-99",
            "-c",
            str(agent.config_file),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        _, unknown_err = await asyncio.wait_for(unknown.communicate(), 30)
        got = await wait_at(receiver, "/quality", 2)
    finally:
        await agent.stop()
    assert cli.returncode == 0, err.decode()
    assert out.decode().startswith(f"triggered {QUALITY!r} for lathe-02: queued; messages: ")
    assert unknown.returncode == 2
    assert "mill-99" in unknown_err.decode()
    assert TOKEN not in (out + err + unknown_err).decode()
    bodies = sorted((payload(r) for r in got), key=lambda b: b["machine"]["id"])
    assert [b["event"] for b in bodies] == ["manual_trigger", "manual_trigger"]
    assert [b["workflow"]["name"] for b in bodies] == [QUALITY, QUALITY]
    assert [(b["machine"], b["operator"], b["note"]) for b in bodies] == [
        (LATHE, {"id": "op789", "name": "Jane Doe"}, "surface finish"),
        (SEED_MACHINE, SEED_OPERATOR, "burr on part 17"),
    ]
    assert bodies[0]["workflow"]["description"] == "Request Quality Inspection"
    assert len(at_path(receiver, "/quality")) == 2


# -- alarm and status triggers with their filters; scope by group and by machine; disabled workflows


async def test_alarm_trigger_filters_codes_patterns_severity_and_group_scope(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flows = {
        "critical": "name: Critical alarm\nscope: {groups: [Milling]}\n"
        "trigger: {type: alarm_triggered, codes: [1001], code_patterns: ['20*'], min_severity: 500}\n"
        + webhook(receiver.url + "critical"),
        "every": "name: Every alarm\ntrigger: {type: alarm_triggered}\n" + webhook(receiver.url + "all"),
    }
    steps = [  # machine, alarm, fires "Critical alarm"
        ("mill-01", Alarm(1001, "Spindle overload", 800), True),
        ("mill-01", Alarm(2040, "Coolant low", 300), False),  # below min_severity
        ("lathe-02", Alarm(1001, "Spindle overload", 800), False),  # Turning: out of scope
        ("mill-01", Alarm(2041, "Coolant pressure", 600), True),  # matches 20*
        ("mill-01", Alarm(3001, "Axis following error", 900), False),  # neither code nor pattern
    ]
    agent = await start_agent(tmp_path, fleet(modbus_sim), flows, past_clock())
    try:
        for n, (machine_id, alarm, _) in enumerate(steps, start=1):
            state = machines[machine_id]
            state.alarms = {alarm.code: alarm}
            state.execution = Execution.INTERRUPTED
            show(modbus_sim, state)
            await wait_at(receiver, "/all", n)
            state.alarms = {}
            show(modbus_sim, state)
            deriver = agent.deriver(machine_id)
            await agent.wait_until(lambda d=deriver: not d.active_alarms, f"{machine_id} alarms to clear")
        # Every alarm event reached "Every alarm", so all rows of "Critical alarm" are in the outbox.
        rows = await agent.rows("Critical alarm")
        critical = await wait_at(receiver, "/critical", 2)
    finally:
        await agent.stop()
    assert [(r.machine_id, r.event_type) for r in rows] == [("mill-01", "alarm_triggered")] * 2
    expected = [(m, a) for m, a, fires in steps if fires]
    # Modbus carries no alarm text: descriptions come from the profile's alarms.texts, else "Alarm <code>".
    texts = {1001: "Spindle overload", 2040: "Coolant low"}
    bodies = sorted((payload(r) for r in critical), key=lambda b: b["id"])
    assert [(b["machine"]["id"], b["alarm"]) for b in bodies] == [
        (
            m,
            {
                "code": str(a.code),
                "description": texts.get(a.code, f"Alarm {a.code}"),
                "severity": a.severity,
            },
        )
        for m, a in expected
    ]
    everything = [payload(r)["alarm"]["code"] for r in at_path(receiver, "/all")]
    assert everything == [str(a.code) for _, a, _ in steps]


async def test_status_trigger_filters_from_to_and_machine_scope_and_disabled_never_fires(
    tmp_path: Path, modbus_sim: ModbusSimulator, machines: dict[str, MachineState], receiver: Receiver
) -> None:
    flows = {
        "stopped": "name: Machine stopped\nscope: {machines: [lathe-02]}\n"
        "trigger: {type: machine_status_changed, from: [ACTIVE], to: [IDLE, ALARM]}\n"
        + webhook(receiver.url + "stopped"),
        "feed": "name: Status feed\ntrigger: {type: machine_status_changed}\n"
        + webhook(receiver.url + "feed"),
        "off": "name: Switched off\nenabled: false\ntrigger: {type: machine_status_changed}\n"
        + webhook(receiver.url + "off"),
    }
    agent = await start_agent(tmp_path, fleet(modbus_sim), flows, past_clock())
    try:
        for machine_id in ("mill-01", "lathe-02"):
            state = machines[machine_id]
            await agent.wait_status(machine_id, "IDLE")
            for change, status in (
                ({"execution": Execution.ACTIVE}, "ACTIVE"),
                ({"execution": Execution.STOPPED}, "IDLE"),
                ({"mode": OperationMode.SETUP}, "SETUP"),
                ({"mode": OperationMode.AUTOMATIC}, "IDLE"),
            ):
                for key, value in change.items():
                    setattr(state, key, value)
                show(modbus_sim, state)
                await agent.wait_status(machine_id, status)
        feed = await wait_at(receiver, "/feed", 10)
        stopped_rows = await agent.rows("Machine stopped")
        off_rows = await agent.rows("Switched off")
        (stopped,) = await wait_at(receiver, "/stopped", 1)
    finally:
        await agent.stop()
    # Machines interleave; event ids sort by time within each machine.
    bodies = sorted((payload(r) for r in feed), key=lambda b: (b["machine"]["id"], b["id"]))
    transitions = [(b["machine"]["id"], b["status"]["from"], b["status"]["to"]) for b in bodies]
    walk = [None, "IDLE", "ACTIVE", "IDLE", "SETUP", "IDLE"]
    assert transitions == [(m, a, b) for m in ("lathe-02", "mill-01") for a, b in itertools.pairwise(walk)]
    assert [(r.machine_id, r.event_type) for r in stopped_rows] == [("lathe-02", "machine_status_changed")]
    body = payload(stopped)
    assert body["machine"] == LATHE and (body["status"]["from"], body["status"]["to"]) == ("ACTIVE", "IDLE")
    assert off_rows == [] and at_path(receiver, "/off") == []
