"""The live feed and the panel's pure views: a tile is published when, and only when, it changes; a
slow board gets the newest tile, not a backlog; sessions expire by the injected clock."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from agent.api.settings import RoleToken
from agent.config.source import Secret
from agent.panel.feed import LiveFeed, Subscriber
from agent.panel.session import Sessions, csrf_ok
from agent.panel.views import day_of, duration_text, lanes, state_class, status_segments, tile_view, url_shown
from drivers.base import Quality, Reading
from tests.derive.builders import MACHINE, deriver, good


class Plant:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.machines: dict[str, Any] = {MACHINE.id: MACHINE}
        self.derivers: dict[str, Any] = {MACHINE.id: deriver()}

    def feed(self) -> LiveFeed:
        return LiveFeed(lambda: self.machines, lambda: self.derivers, lambda: self.now)

    def read(self, **values: Any) -> list[Any]:
        self.now += 1
        samples = good(self.now, **values)
        self.derivers[MACHINE.id].ingest(samples, self.now)
        return samples


def test_a_tile_is_published_only_when_it_changes() -> None:
    plant = Plant()
    feed = plant.feed()
    sub = Subscriber()
    feed.subscribe(sub)
    samples = plant.read(execution="ACTIVE", mode="AUTOMATIC", estop=False, alarm_code=0, part_count=5)
    feed.samples(MACHINE.id, samples)
    first = feed.published
    assert first == 1 and sub.tiles[MACHINE.id]["id"] == MACHINE.id
    sub.take()
    for _ in range(3):  # the same values again: nothing to send
        feed.samples(
            MACHINE.id,
            plant.read(execution="ACTIVE", mode="AUTOMATIC", estop=False, alarm_code=0, part_count=5),
        )
    assert feed.published == first and sub.tiles == {}
    plant.now += 10  # past min_state
    plant.derivers[MACHINE.id].tick(plant.now)
    feed.observe_all()
    assert feed.published == first + 1
    assert sub.tiles[MACHINE.id]["status"] == "ACTIVE"


def test_a_stream_opened_after_a_change_gets_the_tiles_changed_since_its_page_was_rendered() -> None:
    plant = Plant()
    feed = plant.feed()
    feed.samples(MACHINE.id, plant.read(execution="READY", part_count=1))
    rendered, shown = feed.published, feed.tile(MACHINE.id)  # the page carries the count as ``since``
    feed.samples(MACHINE.id, plant.read(execution="READY", part_count=2))  # before the stream is up
    late, current, unknown, other = Subscriber(), Subscriber(), Subscriber(), Subscriber(machine="lathe-02")
    feed.subscribe(late, since=rendered)
    feed.subscribe(current, since=feed.published)
    feed.subscribe(unknown, since=feed.published + 99)  # a page from before an agent restart
    feed.subscribe(other, since=0)
    assert late.tiles == {MACHINE.id: feed.tile(MACHINE.id)} and late.tiles[MACHINE.id] != shown
    assert current.tiles == {}, "nothing changed since that page was rendered"
    assert unknown.tiles == {MACHINE.id: feed.tile(MACHINE.id)}
    assert other.tiles == {}, "a machine page is sent only its own machine's tile"


def test_a_slow_board_gets_the_newest_tile_not_a_backlog() -> None:
    plant = Plant()
    feed = plant.feed()
    sub = Subscriber()
    feed.subscribe(sub)
    for count in range(50):
        feed.samples(MACHINE.id, plant.read(execution="READY", part_count=count))
    tiles, _ = sub.take()
    assert list(tiles) == [MACHINE.id]
    assert tiles[MACHINE.id] == feed.tile(MACHINE.id)


def test_tag_values_go_only_to_that_machines_page() -> None:
    plant = Plant()
    feed = plant.feed()
    board, page, other = Subscriber(), Subscriber(machine=MACHINE.id), Subscriber(machine="lathe-02")
    for s in (board, page, other):
        feed.subscribe(s)
    feed.samples(MACHINE.id, plant.read(execution="READY", part_count=7))
    assert not board.tags_changed and not other.tags_changed
    assert page.tags_changed
    rows = {t.tag: t for t in feed.tags(MACHINE.id)}
    assert rows["part_count"].value == "7" and rows["part_count"].quality == "good"
    feed.unsubscribe(page)
    assert feed.subscribers == 2


def test_a_machine_removed_by_a_reload_leaves_the_board() -> None:
    plant = Plant()
    feed = plant.feed()
    assert [t["id"] for t in feed.tiles()] == [MACHINE.id]
    plant.machines.clear()
    feed.observe_all()
    assert feed.tiles() == []


def test_a_sweep_goes_through_every_machine_in_turn_and_forgets_removed_ones() -> None:
    plant = Plant()
    feed = plant.feed()
    ids = [f"m{i:02d}" for i in range(23)]
    plant.machines.clear()
    plant.machines.update({mid: MACHINE for mid in ids})
    seen = [feed.sweep(10) for _ in range(8)]  # shares of ceil(23 / 10) = 3
    assert [mid for share in seen for mid in share] == ids, "each machine once, within 10 sweeps"
    feed.observe_all(ids)
    del plant.machines[ids[0]]
    assert feed.sweep(10) == ids[1:4], "a new round starts"
    assert set(feed._tiles) == set(ids[1:]), "a machine a reload removed is dropped as a round starts"


def test_tiles_carry_no_growing_durations() -> None:
    plant = Plant()
    d = plant.derivers[MACHINE.id]
    a = tile_view(MACHINE, d, plant.now)
    b = tile_view(MACHINE, d, plant.now + 3600)
    assert a == b, "the browser counts time in state; an unchanged machine must not be re-sent"


def test_status_segments_are_clipped_to_today() -> None:
    day_start, now = 86_400.0, 86_400.0 + 7200
    segs = status_segments([(80_000.0, "IDLE"), (90_000.0, "ACTIVE"), (91_000.0, "ALARM")], day_start, now)
    assert [(s.start, s.end, s.label, s.kind) for s in segs] == [
        (86_400.0, 90_000.0, "IDLE", "st-idle"),
        (90_000.0, 91_000.0, "ACTIVE", "st-active"),
        (91_000.0, now, "ALARM", "st-alarm"),
    ]
    drawn = lanes(segs, day_start, now)
    assert drawn[0]["x"] == 0 and round(sum(s["w"] for s in drawn)) == 1000


def test_words_and_durations() -> None:
    assert state_class("WARMUP") == "st-idle"  # a plant's own state word is drawn as a calm one
    assert state_class(None) == "st-unknown"
    assert [duration_text(x) for x in (None, 9.7, 249, 3900)] == ["—", "9s", "4m 09s", "1h 05m"]


def test_sessions_expire_and_csrf_must_match() -> None:
    now = [0.0]
    sessions = Sessions(ttl=60.0, clock=lambda: now[0])
    token = RoleToken("tablet", "operator", Secret("oper-token-0123456789", "test"))
    s = sessions.open(token, {"name": "Jane"})
    assert sessions.get(s.id) is s and s.role == "operator" and s.operator == {"name": "Jane"}
    assert "oper-token" not in s.id + s.csrf
    assert csrf_ok(s, s.csrf) and not csrf_ok(s, None) and not csrf_ok(s, s.csrf[:-1])
    assert s.operator_object("  John Smith ", "op456") == {"id": "op456", "name": "John Smith"}
    now[0] = 61.0
    assert sessions.get(s.id) is None and len(sessions) == 0


def test_webhook_urls_are_shown_whole_to_admins_only() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert url_shown(slack, True) == slack
    assert url_shown(slack, False) == "https://hooks.slack.com/…"
    assert url_shown("https://user:pw@example.com/x", False) == "https://example.com/…"


def test_the_day_of_a_time_is_right_every_minute_across_a_daylight_saving_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2026, 3, 28, 12, tzinfo=berlin).timestamp()  # the clocks go forward on the 29th
    for minute in range(3 * 24 * 60):
        now = start + 60 * minute
        local = datetime.fromtimestamp(now, tz=berlin)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        assert day_of(now, berlin) == (local.date().isoformat(), midnight.timestamp())
    assert day_of(start, berlin)[0] == "2026-03-28", "going back in time is answered too"


def test_the_feed_keeps_a_tags_newest_value_but_not_the_reading_itself() -> None:
    # Kept for a whole poll interval, 20 Readings a machine reached the garbage collector's oldest
    # generation (100,000 at 5,000 machines) and every full collection walked them: the feed keeps
    # plain values instead, and the machine page still shows value, quality, reason and time.
    plant = Plant()
    feed = plant.feed()
    samples = plant.read(execution="READY", part_count=7)
    part = next(s for s in samples if s.tag == "part_count")
    before = sys.getrefcount(part)
    feed.samples(MACHINE.id, samples)
    assert sys.getrefcount(part) == before
    bad = Reading(MACHINE.id, "part_count", None, Quality.BAD, plant.now + 1, "exception 2 (illegal address)")
    feed.samples(MACHINE.id, [bad])
    row = {t.tag: t for t in feed.tags(MACHINE.id)}["part_count"]
    assert (row.value, row.quality, row.reason, row.at) == ("—", "bad", bad.reason, bad.timestamp)
