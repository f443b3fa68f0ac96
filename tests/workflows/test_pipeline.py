"""The pipeline with real parts: derivers, a tmp_path outbox, the dispatcher and a verifying receiver.

The pipeline's clock is injected and kept in the past (see ``FakeClock``); the outbox and dispatcher
run on real time, so rows without a delay are due at once and signatures carry a real timestamp.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.delivery.outbox import Outbox
from agent.delivery.records import NewDelivery, OutboxUnavailable
from agent.delivery.settings import OutboxConfig
from agent.derive.errors import UnknownCategory, UnknownDowntime
from agent.events import ALARM_TRIGGERED, MACHINE_STATUS_CHANGED, MachineRef, iso_utc
from agent.pipeline import (
    NotDurable,
    NotManual,
    OutOfScope,
    Pipeline,
    UnknownMachine,
    UnknownWorkflow,
    WorkflowDisabled,
)
from agent.state.journal import JOURNAL_KEY
from agent.state.store import StateStore
from agent.workflows.plan import Firing, message_id
from tests.drills import set_page_limit

from .rig import (
    LATHE,
    MILL,
    FakeClock,
    Receiver,
    Rig,
    body_of,
    derivers,
    hook,
    make_rig,
    poll,
    readings,
    workflows_from,
)

DAY = 86400.0
OPERATOR = {"id": "op456", "name": "John Smith"}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def past_clock() -> FakeClock:
    return FakeClock(float(int(time.time() - 3 * DAY)))


async def run_until_down(
    clock: FakeClock, pipeline: Pipeline, machine: MachineRef = MILL, code: int = 0
) -> None:
    """ACTIVE, then stopped (IDLE, or ALARM with ``code``) for longer than the 1 min micro-stop."""
    start = readings(machine, clock.now, execution="ACTIVE", alarm_code=0, alarm_severity=0, part_count=100)
    await poll(pipeline, machine.id, start)
    clock.advance(10)
    stop = readings(
        machine, clock.now, execution="STOPPED", alarm_code=code, alarm_severity=800 if code else 0
    )
    await poll(pipeline, machine.id, stop)
    clock.advance(61)
    await pipeline.tick()


# -- seed example 1: maintenance alert


async def test_maintenance_alert_by_auto_rule(tmp_path: Path, receiver: Receiver) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "maint": "name: Maintenance alert\nscope: {groups: [Milling, Turning]}\n"
            "trigger: {type: downtime_categorized, categories: [Maintenance Required]}\n"
            + hook(receiver.url("maintainx"), delay="0s"),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock)
    try:
        await run_until_down(clock, rig.pipeline, code=1001)
        (got,) = await receiver.wait_for(1)
    finally:
        await rig.close()
    assert got.error is None and got.payload is not None, got.error
    assert got.path == "/maintainx"
    body = body_of(got)
    assert body["event"] == "downtime_categorized"
    assert body["machine"] == {"id": "mill-01", "name": "CNC Mill 01", "group": "Milling"}
    assert body["downtime"]["category"] == "Maintenance Required"
    assert body["downtime"]["duration_seconds"] == 61
    assert body["operator"] is None  # categorized by a rule, not a person
    assert body["workflow"] == {"name": "Maintenance alert"}
    assert got.headers["webhook-id"] == message_id(body["id"], "Maintenance alert", 0)


async def test_operator_categorization_reproduces_the_seed_payload(
    tmp_path: Path, receiver: Receiver
) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "maint": "name: Maintenance alert\ntrigger: {type: downtime_categorized, categories: [Maintenance Required]}\n"
            + hook(receiver.url("maintainx")),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock)
    try:
        await run_until_down(clock, rig.pipeline)
        open_dt = rig.pipeline.derivers["mill-01"].open_downtime  # type: ignore[attr-defined]
        assert open_dt is not None and open_dt.category is None
        clock.advance(1800 - 61)
        with pytest.raises(UnknownDowntime):
            await rig.pipeline.categorize("no-such-downtime", "Maintenance Required")
        with pytest.raises(UnknownCategory):
            await rig.pipeline.categorize(open_dt.id, "Coffee break")
        event, executions = await rig.pipeline.categorize(
            open_dt.id, "Maintenance Required", "Spindle bearing noise detected", OPERATOR
        )
        (got,) = await receiver.wait_for(1)
    finally:
        await rig.close()
    assert [e.workflow for e in executions] == ["Maintenance alert"]
    body = body_of(got)
    assert got.payload == body
    assert {k: body[k] for k in ("event", "machine", "operator")} == {
        "event": "downtime_categorized",
        "machine": {"id": "mill-01", "name": "CNC Mill 01", "group": "Milling"},
        "operator": OPERATOR,
    }
    assert {k: body["downtime"][k] for k in ("duration_seconds", "category", "notes")} == {
        "duration_seconds": 1800,
        "category": "Maintenance Required",
        "notes": "Spindle bearing noise detected",
    }
    assert body["id"] == event.id


# -- seed example 2: supervisor notification after N minutes, once per downtime


async def test_downtime_exceeded_fires_exactly_once_per_downtime(tmp_path: Path, receiver: Receiver) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "sup": "name: Supervisor notification\ntrigger: {type: downtime_exceeded, after: 30m}\n"
            + hook(receiver.url("make")),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock)
    try:
        await run_until_down(clock, rig.pipeline)
        down_since = clock.now - 61
        for minute in (5, 20, 29):
            clock.now = down_since + minute * 60
            assert await rig.pipeline.tick() == []
        clock.now = down_since + 30 * 60
        (ex,) = await rig.pipeline.tick()
        for minute in (31, 45, 90):
            clock.now = down_since + minute * 60
            assert await rig.pipeline.tick() == []
        # Production resumes, then a second downtime: its own single notification.
        await poll(rig.pipeline, "mill-01", readings(MILL, clock.now, execution="ACTIVE"))
        clock.advance(600)
        await poll(rig.pipeline, "mill-01", readings(MILL, clock.now, execution="STOPPED"))
        second_since = clock.now
        for minute in (1, 10, 30, 31, 60):
            clock.now = second_since + minute * 60
            await rig.pipeline.tick()
        first, second = await receiver.wait_for(2)
        page = await rig.outbox.list(workflow="Supervisor notification")
    finally:
        await rig.close()
    assert len(page.items) == 2
    bodies = [body_of(first), body_of(second)]
    assert [b["event"] for b in bodies] == ["downtime_exceeded", "downtime_exceeded"]
    assert bodies[0]["downtime"]["id"] != bodies[1]["downtime"]["id"]
    assert [b["downtime"]["threshold_seconds"] for b in bodies] == [1800, 1800]
    assert bodies[0]["downtime"]["duration_seconds"] == 1800
    assert first.payload is not None and second.payload is not None
    assert ex.workflow == "Supervisor notification"


# -- seed example 3: daily production sync on a schedule


async def test_scheduled_production_sync_counts_since_last_run(tmp_path: Path, receiver: Receiver) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "sync": "name: Daily production sync\nscope: {groups: [Milling]}\n"
            "trigger: {type: scheduled, cron: '0 23 * * *', timezone: Europe/Berlin}\n"
            + hook(receiver.url("production")),
        },
    )
    berlin = ZoneInfo("Europe/Berlin")
    today = datetime.fromtimestamp(time.time() - 3 * DAY, berlin).date()
    start = datetime(today.year, today.month, today.day, 22, 0, tzinfo=berlin).timestamp()
    clock = FakeClock(start)
    rig = await make_rig(tmp_path, flows, clock)
    p = rig.pipeline
    try:
        for machine in (MILL, LATHE):
            await poll(p, machine.id, readings(machine, clock.now, execution="ACTIVE", part_count=100))
        clock.advance(600)
        await poll(p, "mill-01", readings(MILL, clock.now, part_count=105))
        await poll(p, "lathe-02", readings(LATHE, clock.now, part_count=150))
        clock.now = start + 3599
        assert await p.tick() == []
        clock.now = start + 3600 + 5  # 23:00:05 Berlin
        (first_run,) = await p.tick()
        assert await p.tick() == []  # once per schedule time, not per tick
        clock.advance(3600)
        await poll(p, "mill-01", readings(MILL, clock.now, part_count=112))
        clock.now = start + 3600 + DAY + 1  # the next evening
        (second_run,) = await p.tick()
        first, second = await receiver.wait_for(2)
    finally:
        await rig.close()
    assert first_run.machine_id is None and second_run.workflow == "Daily production sync"
    b1, b2 = body_of(first), body_of(second)
    assert b1["event"] == "scheduled"
    assert b1["timestamp"] == iso_utc(start + 3600)
    assert b1["workflow"]["trigger"] == {
        "type": "scheduled",
        "cron": "0 23 * * *",
        "timezone": "Europe/Berlin",
    }
    assert b1["production"]["machines"] == [
        {"machine": MILL.as_dict(), "parts": 5}
    ]  # the lathe is out of scope
    assert b2["production"]["machines"] == [{"machine": MILL.as_dict(), "parts": 7}]
    assert b2["production"]["since"] == b1["timestamp"]


# -- seed example 4: manual trigger


async def test_manual_trigger_and_its_refusals(tmp_path: Path, receiver: Receiver) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "qa": "name: Quality inspection\nscope: {machines: [mill-01]}\n"
            "trigger: {type: manual, description: Request Quality Inspection}\n"
            + hook(receiver.url("quality")),
            "off": "name: Switched off\nenabled: false\ntrigger: {type: manual}\n"
            + hook(receiver.url("off")),
            "auto": "name: Auto\ntrigger: {type: alarm_triggered}\n" + hook(receiver.url("auto")),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock)
    try:
        ex = await rig.pipeline.trigger("Quality inspection", "mill-01", OPERATOR, "burr on part 7")
        (got,) = await receiver.wait_for(1)
        with pytest.raises(UnknownWorkflow):
            await rig.pipeline.trigger("Nope", "mill-01")
        with pytest.raises(UnknownMachine):
            await rig.pipeline.trigger("Quality inspection", "mill-99")
        with pytest.raises(WorkflowDisabled):
            await rig.pipeline.trigger("Switched off", "mill-01")
        with pytest.raises(NotManual):
            await rig.pipeline.trigger("Auto", "mill-01")
        with pytest.raises(OutOfScope):
            await rig.pipeline.trigger("Quality inspection", "lathe-02")
        rows = await rig.outbox.list()
    finally:
        await rig.close()
    assert len(rows.items) == 1  # refusals never reach the outbox
    assert ex.durable and ex.machine_id == "mill-01"
    body = body_of(got)
    assert got.payload == body
    assert body["event"] == "manual_trigger"
    assert body["machine"] == MILL.as_dict()
    assert body["operator"] == OPERATOR
    assert body["note"] == "burr on part 7"
    assert body["workflow"] == {"name": "Quality inspection", "description": "Request Quality Inspection"}
    assert rig.pipeline.last_execution("Quality inspection") == ex


# -- filters, scope, disabled, throttle (outbox rows only: no dispatcher needed)


async def test_alarm_and_status_filters_scope_and_disabled(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/unused"
    flows = workflows_from(
        tmp_path,
        {
            "a": "name: Spindle\ntrigger: {type: alarm_triggered, codes: [1001], min_severity: 500}\n"
            + hook(url),
            "b": "name: Coolant lathe\nscope: {machines: [lathe-02]}\n"
            "trigger: {type: alarm_triggered, code_patterns: ['20*']}\n" + hook(url),
            "c": "name: Turning stops\nscope: {groups: [Turning]}\n"
            "trigger: {type: machine_status_changed, from: [ACTIVE]}\n" + hook(url),
            "d": "name: Disabled\nenabled: false\ntrigger: {type: alarm_triggered}\n" + hook(url),
            "e": "name: Into alarm\ntrigger: {type: machine_status_changed, to: [ALARM]}\n" + hook(url),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock, dispatch=False)
    p = rig.pipeline
    fired: list[tuple[str, str | None, str]] = []
    try:
        for machine in (MILL, LATHE):
            for ex in await poll(
                p,
                machine.id,
                readings(machine, clock.now, execution="ACTIVE", alarm_code=0, alarm_severity=0),
            ):
                fired.append((ex.workflow, ex.machine_id, ex.event_type))
        steps = [
            (MILL, {"alarm_code": 1001, "alarm_severity": 400}),  # below min severity
            (MILL, {"alarm_code": 0}),
            (MILL, {"alarm_code": 1001, "alarm_severity": 800}),
            (MILL, {"alarm_code": 0}),
            (MILL, {"alarm_code": 2040, "alarm_severity": 800}),  # coolant on the mill: out of scope for b
            (LATHE, {"alarm_code": 2040, "alarm_severity": 100}),
        ]
        for machine, values in steps:
            clock.advance(5)
            for ex in await poll(p, machine.id, readings(machine, clock.now, **values)):
                fired.append((ex.workflow, ex.machine_id, ex.event_type))
        rows = await rig.outbox.list(limit=100)
    finally:
        await rig.close()
    assert ("Spindle", "mill-01", ALARM_TRIGGERED) in fired
    assert [f for f in fired if f[0] == "Spindle"] == [("Spindle", "mill-01", ALARM_TRIGGERED)]
    assert [f for f in fired if f[0] == "Coolant lathe"] == [("Coolant lathe", "lathe-02", ALARM_TRIGGERED)]
    assert [f for f in fired if f[0] == "Turning stops"] == [
        ("Turning stops", "lathe-02", MACHINE_STATUS_CHANGED)
    ]
    # Every mill alarm goes ACTIVE/IDLE -> ALARM: the first from ACTIVE, then from IDLE each time.
    assert {f[1] for f in fired if f[0] == "Into alarm"} == {"mill-01", "lathe-02"}
    assert not [f for f in fired if f[0] == "Disabled"]
    assert len(rows.items) == len(fired)


async def test_min_interval_throttles_per_machine(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "a": "name: Alarms\nmin_interval: 5m\ntrigger: {type: alarm_triggered}\n"
            + hook("http://127.0.0.1:9/x"),
        },
    )
    clock = past_clock()
    rig = await make_rig(tmp_path, flows, clock, dispatch=False)
    p = rig.pipeline
    counts = []
    try:
        for machine in (MILL, LATHE):
            await poll(p, machine.id, readings(machine, clock.now, execution="ACTIVE", alarm_code=0))
        for code in (1001, 0, 1002, 0, 1003):  # three alarms within a minute on the mill
            clock.advance(10)
            counts.append(len(await poll(p, "mill-01", readings(MILL, clock.now, alarm_code=code))))
        counts.append(len(await poll(p, "lathe-02", readings(LATHE, clock.now, alarm_code=1001))))
        clock.advance(300)
        counts.append(len(await poll(p, "mill-01", readings(MILL, clock.now, alarm_code=2040))))
    finally:
        await rig.close()
    assert counts == [1, 0, 0, 0, 0, 1, 1]


async def test_delay_is_persisted_as_not_before_across_a_restart(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "qa": "name: Later\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/later", delay="1h"),
        },
    )
    clock = FakeClock(time.time())
    rig = await make_rig(tmp_path, flows, clock, dispatch=False)
    try:
        await rig.pipeline.trigger("Later", "mill-01")
    finally:
        await rig.close()
    # A new process: the hold is in the file, not in memory.
    reopened = await Outbox.open(tmp_path / "outbox.sqlite3", OutboxConfig())
    try:
        (row,) = (await reopened.list()).items
        due_now = await reopened.candidates("Later#0", time.time(), 10, fifo=False)
        due_later = await reopened.candidates("Later#0", clock.now + 3601, 10, fifo=False)
    finally:
        await reopened.close()
    assert row.state == "pending"
    assert row.due_at == pytest.approx(clock.now + 3600, abs=1.0)
    assert due_now.rows == [] and due_now.next_due == pytest.approx(row.due_at)
    assert [d.message_id for d in due_later.rows] == [row.message_id]


async def fill_to_the_page_limit(outbox: Outbox) -> None:
    """The disk-full drill: no page can be added, and the free space left in the pages is used up
    (big rows first, then smaller ones, until not even a tiny row fits)."""
    await set_page_limit(outbox, 1)
    n = 0
    for size in (2000, 400, 50, 0):
        for _ in range(10_000):
            n += 1
            row = NewDelivery(
                f"msg_fill_{n}", "x#0", "http://127.0.0.1:9/", "x", "t", None, f"e{n}", b"f" * size, 0.0
            )
            try:
                await outbox.enqueue([row])
            except OutboxUnavailable:
                break
        else:
            raise AssertionError("the page limit never made the outbox refuse")


async def status_changes(rig: Rig, n: int) -> list[Firing]:
    """``n`` derived machine_status_changed firings of mill-01 (ACTIVE/STOPPED in turn)."""
    fired: list[Firing] = []
    for i in range(n):
        rig.clock.advance(60)
        execution = "ACTIVE" if i % 2 == 0 else "STOPPED"
        fired += await poll(rig.pipeline, "mill-01", readings(MILL, rig.clock.now, execution=execution))
    return fired


STATUS_FLOW = {
    "st": "name: Status\ntrigger: {type: machine_status_changed}\n" + hook("http://127.0.0.1:9/st")
}


async def test_refused_rows_wait_in_memory_and_are_enqueued_later(tmp_path: Path) -> None:
    """Derived events are the only rows held in memory: a manual trigger is refused instead."""
    flows = workflows_from(
        tmp_path, {**STATUS_FLOW, "qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/qa")}
    )
    rig = await make_rig(tmp_path, flows, past_clock(), dispatch=False)
    try:
        await fill_to_the_page_limit(rig.outbox)
        held = await status_changes(rig, 3)
        held_count = rig.pipeline.pending
        with pytest.raises(NotDurable):
            await rig.pipeline.trigger("QA", "mill-01", note="x" * 20000)
        after_trigger = rig.pipeline.pending
        await set_page_limit(rig.outbox, 1_000_000)
        await rig.pipeline.tick()
        rows = [r for r in (await rig.outbox.list(limit=200)).items if r.workflow == "Status"]
    finally:
        await rig.close()
    assert held and not any(f.durable for f in held)
    assert held_count == after_trigger == len(held)
    assert rig.pipeline.pending == 0
    expected = [m for f in held for m in f.message_ids]
    # In order and first (the tick may derive a newer change of its own after them).
    assert [r.message_id for r in sorted(rows, key=lambda r: r.id)][: len(expected)] == expected


async def test_rows_beyond_the_memory_limit_are_rejected_and_counted_not_dropped_silently(
    tmp_path: Path,
) -> None:
    flows = workflows_from(tmp_path, STATUS_FLOW)
    rig = await make_rig(tmp_path, flows, past_clock(), dispatch=False)
    rig.pipeline.max_waiting = 2
    try:
        await fill_to_the_page_limit(rig.outbox)
        fired = await status_changes(rig, 3)
        waiting, rejected, refusing = rig.pipeline.pending, rig.pipeline.rejected, rig.pipeline.refusing
        await set_page_limit(rig.outbox, 1_000_000)
        await rig.pipeline.tick()
        rows = [r for r in (await rig.outbox.list(limit=200)).items if r.workflow == "Status"]
    finally:
        await rig.close()
    assert len(fired) == 3
    assert (waiting, rejected, refusing) == (2, 1, True)
    # The two oldest waited and reached the outbox; the newest was the one rejected.
    kept = {m for f in fired[:2] for m in f.message_ids}
    assert kept <= {r.message_id for r in rows}
    assert not {m for m in fired[2].message_ids} & {r.message_id for r in rows}
    assert rig.pipeline.refusing is False


async def test_schedule_and_derived_state_survive_a_restart(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path,
        {
            "sync": "name: Sync\nscope: {machines: [mill-01]}\ntrigger: {type: scheduled, cron: '0 23 * * *', "
            "timezone: Europe/Berlin}\n" + hook("http://127.0.0.1:9/sync"),
        },
    )
    berlin = ZoneInfo("Europe/Berlin")
    day = datetime.fromtimestamp(time.time() - 5 * DAY, berlin).date()
    start = datetime(day.year, day.month, day.day, 22, 0, tzinfo=berlin).timestamp()
    clock = FakeClock(start)

    store = await StateStore.open(tmp_path / "state.sqlite3")
    rig = await make_rig(tmp_path, flows, clock, dispatch=False, store=store)
    await poll(rig.pipeline, "mill-01", readings(MILL, clock.now, execution="ACTIVE", part_count=10))
    clock.advance(60)
    await poll(rig.pipeline, "mill-01", readings(MILL, clock.now, part_count=14))
    clock.now = start + 3605
    (run1,) = await rig.pipeline.tick()
    clock.advance(60)
    await poll(rig.pipeline, "mill-01", readings(MILL, clock.now, part_count=20))
    await rig.pipeline.close()
    await rig.close()
    await store.close()

    # The agent is down over the next 23:00 and comes back at 23:30: that run happens once, at once.
    store = await StateStore.open(tmp_path / "state.sqlite3")
    saved = await store.load_all()
    restored = derivers()
    for mid, d in restored.items():
        if mid in saved:
            d.restore(saved[mid])
    clock.now = start + DAY + 5400
    rig = await make_rig(tmp_path, flows, clock, dispatch=False, store=store, machine_derivers=restored)
    try:
        assert restored["mill-01"].part_total == 10  # 4 + 6 counted before the restart
        (run2,) = await rig.pipeline.tick()
        assert await rig.pipeline.tick() == []
        page = await rig.outbox.list(workflow="Sync")
    finally:
        await rig.close()
        await store.close()
    bodies = {r.event_id: r for r in page.items}
    assert set(bodies) == {run1.event_id, run2.event_id}
    async with await Outbox.open(tmp_path / "outbox.sqlite3", OutboxConfig()) as box:
        detail = await box.get(bodies[run2.event_id].id)
    assert detail is not None
    body = json.loads(detail.body)
    assert body["timestamp"] == iso_utc(start + 3600 + DAY)  # the missed schedule time, not the restart time
    assert body["production"]["since"] == iso_utc(start + 3600)
    assert body["production"]["machines"] == [{"machine": MILL.as_dict(), "parts": 6}]


async def test_a_firing_stores_the_state_its_events_came_from_while_a_later_poll_waits(
    tmp_path: Path,
) -> None:
    """The runtime fires a poll's events in a task; the next poll of the same machine may derive
    before that task runs. The firing must still store the machine's state that produced its rows
    (a kill -9 right after would otherwise restart from an older state and derive the same change
    again under a new id), and must not store the later poll's state ahead of the journal."""
    flows = workflows_from(
        tmp_path,
        {"feed": "name: Feed\ntrigger: {type: machine_status_changed}\n" + hook("http://127.0.0.1:9/")},
    )
    clock = past_clock()
    store = await StateStore.open(tmp_path / "state.sqlite3")
    rig = await make_rig(tmp_path, flows, clock, dispatch=False, store=store)
    try:
        pipeline = rig.pipeline
        first = pipeline.derive("mill-01", readings(MILL, clock.now, execution="ACTIVE", alarm_code=0))
        clock.advance(5)
        second = pipeline.derive("mill-01", readings(MILL, clock.now, execution="STOPPED", alarm_code=0))
        assert first and second
        (fired,) = await pipeline.fire(first)
        saved = await store.load_all()
        journaled = {row["message_id"] for row in saved[JOURNAL_KEY]["rows"]}
        assert set(fired.message_ids) <= journaled
        # The stored state is the one right after the first poll: ACTIVE, not the second poll's.
        restored = derivers()["mill-01"]
        restored.restore(saved["mill-01"])
        assert restored.status == "ACTIVE"
        await pipeline.fire(second)
        restored = derivers()["mill-01"]
        restored.restore((await store.load_all())["mill-01"])
        assert restored.status != "ACTIVE"
    finally:
        await rig.close()
        await store.close()


async def test_every_execution_is_reported_whether_readings_or_the_tick_fired_it(tmp_path: Path) -> None:
    """What edge_agent_workflow_executions_total counts: a status change seen in a poll's readings
    fires as surely as a timer in the tick, and both are reported."""
    flows = workflows_from(
        tmp_path,
        {
            "status": "name: Status feed\ntrigger: {type: machine_status_changed}\n"
            + hook("http://127.0.0.1:9/s"),
            "down": "name: Down\ntrigger: {type: downtime_started}\n" + hook("http://127.0.0.1:9/d"),
        },
    )
    clock = past_clock()
    reported: list[Firing] = []
    rig = await make_rig(tmp_path, flows, clock, dispatch=False, on_firings=reported.extend)
    try:
        await run_until_down(clock, rig.pipeline)
    finally:
        await rig.close()
    by_workflow = sorted({f.workflow for f in reported})
    assert by_workflow == ["Down", "Status feed"], reported
    from_readings = [f for f in reported if f.workflow == "Status feed"]
    assert from_readings and all(f.durable for f in reported)
