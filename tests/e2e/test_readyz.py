"""/readyz answers anyone who reaches the port: it says what is wrong, never internal error text
(exception messages, file paths), which only a caller with the API token gets."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from tests.e2e.conftest import TOKEN, FakeClock, start_agent


async def test_readyz_hides_internal_errors_from_callers_without_the_token(tmp_path: Path) -> None:
    agent = await start_agent(tmp_path, {}, {}, FakeClock(time.time()))
    try:
        # A real failure: the outbox's database connection is gone, so reading its counts raises.
        await agent.runtime.outbox.close()
        await agent.runtime._refresh_outbox_counts()
        async with aiohttp.ClientSession() as http:
            async with http.get(agent.api_url + "/readyz") as resp:
                public = await resp.json()
                assert resp.status == 503
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(agent.api_url + "/readyz", headers=headers) as resp:
                private = await resp.json()
                assert resp.status == 503
    finally:
        agent.runtime.outbox = None  # already closed above
        await agent.stop()
    assert public["status"] == "degraded"
    assert any("outbox unavailable" in r for r in public["reasons"])
    assert "detail" not in public
    internal = private["detail"]["outbox_error"]
    assert internal and internal not in str(public)
    assert str(tmp_path) not in str(public)
