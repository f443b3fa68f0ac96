"""Restart: snapshot → JSON → SQLite → restore keeps the downtime clock, alarms, status, counters."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent.derive import SnapshotError
from agent.events import DOWNTIME_ENDED, DOWNTIME_EXCEEDED, DOWNTIME_STARTED
from agent.state.store import StateStore, StoreError

from .builders import IDLE_VALUES, deriver, good, kinds, notice

NOON = 1_699_963_200.0


def mid_downtime() -> Any:
    d = deriver(exceeded_after=[600, 1800])
    d.ingest(good(NOON, **{**IDLE_VALUES, "execution": "ACTIVE", "part_count": 10}), NOON)
    d.tick(NOON + 5)
    d.ingest(good(NOON + 50, part_count=12), NOON + 50)
    d.ingest(good(NOON + 100, execution="READY", alarm_code=1001, alarm_count=1), NOON + 100)
    d.ingest([notice(NOON + 101, "X9", True, "Hydraulics")], NOON + 101)
    d.tick(NOON + 105)
    d.tick(NOON + 800)  # downtime open, 600 s threshold fired
    return d


def test_snapshot_is_json_and_restore_continues_the_same_downtime() -> None:
    before = mid_downtime()
    dt_id = before.open_downtime.id
    snap = json.loads(json.dumps(before.snapshot()))
    after = deriver(exceeded_after=[600, 1800])
    after.restore(snap)
    assert after.status == "ALARM" and after.status_since == NOON + 100
    assert after.open_downtime.id == dt_id and after.open_downtime.started_at == NOON + 100
    assert [a.code for a in after.active_alarms] == ["1001", "X9"]
    assert all(a.unknown for a in after.active_alarms)  # nothing is known until the first readings
    assert after.part_total == 2
    # The agent was down for a while; the 600 s threshold is not fired twice, 1800 s fires once.
    out = after.tick(NOON + 2000)
    assert kinds(out) == [DOWNTIME_EXCEEDED]
    assert out[0].payload()["downtime"]["threshold_seconds"] == 1800.0
    assert out[0].payload()["downtime"]["duration_seconds"] == 1900.0
    # Back to work: the downtime ends with its original start; the counter continues.
    out = after.ingest(
        good(NOON + 3000, **{**IDLE_VALUES, "execution": "ACTIVE", "part_count": 15}), NOON + 3000
    )
    out += after.tick(NOON + 3005)
    ended = [e.payload()["downtime"] for e in out if e.event == DOWNTIME_ENDED]
    assert ended[0]["id"] == dt_id and ended[0]["duration_seconds"] == 2900.0
    assert DOWNTIME_STARTED not in kinds(out)
    assert after.part_total == 5


def test_a_pending_debounce_and_micro_stop_survive_a_restart() -> None:
    d = deriver()
    d.ingest(good(NOON, **{**IDLE_VALUES, "execution": "ACTIVE"}), NOON)
    d.tick(NOON + 5)
    d.ingest(good(NOON + 100, execution="READY"), NOON + 100)
    d.tick(NOON + 103)  # IDLE pending
    after = deriver()
    after.restore(json.loads(json.dumps(d.snapshot())))
    out = after.tick(NOON + 106)
    assert kinds(out) == ["machine_status_changed"] and after.status_since == NOON + 100
    assert kinds(after.tick(NOON + 220)) == [DOWNTIME_STARTED]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(version=99), "version: expected 1, got 99"),
        (
            lambda s: s["status"].update(since="yesterday"),
            "snapshot[mill-01].status.since: expected a number",
        ),
        (lambda s: s["downtime"]["open"].pop("started_at"), "downtime.open.started_at: missing"),
        (lambda s: s["alarms"]["active"][0].update(source="magic"), "unknown alarm source 'magic'"),
        (lambda s: s["parts"].update(days=[1]), "parts.days: expected an object"),
    ],
)
def test_a_damaged_snapshot_names_the_field_and_changes_nothing(mutate: Any, message: str) -> None:
    snap = json.loads(json.dumps(mid_downtime().snapshot()))
    mutate(snap)
    d = deriver()
    with pytest.raises(SnapshotError, match=message.replace("[", r"\[").replace("]", r"\]")):
        d.restore(snap)
    assert d.status is None and d.open_downtime is None


async def test_store_round_trip_on_a_real_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "derive.sqlite3"
    first = mid_downtime()
    async with await StateStore.open(path) as store:
        await store.save("mill-01", first.snapshot())
        await store.save_many({"mill-01": first.snapshot(), "lathe-02": {"version": 1, "x": [1, 2]}})
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM machine_state").fetchone()[0] == 2
    finally:
        conn.close()
    async with await StateStore.open(path) as store:
        loaded = await store.load_all()
        assert set(loaded) == {"mill-01", "lathe-02"}
        restored = deriver(exceeded_after=[600, 1800])
        restored.restore(loaded["mill-01"])
        assert restored.open_downtime.id == first.open_downtime.id
        await store.delete("lathe-02")
        assert set(await store.load_all()) == {"mill-01"}


async def test_store_skips_an_undecodable_row_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "derive.sqlite3"
    async with await StateStore.open(path) as store:
        await store.save_many({"a": {"version": 1}, "b": {"version": 1}}, now=1.0)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE machine_state SET snapshot = '{broken' WHERE machine_id = 'b'")
    conn.commit()
    async with await StateStore.open(path) as store:
        assert set(await store.load_all()) == {"a"}
    conn.execute("PRAGMA user_version=7")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer edge-agent"):
        await StateStore.open(path)


async def test_store_names_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "derive.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=str(path)):
        await StateStore.open(path)


def test_a_reload_keeps_alarms_known_and_a_flapping_alarm_keeps_the_snapshot_small() -> None:
    d = mid_downtime()
    for i in range(200):  # an alarm flapping for an hour during the open downtime
        t = NOON + 900 + i * 10
        d.ingest([notice(t, f"F{i % 3}", True, "flap")], t)
        d.ingest([notice(t + 5, f"F{i % 3}", False)], t + 5)
    snap = d.snapshot()
    assert len(snap["downtime"]["open"]["alarms"]) <= 5
    reloaded = deriver(exceeded_after=[600, 1800])
    reloaded.restore(json.loads(json.dumps(snap)), after_restart=False)
    assert [(a.code, a.unknown) for a in reloaded.active_alarms] == [("1001", False), ("X9", False)]
