"""Part counts: deltas and totals; resets and wrap-around never negative, never counted twice."""

from __future__ import annotations

from datetime import date

import pytest

from agent.events import PART_COUNT

from .builders import deriver, good

NOON = 1_699_963_200.0  # 2023-11-14 12:00:00 UTC


def counts(values: list[object], text: str | None = None) -> list[tuple[int, int, str]]:
    d = deriver(text) if text else deriver()
    out = []
    for i, v in enumerate(values):
        for e in d.ingest(good(NOON + i, part_count=v), NOON + i):
            if e.event == PART_COUNT:
                p = e.payload()["parts"]
                out.append((p["delta"], p["total"], p["kind"]))
    return out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5], []),  # the first value is a baseline
        ([5, 5, 5], []),
        ([5, 6, 8], [(1, 1, "count"), (2, 3, "count")]),
        ([9997, 9999, 2], [(2, 2, "count"), (3, 5, "wrap")]),  # max 9999: 9999 → 0, 1, 2
        ([500, 3], [(3, 3, "reset")]),  # reset to 0, three made since
        ([500, 0, 0, 1], [(1, 1, "count")]),
        ([500, 5000], []),  # a jump beyond max_step is a preset, not parts
        ([500, 5000, 5001], [(1, 1, "count")]),
        ([500, 400], []),  # a reset to a preset beyond max_step counts nothing
        ([5, -1, 12000, 6.5, "x", True, 6], [(1, 1, "count")]),  # garbage is ignored
        ([5, 6.0], [(1, 1, "count")]),
    ],
)
def test_counter_table(values: list[object], expected: list[tuple[int, int, str]]) -> None:
    assert counts(values) == expected


def test_per_day_totals_and_since_for_scheduled_syncs() -> None:
    d = deriver()
    d.ingest(good(NOON, part_count=0), NOON)
    for i in range(1, 11):  # ten parts, one a minute, across midnight at 12 h later
        t = NOON + 12 * 3600 - 300 + i * 60
        d.ingest(good(t, part_count=i), t)
    assert d.part_totals(date(2023, 11, 14)) == 4  # 23:56 .. 23:59
    assert d.part_totals("2023-11-15") == 6
    assert d.part_total == 10
    assert d.parts_since(NOON + 12 * 3600) == 6
    assert d.parts_since(NOON) == 10


def test_days_follow_the_machine_s_time_zone() -> None:
    d = deriver("timezone: Asia/Tokyo\nparts: {counter: part_count}\n")
    d.ingest(good(NOON, part_count=0), NOON)
    d.ingest(good(NOON + 60, part_count=1), NOON + 60)  # 21:01 in Tokyo
    d.ingest(good(NOON + 4 * 3600, part_count=3), NOON + 4 * 3600)  # 01:00 next day in Tokyo
    assert (d.part_totals("2023-11-14"), d.part_totals("2023-11-15")) == (1, 2)
