"""With the outbox unable to write (SQLite's own disk-full error, through ``PRAGMA max_page_count``),
the API acknowledges nothing it cannot keep, held rows keep their order, and whatever a stop has to
discard is logged and counted."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from structlog.testing import capture_logs

from agent.api.server import bound_port, create_app, start_api
from agent.api.settings import ApiConfig
from agent.config.source import Secret
from tests.drills import set_page_limit
from tests.workflows.rig import MILL, FakeClock, hook, make_rig, poll, readings, workflows_from

TOKEN = "t0ken-for-tests-0123456789"


async def test_trigger_on_a_full_disk_is_503_with_retry_after_and_nothing_is_held(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path, {"qa": "name: QA\ntrigger: {type: manual}\n" + hook("http://127.0.0.1:9/qa")}
    )
    rig = await make_rig(tmp_path, flows, FakeClock(time.time() - 86400), dispatch=False)
    config = ApiConfig(enabled=True, host="127.0.0.1", port=0, token=Secret(TOKEN, "test"))
    runner = await start_api(create_app(rig.pipeline, rig.outbox, config), config)
    url = f"http://127.0.0.1:{bound_port(runner)}/api/v1/workflows/QA/trigger"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"machine": "mill-01", "note": "n" * 2000}
    answers: list[int] = []
    try:
        await set_page_limit(rig.outbox, 1)  # no page beyond what the file has now
        async with aiohttp.ClientSession(headers=headers) as http:
            for _ in range(200):
                async with http.post(url, json=body) as resp:
                    answers.append(resp.status)
                    if resp.status == 503:
                        refused = await resp.json()
                        retry_after = resp.headers.get("Retry-After")
                        break
            assert answers[-1] == 503, answers
            assert refused["error"]["code"] == "not_durable"
            assert retry_after is not None and int(retry_after) > 0
            assert rig.pipeline.pending == 0, "a refused trigger must not linger in memory"
            stored = await rig.outbox.counts()
            assert stored.pending == answers.count(202)

            await set_page_limit(rig.outbox, 2**30)  # space is back
            async with http.post(url, json=body) as resp:
                assert resp.status == 202
        assert (await rig.outbox.counts()).pending == answers.count(202) + 1
    finally:
        await runner.cleanup()
        await rig.close()


async def test_derived_rows_held_at_stop_are_logged_and_counted(tmp_path: Path) -> None:
    flows = workflows_from(
        tmp_path,
        {"st": "name: Status\ntrigger: {type: machine_status_changed}\n" + hook("http://127.0.0.1:9/st")},
    )
    clock = FakeClock(time.time() - 86400)
    rig = await make_rig(tmp_path, flows, clock, dispatch=False)
    try:
        await set_page_limit(rig.outbox, 1)
        for i, execution in enumerate(["ACTIVE", "STOPPED"] * 30):
            clock.advance(60)
            await poll(
                rig.pipeline,
                "mill-01",
                readings(MILL, clock.now, execution=execution, alarm_code=0, part_count=i),
            )
        held = rig.pipeline.pending
        assert held > 0
        with capture_logs() as logs:
            await rig.pipeline.close()
    finally:
        await rig.close()
    (lost,) = [e for e in logs if e["event"] == "deliveries_lost_at_stop"]
    assert lost["count"] == held and rig.pipeline.discarded == held
    assert lost["message_ids"]
