"""The whole agent restarted on a full disk (a tmpfs, root only): it starts, answers /readyz, refuses
manual triggers it cannot store, and takes them again once space returns."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.delivery.test_disk_full_fs import fill
from tests.drills import small_tmpfs
from tests.e2e.conftest import TOKEN, FakeClock, modbus_machine, start_agent

MANUAL = "name: QA\ntrigger: {type: manual}\nactions:\n  - webhook: {url: 'http://127.0.0.1:9/qa', secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}\n"


@pytest.fixture
def state_on_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "state", "6m") as mnt:
        yield mnt


async def test_restart_on_a_full_disk_starts_degraded_and_recovers(
    tmp_path: Path, state_on_tmpfs: Path
) -> None:
    # A machine that cannot be reached: collection is not what this is about.
    machines = {"mill": modbus_machine("mill-01", "Mill", "Milling", 9, 1)}
    agent = await start_agent(tmp_path, machines, {"qa": MANUAL}, FakeClock(time.time()))
    await agent.stop()
    (state_on_tmpfs / "fill").mkdir()
    filler = fill(state_on_tmpfs / "fill")

    agent = await start_agent(tmp_path, machines, {"qa": MANUAL}, FakeClock(time.time()))  # used to crash
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = agent.api_url + "/api/v1/workflows/QA/trigger"
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(agent.api_url + "/readyz") as resp:
                assert resp.status in (200, 503)
            statuses = []
            for _ in range(100):
                async with http.post(url, json={"machine": "mill-01", "note": "n" * 2000}) as resp:
                    statuses.append(resp.status)
                    if resp.status != 202:
                        break
            assert statuses[-1] == 503, statuses  # refused, not acknowledged and lost
            filler.unlink()
            async with http.post(url, json={"machine": "mill-01", "note": "back"}) as resp:
                assert resp.status == 202
    finally:
        await agent.stop()
