"""A /metrics scrape brings the machines' series up to date a slice of machines per loop turn: for
2,000 machines in one turn it held the event loop for 26 ms, longer than any poll may wait (issue 13)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from agent import runtime as runtime_module
from tests.e2e.conftest import TOKEN
from tests.e2e.test_start_slices import SLICE, sliced_rig


async def test_a_scrape_updates_the_machines_a_slice_per_loop_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, sim, runtime = await sliced_rig(tmp_path, monkeypatch)
    monkeypatch.setattr(runtime_module, "MACHINE_SLICE", SLICE)
    await runtime.start()
    try:
        updated: list[int] = []
        update = runtime._machine_metrics

        def counted(machines: Sequence[str]) -> None:
            updated.append(len(machines))
            update(machines)

        monkeypatch.setattr(runtime, "_machine_metrics", counted)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as s, s.get(runtime.api_url + "/metrics", headers=headers) as r:
            assert r.status == 200
            text = await r.text()
        assert updated, "the scrape updated the machines' series"
        assert max(updated) <= SLICE, f"machines updated in one loop turn: {updated}"
        assert all(f'machine="{mid}"' in text for mid in ids), "every machine is in the scrape"
    finally:
        await runtime.stop(grace=1.0)
        await sim.stop()
